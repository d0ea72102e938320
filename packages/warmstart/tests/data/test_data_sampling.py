"""The one seeded per-epoch permutation: the historical order kept, ranks partition, exact resume."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from warmstart.data import EpochSampler, PackedStream, epoch_order, epoch_permutation


def test_same_order_as_the_copies_it_replaced() -> None:
    # the formula the engine loader, the packed stream and the speech batcher each wrote by hand
    for seed, epoch in [(0, 0), (3, 1), (17, 5)]:
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        assert torch.equal(epoch_permutation(50, seed, epoch), torch.randperm(50, generator=g))
    assert not torch.equal(epoch_permutation(50, 0, 0), epoch_permutation(50, 0, 1))
    assert not torch.equal(epoch_permutation(50, 0, 0), epoch_permutation(50, 1, 0))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 60), st.integers(1, 4), st.integers(0, 99), st.booleans())
def test_ranks_partition_the_epoch(n: int, world: int, seed: int, even: bool) -> None:
    shares = [epoch_order(n, seed, 2, rank=r, world_size=world, even=even) for r in range(world)]
    joined = torch.cat(shares)
    assert len(set(joined.tolist())) == len(joined)  # no index on two ranks
    if even:
        assert {len(s) for s in shares} == {n // world}
    else:
        assert sorted(joined.tolist()) == list(range(n))


def test_without_shuffle_is_the_identity_strided() -> None:
    assert epoch_order(7, 5, 3, shuffle=False, rank=1, world_size=2).tolist() == [1, 3, 5]


def test_sampler_resumes_mid_epoch_exactly() -> None:
    whole = EpochSampler(10, seed=4)
    uninterrupted = list(whole) + list(whole)  # two epochs
    first = EpochSampler(10, seed=4)
    it = iter(first)
    head = [next(it) for _ in range(7)]
    resumed = EpochSampler(10, seed=4)
    resumed.load_state_dict(first.state_dict())
    assert first.state_dict() == {"epoch": 0, "position": 7}
    assert head + list(resumed) + list(resumed) == uninterrupted
    assert sorted(uninterrupted[:10]) == list(range(10)) and uninterrupted[:10] != uninterrupted[10:]
    resumed.set_epoch(0)
    assert list(resumed) == uninterrupted[:10]


def test_sampler_drives_a_dataloader() -> None:
    data = torch.arange(12) * 10
    loader = DataLoader(data, batch_size=4, sampler=EpochSampler(12, seed=1, rank=1, world_size=2))
    batches = [b.tolist() for b in loader]
    assert [len(b) for b in batches] == [4, 2]
    assert sorted(x // 10 for b in batches for x in b) == sorted(
        epoch_order(12, 1, 0, rank=1, world_size=2).tolist()
    )


def test_packed_stream_order_is_the_core_permutation() -> None:
    docs = [[i + 1] for i in range(9)]
    stream = PackedStream(docs, block_size=4, batch_size=1, eos_id=0, seed=2, rank=1, world_size=2)
    assert stream._order(3) == epoch_order(9, 2, 3, rank=1, world_size=2).tolist()


def test_stateful_dataloader_resumes_the_sampler_exactly() -> None:
    from torchdata.stateful_dataloader import StatefulDataLoader

    data = torch.arange(10)

    def loader() -> StatefulDataLoader:
        return StatefulDataLoader(data, batch_size=2, sampler=EpochSampler(10, seed=3))

    whole = [b.tolist() for b in loader()]
    first = loader()
    it = iter(first)
    head = [next(it).tolist() for _ in range(2)]
    state = first.state_dict()
    resumed = loader()
    resumed.load_state_dict(state)
    assert head + [b.tolist() for b in resumed] == whole
