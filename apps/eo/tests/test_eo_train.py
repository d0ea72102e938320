"""Pipeline pieces: the label-efficiency subset keeps exactly the requested share of distinct chips."""

from __future__ import annotations

import torch

from warmstart_eo.data import Chips
from warmstart_eo.train import label_subset


def _chips(n: int) -> Chips:
    images = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 2, 2).clone()  # id in pixels
    return Chips(
        images, torch.zeros(n, 2, 2, dtype=torch.long), torch.arange(n) % 3, torch.zeros(n, 3), 1, ["B02"]
    )


def test_label_subset_keeps_the_fraction_and_fills_a_batch() -> None:
    train = _chips(400)
    small, k = label_subset(train, 0.01, seed=0, minimum=16)
    ids = small.images[:, 0, 0, 0].long()
    assert k == 4 and len(torch.unique(ids)) == 4  # 1 % of 400 distinct chips ...
    assert (
        len(small) == 16 and torch.bincount(ids).max() == 4 == torch.bincount(ids)[ids].min()
    )  # ... each ×4
    full, k = label_subset(train, 1.0, seed=0, minimum=16)
    assert k == 400 and torch.equal(torch.sort(full.images[:, 0, 0, 0]).values, torch.arange(400.0))
    other, _ = label_subset(train, 0.01, seed=1, minimum=16)
    assert not torch.equal(torch.unique(other.images[:, 0, 0, 0]), torch.unique(ids.float()))  # seeds differ
