"""Ready-made tasks for the engine: a causal language model (any transformers ``*ForCausalLM``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn


class CausalLMTask:
    """Next-token prediction on batches of ``input_ids`` (a tensor, or a dict with optional
    ``attention_mask`` and ``labels``; label -100 is ignored). ``evaluate()`` gives held-out loss and
    perplexity, token-weighted, on ``eval_batches``."""

    def __init__(self, model: nn.Module, eval_batches: Sequence[Any] = ()) -> None:
        self.model = model
        self.eval_batches = list(eval_batches)

    @staticmethod
    def _unpack(batch: Any) -> dict[str, torch.Tensor]:
        if isinstance(batch, torch.Tensor):
            return {"input_ids": batch, "labels": batch}
        fields: dict[str, torch.Tensor] = dict(batch)
        fields.setdefault("labels", fields["input_ids"])
        return fields

    def loss(self, batch: Any) -> tuple[torch.Tensor, Mapping[str, Any]]:
        inputs = self._unpack(batch)
        out = self.model(**inputs)
        tokens = int((inputs["labels"][:, 1:] != -100).sum())
        return out.loss, {"tokens": tokens}

    def evaluate(self) -> dict[str, float]:
        if not self.eval_batches:
            return {}
        from warmstart.eval import perplexity

        device = next(self.model.parameters()).device
        result = perplexity(self.model, self.eval_batches, device=device)
        return {"loss": result["nll"], "perplexity": result["perplexity"]}
