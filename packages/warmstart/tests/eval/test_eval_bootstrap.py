"""Bootstrap CIs: roughly nominal coverage on a known distribution, seeded, wider at higher confidence."""

from __future__ import annotations

import numpy as np

from warmstart.eval import bootstrap_ci, bootstrap_diff_ci


def test_coverage_of_the_mean_is_roughly_nominal() -> None:
    rng = np.random.default_rng(0)
    hits = 0
    trials = 300
    for t in range(trials):
        sample = rng.normal(loc=2.0, scale=3.0, size=40)
        lo, hi = bootstrap_ci(sample, n_resamples=1000, seed=t)
        hits += lo <= 2.0 <= hi
    assert 0.88 <= hits / trials <= 0.99


def test_seeded_degenerate_and_monotone() -> None:
    x = [1.0, 2.0, 4.0, 8.0, 3.0]
    assert bootstrap_ci(x, seed=3) == bootstrap_ci(x, seed=3)
    assert bootstrap_ci([5.0]) == (5.0, 5.0)
    lo90, hi90 = bootstrap_ci(x, confidence=0.9)
    lo99, hi99 = bootstrap_ci(x, confidence=0.99)
    assert lo99 <= lo90 and hi99 >= hi90
    lo, hi = bootstrap_ci(x, statistic=lambda a: np.median(a, axis=1))
    assert min(x) <= lo <= hi <= max(x)


def test_difference_ci_brackets_the_true_shift() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(1.0, 1.0, 200), rng.normal(0.0, 1.0, 200)
    lo, hi = bootstrap_diff_ci(a, b)
    assert lo < 1.0 < hi and lo > 0.5
