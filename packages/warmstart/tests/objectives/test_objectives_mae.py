"""MAE: per-sample masking with ids_restore, patchify round trip, loss on masked patches only."""

from __future__ import annotations

import torch

from warmstart.objectives import (
    mae_loss,
    masking_indices,
    patchify,
    random_masking,
    restore_order,
    unpatchify,
)


def test_patchify_roundtrip_and_layout() -> None:
    imgs = torch.randn(2, 3, 8, 12)
    p = patchify(imgs, 4)
    assert p.shape == (2, 6, 48)
    # patch (row 1, col 2) holds pixels [4:8, 8:12] in (p, q, c) order
    expected = imgs[0, :, 4:8, 8:12].permute(1, 2, 0).reshape(-1)
    assert torch.equal(p[0, 1 * 3 + 2], expected)
    assert torch.equal(unpatchify(p, 4, channels=3, grid=(2, 3)), imgs)


def test_random_masking_keeps_ratio_per_sample_and_restores() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.arange(4 * 16, dtype=torch.float32).reshape(4, 16, 1).expand(4, 16, 3).contiguous()
    kept, mask, ids_restore = random_masking(x, 0.75, generator=g)
    assert kept.shape == (4, 4, 3)
    assert torch.equal(mask.sum(1), torch.full((4,), 12.0))
    # kept tokens are exactly those with mask 0
    for i in range(4):
        assert set(kept[i, :, 0].tolist()) == set(x[i, mask[i] == 0, 0].tolist())
    # different samples get different masks
    assert not all(torch.equal(mask[0], mask[i]) for i in range(1, 4))
    # unshuffle with a distinctive mask token: kept tokens land at their original places
    full = restore_order(kept, ids_restore, torch.full((3,), -1.0))
    visible = mask == 0
    assert torch.equal(full[visible], x[visible])
    assert (full[~visible] == -1).all()


def test_mae_loss_ignores_visible_patches_and_norm_pix() -> None:
    g = torch.Generator().manual_seed(0)
    target = torch.randn(2, 6, 5, generator=g)
    mask = torch.tensor([[1, 0, 1, 0, 0, 1], [0, 0, 1, 1, 0, 0]], dtype=torch.float32)
    pred = target.clone()
    pred[mask == 0] += 100.0  # wrong only where visible
    assert float(mae_loss(pred, target, mask)) == 0.0
    pred = target.clone()
    pred[0, 0] += 1.0  # one masked patch off by 1 in each of 5 pixels → per-patch MSE 1, over 5 masked
    assert abs(float(mae_loss(pred, target, mask)) - 1 / 5) < 1e-6
    # normalised target: predicting per-patch z-scores is perfect
    mean = target.mean(-1, keepdim=True)
    std = (target.var(-1, keepdim=True) + 1e-6).sqrt()
    assert float(mae_loss((target - mean) / std, target, mask, norm_pix_loss=True)) < 1e-10


def test_masking_indices_draw_what_random_masking_draws() -> None:
    x = torch.randn(4, 10, 6)
    kept, mask, restore = random_masking(x, 0.7, generator=torch.Generator().manual_seed(5))
    ids_keep, ids_masked, ids_restore, mask2 = masking_indices(
        4, 10, 0.7, generator=torch.Generator().manual_seed(5)
    )
    assert torch.equal(ids_restore, restore) and torch.equal(mask2, mask)
    assert torch.equal(torch.gather(x, 1, ids_keep[..., None].expand(-1, -1, 6)), kept)
    assert torch.equal(mask2.gather(1, ids_masked), torch.ones(4, 7))  # the removed ones, all of them
    assert torch.equal(
        torch.sort(torch.cat([ids_keep, ids_masked], 1), 1).values, torch.arange(10).expand(4, -1)
    )
