"""Resumable batch streams.

A killed run must resume with exactly the batches it would have seen, so the engine needs to know *where*
it is in the data. Three kinds of input are accepted:

- a map-style dataset (``__len__`` + ``__getitem__``): :class:`ResumableLoader` shuffles it with the seeded
  per-epoch permutation of :mod:`warmstart.data.sampling` (the one every loader shares), shards it across
  ranks and collates micro-batches; its position is two integers;
- an iterable with ``state_dict()``/``load_state_dict()`` (a stateful stream of ready micro-batches, such as
  the core's packers and mixtures): used as is, its state saved in checkpoints (each rank's, for a stream
  built with ``rank``/``world_size`` that shards itself);
- any other iterable of micro-batches: resumed by skipping the batches already consumed (correct for a
  deterministic iterable, slower for a long one).

Under DDP a stream that does not shard itself is split by rank by :class:`BatchCursor` (each rank takes its
own micro-batches of the global batch), so more processes mean more data per step, not the same data.

With ``train.num_workers > 0`` a map-style dataset is read by worker processes through torchdata's
``StatefulDataLoader`` (:class:`WorkerLoader`, as torchtitan does): the same seeded order as
:class:`ResumableLoader` (:func:`warmstart.data.sampling.epoch_order`), and a resume that continues
mid-epoch from the loader's own state, so the batches after a restart are exactly the ones an
uninterrupted run sees.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch.utils.data import default_collate

from warmstart.data.sampling import epoch_order
from warmstart.errors import DataError


class ResumableLoader:
    """Seeded, sharded, resumable micro-batches over a map-style dataset (drops the last partial batch)."""

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        collate_fn: Callable[[list[Any]], Any] | None = None,
    ) -> None:
        n = len(dataset)
        per_rank = n // world_size
        if per_rank < batch_size:
            raise DataError(
                f"dataset has {n} samples: fewer than one micro-batch of {batch_size} per rank "
                f"({world_size} ranks); lower train.micro_batch_size or add data"
            )
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.collate_fn = collate_fn or default_collate
        self.batches_per_epoch = per_rank // batch_size
        self.epoch = 0
        self.position = 0  # micro-batches already yielded in this epoch

    def _indices(self, epoch: int) -> torch.Tensor:
        """This rank's ``n // world_size`` indices of ``epoch`` (the shared seeded order, strided by rank)."""
        return epoch_order(
            len(self.dataset),
            self.seed,
            epoch,
            shuffle=self.shuffle,
            rank=self.rank,
            world_size=self.world_size,
            even=True,
        )

    def __iter__(self) -> Iterator[Any]:
        dataset, size, collate = self.dataset, self.batch_size, self.collate_fn
        while True:
            indices = self._indices(self.epoch).tolist()  # once per epoch, not a tensor slice per batch
            while self.position < self.batches_per_epoch:
                start = self.position * size
                self.position += 1
                yield collate([dataset[i] for i in indices[start : start + size]])
            self.epoch += 1
            self.position = 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])


class _EpochOrder(torch.utils.data.Sampler[int]):
    """One epoch of this rank's seeded order; no state of its own (the loader counts what it yielded)."""

    def __init__(self, n: int, seed: int, shuffle: bool, rank: int, world_size: int) -> None:
        self.n, self.seed, self.shuffle, self.rank, self.world_size = n, seed, shuffle, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // self.world_size

    def __iter__(self) -> Iterator[int]:
        order = epoch_order(
            self.n,
            self.seed,
            self.epoch,
            shuffle=self.shuffle,
            rank=self.rank,
            world_size=self.world_size,
            even=True,
        )
        return iter(order.tolist())


