"""Mixtures: counts stay within a constant of n·ratio for every prefix (exact long-run ratio); resume is exact."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from warmstart.data import Mixture, PackedStream, replay_mixture


@settings(max_examples=50, deadline=None)
@given(
    weights=st.lists(st.floats(0.01, 10.0), min_size=2, max_size=5),
    seed=st.integers(0, 1000),
)
def test_every_prefix_is_within_a_constant_of_the_ratio(weights: list[float], seed: int) -> None:
    names = [f"s{i}" for i in range(len(weights))]
    mix = Mixture({n: [n] for n in names}, dict(zip(names, weights, strict=True)), seed=seed)
    total = sum(weights)
    for name, w in zip(names, weights, strict=True):
        assert abs(float(mix.ratios[name]) - w / total) < 1e-3  # rationalisation is close
    counts = dict.fromkeys(names, 0)
    for n, name in enumerate(mix.schedule(2000), start=1):
        counts[name] += 1
        for q in names:
            assert abs(counts[q] - n * float(mix.ratios[q])) < len(names)


def test_replay_ratio_exact_and_seed_changes_interleaving() -> None:
    a = replay_mixture(range(10**6), range(10**6, 2 * 10**6), replay_ratio=0.25, seed=0, with_source=True)
    b = replay_mixture(range(10**6), range(10**6, 2 * 10**6), replay_ratio=0.25, seed=1, with_source=True)
    draws_a = [name for name, _ in itertools.islice(a, 1000)]
    draws_b = b.schedule(1000)
    assert abs(draws_a.count("replay") - 250) <= 1
    assert abs(draws_b.count("replay") - 250) <= 1
    assert draws_a != draws_b
    # items come from each source in order
    new_items = [
        x
        for name, x in itertools.islice(
            iter(replay_mixture(range(5), range(5, 9), replay_ratio=0.5, with_source=True)), 6
        )
    ]
    assert sorted(new_items) == [0, 1, 2, 5, 6, 7]


def test_zero_weight_source_is_never_drawn() -> None:
    mix = Mixture({"a": [1], "b": [2]}, {"a": 1.0, "b": 0.0}, seed=3)
    assert set(mix.schedule(100)) == {"a"}


def test_mixture_resume_with_stateful_and_plain_sources() -> None:
    docs = [[i + 1] * (i % 5 + 1) for i in range(20)]

    def build() -> Mixture:
        packed = PackedStream(docs, block_size=4, batch_size=1, eos_id=0, seed=1)
        return Mixture({"packed": packed, "plain": list(range(7))}, {"packed": 0.6, "plain": 0.4}, seed=4)

    def key(item: object) -> object:
        return item["input_ids"].tolist() if isinstance(item, dict) else item

    ref = build()
    it = iter(ref)
    for _ in range(13):
        next(it)
    state = ref.state_dict()
    expected = [key(next(it)) for _ in range(25)]
    resumed = build()
    resumed.load_state_dict(state)
    assert [key(x) for x in itertools.islice(iter(resumed), 25)] == expected
