"""Continued wav2vec 2.0 self-supervised pretraining on a new language, then CTC fine-tuning.

Seed paper: "Adapting Multilingual Speech Representation Model for a New, Underresourced Language through
Multilingual Fine-tuning and Continued Pretraining" (Nowakowski et al., arXiv 2301.07295): continue the
wav2vec 2.0 objective of an XLS-R encoder on unlabelled target-language audio, then CTC fine-tune on a little
labelled data; continued pretraining was the most effective single lever (CER/WER on Ainu).

Implemented: loading a wav2vec2 *pretraining* checkpoint by local path or hub id — a fairseq2
``Wav2Vec2Model`` (a folder written by this app, or a fairseq1/fairseq2 ``.pt`` file converted with fairseq2's
``convert_wav2vec2_state_dict`` given an architecture) or a Hugging Face ``Wav2Vec2ForPreTraining`` folder /
hub id (e.g. ``facebook/wav2vec2-xls-r-300m``) — or building a tiny one from :class:`SSLConfig`; the SSL
step with the libraries' own losses (fairseq2's ``Wav2Vec2Model.compute_loss`` / transformers'
``Wav2Vec2ForPreTraining``: contrastive loss over Gumbel-quantised targets of masked spans + codebook
diversity loss (+ fairseq2's feature penalty)), normalised per masked target; CTC fine-tuning through
fairseq2's ``Wav2Vec2AsrModel`` / transformers' ``Wav2Vec2ForCTC`` (feature extractor frozen, new output
layer over characters); greedy CTC decoding, CER and WER.

Written here, and why: only the glue (mask/negative sampling calls for transformers, the Gumbel temperature
schedule for transformers, the task wrappers for the core's engine). fairseq2 0.8.1 wraps the codebook sum of
its Gumbel quantiser in ``torch.compile(fullgraph=True)`` *inside* ``forward`` (a fresh compile per batch
shape: ~20 s on CPU before the first step); :func:`ssl_losses` therefore runs the quantiser under
``torch.compiler.set_stance("force_eager")`` unless ``SSLConfig.compile_quantizer`` is set.
Multilingual fine-tuning (the paper's other lever) is ``ssl-ctc --languages``: one joint character
vocabulary over several related languages' manifests. Left out: LM-fused decoding, fairseq2's asset-card
names (``wav2vec2_base`` ...) — pass a checkpoint file with ``--ssl.arch`` instead.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from warmstart.errors import CheckpointError, ConfigError
from warmstart_speech.data import PAD, Vocab
from warmstart_speech.fs2 import preload_libsndfile

log = logging.getLogger(__name__)

Backend = Literal["fairseq2", "hf"]
KIND = "wav2vec2"


@dataclass
class SSLConfig:
    """A wav2vec2 pretraining model built from scratch (when no ``--init`` is given), and SSL settings."""

    backend: Backend = "fairseq2"
    """Library of a freshly built model: fairseq2 (``Wav2Vec2Model``) or hf (``Wav2Vec2ForPreTraining``)."""
    model_dim: int = 64
    """Transformer width (XLS-R 300M: 1024)."""
    layers: int = 2
    """Transformer layers (XLS-R 300M: 24)."""
    heads: int = 4
    """Attention heads."""
    ffn_dim: int = 128
    """Feed-forward inner width."""
    conv_dim: int = 64
    """Channels of the waveform feature extractor (7 conv layers, stride 320 = 20 ms, as wav2vec2)."""
    pos_conv_kernel: int = 16
    """Kernel of the convolutional position encoder (wav2vec2: 128)."""
    pos_conv_groups: int = 4
    """Groups of the convolutional position encoder (wav2vec2: 16)."""
    codebooks: int = 2
    """Quantiser codebooks (G)."""
    codebook_entries: int = 32
    """Entries per codebook (V; wav2vec2: 320)."""
    quantized_dim: int = 32
    """Quantised vector width."""
    final_dim: int = 32
    """Width of the contrastive projection."""
    distractors: int = 20
    """Negatives per masked target (wav2vec2: 100)."""
    mask_span: int = 5
    """Masked span length in frames (wav2vec2: 10)."""
    mask_prob: float = 0.5
    """Share of frames that start a masked span (wav2vec2: 0.65)."""
    dropout: float = 0.0
    """Dropout in the transformer."""
    diversity_weight: float = 0.1
    """Weight of the codebook diversity loss (wav2vec2: 0.1)."""
    features_penalty_weight: float = 10.0
    """fairseq2's L2 penalty on the extracted features (transformers has none)."""
    temperature: tuple[float, float, float] = (2.0, 0.5, 0.999995)
    """Gumbel temperature: start, end, decay per update (wav2vec2's schedule)."""
    arch: str | None = None
    """For a ``.pt`` checkpoint: a fairseq2 wav2vec2 architecture name (e.g. base, large_lv60k) or the
    ``config.json`` (or older ``model.json``) of a folder written by this app."""
    compile_quantizer: bool = False
    """Let fairseq2's quantiser run its per-call ``torch.compile`` (off: eager, no compile stall)."""


