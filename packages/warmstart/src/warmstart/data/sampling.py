"""One seeded per-epoch permutation: the data order every loader, stream and bucketed batcher shares.

Seed reference: PyTorch's ``DistributedSampler`` (seed + epoch → a permutation, every rank takes a strided
share) and torchtitan's resumable data loaders (the position inside the epoch is the whole state). Epoch
``e`` of seed ``s`` is ``torch.randperm(n)`` under a generator seeded ``s·1_000_003 + e``, so an order is a
pure function of (seed, epoch) and a run resumed from (epoch, position) sees the same items. Left out:
weighted and length-grouped sampling (the speech app buckets by length and permutes the buckets with this).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

_EPOCH_STRIDE = 1_000_003  # a prime: (seed, epoch) pairs map to distinct generator seeds for epoch < 1e6


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The seeded permutation of ``range(n)`` for ``epoch``: (n,) int64, the same on every machine."""
    generator = torch.Generator().manual_seed(seed * _EPOCH_STRIDE + epoch)
    return torch.randperm(n, generator=generator)


def epoch_order(
    n: int,
    seed: int,
    epoch: int,
    *,
    shuffle: bool = True,
    rank: int = 0,
    world_size: int = 1,
    even: bool = False,
) -> torch.Tensor:
    """This rank's indices for ``epoch``: the epoch's permutation (or ``arange`` without shuffling), strided
    over ``world_size`` ranks. ``even`` first drops the tail that does not divide evenly, so every rank gets
    ``n // world_size`` indices."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} of world_size {world_size} is not a valid rank")
    order = epoch_permutation(n, seed, epoch) if shuffle else torch.arange(n)
    if even:
        order = order[: (n // world_size) * world_size]
    return order[rank::world_size]


class EpochSampler(Sampler[int]):
    """A resumable sampler over ``n`` items: epoch after epoch of :func:`epoch_order`, for one pass per
    ``iter()`` (a ``DataLoader`` sampler) that continues from ``state_dict()`` after a restart.

    ``state_dict()`` is ``{"epoch", "position"}`` (items of this epoch already yielded); torchdata's
    ``StatefulDataLoader`` saves and restores it with the loader.
    """

    def __init__(
        self,
        n: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        even: bool = True,
    ) -> None:
        if n < 1:
            raise ValueError("EpochSampler needs at least one item")
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.rank, self.world_size, self.even = rank, world_size, even
        self.epoch = 0
        self.position = 0

    def order(self, epoch: int) -> torch.Tensor:
        """This rank's indices of ``epoch``."""
        return epoch_order(
            self.n,
            self.seed,
            epoch,
            shuffle=self.shuffle,
            rank=self.rank,
            world_size=self.world_size,
            even=self.even,
        )

    def __len__(self) -> int:
        return len(self.order(self.epoch))

    def __iter__(self) -> Iterator[int]:
        indices = self.order(self.epoch).tolist()
        while self.position < len(indices):
            index = indices[self.position]
            self.position += 1
            yield index
        self.epoch += 1
        self.position = 0

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its beginning (``DistributedSampler``'s method)."""
        self.epoch, self.position = epoch, 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
