"""Architectures for speech translation, assembled from fairseq2 0.8's transformer building blocks.

Seed paper: "Pre-training for Speech Translation: CTC Meets Optimal Transport" (Le et al., arXiv 2301.11716):
an S2T-Transformer speech encoder (2 × Conv1d k=5 stride-2 subsampler, pre-norm layers) with a CTC head, a
text encoder + decoder from an MT model, and an ST model that reuses the speech encoder and the MT decoder
with no architectural change. Every layer comes from fairseq2's ``S2TTransformerFactory`` and
``fairseq2.nn``; the models are fairseq2 ``TransformerModel`` instances, so fairseq2's beam-search generator
decodes them. Written here: :class:`PaddedFbankSubsampler`, a subclass of fairseq2's ``Conv1dFbankSubsampler``
whose only change is to accept *padded* batches (fairseq2 0.8 rejects them: it checks ``padded`` where it
means ``packed``). ``ModelConfig.encoder="conformer"`` swaps the transformer layers for fairseq2's conformer
blocks (``Wav2Vec2EncoderFactory`` with ``use_conformer=True``). Models are saved and loaded in\n:mod:`warmstart.hub`'s format (a local folder or a hub id); older runs' ``model.json`` folders still load.\nPretrained transformers MT models and speech encoders as sources: :mod:`warmstart_speech.hf_sources`.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from warmstart.errors import CheckpointError
from warmstart_speech.data import PAD, Vocab
from warmstart_speech.fs2 import preload_libsndfile


@dataclass
class ModelConfig:
    model_dim: int = 64
    """Width of every encoder/decoder."""
    speech_layers: int = 2
    """Speech-encoder transformer layers (paper: 12 medium, 18 large)."""
    text_layers: int = 2
    """MT text-encoder layers (paper: 6)."""
    decoder_layers: int = 2
    """Decoder layers (MT decoder, reused by ST; also the CE-baseline ASR decoder)."""
    heads: int = 4
    """Attention heads."""
    ffn_dim: int = 256
    """Feed-forward inner width."""
    subsampler_dim: int = 128
    """Inner width of the Conv1d subsampler (paper: 1024)."""
    dropout: float = 0.1
    """Dropout probability."""
    num_mel_bins: int = 80
    """Input fbank channels."""
    max_source_len: int = 2048
    """Longest speech-encoder input after subsampling."""
    max_target_len: int = 256
    """Longest text sequence."""
    encoder: Literal["transformer", "conformer"] = "transformer"
    """Speech-encoder layers: the S2T pre-norm transformer, or conformer blocks (fairseq2's
    ``Wav2Vec2EncoderFactory`` with ``use_conformer=True``: macaron FFNs, depthwise convolution, post-norm)."""
    conv_kernel: int = 15
    """Depthwise convolution kernel of the conformer blocks (Conformer paper: 31)."""


def _fs2():
    preload_libsndfile()
    from fairseq2.models.s2t_transformer.config import S2TTransformerConfig
    from fairseq2.models.s2t_transformer.factory import S2TTransformerFactory

    return S2TTransformerConfig, S2TTransformerFactory


def _factory(cfg: ModelConfig, target_vocab: int):
    config_cls, factory_cls = _fs2()
    return factory_cls(
        config_cls(
            model_dim=cfg.model_dim,
            max_source_seq_len=cfg.max_source_len,
            num_fbank_channels=cfg.num_mel_bins,
            max_target_seq_len=cfg.max_target_len,
            target_vocab_size=target_vocab,
            pad_idx=PAD,
            num_encoder_layers=cfg.speech_layers,
            num_decoder_layers=cfg.decoder_layers,
            num_encoder_attn_heads=cfg.heads,
            num_decoder_attn_heads=cfg.heads,
            ffn_inner_dim=cfg.ffn_dim,
            dropout_p=cfg.dropout,
        )
    )


def padded_subsampler(cfg: ModelConfig) -> nn.Module:
    """fairseq2's S2T Conv1d fbank subsampler (k=5, stride 2, twice) that accepts padded batches."""
    preload_libsndfile()
    from fairseq2.models.s2t_transformer.feature_extractor import Conv1dFbankSubsampler
    from fairseq2.nn import BatchLayout

    class PaddedFbankSubsampler(Conv1dFbankSubsampler):
        def forward(self, seqs: torch.Tensor, seqs_layout: BatchLayout):  # noqa: ANN202
            seqs = self.layers(seqs.transpose(1, 2)).transpose(1, 2)  # (B, T, C) → (B, T', D)
            seq_lens = self._contract_seq_lens(seqs_layout.seq_lens) if seqs_layout.padded else None
            return seqs, BatchLayout.of(seqs, seq_lens)

    return PaddedFbankSubsampler(cfg.num_mel_bins, cfg.subsampler_dim, cfg.model_dim, kernel_sizes=[5, 5])