# ------------------------------------------------------------------------------------------------
# the model wrapper
# ------------------------------------------------------------------------------------------------
class SSLModel(nn.Module):
    """A wav2vec2 pretraining model of either library: ``net`` is fairseq2's ``Wav2Vec2Model`` or
    transformers' ``Wav2Vec2ForPreTraining``; ``spec`` is what :func:`save_ssl` writes to re-create it."""

    def __init__(self, net: nn.Module, backend: Backend, spec: dict[str, Any], cfg: SSLConfig) -> None:
        super().__init__()
        self.net = net
        self.backend = backend
        self.spec = spec
        self.cfg = cfg
        self.updates = 0  # Gumbel temperature schedule for transformers (fairseq2 keeps its own counter)

    def forward(
        self, wave: torch.Tensor, lens: torch.Tensor, generator: torch.Generator | None = None
    ) -> dict[str, Any]:
        """The wav2vec2 loss and its parts (see :func:`ssl_losses`) of waveforms (B, T) with lengths (B,)."""
        return ssl_losses(self, wave, lens, generator)

    @property
    def model_dim(self) -> int:
        return int(self.net.model_dim if self.backend == "fairseq2" else self.net.config.hidden_size)

    def encoder_state(self) -> dict[str, torch.Tensor]:
        """The weights CTC fine-tuning reuses: feature extractor, frontend and transformer."""
        if self.backend == "fairseq2":
            return {
                **{f"encoder_frontend.{k}": v for k, v in self.net.encoder_frontend.state_dict().items()},
                **{f"encoder.{k}": v for k, v in self.net.encoder.state_dict().items()},
            }
        return {f"wav2vec2.{k}": v for k, v in self.net.wav2vec2.state_dict().items()}


def _fs2_wav2vec2():
    preload_libsndfile()
    import fairseq2.models.wav2vec2 as w2v

    return w2v


def _fs2_config(cfg: SSLConfig):
    w2v = _fs2_wav2vec2()
    enc = w2v.Wav2Vec2EncoderConfig(
        model_dim=cfg.model_dim,
        max_seq_len=4096,
        feature_dim=cfg.conv_dim,
        feature_extractor_layer_descs=[(cfg.conv_dim, 10, 5)]
        + [(cfg.conv_dim, 3, 2)] * 4
        + [(cfg.conv_dim, 2, 2)] * 2,
        pos_conv_kernel_size=cfg.pos_conv_kernel,
        num_pos_conv_groups=cfg.pos_conv_groups,
        num_encoder_layers=cfg.layers,
        num_encoder_attn_heads=cfg.heads,
        ffn_inner_dim=cfg.ffn_dim,
        dropout_p=cfg.dropout,
        attn_dropout_p=cfg.dropout,
        layer_drop_p=0.0,
    )
    return w2v.Wav2Vec2Config(
        encoder_config=enc,
        final_dim=cfg.final_dim,
        quantized_dim=cfg.quantized_dim,
        num_codebooks=cfg.codebooks,
        num_codebook_entries=cfg.codebook_entries,
        num_distractors=cfg.distractors,
        temporal_mask_span_len=cfg.mask_span,
        max_temporal_mask_prob=cfg.mask_prob,
        codebook_sampling_temperature=tuple(cfg.temperature),
    )


