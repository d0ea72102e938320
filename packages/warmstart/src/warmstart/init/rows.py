"""Closed-form row initialisers for new vocabulary entries: random, mean, multivariate, FVT, convex.

Seed papers: *An Empirical Comparison of Vocabulary Expansion and Initialization Approaches for Language
Models* (Mundra et al., CoNLL 2024, arXiv 2407.05841) for the multivariate and convex-hull baselines; *Fast
Vocabulary Transfer for Language Model Compression* (Gee et al., EMNLP 2022 industry) for FVT. Each
function maps the old rows (V_old, D) to new rows (n_new, D) and never modifies its input; the trained
initialiser (CW2V) is in :mod:`warmstart.init.cw2v` and the model-level expansion in
:mod:`warmstart.init.vocab`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
from torch import Tensor

logger = logging.getLogger(__name__)


def make_generator(
    generator: torch.Generator | None = None, seed: int | None = None, device: torch.device | str = "cpu"
) -> torch.Generator:
    """Return ``generator`` if given, else a new one on ``device`` seeded with ``seed`` (0 if None)."""
    if generator is not None:
        return generator
    g = torch.Generator(device=device)
    g.manual_seed(0 if seed is None else seed)
    return g


def _work_dtype(weight: Tensor) -> torch.dtype:
    return torch.float64 if weight.dtype == torch.float64 else torch.float32


# ----------------------------------------------------------------------------------------------------------
# Row initialisers on a plain matrix. ``old_weight`` is (V_old, D): the rows the statistics are taken from.
# Every function returns (n_new, D) in ``old_weight``'s dtype and never modifies ``old_weight``.
# ----------------------------------------------------------------------------------------------------------


def random_rows(
    old_weight: Tensor, n_new: int, *, std: float = 0.02, generator: torch.Generator | None = None
) -> Tensor:
    """The scratch baseline: rows ~ N(0, std^2 I), std = the model's ``initializer_range`` by default."""
    g = make_generator(generator, device=old_weight.device)
    d = old_weight.shape[1]
    rows = torch.randn(n_new, d, generator=g, device=old_weight.device, dtype=_work_dtype(old_weight))
    return (rows * std).to(old_weight.dtype)  # (n_new, D)


def mean_rows(old_weight: Tensor, n_new: int) -> Tensor:
    """Every new row is the mean of the old rows (computed in fp32, or fp64 for fp64 input)."""
    mu = old_weight.to(_work_dtype(old_weight)).mean(dim=0)  # (D,)
    return mu.to(old_weight.dtype).unsqueeze(0).expand(n_new, -1).clone()  # (n_new, D)