def subsampled_lengths(lengths: torch.Tensor) -> torch.Tensor:
    """Frames after the two stride-2 convolutions (padding k//2): ⌊(L − 1)/2⌋ + 1, twice."""
    for _ in range(2):
        lengths = torch.div(lengths - 1, 2, rounding_mode="floor") + 1
    return lengths


def layout(seqs: torch.Tensor, lengths: torch.Tensor):
    """fairseq2 ``BatchLayout`` of right-padded (B, T, ...) ``seqs``."""
    from fairseq2.nn import BatchLayout

    return BatchLayout.of(seqs, seq_lens=[int(n) for n in lengths.tolist()])


def conformer_encoder(cfg: ModelConfig) -> nn.Module:
    """A fairseq2 conformer encoder (``StandardTransformerEncoder`` of ``ConformerBlock``s) of ``cfg``'s size.

    Built by ``Wav2Vec2EncoderFactory(Wav2Vec2EncoderConfig(use_conformer=True))``, which requires the POST
    norm order (each block ends with its own layer norm); attention uses fairseq2's default SDPA, positions come
    from the S2T frontend's sinusoidal encoder as for the transformer encoder.
    """
    preload_libsndfile()
    from fairseq2.models.transformer import TransformerNormOrder
    from fairseq2.models.wav2vec2 import Wav2Vec2EncoderConfig, Wav2Vec2EncoderFactory

    config = Wav2Vec2EncoderConfig(
        model_dim=cfg.model_dim,
        max_seq_len=cfg.max_source_len,
        use_conformer=True,
        norm_order=TransformerNormOrder.POST,
        depthwise_conv_kernel_size=cfg.conv_kernel,
        num_encoder_layers=cfg.speech_layers,
        num_encoder_attn_heads=cfg.heads,
        ffn_inner_dim=cfg.ffn_dim,
        dropout_p=cfg.dropout,
        attn_dropout_p=cfg.dropout,
        layer_drop_p=0.0,
        pos_encoder_type="conv",  # absolute positions from our frontend; no relative-position SDPA
    )
    return Wav2Vec2EncoderFactory(config).create_encoder()