def _fs2_config_to_json(config: Any) -> dict[str, Any]:
    out = asdict(config)
    out["encoder_config"]["norm_order"] = config.encoder_config.norm_order.name
    return out


def _fs2_config_from_json(data: dict[str, Any]):
    from fairseq2.models.transformer import TransformerNormOrder

    w2v = _fs2_wav2vec2()
    enc = dict(data["encoder_config"])
    enc["norm_order"] = TransformerNormOrder[enc["norm_order"]]
    enc["feature_extractor_layer_descs"] = [tuple(d) for d in enc["feature_extractor_layer_descs"]]
    rest = {k: v for k, v in data.items() if k != "encoder_config"}
    rest["codebook_sampling_temperature"] = tuple(rest["codebook_sampling_temperature"])
    return w2v.Wav2Vec2Config(encoder_config=w2v.Wav2Vec2EncoderConfig(**enc), **rest)


def _hf_config(cfg: SSLConfig):
    from transformers import Wav2Vec2Config

    return Wav2Vec2Config(
        hidden_size=cfg.model_dim,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        intermediate_size=cfg.ffn_dim,
        conv_dim=(cfg.conv_dim,) * 7,
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        num_conv_pos_embeddings=cfg.pos_conv_kernel,
        num_conv_pos_embedding_groups=cfg.pos_conv_groups,
        num_codevector_groups=cfg.codebooks,
        num_codevectors_per_group=cfg.codebook_entries,
        codevector_dim=cfg.quantized_dim,
        proj_codevector_dim=cfg.final_dim,
        num_negatives=cfg.distractors,
        mask_time_length=cfg.mask_span,
        mask_time_prob=cfg.mask_prob,
        diversity_loss_weight=cfg.diversity_weight,
        hidden_dropout=cfg.dropout,
        attention_dropout=cfg.dropout,
        activation_dropout=cfg.dropout,
        feat_proj_dropout=cfg.dropout,
        layerdrop=0.0,
        vocab_size=8,
        pad_token_id=PAD,
    )


def build_ssl(cfg: SSLConfig = SSLConfig(), seed: int = 0) -> SSLModel:
    """A freshly initialised wav2vec2 pretraining model of ``cfg.backend``."""
    torch.manual_seed(seed)
    if cfg.backend == "fairseq2":
        config = _fs2_config(cfg)
        net = _fs2_wav2vec2().create_wav2vec2_model(config)
        return SSLModel(net, "fairseq2", {"config": _fs2_config_to_json(config)}, cfg)
    from transformers import Wav2Vec2ForPreTraining

    return SSLModel(Wav2Vec2ForPreTraining(_hf_config(cfg)), "hf", {}, cfg)


SSL_KIND = "speech.wav2vec2"
CTC_KIND = "speech.wav2vec2-ctc"
PAPER = (
    "Adapting Multilingual Speech Representation Model for a New, Underresourced Language through Multilingual "
    "Fine-tuning and Continued Pretraining (Nowakowski et al., arXiv 2301.07295)"
)


