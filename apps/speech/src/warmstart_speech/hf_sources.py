"""Pretrained transformers models as the CTC+OT recipe's sources: an MT model and a speech encoder.

Seed paper: "Pre-training for Speech Translation: CTC Meets Optimal Transport" (Le et al., arXiv 2301.11716):
the speech encoder is pretrained with CTC on the MT model's *source* units plus OT towards the frozen MT
encoder's outputs, then the ST model is that speech encoder under the MT decoder, unchanged. A user starts
from models others trained, so here:

- ``--mt`` is any transformers seq2seq MT model (Marian, M2M-100, mBART ... : ``AutoModelForSeq2SeqLM`` +
  ``AutoTokenizer``, a local folder or a hub id). Its tokenizer gives the CTC targets (source pieces of the
  transcript) and the ST targets (pieces of the translation); its frozen encoder is the OT teacher; and the
  ST model *is* that MT model fed the speech encoder's states through ``encoder_outputs`` — so its decoder,
  embeddings and ``generate`` (beam search) are used exactly as published.
- ``--encoder`` is any transformers speech encoder (wav2vec 2.0, HuBERT, XLS-R, WavLM: ``AutoModel`` on 16
  kHz waveforms), with a linear map to the MT width and a CTC head over the MT source vocabulary.

A pretrained encoder is saved as ``speech/`` (``save_pretrained``) + ``heads.safetensors`` + ``source.json``;
an ST model as that plus ``mt/`` (the fine-tuned MT model and its tokenizer). Left out: adapters between
encoder and decoder (the paper needs none), length-based frame subsampling of the wav2vec2 states.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from warmstart.errors import CheckpointError, DataError
from warmstart_speech.ctc_ot import OTConfig, ot_distance
from warmstart_speech.features import FeatureConfig, SkipReport, featurise_rows
from warmstart_speech.manifest import read_manifest, row_id

log = logging.getLogger(__name__)
SPEECH_TYPES = ("wav2vec2", "hubert", "wav2vec2-conformer", "wavlm", "data2vec-audio", "unispeech-sat")
MARKER = "source.json"


def _hf_config(source: str | Path) -> dict[str, Any] | None:
    path = Path(source) / "config.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return None if "warmstart_kind" in data else data


def is_hf_mt(source: str | Path | None) -> bool:
    """A transformers encoder-decoder folder (or a hub id that is no local path and not one of ours)."""
    if source is None:
        return False
    config = _hf_config(source)
    if config is not None:
        return bool(config.get("is_encoder_decoder"))
    return not Path(source).exists() and str(source).count("/") == 1


def is_hf_speech(source: str | Path | None) -> bool:
    """A transformers speech-encoder folder (wav2vec 2.0 family), or a folder written by this module."""
    if source is None:
        return False
    if (Path(source) / MARKER).is_file():
        return True
    config = _hf_config(source)
    if config is not None:
        return config.get("model_type") in SPEECH_TYPES
    return not Path(source).exists() and str(source).count("/") == 1


def load_mt(source: str | Path) -> tuple[nn.Module, Any]:
    """(``AutoModelForSeq2SeqLM``, ``AutoTokenizer``) of a folder or hub id; one line when it cannot load."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    try:
        return AutoModelForSeq2SeqLM.from_pretrained(str(source)), AutoTokenizer.from_pretrained(str(source))
    except Exception as exc:  # noqa: BLE001 - offline, missing files, wrong model type: one line
        raise CheckpointError(
            f"{source}: cannot load a transformers seq2seq MT model + tokenizer ({str(exc).splitlines()[0][:160]})"
        ) from None


