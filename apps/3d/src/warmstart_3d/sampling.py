"""Seeded index batches for the in-process fits (CLIP2Point, part segmentation, the points bench)."""

from __future__ import annotations

from collections.abc import Iterator

import torch


def index_batches(n: int, batch: int, steps: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """``steps`` batches of ``batch`` indices into ``n`` items, epoch after epoch of seeded permutations
    (an epoch's tail carries over into the next batch; ``batch`` may exceed ``n``)."""
    order: list[int] = []
    for _ in range(steps):
        while len(order) < batch:
            order += torch.randperm(n, generator=generator).tolist()
        yield torch.tensor(order[:batch])
        del order[:batch]
