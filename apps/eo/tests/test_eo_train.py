"""Pipeline pieces: the label-efficiency subset keeps exactly the requested share of distinct chips; mIoU."""

from __future__ import annotations

import torch

from warmstart_eo.data import Chips
from warmstart_eo.train import label_subset, miou


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


def test_miou_ignores_unlabelled_pixels_and_absent_classes() -> None:
    target = torch.tensor([[0, 0, 1, 1], [0, 0, 1, -1]])  # (H, W); −1 = no label
    assert miou(target.clamp_min(0), target, classes=4) == 1.0  # classes 2 and 3 absent: left out
    pred = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 3]])  # one 0 → 1 error; the −1 pixel predicts 3 (ignored)
    # class 0: 3 / 4; class 1: 3 / 4 (its union gains the wrong pixel); class 3 ignored with its pixel
    assert abs(miou(pred, target, classes=4) - 0.75) < 1e-6


def test_layer_decay_groups_scale_lr_by_depth_and_cover_every_parameter() -> None:
    from warmstart_eo.models import Classifier, ModelConfig, build_mae
    from warmstart_eo.train import layer_decay_groups

    encoder = build_mae(ModelConfig(family="mae", img_size=16, patch_size=8, bands=["B02", "B03"])).encoder
    model = Classifier(encoder, 3)
    depth = len(encoder.blocks)
    groups = layer_decay_groups(model, 1e-3, 0.5)
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters()) and len(ids) == len(set(ids))
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert lr_of[id(model.head[-1].weight)] == 1e-3 and lr_of[id(encoder.norm.weight)] == 1e-3
    for i, block in enumerate(encoder.blocks):
        assert all(lr_of[id(p)] == 1e-3 * 0.5 ** (depth - i) for p in block.parameters())
    assert all(lr_of[id(p)] == 1e-3 * 0.5 ** (depth + 1) for p in encoder.tokens.parameters())
    assert layer_decay_groups(model, 1e-3, 1.0) == [{"params": list(model.parameters()), "lr": 1e-3}]