def save_ssl(model: SSLModel, out: Path, extra: dict[str, Any] | None = None) -> Path:
    """fairseq2: :mod:`warmstart.hub`'s format (config.json with the ``Wav2Vec2Config`` + model.safetensors +
    card); hf: ``save_pretrained`` (transformers' own format, loadable by transformers directly) + model.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if model.backend == "fairseq2":
        from warmstart.hub import ModelCard, save_model

        card = ModelCard(title="wav2vec 2.0 pretraining model (fairseq2)", paper=PAPER, tags=["wav2vec2"])
        config = {"backend": "fairseq2", **model.spec, "ssl": asdict(model.cfg)}
        return save_model(model.net, out, kind=SSL_KIND, config=config, card=card, extra=extra)
    model.net.save_pretrained(str(out))
    meta = {"kind": KIND, "backend": model.backend, **model.spec, "ssl": asdict(model.cfg), **(extra or {})}
    (out / "model.json").write_text(json.dumps(meta, indent=1, default=list))
    return out


def _ssl_config(data: dict[str, Any]) -> SSLConfig:
    known = {f for f in SSLConfig.__dataclass_fields__}
    cfg = SSLConfig(**{k: v for k, v in data.items() if k in known})
    cfg.temperature = tuple(cfg.temperature)  # type: ignore[assignment]
    return cfg


def _warmstart_kind(path: Path) -> str | None:
    try:
        return json.loads((path / "config.json").read_text()).get("warmstart_kind")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def _load_fs2_pt(path: Path, cfg: SSLConfig) -> SSLModel:
    """A fairseq1/fairseq2 ``.pt`` checkpoint, converted by fairseq2's ``convert_wav2vec2_state_dict``."""
    w2v = _fs2_wav2vec2()
    if cfg.arch is None:
        raise ConfigError(
            f"{path}: a .pt checkpoint needs --ssl.arch (a fairseq2 wav2vec2 arch or a model.json)"
        )
    if Path(cfg.arch).is_file():
        data = json.loads(Path(cfg.arch).read_text())
        spec = (
            data["config"]["config"] if "warmstart_kind" in data else data["config"]
        )  # config.json | model.json
        config = _fs2_config_from_json(spec)
    else:
        import fairseq2
        from fairseq2.error import InvalidOperationError

        with contextlib.suppress(InvalidOperationError):  # already initialised in this process
            fairseq2.init_fairseq2()
        try:
            config = w2v.get_wav2vec2_model_hub().get_arch_config(cfg.arch)
        except Exception as exc:  # noqa: BLE001 - unknown name: one line
            raise ConfigError(f"--ssl.arch {cfg.arch}: not a fairseq2 wav2vec2 architecture ({exc})") from exc
    try:
        checkpoint = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(
            f"{path}: not a readable torch checkpoint ({str(exc).splitlines()[0]})"
        ) from exc
    state = w2v.convert_wav2vec2_state_dict(dict(checkpoint), config)
    net = w2v.create_wav2vec2_model(config)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: weights do not fit --ssl.arch {cfg.arch} ({str(exc).splitlines()[0]})"
        ) from exc
    return SSLModel(net, "fairseq2", {"config": _fs2_config_to_json(config)}, cfg)


def load_ssl(init: str | Path, cfg: SSLConfig = SSLConfig()) -> SSLModel:
    """A wav2vec2 pretraining model from a folder of this app, an HF folder, a ``.pt`` file or an HF hub id."""
    path = Path(init)
    meta_file = path / "model.json"
    kind = _warmstart_kind(path) if path.is_dir() else None
    if kind is not None:
        if kind != SSL_KIND:
            raise CheckpointError(f"{path}: holds a {kind} model, expected a {SSL_KIND} (continue-ssl)")
        from warmstart.hub import load_model

        net, meta = load_model(
            path,
            lambda c: _fs2_wav2vec2().create_wav2vec2_model(_fs2_config_from_json(c["config"])),
            kind=SSL_KIND,
        )
        return SSLModel(net, "fairseq2", {"config": meta["config"]["config"]}, cfg)
    if path.is_dir() and meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        if meta.get("kind") != KIND:
            raise CheckpointError(
                f"{path}: holds a {meta.get('kind')!r} model, expected a {KIND} (continue-ssl)"
            )
        if meta["backend"] == "fairseq2":
            from safetensors.torch import load_file

            net = _fs2_wav2vec2().create_wav2vec2_model(_fs2_config_from_json(meta["config"]))
            try:
                net.load_state_dict(load_file(str(path / "model.safetensors")), strict=True)
            except (RuntimeError, OSError) as exc:
                raise CheckpointError(
                    f"{path}: weights do not fit model.json ({str(exc).splitlines()[0]})"
                ) from exc
            return SSLModel(net, "fairseq2", {"config": meta["config"]}, cfg)
        return _load_hf(str(path), cfg)
    if path.is_file() and path.suffix in (".pt", ".pth"):
        return _load_fs2_pt(path, cfg)
    if path.is_dir() and (path / "config.json").is_file():
        return _load_hf(str(path), cfg)
    if path.exists() or str(init).count("/") != 1:
        raise CheckpointError(
            f"{init}: not a wav2vec2 checkpoint; pass a continue-ssl folder, an HF Wav2Vec2ForPreTraining folder "
            "(config.json), a fairseq .pt file with --ssl.arch, or a hub id like facebook/wav2vec2-xls-r-300m"
        )
    return _load_hf(str(init), cfg)  # a hub id: downloads where a network is available


