"""Language models for the lang app: tiny configs of every family built from scratch, loading any served
transformers model (decoder, encoder, T5-style encoder-decoder) from a local directory or a hub id, and
the checks that keep bad input out.

Seed paper: *RedWhale: An Adapted Korean LLM Through Efficient Continual Pretraining* (arXiv 2408.11294),
whose pipeline (extended tokenizer -> embedding init -> staged continual pretraining) this app follows on
any transformers model instead of a fixed registry (LitGPT's limit). Implemented: size presets as named
configs per architecture (fairseq2 style: Llama, GPT-2, BERT, RoBERTa, XLM-R, DeBERTa-v2, T5), a loader
that detects the family from the config (:mod:`warmstart_lang.families`) and turns unreadable weights into
one line, the tokenizer/model compatibility check and a memory estimate that refuses a vocabulary too
large before anything is allocated. Left out: sharded hub checkpoints' partial downloads (the hub's).
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


Architecture = Literal["llama", "gpt2", "bert", "roberta", "xlm-roberta", "deberta-v2", "t5"]


@dataclass
class ModelConfig:
    """A model built from a config (Llama by default: untied input embeddings and output head)."""

    size: Literal["tiny", "small", "100m"] = "tiny"
    """Preset: tiny (~0.1M params, CPU tests), small (~1M), 100m (~100M, GPU)."""
    architecture: Architecture = "llama"
    """llama / gpt2 (decoders), bert / roberta / xlm-roberta / deberta-v2 (masked LMs), t5 (span corruption)."""
    max_position_embeddings: int = 512
    """Longest sequence the model supports."""
    tie_word_embeddings: bool = False
    """Tie the output head to the input embeddings (the seeds' decoders are untied; encoders always tie)."""


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


def _special(tokenizer: Any, name: str, default: int | None = None) -> int | None:
    value = getattr(tokenizer, f"{name}_token_id", None) if tokenizer is not None else None
    return default if value is None else int(value)


def build_model(
    config: ModelConfig,
    vocab_size: int,
    *,
    eos_token_id: int | None = None,
    tokenizer: Any = None,
    seed: int = 0,
):
    """A freshly initialised model of the preset and architecture (special ids from ``tokenizer``)."""
    import transformers

    if config.size not in PRESETS:
        raise ConfigError(f"model.size={config.size!r} is unknown: use one of {sorted(PRESETS)}")
    p = PRESETS[config.size]
    eos = eos_token_id if eos_token_id is not None else _special(tokenizer, "eos")
    pad = _special(tokenizer, "pad")
    arch = config.architecture
    if arch == "llama":
        cfg = transformers.LlamaConfig(
            vocab_size=vocab_size,
            max_position_embeddings=config.max_position_embeddings,
            tie_word_embeddings=config.tie_word_embeddings,
            eos_token_id=eos,
            bos_token_id=None,
            attn_implementation="sdpa",
            **p,
        )
        cls = transformers.LlamaForCausalLM
    elif arch == "gpt2":
        cfg = transformers.GPT2Config(
            vocab_size=vocab_size,
            n_positions=config.max_position_embeddings,
            n_embd=p["hidden_size"],
            n_inner=p["intermediate_size"],
            n_layer=p["num_hidden_layers"],
            n_head=p["num_attention_heads"],
            eos_token_id=eos,
            bos_token_id=eos,
            tie_word_embeddings=config.tie_word_embeddings,
        )
        cls = transformers.GPT2LMHeadModel
    elif arch in ("bert", "roberta", "xlm-roberta", "deberta-v2"):
        classes = {
            "bert": (transformers.BertConfig, transformers.BertForMaskedLM),
            "roberta": (transformers.RobertaConfig, transformers.RobertaForMaskedLM),
            "xlm-roberta": (transformers.XLMRobertaConfig, transformers.XLMRobertaForMaskedLM),
            "deberta-v2": (transformers.DebertaV2Config, transformers.DebertaV2ForMaskedLM),
        }
        config_cls, cls = classes[arch]
        roberta_like = arch in ("roberta", "xlm-roberta")
        cfg = config_cls(
            vocab_size=vocab_size,
            max_position_embeddings=config.max_position_embeddings + (2 if roberta_like else 0),
            pad_token_id=pad if pad is not None else (1 if roberta_like else 0),
            bos_token_id=_special(tokenizer, "cls", _special(tokenizer, "bos")),
            eos_token_id=_special(tokenizer, "sep", eos),
            type_vocab_size=1 if roberta_like else 2,
            **p,
        )
    elif arch == "t5":
        cfg = transformers.T5Config(
            vocab_size=vocab_size,
            d_model=p["hidden_size"],
            d_ff=p["intermediate_size"],
            num_layers=p["num_hidden_layers"],
            num_heads=p["num_attention_heads"],
            d_kv=p["hidden_size"] // p["num_attention_heads"],
            pad_token_id=pad if pad is not None else 0,
            eos_token_id=eos if eos is not None else 1,
            decoder_start_token_id=pad if pad is not None else 0,
            tie_word_embeddings=config.tie_word_embeddings,
        )
        cls = transformers.T5ForConditionalGeneration
    else:
        raise ConfigError(f"model.architecture={arch!r} is unknown: use one of {Architecture.__args__}")  # type: ignore[attr-defined]
    torch.manual_seed(seed)
    return cls(cfg)


def _check_dir(path: Path) -> None:
    if not path.is_dir() or not (path / "config.json").is_file():
        raise CheckpointError(f"{path}: no config.json; pass a directory written by save_pretrained")
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        raise CheckpointError(
            f"{path}: model directory without weights (no model.safetensors or pytorch_model.bin); "
            f"re-save it with save_pretrained"
        )


def load_config(name_or_path: str | Path) -> Any:
    """``AutoConfig`` of a model directory or hub id, with one-line errors."""
    from transformers import AutoConfig

    path = Path(name_or_path)
    if path.exists():
        _check_dir(path)
    try:
        return AutoConfig.from_pretrained(str(name_or_path))
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"{name_or_path}: cannot read the model config ({_first_line(exc)}); pass a local directory "
            f"written by save_pretrained or a hub id"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:120]


