"""Perplexity is token-weighted across batches and ignores padding / masked targets."""

from __future__ import annotations

import math

import torch

from warmstart.eval import perplexity
from warmstart.objectives import clm_loss


class _Fixed(torch.nn.Module):
    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.logits = torch.nn.Parameter(
            torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(0))
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.logits[input_ids]  # (B, T, V): a bigram model


def test_uniform_model_has_perplexity_vocab() -> None:
    model = lambda input_ids: torch.zeros(*input_ids.shape, 13)  # noqa: E731
    out = perplexity(model, [torch.randint(13, (2, 9)), torch.randint(13, (3, 4))])
    assert math.isclose(out["perplexity"], 13.0, rel_tol=1e-6)
    assert out["tokens"] == 2 * 8 + 3 * 3


def test_token_weighted_not_batch_mean_and_padding_ignored() -> None:
    model = _Fixed(7)
    model.train()
    g = torch.Generator().manual_seed(1)
    b1 = torch.randint(7, (1, 20), generator=g)
    b2 = torch.randint(7, (4, 3), generator=g)
    attn = torch.ones(4, 3, dtype=torch.long)
    attn[0, 2] = 0
    out = perplexity(model, [b1, {"input_ids": b2, "attention_mask": attn}])
    with torch.no_grad():
        s1 = clm_loss(model(b1), b1, reduction="sum")
        labels2 = b2.masked_fill(attn == 0, -100)
        s2 = clm_loss(model(b2), labels2, reduction="sum")
    n = 19 + (4 * 2 - 1)
    assert out["tokens"] == n
    assert math.isclose(out["nll"], float(s1 + s2) / n, rel_tol=1e-6)
    batch_mean = (float(s1) / 19 + float(s2) / 7) / 2
    assert not math.isclose(out["nll"], batch_mean, rel_tol=1e-3)
    assert model.training  # mode restored


def test_hf_style_output_object() -> None:
    class Out:
        def __init__(self, logits: torch.Tensor) -> None:
            self.logits = logits

    class M(torch.nn.Module):
        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kw: object
        ) -> Out:
            return Out(torch.zeros(*input_ids.shape, 5))

    assert math.isclose(
        perplexity(M(), [torch.zeros(1, 4, dtype=torch.long)])["perplexity"], 5.0, rel_tol=1e-6
    )