def _load_hf(name: str, cfg: SSLConfig) -> SSLModel:
    from transformers import Wav2Vec2ForPreTraining

    try:
        net = Wav2Vec2ForPreTraining.from_pretrained(name)
    except Exception as exc:  # noqa: BLE001 - offline, missing files, wrong model type: one line
        raise CheckpointError(
            f"{name}: cannot load a transformers Wav2Vec2ForPreTraining ({str(exc).splitlines()[0][:160]})"
        ) from exc
    return SSLModel(net, "hf", {}, cfg)


def frames_of(model: SSLModel, n_samples: int) -> int:
    """Frames the waveform feature extractor makes of ``n_samples`` samples."""
    if model.backend == "fairseq2":
        n = n_samples
        for _, kernel, stride in model.spec["config"]["encoder_config"]["feature_extractor_layer_descs"]:
            n = (n - kernel) // stride + 1 if n >= kernel else 0
        return max(n, 0)
    return int(model.net._get_feat_extract_output_lengths(torch.tensor(n_samples)))


def min_frames(model: SSLModel) -> int:
    """Fewest frames the wav2vec2 objective accepts: more than one mask span, and for fairseq2's masker enough
    for its minimum number of spans (``int(p / span · (frames − 1)) ≥ min_spans``)."""
    if model.backend == "fairseq2":
        c = model.spec["config"]
        span, prob, spans = (
            c["temporal_mask_span_len"],
            c["max_temporal_mask_prob"],
            c["min_num_temporal_mask_spans"],
        )
        need = span + 1
        while int(prob / span * (need - 1)) < spans:
            need += 1
        return need
    return int(model.net.config.mask_time_length) + 1


def min_samples(model: SSLModel) -> int:
    """The shortest 16 kHz clip (samples) whose frames satisfy :func:`min_frames`."""
    need, n = min_frames(model), 400
    while frames_of(model, n) < need:
        n += 80
    return n


# ------------------------------------------------------------------------------------------------
# the SSL objective
# ------------------------------------------------------------------------------------------------
def _fs2_layout(seqs: torch.Tensor, lengths: torch.Tensor):
    from fairseq2.nn import BatchLayout

    return BatchLayout.of(seqs, seq_lens=[int(n) for n in lengths.tolist()])


def ssl_losses(
    model: SSLModel, wave: torch.Tensor, lens: torch.Tensor, generator: torch.Generator | None = None
):
    """wav2vec2 loss of right-padded waveforms (B, T): per masked target, with its parts.

    Returns ``{"loss", "contrastive", "diversity", "targets"}``; ``loss`` is contrastive + weight·diversity
    (+ fairseq2's weighted feature penalty), divided by the number of masked targets, as wav2vec2 does.
    Masked spans and distractors: transformers' samplers draw from ``generator`` (through numpy's global
    generator, restored afterwards); fairseq2's masker and sampler draw from torch's global generator.
    """
    cfg = model.cfg
    if model.backend == "fairseq2":
        net = model.net
        stance = "default" if cfg.compile_quantizer else "force_eager"
        with torch.compiler.set_stance(stance):
            loss, out = net(
                wave,
                _fs2_layout(wave, lens),
                diversity_weight=cfg.diversity_weight,
                features_penalty_weight=cfg.features_penalty_weight,
            )
        n = max(int(out.num_targets), 1)
        return {
            "loss": loss.aggregate / n,
            "contrastive": loss.contrastive.detach() / n,
            "diversity": loss.diversity.detach() / n,
            "targets": n,
        }
    return _hf_losses(model, wave, lens, generator)


