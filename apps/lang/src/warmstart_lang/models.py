"""Causal language models for the lang app: tiny Llama configs built from scratch, loading any transformers
``*ForCausalLM`` from a local directory or a hub id, and the checks that keep bad input out.

Seed paper: *RedWhale: An Adapted Korean LLM Through Efficient Continual Pretraining* (arXiv 2408.11294),
whose pipeline (extended tokenizer -> embedding init -> staged continual pretraining) this app follows on
any transformers model instead of a fixed registry (LitGPT's limit). Implemented: size presets as named
configs (fairseq2 style), a loader with one-line errors, the tokenizer/model compatibility check and a
memory estimate that refuses a vocabulary too large before anything is allocated. Left out: masked LMs
(``AutoModelForMaskedLM`` loads, but the pipeline trains causal LMs only).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from warmstart.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


@dataclass
class ModelConfig:
    """A Llama-architecture causal LM built from a config (untied input embeddings and output head)."""

    size: Literal["tiny", "small", "100m"] = "tiny"
    """Preset: tiny (~0.1M params, CPU tests), small (~1M), 100m (~100M, GPU)."""
    max_position_embeddings: int = 512
    """Longest sequence the model supports."""
    tie_word_embeddings: bool = False
    """Tie the output head to the input embeddings (the seeds' models are untied)."""


PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4},
    "small": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4},
    "100m": {
        "hidden_size": 768,
        "intermediate_size": 2048,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
    },
}


def build_model(config: ModelConfig, vocab_size: int, *, eos_token_id: int | None = None, seed: int = 0):
    """A freshly initialised ``LlamaForCausalLM`` of the given preset (SDPA attention)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if config.size not in PRESETS:
        raise ConfigError(f"model.size={config.size!r} is unknown: use one of {sorted(PRESETS)}")
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        max_position_embeddings=config.max_position_embeddings,
        tie_word_embeddings=config.tie_word_embeddings,
        eos_token_id=eos_token_id,
        bos_token_id=None,
        attn_implementation="sdpa",
        **PRESETS[config.size],
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)


def load_model(name_or_path: str | Path, *, dtype: torch.dtype | None = None, quantization: Any = None):
    """``AutoModelForCausalLM.from_pretrained`` of a local directory or hub id, with one-line errors."""
    from transformers import AutoModelForCausalLM

    path = Path(name_or_path)
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise CheckpointError(f"{path}: no config.json; pass a directory written by save_pretrained")
        if not any((path / f).is_file() for f in WEIGHT_FILES):
            raise CheckpointError(
                f"{path}: model directory without weights (no model.safetensors or pytorch_model.bin); "
                f"re-save it with save_pretrained"
            )
    kwargs: dict[str, Any] = {}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if quantization is not None:
        kwargs["quantization_config"] = quantization
    try:
        return AutoModelForCausalLM.from_pretrained(str(name_or_path), **kwargs)
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"{name_or_path}: cannot load a causal LM ({str(exc).splitlines()[0][:120]}); pass a local "
            f"directory or a hub id"
        ) from None


def check_tokenizer_fits(model: Any, tokenizer: Any, where: str) -> None:
    """Refuse a tokenizer whose ids do not fit the model's embedding matrix."""
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        raise ConfigError(
            f"{where}: the tokenizer has {len(tokenizer)} tokens but the model only {rows} embedding rows; "
            f"run `warmstart-lang expand` first or pass the matching tokenizer"
        )


def available_memory_bytes() -> int:
    """Free host memory (psutil), the budget for growing an embedding matrix on CPU."""
    import psutil

    return int(psutil.virtual_memory().available)


def check_expansion_memory(model: Any, new_rows: int, *, budget: int | None = None, where: str = "") -> int:
    """Estimate the bytes an expansion to ``new_rows`` allocates; raise before allocating if too many.

    Counted: the grown input matrix and, if untied, the grown head (each rows x D in the parameter dtype),
    plus one transient copy for the initialiser's statistics.
    """
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is emb
    matrices = 1 if tied or head is None else 2
    need = (matrices + 1) * new_rows * emb.shape[1] * emb.element_size()
    budget = available_memory_bytes() if budget is None else budget
    if need > budget:
        raise ConfigError(
            f"{where}: a vocabulary of {new_rows} rows needs ~{need / 2**30:.1f} GiB but only "
            f"{budget / 2**30:.1f} GiB are free; add fewer tokens (--max_new_tokens)"
        )
    return need
