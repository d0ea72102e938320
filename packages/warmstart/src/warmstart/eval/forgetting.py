"""Average forgetting of a model trained on a sequence of tasks.

Seed paper: Chaudhry, Dokania, Ajanthan & Torr, "Riemannian Walk for Incremental Learning: Understanding
Forgetting and Intransigence" (ECCV 2018, arXiv 1801.10112), Eq. 3-4. With ``a[l, j]`` the score on task
``j`` after training stage ``l`` (0-based), the forgetting of task ``j`` after stage ``k`` is
``f_j^k = max_{l<k} a[l, j] − a[k, j]`` for ``j < k``, and the average forgetting is
``F_k = mean_{j<k} f_j^k``. This is the one definition every app uses (rl L2M, code continual). For a
metric where lower is better (a loss), the signs flip (``a[k, j] − min_{l<k} a[l, j]``), so positive
forgetting always means "got worse". Left out: intransigence and the Riemannian-walk regulariser itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _matrix(scores: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    a = np.asarray(scores, dtype=float)
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < a.shape[0]:
        raise ValueError(
            f"scores must be a (stages, tasks) matrix with at least as many tasks as stages, got shape {a.shape}"
        )
    return a


def forgetting_per_task(
    scores: Sequence[Sequence[float]] | np.ndarray, *, stage: int | None = None, higher_is_better: bool = True
) -> np.ndarray:
    """``f_j^k`` for every task ``j < k`` (Chaudhry et al. 2018, Eq. 3): best earlier score minus the score
    after stage ``k`` (``stage``, default the last). ``scores[l][j]``: score on task j after stage l."""
    a = _matrix(scores)
    k = a.shape[0] - 1 if stage is None else stage
    if not 0 <= k < a.shape[0]:
        raise ValueError(f"stage={stage} is outside the {a.shape[0]} stages")
    if k == 0:
        return np.zeros(0)
    earlier, now = a[:k, :k], a[k, :k]  # (k, k), (k,)
    drop: np.ndarray = earlier.max(axis=0) - now if higher_is_better else now - earlier.min(axis=0)
    return drop


def forgetting(
    scores: Sequence[Sequence[float]] | np.ndarray, *, stage: int | None = None, higher_is_better: bool = True
) -> float:
    """Average forgetting ``F_k = mean_{j<k} (max_{l<k} a[l, j] − a[k, j])`` (Chaudhry et al. 2018, Eq. 4)
    after stage ``k`` (default the last); 0.0 after the first stage, where nothing can have been forgotten."""
    per_task = forgetting_per_task(scores, stage=stage, higher_is_better=higher_is_better)
    return float(per_task.mean()) if per_task.size else 0.0
