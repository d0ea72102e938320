"""Code language models: any transformers causal LM (local path or hub id), or a tiny GPT-2 for demos.

Seed context: the B-Coder and Zecoler papers start from a pretrained code LM (CodeRL/CodeT5, CodeBERT); on
this machine no weights can be downloaded, so demos, tests and the bench build a tiny GPT-2 with a
byte-level BPE tokenizer trained on generated code and pretrain it with the core engine. Also here:
padding of (prompt, completion) pairs with the loss on the completion, and batched sampling of k
programs per prompt with stop sequences (transformers ``generate``; stops applied to the decoded text).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from warmstart.errors import UserError

log = logging.getLogger(__name__)
STOP_SEQUENCES = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\n\n\n")


@dataclass
class ModelConfig:
    """Which model: a local directory / hub id, or a tiny GPT-2 built from this config."""

    name_or_path: str | None = None
    """A transformers causal LM directory or hub id (with its tokenizer); null builds the tiny model."""
    n_embd: int = 96
    """Tiny model: width."""
    n_layer: int = 2
    """Tiny model: layers."""
    n_head: int = 4
    """Tiny model: attention heads."""
    vocab_size: int = 384
    """Tiny model: BPE vocabulary size of the tokenizer trained on generated code."""
    max_len: int = 128
    """Tiny model: context length (tokens)."""


def train_tokenizer(texts: Sequence[str], vocab_size: int = 384):
    """A byte-level BPE tokenizer (GPT-2 style, lossless on whitespace) trained on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|endoftext|>",
        pad_token="<|pad|>",
        padding_side="left",
        model_input_names=["input_ids", "attention_mask"],  # no token_type_ids: GPT-2 would embed them
    )


def build_tiny_lm(tokenizer, config: ModelConfig, seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=config.max_len,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(cfg)


def load_lm(name_or_path: str | Path) -> tuple[Any, Any]:
    """(model, tokenizer) from a local directory or hub id; a clear one-line error when either is missing."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(
            f"model {name_or_path}: no usable tokenizer ({str(exc).splitlines()[0][:120]}); "
            f"save one beside the weights (tokenizer.save_pretrained)"
        ) from None
    try:
        model = AutoModelForCausalLM.from_pretrained(str(name_or_path))
    except (OSError, ValueError) as exc:
        raise UserError(
            f"model {name_or_path}: cannot load a causal LM ({str(exc).splitlines()[0][:120]})"
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model, tokenizer


def save_lm(model, tokenizer, out: str | Path) -> Path:
    out = Path(out)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def encode_pairs(
    tokenizer, prompts: Sequence[str], completions: Sequence[str], max_len: int, loss_on_prompt: bool = False
) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``/``attention_mask``/``labels`` (labels on completion + EOS, or everything).

    Prompt and completion are tokenized separately — exactly as at sampling time, where the model continues
    the prompt's tokens — so a BPE merge across the boundary never differs between training and sampling.
    """
    rows, labels = [], []
    for prompt, completion in zip(prompts, completions, strict=True):
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = (p + c)[:max_len]
        rows.append(ids)
        labels.append(((p if loss_on_prompt else [-100] * len(p)) + c)[:max_len])
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)  # (B, T)
    label_t = torch.full((len(rows), width), -100, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
    for i, (r, lab) in enumerate(zip(rows, labels, strict=True)):
        input_ids[i, : len(r)] = torch.tensor(r)
        label_t[i, : len(lab)] = torch.tensor(lab)
        mask[i, : len(r)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": label_t}


def truncate_at_stop(text: str, stops: Sequence[str] = STOP_SEQUENCES) -> str:
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:cut]


@torch.no_grad()
def sample_programs(
    model,
    tokenizer,
    prompts: Sequence[str],
    k: int = 4,
    temperature: float = 0.8,
    top_p: float = 0.95,
    max_new_tokens: int = 48,
    batch_size: int = 16,
    seed: int = 0,
    stops: Sequence[str] = STOP_SEQUENCES,
) -> list[list[str]]:
    """``k`` completions per prompt (k=1 with temperature 0: greedy), cut at the first stop sequence."""
    model.eval()
    device = next(model.parameters()).device
    torch.manual_seed(seed)  # generate() samples from the global generator
    out: list[list[str]] = []
    greedy = temperature <= 0
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start : start + batch_size])
        enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: enc[k].to(device) for k in ("input_ids", "attention_mask")}
        limit = getattr(model.config, "n_positions", None) or getattr(
            model.config, "max_position_embeddings", 4096
        )
        new = max(1, min(max_new_tokens, limit - enc["input_ids"].shape[1]))
        gen = model.generate(
            **enc,
            do_sample=not greedy,
            temperature=None if greedy else temperature,
            top_p=None if greedy else top_p,
            num_return_sequences=k,
            max_new_tokens=new,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        texts = tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        for i in range(len(chunk)):
            out.append([truncate_at_stop(t, stops) for t in texts[i * k : (i + 1) * k]])
    return out