def _hf_losses(model: SSLModel, wave: torch.Tensor, lens: torch.Tensor, generator: torch.Generator | None):
    import numpy as np
    from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices, _sample_negative_indices

    net, cfg = model.net, model.cfg
    hi, lo, decay = cfg.temperature
    if net.training:
        net.set_gumbel_temperature(max(hi * decay**model.updates, lo))
        model.updates += 1
    bsz, width = wave.shape
    n_frames = int(net._get_feat_extract_output_lengths(torch.tensor(width)))
    frame_lens = net._get_feat_extract_output_lengths(lens.cpu())
    frame_mask = (torch.arange(n_frames)[None] < frame_lens[:, None]).long()  # (B, T')
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    state = np.random.get_state()  # transformers samples masks/negatives with numpy's global RNG
    np.random.seed(seed)
    try:
        mask = _compute_mask_indices(
            (bsz, n_frames),
            mask_prob=net.config.mask_time_prob,
            mask_length=net.config.mask_time_length,
            attention_mask=frame_mask,
            min_masks=2,
        )
        negatives = _sample_negative_indices(
            (bsz, n_frames), net.config.num_negatives, mask_time_indices=mask
        )
    finally:
        np.random.set_state(state)
    attention = (torch.arange(width, device=wave.device)[None] < lens[:, None]).long()  # (B, T)
    out = net(
        wave,
        attention_mask=attention,
        mask_time_indices=torch.from_numpy(mask).to(wave.device),
        sampled_negative_indices=torch.from_numpy(negatives).to(wave.device),
    )
    n = max(int(mask.sum()), 1)
    return {
        "loss": out.loss / n,
        "contrastive": out.contrastive_loss.detach() / n,
        "diversity": out.diversity_loss.detach() / n,
        "targets": n,
    }


class SSLTask:
    """The engine task of ``continue-ssl``: the wav2vec2 loss on unlabelled audio batches."""

    def __init__(
        self, model: SSLModel, seed: int = 0, test: list[dict[str, torch.Tensor]] | None = None
    ) -> None:
        self.model = model
        self.generator = torch.Generator().manual_seed(seed)
        self.test = test

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        out = self.model(batch["wave"], batch["wave_lens"], self.generator)
        return out["loss"], {
            "contrastive": out["contrastive"],
            "diversity": out["diversity"],
            "samples": batch["wave"].shape[0],
            "tokens": out["targets"],
        }

    def evaluate(self) -> dict[str, float]:
        if not self.test:
            return {}
        return {"loss": held_out_ssl_loss(self.model, self.test)}