class SpeechEncoder(nn.Module):
    """A transformers speech encoder → linear map to the MT width → states (B, T', D); CTC head over the MT
    source vocabulary (blank = the tokenizer's pad id)."""

    def __init__(self, speech: nn.Module, mt_dim: int, vocab_size: int) -> None:
        super().__init__()
        self.speech = speech
        self.proj = nn.Linear(speech.config.hidden_size, mt_dim)
        self.ctc_head = nn.Linear(mt_dim, vocab_size)

    def forward(self, wave: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = (torch.arange(wave.shape[1], device=wave.device)[None] < lens[:, None]).long()  # (B, T)
        hidden = self.speech(wave, attention_mask=mask).last_hidden_state  # (B, T', H)
        out_lens = self.speech._get_feat_extract_output_lengths(lens).clamp(max=hidden.shape[1])
        return self.proj(hidden), out_lens

    def save(self, out: Path, meta: dict[str, Any]) -> Path:
        from safetensors.torch import save_file

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.speech.save_pretrained(str(out / "speech"))
        heads = {f"proj.{k}": v for k, v in self.proj.state_dict().items()}
        heads |= {f"ctc_head.{k}": v for k, v in self.ctc_head.state_dict().items()}
        save_file({k: v.contiguous() for k, v in heads.items()}, str(out / "heads.safetensors"))
        (out / MARKER).write_text(json.dumps({"kind": "speech.hf-encoder", **meta}, indent=1))
        return out


def load_encoder(source: str | Path, mt: nn.Module, tokenizer: Any) -> SpeechEncoder:
    """A folder written by :meth:`SpeechEncoder.save` (heads restored), or a transformers speech encoder
    (folder / hub id) with new heads."""
    from transformers import AutoModel

    path = Path(source)
    speech_dir = path / "speech" if (path / MARKER).is_file() else source
    try:
        speech = AutoModel.from_pretrained(str(speech_dir))
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(
            f"{source}: cannot load a transformers speech encoder ({str(exc).splitlines()[0][:160]})"
        ) from None
    encoder = SpeechEncoder(speech, mt.config.d_model, len(tokenizer))
    if (path / MARKER).is_file():
        from safetensors.torch import load_file

        heads = load_file(str(path / "heads.safetensors"))
        encoder.proj.load_state_dict({k[5:]: v for k, v in heads.items() if k.startswith("proj.")})
        encoder.ctc_head.load_state_dict({k[9:]: v for k, v in heads.items() if k.startswith("ctc_head.")})
    return encoder


# ------------------------------------------------------------------------------------------------
# data: waveforms + MT-tokenised transcript / translation
# ------------------------------------------------------------------------------------------------
@dataclass
class Item:
    id: str
    waveform: torch.Tensor  # (T,) at 16 kHz
    src: list[int]  # MT source pieces of the transcript (CTC targets / teacher input)
    tgt: list[int]  # MT target pieces of the translation (with EOS)
    translation: str

    @property
    def n_frames(self) -> int:
        return int(self.waveform.numel())


def load_items(
    manifest: Path,
    tokenizer: Any,
    *,
    need_src: bool,
    need_tgt: bool,
    features: FeatureConfig = FeatureConfig(),
    min_samples: int = 400,
) -> tuple[list[Item], SkipReport]:
    """Waveforms of a manifest with the MT tokenizer's pieces; rows without the needed text are named."""
    rows = read_manifest(manifest)
    report = SkipReport(seen=len(rows))
    kept = []
    for row in rows:
        if need_src and not row["transcript"]:
            report.add("no transcript (needed for CTC / the OT teacher)", row_id(row))
        elif need_tgt and not row["translation"]:
            report.add("no translation", row_id(row))
        else:
            kept.append(row)
    items = []
    for row in featurise_rows(
        kept, features, report, "waveform", min_samples, "clip too short for the encoder"
    ):
        src = tokenizer(row["transcript"]).input_ids if row["transcript"] else []
        tgt = tokenizer(text_target=row["translation"]).input_ids if row["translation"] else []
        items.append(Item(row_id(row), row["waveform"], src, tgt, row["translation"]))
    if not items:
        raise DataError(f"{manifest}: no usable rows ({report.line()})")
    return items, report


def collate_items(items: list[Item], pad: int) -> dict[str, torch.Tensor]:
    lens = torch.tensor([it.waveform.numel() for it in items])
    wave = torch.zeros(len(items), int(lens.max()))  # (B, T)
    for i, it in enumerate(items):
        wave[i, : it.waveform.numel()] = it.waveform

    def pad_ids(seqs: list[list[int]], value: int) -> torch.Tensor:
        out = torch.full((len(seqs), max(1, max(len(s) for s in seqs))), value, dtype=torch.long)
        for i, s in enumerate(seqs):
            out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        return out  # (B, S)

    return {
        "wave": wave,
        "wave_lens": lens,
        "src": pad_ids([it.src for it in items], pad),
        "src_lens": torch.tensor([len(it.src) for it in items]),
        "labels": pad_ids([it.tgt for it in items], -100),
    }


class ItemBatches:
    """Seeded, resumable, length-bucketed batches of :class:`Item` (as the fairseq2 path's)."""

    def __init__(self, items: list[Item], batch_size: int, pad: int, seed: int = 0) -> None:
        from warmstart_speech.batches import LengthBucketBatches

        self.inner = LengthBucketBatches(items, batch_size, seed)
        self.inner._collate = lambda b: collate_items([items[i] for i in b], pad)  # type: ignore[method-assign]

    def __iter__(self):  # noqa: ANN204
        return iter(self.inner)

    def state_dict(self) -> dict[str, int]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.inner.load_state_dict(state)


# ------------------------------------------------------------------------------------------------
# CTC + OT pretraining of the speech encoder against the frozen MT encoder, and ST fine-tuning
# ------------------------------------------------------------------------------------------------
class PretrainTask:
    def __init__(self, encoder: SpeechEncoder, mt: nn.Module, pad: int, objective: str, ot: OTConfig) -> None:
        self.model = encoder
        self.mt = mt.eval().requires_grad_(False)
        self.pad = pad
        self.objective = objective
        self.ot = ot

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        states, lens = self.model(batch["wave"], batch["wave_lens"])  # (B, T', D)
        log_probs = F.log_softmax(self.model.ctc_head(states).float(), dim=-1)
        ctc = F.ctc_loss(
            log_probs.transpose(0, 1),
            batch["src"],
            lens,
            batch["src_lens"],
            blank=self.pad,
            reduction="mean",
            zero_infinity=True,
        )
        loss, metrics = self.ot.ctc_weight * ctc, {"ctc": ctc.detach()}
        if self.objective == "ctc+ot":
            self.mt.to(states.device)
            src_mask = (batch["src"] != self.pad).long()
            with torch.no_grad():
                text = self.mt.get_encoder()(
                    input_ids=batch["src"], attention_mask=src_mask
                ).last_hidden_state
            ot = ot_distance(states, lens, text, batch["src_lens"], self.ot).mean()
            loss = loss + self.ot.ot_weight * ot
            metrics["ot"] = ot.detach()
        return loss, {**metrics, "samples": batch["wave"].shape[0]}


class STModel(nn.Module):
    """The speech encoder under the MT model: ``mt(encoder_outputs=speech states)``, its decoder unchanged."""

    def __init__(self, encoder: SpeechEncoder, mt: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.mt = mt

    def _encoder_outputs(self, wave: torch.Tensor, lens: torch.Tensor):  # noqa: ANN202
        from transformers.modeling_outputs import BaseModelOutput

        states, out_lens = self.encoder(wave, lens)
        mask = (torch.arange(states.shape[1], device=states.device)[None] < out_lens[:, None]).long()
        return BaseModelOutput(last_hidden_state=states), mask

    def forward(self, wave: torch.Tensor, lens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        outputs, mask = self._encoder_outputs(wave, lens)
        return self.mt(encoder_outputs=outputs, attention_mask=mask, labels=labels).loss

    @torch.no_grad()
    def translate(self, wave: torch.Tensor, lens: torch.Tensor, tokenizer: Any, beam: int = 5) -> list[str]:
        was = self.training
        self.eval()
        try:
            outputs, mask = self._encoder_outputs(wave, lens)
            ids = self.mt.generate(
                encoder_outputs=outputs, attention_mask=mask, num_beams=beam, max_new_tokens=100
            )
        finally:
            self.train(was)
        return [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]

    def save(self, out: Path, tokenizer: Any, meta: dict[str, Any]) -> Path:
        out = Path(out)
        self.encoder.save(out, {**meta, "kind": "speech.hf-st"})
        self.mt.save_pretrained(str(out / "mt"))
        tokenizer.save_pretrained(str(out / "mt"))
        return out


class STTask:
    def __init__(self, model: STModel, test: list[Item], tokenizer: Any, pad: int, beam: int = 5) -> None:
        self.model, self.test, self.tokenizer, self.pad, self.beam = model, test, tokenizer, pad, beam

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        loss = self.model(batch["wave"], batch["wave_lens"], batch["labels"])
        return loss, {"samples": batch["wave"].shape[0]}

    def evaluate(self) -> dict[str, float]:
        return evaluate_items(self.model, self.test, self.tokenizer, self.pad, self.beam) if self.test else {}


def evaluate_items(
    model: STModel, items: list[Item], tokenizer: Any, pad: int, beam: int = 5
) -> dict[str, float]:
    from warmstart_speech.ctc_ot import translation_scores

    device = next(model.parameters()).device
    order = sorted(items, key=lambda it: it.n_frames)
    hyps = []
    for i in range(0, len(order), 8):
        batch = collate_items(order[i : i + 8], pad)
        hyps += model.translate(batch["wave"].to(device), batch["wave_lens"].to(device), tokenizer, beam)
    return translation_scores(hyps, [it.translation for it in order])


def pretrain(
    items: list[Item],
    encoder: SpeechEncoder,
    mt: nn.Module,
    tokenizer: Any,
    objective: str,
    ot: OTConfig,
    engine: Any,
    run_dir: Path | None = None,
    resume_from: Path | None = None,
):  # noqa: ANN201
    """CTC (+ OT) pretraining of a transformers speech encoder against a transformers MT model."""
    from warmstart.engine import Engine

    if objective not in ("ctc", "ctc+ot"):
        raise DataError(f"--objective {objective}: a transformers MT source supports ctc and ctc+ot")
    pad = tokenizer.pad_token_id
    data = ItemBatches(items, engine.train.micro_batch_size, pad, engine.train.seed)
    return Engine(engine, run_dir).fit(
        PretrainTask(encoder, mt, pad, objective, ot), data, resume_from=resume_from
    )


def train_st(
    train: list[Item],
    test: list[Item],
    encoder: SpeechEncoder,
    mt: nn.Module,
    tokenizer: Any,
    engine: Any,
    run_dir: Path | None = None,
    beam: int = 5,
    resume_from: Path | None = None,
):  # noqa: ANN201
    """ST fine-tuning of (speech encoder → MT decoder); BLEU with ``beam`` on ``test`` at the end."""
    from warmstart.engine import Engine

    pad = tokenizer.pad_token_id
    model = STModel(encoder, mt.train().requires_grad_(True))
    data = ItemBatches(train, engine.train.micro_batch_size, pad, engine.train.seed)
    summary = Engine(engine, run_dir).fit(
        STTask(model, test, tokenizer, pad, beam), data, resume_from=resume_from
    )
    return model, summary


def load_st(source: str | Path) -> tuple[STModel, Any]:
    """An ST folder written by :meth:`STModel.save`."""
    path = Path(source)
    if not (path / MARKER).is_file() or not (path / "mt").is_dir():
        raise CheckpointError(f"{path}: not a transformers ST folder (source.json + speech/ + mt/)")
    mt, tokenizer = load_mt(path / "mt")
    return STModel(load_encoder(path, mt, tokenizer), mt), tokenizer


def is_hf_st(source: str | Path) -> bool:
    return (Path(source) / MARKER).is_file() and (Path(source) / "mt").is_dir()
