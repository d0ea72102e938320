"""Contrastive objectives: InfoNCE, NT-Xent, the symmetric CLIP loss with a learnable temperature, soft labels.

Seed papers: "Representation Learning with Contrastive Predictive Coding" (InfoNCE, arXiv 1807.03748);
"A Simple Framework for Contrastive Learning of Visual Representations" (SimCLR's NT-Xent, arXiv 2002.05709);
"Learning Transferable Visual Models From Natural Language Supervision" (CLIP, arXiv 2103.00020) for the
symmetric loss and the learnable logit scale (init 1/0.07, clamped at 100); "Multi-Label Guided Soft
Contrastive Learning for Efficient Earth Observation Pretraining" (SoftCon, arXiv 2405.20462) for targets
made from label overlap. Written by hand: each is a few lines of ``cross_entropy`` over a similarity matrix.
Left out: gathering negatives across ranks (a caller can all-gather the features first) and SoftCon's exact
target normalisation (*unverified*; we use row-normalised similarities as a soft cross-entropy target).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn


def similarity_logits(a: torch.Tensor, b: torch.Tensor, temperature: float | torch.Tensor) -> torch.Tensor:
    """Cosine similarities divided by the temperature: (N, D) × (M, D) → (N, M)."""
    return F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T / temperature


def info_nce(
    query: torch.Tensor,
    key: torch.Tensor,
    *,
    temperature: float | torch.Tensor = 0.07,
    symmetric: bool = False,
) -> torch.Tensor:
    """InfoNCE with in-batch negatives: ``query[i]``'s positive is ``key[i]``; the other keys are negatives.

    ``query`` and ``key`` are (N, D) and are L2-normalised here. ``symmetric`` averages both directions
    (CLIP's loss).
    """
    logits = similarity_logits(query, key, temperature)  # (N, N)
    targets = torch.arange(logits.shape[0], device=logits.device)
    loss = F.cross_entropy(logits, targets)
    if symmetric:
        loss = 0.5 * (loss + F.cross_entropy(logits.T, targets))
    return loss


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float | torch.Tensor = 0.07) -> torch.Tensor:
    """NT-Xent (SimCLR; lightly's ``NTXentLoss``) over the 2N L2-normalised features of (N, D) ``a`` and ``b``.

    Each feature's positive is its pair (``a[i]`` ↔ ``b[i]``); its negatives are the other 2N − 2 features of
    both views (same-view negatives included, unlike :func:`info_nce`'s symmetric CLIP loss); self-similarity
    is excluded. The loss is the mean over all 2N anchors.
    """
    z = F.normalize(torch.cat([a, b]).float(), dim=-1)  # (2N, D)
    logits = z @ z.T / temperature
    n = a.shape[0]
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(logits, targets)


class ClipLoss(nn.Module):
    """Symmetric CLIP loss with a learnable temperature, stored as ``log(1/τ)`` and clamped at ``max_scale``.

    >>> criterion = ClipLoss()                      # τ starts at 0.07
    >>> loss = criterion(image_features, text_features)
    """

    def __init__(self, init_temperature: float = 0.07, max_scale: float = 100.0) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))
        self.max_scale = max_scale

    @property
    def temperature(self) -> torch.Tensor:
        return 1.0 / self.logit_scale.exp().clamp(max=self.max_scale)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return info_nce(a, b, temperature=self.temperature, symmetric=True)


def label_similarity(
    labels: torch.Tensor, other: torch.Tensor | None = None, *, kind: Literal["jaccard", "cosine"] = "jaccard"
) -> torch.Tensor:
    """Pairwise similarity of multi-hot (or soft) label vectors: (N, C) × (M, C) → (N, M) in [0, 1].

    ``jaccard``: |a ∧ b| / |a ∨ b| with min/max for soft labels (1 when both are empty); ``cosine``: cosine of
    the label vectors (0 for an empty one).
    """
    a = labels.float()
    b = a if other is None else other.float()
    if kind == "cosine":
        return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
    inter = torch.minimum(a[:, None, :], b[None, :, :]).sum(-1)  # (N, M)
    union = torch.maximum(a[:, None, :], b[None, :, :]).sum(-1)
    return torch.where(union > 0, inter / union.clamp_min(1e-12), torch.ones_like(union))


def soft_contrastive_loss(
    a: torch.Tensor,
    b: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float | torch.Tensor = 0.07,
    symmetric: bool = True,
) -> torch.Tensor:
    """Cross-entropy between softmax of the similarity logits and row-normalised soft targets.

    ``targets`` (N, N) are non-negative similarities (e.g. :func:`label_similarity`); each row is divided by
    its sum. With ``targets = eye(N)`` this is exactly :func:`info_nce`.
    """
    logits = similarity_logits(a, b, temperature)  # (N, N)
    t = targets.float()
    row = t / t.sum(dim=1, keepdim=True).clamp_min(1e-12)
    loss = -(row * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    if symmetric:
        col = t.T / t.T.sum(dim=1, keepdim=True).clamp_min(1e-12)
        loss = 0.5 * (loss - (col * F.log_softmax(logits.T, dim=1)).sum(dim=1).mean())
    return loss