@torch.no_grad()
def held_out_ssl_loss(model: SSLModel, batches: list[dict[str, torch.Tensor]], seed: int = 1234) -> float:
    """Mean SSL loss on fixed batches in eval mode (hard codebook choice, no dropout) with masks and
    distractors drawn from ``seed``: the same masks on every call, so values are comparable across training."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = 0.0
    # fairseq2's masker and distractor sampler draw from the global generator: fork it, leave it untouched
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        for batch in batches:
            out = model(batch["wave"].to(device), batch["wave_lens"].to(device), generator)
            total += float(out["loss"])
    model.train(was_training)
    return total / max(len(batches), 1)


# ------------------------------------------------------------------------------------------------
# CTC fine-tuning
# ------------------------------------------------------------------------------------------------
class CTCModel(nn.Module):
    """The pretrained encoder + a new linear layer over characters, through each library's CTC model:
    fairseq2's ``Wav2Vec2AsrModel`` (sharing the frontend and transformer modules) or transformers'
    ``Wav2Vec2ForCTC`` (the ``wav2vec2`` weights copied in). Index 0 (padding) is the CTC blank."""

    def __init__(
        self, ssl: SSLModel, n_labels: int, freeze_feature_extractor: bool = True, dropout: float = 0.0
    ):
        super().__init__()
        self.backend = ssl.backend
        self.spec = (
            {"config": ssl.spec["config"]}
            if ssl.backend == "fairseq2"
            else {"hf_config": ssl.net.config.to_dict()}
        )
        if ssl.backend == "fairseq2":
            from fairseq2.models.wav2vec2.asr import Wav2Vec2AsrModel
            from fairseq2.nn import Linear

            net = _fs2_wav2vec2().create_wav2vec2_model(_fs2_config_from_json(ssl.spec["config"]))
            net.load_state_dict(ssl.net.state_dict())  # a copy (deepcopy fails on weight-normed convs)
            self.net = Wav2Vec2AsrModel(
                ssl.model_dim,
                net.encoder_frontend,
                net.encoder,
                Linear(ssl.model_dim, n_labels, bias=True),
                final_dropout_p=dropout,
            )
            if freeze_feature_extractor:
                self.net.encoder_frontend.feature_extractor.requires_grad_(False)
        else:
            from transformers import Wav2Vec2ForCTC

            config = ssl.net.config.to_dict()
            config.update(
                vocab_size=n_labels, pad_token_id=PAD, ctc_loss_reduction="sum", ctc_zero_infinity=True
            )
            config["final_dropout"] = dropout
            config["apply_spec_augment"] = False  # as the fairseq2 path (no masker): plain CTC fine-tuning
            self.net = Wav2Vec2ForCTC(type(ssl.net.config).from_dict(config))
            self.net.wav2vec2.load_state_dict(ssl.net.wav2vec2.state_dict())
            if freeze_feature_extractor:
                self.net.freeze_feature_encoder()

    def forward(
        self, wave: torch.Tensor, lens: torch.Tensor, labels: torch.Tensor, label_lens: torch.Tensor
    ) -> torch.Tensor:
        """CTC loss summed over the batch, divided by the number of target characters."""
        if self.backend == "fairseq2":
            total = self.net(wave, _fs2_layout(wave, lens), labels, _fs2_layout(labels, label_lens))
        else:
            attention = (torch.arange(wave.shape[1], device=wave.device)[None] < lens[:, None]).long()
            hf_labels = labels.masked_fill(
                torch.arange(labels.shape[1], device=labels.device)[None] >= label_lens[:, None], -100
            )
            total = self.net(wave, attention_mask=attention, labels=hf_labels).loss
        return total / label_lens.sum().clamp_min(1)

    def log_probs(self, wave: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame log-probabilities (B, T', V) and frame counts (B,)."""
        if self.backend == "fairseq2":
            logits, out_layout = self.net(wave, _fs2_layout(wave, lens))
            out_lens = torch.tensor(out_layout.seq_lens, device=wave.device)
        else:
            attention = (torch.arange(wave.shape[1], device=wave.device)[None] < lens[:, None]).long()
            logits = self.net(wave, attention_mask=attention).logits
            out_lens = self.net.wav2vec2._get_feat_extract_output_lengths(lens)
        return logits.float().log_softmax(-1), out_lens

    def encoder_state(self) -> dict[str, torch.Tensor]:
        """The encoder weights in :meth:`SSLModel.encoder_state`'s naming."""
        state = self.net.state_dict()
        if self.backend == "fairseq2":
            return {k: v for k, v in state.items() if k.startswith(("encoder_frontend.", "encoder."))}
        return {k: v for k, v in state.items() if k.startswith("wav2vec2.")}


def save_ctc(model: CTCModel, vocab: Vocab, out: Path, extra: dict[str, Any] | None = None) -> Path:
    """The CTC model in :mod:`warmstart.hub`'s format: config.json (backend, encoder config, characters)."""
    from warmstart.hub import ModelCard, save_model

    config = {"backend": model.backend, "n_labels": len(vocab), **model.spec}
    card = ModelCard(title="wav2vec 2.0 CTC model (characters)", paper=PAPER, tags=["wav2vec2", "ctc"])
    return save_model(
        model, out, kind=CTC_KIND, config=config, card=card, extra={"vocab": vocab.to_json(), **(extra or {})}
    )


def load_ctc(path: str | Path) -> tuple[CTCModel, Vocab]:
    """A saved CTC model (``ssl-ctc``'s folder or a hub id) and its character vocabulary."""
    from warmstart.hub import load_model

    def build(config: dict[str, Any]) -> CTCModel:
        if config["backend"] == "fairseq2":
            net = _fs2_wav2vec2().create_wav2vec2_model(_fs2_config_from_json(config["config"]))
            ssl = SSLModel(net, "fairseq2", {"config": config["config"]}, SSLConfig())
        else:
            from transformers import Wav2Vec2Config, Wav2Vec2ForPreTraining

            ssl = SSLModel(
                Wav2Vec2ForPreTraining(Wav2Vec2Config.from_dict(config["hf_config"])), "hf", {}, SSLConfig()
            )
        return CTCModel(ssl, int(config["n_labels"]))

    model, meta = load_model(path, build, kind=CTC_KIND)
    return model, Vocab.from_json(meta["vocab"])


