"""pass@k (Chen et al. 2021): the stable product form equals the binomial definition computed directly."""

from __future__ import annotations

from math import comb

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warmstart.eval import mean_pass_at_k, pass_at_k


def direct(n: int, c: int, k: int) -> float:
    """1 − C(n−c, k) / C(n, k) with exact integers."""
    return 1.0 - comb(n - c, k) / comb(n, k)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 200).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_equals_the_binomial_definition(nck: tuple[int, int, int]) -> None:
    n, c, k = nck
    assert pass_at_k(n, c, k) == pytest.approx(direct(n, c, k), abs=1e-12)


def test_known_values_and_edges() -> None:
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 is the fraction correct
    assert pass_at_k(10, 6, 5) == 1.0  # fewer than k wrong samples: some draw of k always passes
    assert pass_at_k(5, 1, 2) == pytest.approx(0.4)
    # large n: the product form stays finite where C(n, k) as a float would overflow
    assert 0.0 < pass_at_k(5000, 1, 100) == pytest.approx(100 / 5000)


def test_mean_over_problems() -> None:
    assert mean_pass_at_k(4, [0, 4, 1], 1) == pytest.approx((0 + 1 + 0.25) / 3)
    assert mean_pass_at_k([4, 2], [1, 1], 2) == pytest.approx((direct(4, 1, 2) + direct(2, 1, 2)) / 2)


def test_bad_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(3, 1, 5)
    with pytest.raises(ValueError, match="correct"):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError, match="no problems"):
        mean_pass_at_k(3, [], 1)
    with pytest.raises(ValueError, match="problems"):
        mean_pass_at_k([3, 3], [1], 1)