class WorkerLoader:
    """:class:`ResumableLoader`'s batches read by ``num_workers`` processes (torchdata's StatefulDataLoader).

    Endless like :class:`ResumableLoader`; ``state_dict()`` is the epoch plus the loader's own state, which
    StatefulDataLoader keeps exact with prefetching workers.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        *,
        num_workers: int,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        pin_memory: bool = False,
    ) -> None:
        from torchdata.stateful_dataloader import StatefulDataLoader

        n = len(dataset)
        if n // world_size < batch_size:
            raise DataError(
                f"dataset has {n} samples: fewer than one micro-batch of {batch_size} per rank "
                f"({world_size} ranks); lower train.micro_batch_size or add data"
            )
        self.sampler = _EpochOrder(n, seed, shuffle, rank, world_size)
        self.loader = StatefulDataLoader(
            dataset,
            batch_size=batch_size,
            sampler=self.sampler,
            drop_last=True,
            num_workers=num_workers,
            collate_fn=collate_fn or default_collate,
            pin_memory=pin_memory,
            persistent_workers=True,
        )
        self.epoch = 0
        self._iterator: Iterator[Any] | None = None

    def __iter__(self) -> Iterator[Any]:
        while True:
            if self._iterator is None:
                self.sampler.set_epoch(self.epoch)
                self._iterator = iter(self.loader)
            try:
                yield next(self._iterator)
            except StopIteration:
                self._iterator = None
                self.epoch += 1

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "loader": self.loader.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.sampler.set_epoch(self.epoch)
        self.loader.load_state_dict(state["loader"])
        self._iterator = None


def is_map_style(data: Any) -> bool:
    return hasattr(data, "__len__") and hasattr(data, "__getitem__") and not hasattr(data, "state_dict")


def rank_sharded(data: Any, rank: int, world_size: int) -> bool:
    """Whether ``data`` already yields only this rank's share (it was built with ``rank``/``world_size``).

    A stream built for another world is refused: its shares would overlap or leave data out.
    """
    own = getattr(data, "world_size", None)
    if own is None or own == 1:
        return False
    if own != world_size or getattr(data, "rank", rank) != rank:
        raise DataError(
            f"the training data was sharded for rank {getattr(data, 'rank', '?')} of {own} but this process "
            f"is rank {rank} of {world_size}; build it with this run's rank and world size (or unsharded)"
        )
    return True


class BatchCursor:
    """One interface over the three kinds of input: ``next()``, ``state_dict()``, ``load_state_dict()``.

    Under ``world_size`` > 1 a stream that is not sharded itself (see :func:`rank_sharded`) is split by
    rank here, as ``DistributedSampler`` splits a dataset: the stream's micro-batches are read as one global
    sequence and rank ``r`` takes every ``world_size``-th one from the ``r``-th. One optimizer step of ``W``
    ranks with ``A`` accumulation steps then sees the same ``W·A`` micro-batches as one process with
    ``W·A`` accumulation steps. Every rank reads (and drops) the others' micro-batches, so every rank's
    stream is at the same position and rank 0's state resumes them all.
    """

    def __init__(self, data: Iterable[Any], rank: int = 0, world_size: int = 1) -> None:
        self.data = data
        self.stateful = hasattr(data, "state_dict") and hasattr(data, "load_state_dict")
        self.consumed = 0
        self.rank = rank
        self.stride = world_size if world_size > 1 and not rank_sharded(data, rank, world_size) else 1
        self._iterator: Iterator[Any] | None = None

    def _iter(self) -> Iterator[Any]:
        if self._iterator is None:
            self._iterator = iter(self.data)
        return self._iterator

    def _read(self) -> Any:
        try:
            batch = next(self._iter())
        except StopIteration:  # a finite plain iterable: start the next pass
            self._iterator = iter(self.data)
            batch = next(self._iterator)
        self.consumed += 1
        return batch

    def next(self) -> Any:
        if self.stride == 1:
            return self._read()
        mine = None
        for i in range(self.stride):  # this rank's micro-batch of the next `stride` global ones
            batch = self._read()
            if i == self.rank:
                mine = batch
        return mine

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"consumed": self.consumed}
        if self.stateful:
            state["data"] = self.data.state_dict()  # type: ignore[attr-defined]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._iterator = None
        self.consumed = int(state["consumed"])
        if self.stateful:
            self.data.load_state_dict(state["data"])  # type: ignore[attr-defined]
        else:
            iterator = self._iter()
            for _ in range(self.consumed):
                try:
                    next(iterator)
                except StopIteration:
                    self._iterator = iterator = iter(self.data)
                    next(iterator)