class CTCTask:
    def __init__(self, model: CTCModel, vocab: Vocab, test: list | None = None) -> None:
        self.model = model
        self.vocab = vocab
        self.test = test

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        loss = self.model(batch["wave"], batch["wave_lens"], batch["labels"], batch["label_lens"])
        return loss, {"samples": batch["wave"].shape[0], "tokens": batch["label_lens"].sum()}

    def evaluate(self) -> dict[str, float]:
        return error_rates(self.model, self.test, self.vocab) if self.test else {}


@torch.no_grad()
def transcribe(model: CTCModel, wave: torch.Tensor, lens: torch.Tensor, vocab: Vocab) -> list[str]:
    """Greedy CTC transcripts."""
    from warmstart.objectives import ctc_greedy_decode

    was_training = model.training
    model.eval()
    try:
        log_probs, out_lens = model.log_probs(wave, lens)
    finally:
        model.train(was_training)
    return [vocab.decode(ids) for ids in ctc_greedy_decode(log_probs, out_lens, blank=PAD)]


def error_rates(model: CTCModel, utts: list, vocab: Vocab, batch_size: int = 8) -> dict[str, float]:
    """CER and WER in % (edit distance / reference length) of greedy CTC transcripts on ``utts``."""
    import editdistance

    from warmstart_speech.data import collate_audio

    device = next(model.parameters()).device
    char_err = chars = word_err = words = 0
    order = sorted(utts, key=lambda u: u.waveform.numel())
    for i in range(0, len(order), batch_size):
        chunk = order[i : i + batch_size]
        batch = collate_audio(chunk)
        hyps = transcribe(model, batch["wave"].to(device), batch["wave_lens"].to(device), vocab)
        for hyp, utt in zip(hyps, chunk, strict=True):
            ref = utt.transcript
            char_err += editdistance.eval(list(hyp), list(ref))
            chars += len(ref)
            word_err += editdistance.eval(hyp.split(), ref.split())
            words += len(ref.split())
    return {"cer": 100.0 * char_err / max(chars, 1), "wer": 100.0 * word_err / max(words, 1)}


# ------------------------------------------------------------------------------------------------
# stages on the core's engine
# ------------------------------------------------------------------------------------------------
def continue_ssl(
    model: SSLModel,
    utts: list,
    engine: Any,
    run_dir: Path | None = None,
    resume_from: Path | None = None,
    held_out: list | None = None,
):  # noqa: ANN201
    """Continue (or start) wav2vec2 pretraining of ``model`` on unlabelled waveforms; returns the summary."""
    from warmstart.engine import Engine
    from warmstart_speech.batches import bucket_stream
    from warmstart_speech.data import collate_audio

    torch.manual_seed(engine.train.seed)
    tcfg = engine.train
    data = bucket_stream(utts, tcfg.micro_batch_size, tcfg.seed, tcfg.num_workers, audio=True)
    test = [collate_audio(held_out[i : i + 8]) for i in range(0, len(held_out), 8)] if held_out else None
    task = SSLTask(model, seed=engine.train.seed, test=test)
    return Engine(engine, run_dir).fit(task, data, resume_from=resume_from)


def ctc_finetune(
    ssl: SSLModel,
    train: list,
    test: list | None,
    vocab: Vocab,
    engine: Any,
    run_dir: Path | None = None,
    freeze_feature_extractor: bool = True,
    resume_from: Path | None = None,
) -> tuple[CTCModel, Any]:
    """CTC fine-tuning of the pretrained encoder on labelled waveforms; CER/WER on ``test`` at the end."""
    from warmstart.engine import Engine
    from warmstart_speech.batches import bucket_stream

    torch.manual_seed(engine.train.seed + 1)
    model = CTCModel(ssl, len(vocab), freeze_feature_extractor)  # copies the encoder weights
    tcfg = engine.train
    data = bucket_stream(train, tcfg.micro_batch_size, tcfg.seed, tcfg.num_workers, audio=True)
    summary = Engine(engine, run_dir).fit(CTCTask(model, vocab, test), data, resume_from=resume_from)
    return model, summary