def _cholesky_of_covariance(x: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (D,) and lower Cholesky factor L (D, D) of the biased covariance of the rows of ``x``."""
    n = x.shape[0]
    mu = x.mean(dim=0)  # (D,)
    xc = x - mu  # (V, D)
    sigma = (xc.T @ xc) / n  # (D, D), biased like transformers' mean_resizing
    chol, info = torch.linalg.cholesky_ex(sigma)
    jitter = 1e-10 * float(sigma.diagonal().mean().clamp_min(1e-30))
    eye = torch.eye(sigma.shape[0], dtype=sigma.dtype, device=sigma.device)
    while int(info) != 0:  # rank-deficient Sigma (V_old <= D or duplicated rows): add a tiny ridge
        logger.debug("covariance not positive definite; adding jitter %.3g", jitter)
        chol, info = torch.linalg.cholesky_ex(sigma + jitter * eye)
        jitter *= 10.0
    return mu, chol


def multivariate_rows(
    old_weight: Tensor, n_new: int, *, scale: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    """Rows ~ N(mu, scale * Sigma) of the old rows (CW2V paper's *multivariate* baseline, scale 1).

    Sampled as ``mu + randn(n_new, D) @ L^T`` with one Cholesky factor ``L`` of ``Sigma``; transformers'
    ``mean_resizing`` uses ``scale = 1e-9`` via ``MultivariateNormal`` (a second Cholesky and a positive-
    definiteness check).
    """
    g = make_generator(generator, device=old_weight.device)
    x = old_weight.to(_work_dtype(old_weight))
    mu, chol = _cholesky_of_covariance(x)
    z = torch.randn(n_new, x.shape[1], generator=g, dtype=x.dtype, device=x.device)  # (n_new, D)
    rows = torch.addmm(mu.unsqueeze(0), z, chol.T, alpha=math.sqrt(scale))  # (n_new, D)
    return rows.to(old_weight.dtype)


def fvt_rows(old_weight: Tensor, pieces: Sequence[Sequence[int]]) -> Tensor:
    """Row i = mean of ``old_weight[pieces[i]]``; an empty piece list falls back to the mean of all rows.

    A token that exists in the old vocabulary has ``pieces[i] == [its old id]``, so its row is copied.
    """
    x = old_weight.to(_work_dtype(old_weight))
    d = x.shape[1]
    n_new = len(pieces)
    lengths = torch.tensor([len(p) for p in pieces], dtype=torch.long)
    flat = torch.tensor([i for p in pieces for i in p], dtype=torch.long, device=x.device)
    owner = torch.repeat_interleave(torch.arange(n_new), lengths).to(x.device)
    sums = torch.zeros(n_new, d, dtype=x.dtype, device=x.device).index_add_(0, owner, x[flat])  # (n_new, D)
    rows = sums / lengths.clamp_min(1).to(x.device, x.dtype).unsqueeze(1)
    empty = lengths == 0
    if bool(empty.any()):
        rows[empty.to(x.device)] = x.mean(dim=0)
    single = lengths == 1  # exact copies, bit-identical even in low precision
    out = rows.to(old_weight.dtype)
    if bool(single.any()):
        idx = torch.nonzero(single).squeeze(1)
        out[idx.to(x.device)] = old_weight[flat[(torch.cumsum(lengths, 0) - 1)[idx].to(x.device)]]
    return out


def convex_weights(
    n_old: int,
    n_new: int,
    *,
    k: int | None = 16,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> tuple[Tensor, Tensor]:
    """Sparse random convex weights: for each new row, ``k`` distinct old ids and Dirichlet(1) weights.

    Dirichlet(1, ..., 1) is sampled as normalised Exp(1) variables (``-log U``) so the explicit generator is
    honoured. ``k=None`` uses every old row. Returns ``(index (n_new, k), weight (n_new, k))``.
    """
    g = make_generator(generator, device=device)
    k = n_old if k is None else min(k, n_old)
    if k == n_old:
        index = torch.arange(n_old, device=device).expand(n_new, -1)
    else:  # k distinct ids per row: top-k of i.i.d. uniform keys
        if n_old * n_new <= 10_000_000:
            index = torch.rand(n_new, n_old, generator=g, device=device).topk(k, dim=1).indices
        else:
            index = _distinct(n_old, n_new, k, g)
    e = -torch.log(torch.rand(n_new, k, generator=g, device=device).clamp_min(1e-12))  # Exp(1)
    return index, e / e.sum(dim=1, keepdim=True)


def _distinct(n_old: int, n_new: int, k: int, g: torch.Generator) -> Tensor:
    """k distinct ids per row for large n_old * n_new without a dense (n_new, n_old) key matrix."""
    out = torch.randint(n_old, (n_new, k), generator=g, device=g.device)
    for _ in range(100):
        s, _ = out.sort(dim=1)
        dup = (s[:, 1:] == s[:, :-1]).any(dim=1)
        if not bool(dup.any()):
            return out
        rows = torch.nonzero(dup).squeeze(1)
        out[rows] = torch.randint(n_old, (rows.numel(), k), generator=g, device=g.device)
    raise RuntimeError("could not draw distinct indices")


def convex_rows(
    old_weight: Tensor,
    n_new: int,
    *,
    k: int | None = 16,
    generator: torch.Generator | None = None,
    return_weights: bool = False,
) -> Tensor | tuple[Tensor, Tensor, Tensor]:
    """Random convex combinations of ``k`` old rows each (weights >= 0, summing to 1: in the convex hull)."""
    x = old_weight.to(_work_dtype(old_weight))
    index, weight = convex_weights(x.shape[0], n_new, k=k, generator=generator, device=x.device)
    w = weight.to(x.dtype)
    rows = torch.empty(n_new, x.shape[1], dtype=x.dtype, device=x.device)  # (n_new, D)
    for s in range(0, n_new, 1024):  # chunked gather: never a (n_new, k, D) tensor
        rows[s : s + 1024] = torch.bmm(w[s : s + 1024].unsqueeze(1), x[index[s : s + 1024]]).squeeze(1)
    rows = rows.to(old_weight.dtype)
    return (rows, index, weight) if return_weights else rows