class SpeechEncoder(nn.Module):
    """fbank (B, T, C) → subsampler + sinusoidal positions → pre-norm transformer (or conformer blocks)
    → (B, T/4, D), CTC head."""

    def __init__(self, cfg: ModelConfig, n_phonemes: int) -> None:
        super().__init__()
        preload_libsndfile()
        from fairseq2.models.s2t_transformer.frontend import S2TTransformerFrontend
        from fairseq2.nn import SinusoidalPositionEncoder

        factory = _factory(cfg, n_phonemes)
        self.frontend = S2TTransformerFrontend(
            cfg.model_dim,
            padded_subsampler(cfg),
            SinusoidalPositionEncoder(cfg.model_dim, cfg.max_source_len),
            proj=None,
            dropout_p=cfg.dropout,
        )
        self.encoder = conformer_encoder(cfg) if cfg.encoder == "conformer" else factory.create_encoder()
        self.ctc_head = nn.Linear(cfg.model_dim, n_phonemes)

    def forward(self, fbank: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seqs, seqs_layout = self.frontend(fbank, layout(fbank, lengths))
        out = self.encoder(seqs, seqs_layout)  # (B, T', D)
        return out, subsampled_lengths(lengths).to(out.device)


def build_mt(cfg: ModelConfig, src_vocab: int, tgt_vocab: int) -> nn.Module:
    """A fairseq2 ``TransformerModel``: phoneme ids → target words (its encoder is the OT teacher)."""
    preload_libsndfile()
    from fairseq2.models.transformer import TransformerEmbeddingFrontend, TransformerModel
    from fairseq2.nn import SinusoidalPositionEncoder, StandardEmbedding, init_scaled_embedding

    text_cfg = copy.copy(cfg)
    text_cfg.speech_layers = cfg.text_layers
    factory = _factory(text_cfg, tgt_vocab)
    source_frontend = TransformerEmbeddingFrontend(
        cfg.model_dim,
        StandardEmbedding(src_vocab, cfg.model_dim, PAD, init_fn=init_scaled_embedding),
        SinusoidalPositionEncoder(cfg.model_dim, cfg.max_target_len),
        dropout_p=cfg.dropout,
    )
    return TransformerModel(
        cfg.model_dim,
        source_frontend,
        factory.create_encoder(),
        factory.create_decoder_frontend(),
        factory.create_decoder(),
        factory.create_final_projection(),
        PAD,
        cfg.max_target_len,
        cfg.max_target_len,
    )


def build_speech_seq2seq(
    cfg: ModelConfig, encoder: SpeechEncoder, target_vocab: int, decoder_from: nn.Module | None = None
):
    """Speech encoder + a decoder: copied from ``decoder_from`` (an MT model: the ST model) or new (CE/ASR)."""
    from fairseq2.models.transformer import TransformerModel

    if decoder_from is not None:
        dec_frontend = copy.deepcopy(decoder_from.decoder_frontend)
        decoder = copy.deepcopy(decoder_from.decoder)
        proj = copy.deepcopy(decoder_from.final_proj)
    else:
        factory = _factory(cfg, target_vocab)
        dec_frontend, decoder, proj = (
            factory.create_decoder_frontend(),
            factory.create_decoder(),
            factory.create_final_projection(),
        )
    return TransformerModel(
        cfg.model_dim,
        encoder.frontend,
        encoder.encoder,
        dec_frontend,
        decoder,
        proj,
        PAD,
        cfg.max_source_len,
        cfg.max_target_len,
    )


# ------------------------------------------------------------------------------------------------
# saving / loading: warmstart.hub's one format (config.json + model.safetensors + README.md card);
# folders of older runs (model.json + model.safetensors) still load
# ------------------------------------------------------------------------------------------------
PAPER = "Pre-training for Speech Translation: CTC Meets Optimal Transport (Le et al., arXiv 2301.11716)"
HUB_KINDS = {"mt": "speech.mt", "speech-encoder": "speech.encoder", "st": "speech.st"}
TITLES = {
    "mt": "MT model (phonemes → target pieces): the CTC+OT teacher and ST decoder",
    "speech-encoder": "Speech encoder pretrained with CTC / CTC+OT / CE",
    "st": "Speech-translation model (speech encoder + MT decoder)",
}


def build_stage(kind: str, cfg: ModelConfig, n_src: int, n_tgt: int) -> nn.Module:
    """An untrained model of a stage's kind (``mt``, ``speech-encoder``, ``st``) and vocabulary sizes."""
    if kind == "mt":
        return build_mt(cfg, n_src, n_tgt)
    if kind == "speech-encoder":
        return SpeechEncoder(cfg, n_src)
    return build_speech_seq2seq(cfg, SpeechEncoder(cfg, n_src), n_tgt)


def save_model(
    out: Path,
    kind: str,
    model: nn.Module,
    cfg: ModelConfig,
    vocabs: dict[str, Vocab],
    extra: dict[str, Any] | None = None,
    card: Any = None,
) -> Path:
    """Write a stage's model with :func:`warmstart.hub.save_model` (vocabularies and ``extra`` in config.json)."""
    from warmstart.hub import ModelCard
    from warmstart.hub import save_model as hub_save

    extra = dict(extra or {})
    card = card or ModelCard(
        title=TITLES[kind],
        paper=PAPER,
        metrics={k: v for k, v in extra.items() if isinstance(v, int | float)},
        tags=["speech-translation", "fairseq2"],
    )
    config = {"stage": kind, "model": asdict(cfg), "n_src": len(vocabs["src"]), "n_tgt": len(vocabs["tgt"])}
    return hub_save(
        model,
        out,
        kind=HUB_KINDS[kind],
        config=config,
        card=card,
        extra={"vocabs": {k: v.to_json() for k, v in vocabs.items()}, **extra},
    )


def load_stage(
    path: str | Path, kind: str
) -> tuple[ModelConfig, dict[str, Vocab], nn.Module, dict[str, Any]]:
    """(architecture, vocabularies, model, metadata) of a finished ``mt-train`` / ``pretrain`` / ``st-train``
    folder (or hub id): the hub format, or the model.json layout of older runs."""
    path_ = Path(path)
    if path_.is_dir() and (path_ / "model.json").is_file() and not (path_ / "config.json").is_file():
        return _load_old_layout(path_, kind)
    from warmstart.hub import load_model

    def build(config: dict[str, Any]) -> nn.Module:
        return build_stage(kind, ModelConfig(**config["model"]), config["n_src"], config["n_tgt"])

    if not path_.exists() and str(path).count("/") != 1:
        raise CheckpointError(f"{path}: no such folder; pass the --out folder of a finished run")
    model, meta = load_model(path, build, kind=HUB_KINDS[kind])
    vocabs = {k: Vocab.from_json(v) for k, v in meta["vocabs"].items()}
    return ModelConfig(**meta["config"]["model"]), vocabs, model, meta


def _load_old_layout(
    path: Path, kind: str
) -> tuple[ModelConfig, dict[str, Vocab], nn.Module, dict[str, Any]]:
    meta = load_meta(path, kind)
    cfg, vocabs = config_from(meta), load_vocabs(meta)
    model = build_stage(kind, cfg, len(vocabs["src"]), len(vocabs["tgt"]))
    return cfg, vocabs, load_state(model, path), meta


def load_meta(path: Path, kind: str | tuple[str, ...]) -> dict[str, Any]:
    """model.json of an older run's folder, its kind checked."""
    path = Path(path)
    meta_file = path / "model.json"
    if not meta_file.is_file() or not (path / "model.safetensors").is_file():
        raise CheckpointError(
            f"{path}: no config.json (or model.json) + model.safetensors; pass the --out folder of a finished run"
        )
    meta = json.loads(meta_file.read_text())
    kinds = (kind,) if isinstance(kind, str) else kind
    if meta.get("kind") not in kinds:
        raise CheckpointError(f"{path}: holds a {meta.get('kind')!r} model, expected {' or '.join(kinds)}")
    return meta


def load_state(model: nn.Module, path: Path, strict: bool = True) -> nn.Module:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights = Path(path) / "model.safetensors"
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(
            f"{weights}: cannot be read ({exc}); train or download the model again"
        ) from None
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: weights do not fit the model in model.json ({str(exc).splitlines()[0]})"
        ) from exc
    return model


def load_vocabs(meta: dict[str, Any]) -> dict[str, Vocab]:
    return {k: Vocab.from_json(v) for k, v in meta["vocabs"].items()}


def config_from(meta: dict[str, Any]) -> ModelConfig:
    return ModelConfig(**meta["config"])  # older folders lack ``encoder``: the transformer default
