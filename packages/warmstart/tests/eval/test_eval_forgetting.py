"""Forgetting (Chaudhry et al. 2018): a worked example, a loop written from the paper's equation, signs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warmstart.eval import forgetting, forgetting_per_task


def by_the_equation(a: np.ndarray, k: int) -> float:
    """F_k = 1/(k) Σ_{j<k} (max_{l<k} a[l, j] − a[k, j]), written as loops."""
    if k == 0:
        return 0.0
    total = 0.0
    for j in range(k):
        best = max(a[stage, j] for stage in range(k))
        total += best - a[k, j]
    return total / k


def test_worked_example() -> None:
    # three tasks; task 0 peaks at 0.9 then drops to 0.5, task 1 drops from 0.8 to 0.6
    a = [[0.9, 0.1, 0.0], [0.7, 0.8, 0.1], [0.5, 0.6, 0.9]]
    assert forgetting_per_task(a).tolist() == pytest.approx([0.4, 0.2])
    assert forgetting(a) == pytest.approx(0.3)
    assert forgetting(a, stage=1) == pytest.approx(0.2)  # after stage 1 only task 0 counts
    assert forgetting(a, stage=0) == 0.0
    assert forgetting([[0.3]]) == 0.0


def test_a_loss_flips_the_sign_so_positive_means_worse() -> None:
    loss = [[1.0, 5.0], [2.5, 1.0]]  # task 0's loss went up from 1.0 to 2.5 after learning task 1
    assert forgetting(loss, higher_is_better=False) == pytest.approx(1.5)
    assert forgetting(loss) == pytest.approx(-1.5)


def test_no_forgetting_when_scores_only_rise_and_rectangular_scores() -> None:
    a = np.array([[0.2, 0.0, 0.0, 0.3], [0.4, 0.5, 0.0, 0.3], [0.6, 0.7, 0.8, 0.3]])  # 3 stages, 4 tasks
    assert (forgetting_per_task(a) <= 0).all()
    assert forgetting(a) == pytest.approx(by_the_equation(a, 2))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(0, 10_000))
def test_equals_the_equation_at_every_stage(t: int, seed: int) -> None:
    a = np.random.default_rng(seed).random((t, t))
    for k in range(t):
        assert forgetting(a, stage=k) == pytest.approx(by_the_equation(a, k))


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="matrix"):
        forgetting([0.1, 0.2])
    with pytest.raises(ValueError, match="matrix"):
        forgetting([[0.1], [0.2]])  # more stages than tasks
    with pytest.raises(ValueError, match="stage"):
        forgetting([[0.1, 0.2], [0.3, 0.4]], stage=2)
