"""CW2V (constrained word2vec): new rows as trained convex combinations of the old ones.

Seed paper: *An Empirical Comparison of Vocabulary Expansion and Initialization Approaches for Language
Models* (Mundra et al., CoNLL 2024, arXiv 2407.05841). Rows = softmax(A1 @ A2) @ E_old with the old rows
frozen, A trained skip-gram style with negative sampling on target text (so every new row stays inside
the convex hull of the old ones). Left out: the reference code's full-corpus training schedule.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from warmstart.init.rows import _work_dtype, make_generator

logger = logging.getLogger(__name__)


@dataclass
class CW2VConfig:
    """Training settings for CW2V (defaults follow the reference code except ``rank`` and ``lr``)."""

    rank: int = 256
    """Width r of the factorisation A = A1 (n_new x r) @ A2 (r x V_old); the reference code uses 1024."""
    window: int = 5
    """Skip-gram window (tokens each side)."""
    negatives: int = 5
    """Negative samples per (centre, context) pair, drawn from unigram^0.75 of the corpus."""
    lr: float = 3e-3
    """Adam learning rate (the reference uses 3e-4 over a large corpus; tiny corpora need more)."""
    epochs: int = 3
    """Passes over the (centre, context) pairs that involve a new token."""
    batch_size: int = 512
    """Pairs per step."""
    max_steps: int | None = None
    """Stop after this many steps (for benchmarks); None runs every epoch."""
    init_scale: float = 0.1
    """Std of the initial logits A1 @ A2 (small: the start is close to the mean of the old rows)."""


@dataclass
class CW2VResult:
    """Rows found by CW2V and the training trace."""

    rows: Tensor  # (n_new, D) input-embedding rows
    head_rows: Tensor | None  # (n_new, D_head) output rows when a separate head was given
    losses: list[float] = field(default_factory=list)
    a1: Tensor | None = None  # (n_new, r)
    a2: Tensor | None = None  # (r, V_old)
    head_a1: Tensor | None = None
    head_a2: Tensor | None = None

    def weights(self, head: bool = False) -> Tensor:
        """The convex weights softmax(A1 @ A2), (n_new, V_old): rows are >= 0 and sum to 1."""
        a1, a2 = (self.head_a1, self.head_a2) if head else (self.a1, self.a2)
        assert a1 is not None and a2 is not None
        return torch.softmax(a1 @ a2, dim=-1)


class _ConvexRows(nn.Module):
    """Trainable factorised logits; ``forward(ids)`` gives softmax(A1[ids] @ A2) @ E_old."""

    def __init__(self, old: Tensor, n_new: int, cfg: CW2VConfig, g: torch.Generator) -> None:
        super().__init__()
        self.register_buffer("old", old.detach(), persistent=False)  # (V_old, D), frozen
        v = old.shape[0]
        r = min(cfg.rank, v)
        a1 = torch.randn(n_new, r, generator=g, device=old.device, dtype=old.dtype) / math.sqrt(r)
        a2 = torch.randn(r, v, generator=g, device=old.device, dtype=old.dtype) * cfg.init_scale
        self.a1 = nn.Parameter(a1)  # (n_new, r)
        self.a2 = nn.Parameter(a2)  # (r, V_old)

    def forward(self, new_ids: Tensor) -> Tensor:
        w = torch.softmax(self.a1[new_ids] @ self.a2, dim=-1)  # (U, V_old)
        return w @ self.old  # (U, D)

    @torch.no_grad()
    def all_rows(self, chunk: int = 2048) -> Tensor:
        n = self.a1.shape[0]
        return torch.cat(
            [self(torch.arange(s, min(s + chunk, n), device=self.a1.device)) for s in range(0, n, chunk)]
        )


def _skipgram_pairs(sequences: Sequence[Tensor], window: int, n_old: int) -> Tensor:
    """All (centre, context) pairs within ``window`` where at least one side is a new id (>= n_old)."""
    out = []
    for seq in sequences:
        seq = seq.reshape(-1).long()
        for off in range(1, window + 1):
            if seq.numel() <= off:
                break
            a, b = seq[:-off], seq[off:]
            out.append(torch.stack([a, b], 1))
            out.append(torch.stack([b, a], 1))
    if not out:
        return torch.empty(0, 2, dtype=torch.long)
    pairs = torch.cat(out)  # (P, 2)
    return pairs[(pairs >= n_old).any(dim=1)]


def cw2v_rows(
    old_weight: Tensor,
    n_new: int,
    sequences: Sequence[Tensor],
    *,
    old_head: Tensor | None = None,
    config: CW2VConfig | None = None,
    generator: torch.Generator | None = None,
) -> CW2VResult:
    """Train CW2V rows for ``n_new`` new tokens on ``sequences`` of ids in the combined id space.

    Ids ``< V_old`` are old tokens (rows of ``old_weight``, frozen); id ``V_old + i`` is new token ``i``.
    The centre vector is the input-embedding row and the context/negative vector the output row: from
    ``old_head`` (rows + a second factorised A, as in the reference code) when the model has an untied
    head, else from the same input matrix. Loss: ``-log s(e_c . u_o) - sum_neg log s(-e_c . u_n)``.
    New tokens that never occur keep their initial rows (close to the mean of the old rows).
    """
    cfg = config or CW2VConfig()
    g = make_generator(generator, device=old_weight.device)
    dev, dt = old_weight.device, _work_dtype(old_weight)
    n_old = old_weight.shape[0]
    emb = _ConvexRows(old_weight.to(dt), n_new, cfg, g)
    head = _ConvexRows(old_head.to(dt), n_new, cfg, g) if old_head is not None else None
    params = list(emb.parameters()) + (list(head.parameters()) if head is not None else [])
    opt = torch.optim.Adam(params, lr=cfg.lr)

    pairs = _skipgram_pairs(sequences, cfg.window, n_old).to(dev)  # (P, 2)
    counts = torch.zeros(n_old + n_new, dtype=dt, device=dev)
    for seq in sequences:
        counts.index_add_(0, seq.reshape(-1).long().to(dev), torch.ones(seq.numel(), dtype=dt, device=dev))
    noise = counts.pow(0.75)
    losses: list[float] = []
    step = 0
    if pairs.numel() == 0 or float(noise.sum()) == 0.0:
        logger.warning("cw2v: no (centre, context) pair involves a new token; rows stay at their init")
    else:
        noise = noise / noise.sum()
        for _ in range(cfg.epochs):
            perm = torch.randperm(pairs.shape[0], generator=g, device=dev)
            for s in range(0, pairs.shape[0], cfg.batch_size):
                if cfg.max_steps is not None and step >= cfg.max_steps:
                    break
                batch = pairs[perm[s : s + cfg.batch_size]]  # (B, 2)
                neg = torch.multinomial(noise, batch.shape[0] * cfg.negatives, True, generator=g)
                neg = neg.view(batch.shape[0], cfg.negatives)  # (B, K)
                e_c = _lookup(emb, batch[:, 0], n_old)  # (B, D)
                out = head if head is not None else emb
                u = _lookup(out, torch.cat([batch[:, 1:], neg], 1).reshape(-1), n_old)
                u = u.view(batch.shape[0], 1 + cfg.negatives, -1)  # (B, 1 + K, D)
                logits = torch.einsum("bd,bkd->bk", e_c, u)  # (B, 1 + K)
                sign = torch.full_like(logits, -1.0)
                sign[:, 0] = 1.0
                loss = -nn.functional.logsigmoid(sign * logits).sum(dim=1).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                step += 1
    rows = emb.all_rows().to(old_weight.dtype)
    head_rows = head.all_rows().to(old_head.dtype) if head is not None and old_head is not None else None
    return CW2VResult(
        rows=rows,
        head_rows=head_rows,
        losses=losses,
        a1=emb.a1.detach(),
        a2=emb.a2.detach(),
        head_a1=head.a1.detach() if head is not None else None,
        head_a2=head.a2.detach() if head is not None else None,
    )


def _lookup(rows: _ConvexRows, ids: Tensor, n_old: int) -> Tensor:
    """Vectors for ids in the combined space: frozen old rows, or softmax(A) @ E_old for new ones."""
    out = torch.empty(ids.shape[0], rows.old.shape[1], dtype=rows.old.dtype, device=ids.device)
    is_new = ids >= n_old
    out = out.index_put((torch.nonzero(~is_new).squeeze(1),), rows.old[ids[~is_new]])
    if bool(is_new.any()):
        uniq, inv = torch.unique(ids[is_new] - n_old, return_inverse=True)
        out = out.index_put((torch.nonzero(is_new).squeeze(1),), rows(uniq)[inv])
    return out
