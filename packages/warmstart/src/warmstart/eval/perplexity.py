"""Token-weighted perplexity of a causal language model over batches.

Seed definition: perplexity = exp(total next-token negative log-likelihood / number of predicted tokens),
as in "Language Models are Unsupervised Multitask Learners" (GPT-2) evaluations and HF's perplexity guide —
token-weighted across batches, *not* a mean of per-batch perplexities. Written by hand (a loop around
:func:`~warmstart.objectives.clm_loss`). Left out: sliding-window (strided) evaluation of long documents.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from warmstart.objectives.lm import IGNORE_INDEX, clm_loss


def forward_logits(
    model: Callable[..., Any], input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Call ``model(input_ids=..., attention_mask=...)`` and return logits (B, T, V).

    Accepts models returning a tensor or an object/dict with ``logits`` (transformers); a model whose
    ``forward`` takes no ``attention_mask`` keyword is called with the ids alone.
    """
    if _takes_attention_mask(model):
        out = model(input_ids=input_ids, attention_mask=attention_mask)
    else:
        out = model(input_ids)
    if isinstance(out, torch.Tensor):
        return out
    logits: torch.Tensor = out["logits"] if isinstance(out, Mapping) else out.logits
    return logits


def _takes_attention_mask(model: Callable[..., Any]) -> bool:
    fn = model.forward if isinstance(model, torch.nn.Module) else model
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "attention_mask" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


@torch.no_grad()
def perplexity(
    model: Callable[..., Any],
    batches: Iterable[torch.Tensor | Mapping[str, torch.Tensor]],
    *,
    device: torch.device | str | None = None,
    max_batches: int | None = None,
) -> dict[str, float]:
    """Token-weighted perplexity: ``exp(Σ NLL / Σ tokens)`` over every predicted token of every batch.

    A batch is an ids tensor (B, T) or a mapping with ``input_ids`` and optionally ``labels`` (``-100`` =
    no target), ``attention_mask`` (0 = padding, not a target) and ``loss_mask``. Returns ``perplexity``,
    ``nll`` (mean per token) and ``tokens``. The model is put in eval mode and restored afterwards.
    """
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    total_nll, total_tokens = 0.0, 0
    try:
        for i, batch in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            if isinstance(batch, torch.Tensor):
                batch = {"input_ids": batch}
            ids = batch["input_ids"]
            attn = batch.get("attention_mask")
            labels = batch.get("labels", ids)
            if attn is not None:
                labels = labels.masked_fill(attn == 0, IGNORE_INDEX)
            if device is not None:
                ids, labels = ids.to(device), labels.to(device)
                attn = attn.to(device) if attn is not None else None
            loss_mask = batch.get("loss_mask")
            if loss_mask is not None:
                loss_mask = loss_mask.to(labels.device)
            logits = forward_logits(model, ids, attn)
            total_nll += float(clm_loss(logits, labels, loss_mask=loss_mask, reduction="sum"))
            weight = labels[:, 1:] != IGNORE_INDEX
            if loss_mask is not None:
                weight = weight & loss_mask[:, 1:].bool()
            total_tokens += int(weight.sum())
    finally:
        if was_training and hasattr(model, "train"):
            model.train()
    if total_tokens == 0:
        raise ValueError("no predicted tokens in the batches")
    nll = total_nll / total_tokens
    return {"perplexity": math.exp(nll), "nll": nll, "tokens": float(total_tokens)}
