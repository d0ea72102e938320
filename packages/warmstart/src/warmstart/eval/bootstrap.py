"""Percentile bootstrap confidence intervals, seeded.

Seed reference: Efron & Tibshirani, "An Introduction to the Bootstrap" (1993), the percentile interval.
Written in numpy (vectorised resampling; no scipy in the core). Left out: BCa and studentised intervals —
with very few samples (e.g. 3 seeds) the percentile interval under-covers; report n alongside it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    *,
    statistic: Callable[[np.ndarray], np.ndarray] | None = None,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` (default: the mean) at ``confidence``.

    ``statistic`` receives an (n_resamples, n) array and must reduce along axis 1. One value gives the
    degenerate interval (v, v).
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError("bootstrap_ci needs a non-empty 1-D sequence of values")
    if not 0 < confidence < 1:
        raise ValueError("confidence must be in (0, 1)")
    stat = statistic or (lambda a: a.mean(axis=1))
    if x.size == 1:
        v = float(stat(x[None, :])[0])
        return v, v
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_resamples, x.size))
    stats = stat(x[idx])  # (n_resamples,)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(stats, [alpha, 1 - alpha])
    return float(lo), float(hi)


def bootstrap_diff_ci(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of ``mean(a) − mean(b)`` resampling the two groups independently."""
    xa, xb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if xa.size == 0 or xb.size == 0:
        raise ValueError("both groups need at least one value")
    rng = np.random.default_rng(seed)
    ma = xa[rng.integers(0, xa.size, size=(n_resamples, xa.size))].mean(axis=1)
    mb = xb[rng.integers(0, xb.size, size=(n_resamples, xb.size))].mean(axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(ma - mb, [alpha, 1 - alpha])
    return float(lo), float(hi)