def load_model(name_or_path: str | Path, *, dtype: torch.dtype | None = None, quantization: Any = None):
    """Load a served model with its family's auto class (``AutoModelForCausalLM`` / ``...MaskedLM`` /
    ``...Seq2SeqLM``); unserved classes, unreadable or truncated weights raise one-line errors."""
    from warmstart_lang.families import auto_class, detect_family

    config = load_config(name_or_path)
    family = detect_family(config, str(name_or_path))
    kwargs: dict[str, Any] = {}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if quantization is not None:
        kwargs["quantization_config"] = quantization
    try:
        return auto_class(family).from_pretrained(str(name_or_path), **kwargs)
    except (OSError, ValueError, RuntimeError, EOFError) as exc:
        raise CheckpointError(
            f"{name_or_path}: cannot load the {family.name} model ({_first_line(exc)}); re-save it with "
            f"save_pretrained or re-download it"
        ) from None
    except Exception as exc:  # safetensors' SafetensorError (truncated / corrupt file) is a bare Exception
        if type(exc).__name__ != "SafetensorError":
            raise
        raise CheckpointError(
            f"{name_or_path}: the weights file is truncated or corrupt ({_first_line(exc)}); re-save it with "
            f"save_pretrained or re-download it"
        ) from None


def check_tokenizer_fits(model: Any, tokenizer: Any, where: str) -> None:
    """Refuse a tokenizer whose ids do not fit the model's embedding matrix."""
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        raise ConfigError(
            f"{where}: the tokenizer has {len(tokenizer)} tokens but the model only {rows} embedding rows; "
            f"run `warmstart-lang expand` first or pass the matching tokenizer"
        )


def check_keeps_old_ids(old_tokenizer: Any, new_tokenizer: Any, where: str, base: str = "<model>") -> None:
    """Refuse a tokenizer that does not keep every old token at its old id (it would overwrite old rows)."""
    new_vocab = new_tokenizer.get_vocab()
    for tok, idx in sorted(old_tokenizer.get_vocab().items(), key=lambda kv: kv[1]):
        got = new_vocab.get(tok)
        if got != idx:
            what = "is missing" if got is None else f"has id {got}"
            raise ConfigError(
                f"{where}: the new tokenizer does not extend the model's own: old token {tok!r} (id {idx}) "
                f"{what}; make it with `warmstart-lang tokenizer-extend --base {base}`"
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
