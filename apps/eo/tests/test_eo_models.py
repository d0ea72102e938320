"""Model maths: positions, patch layouts, masking, the SatMAE++ loss, heads, weights I/O."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from warmstart.errors import ConfigError
from warmstart.objectives import mae_loss, patchify, random_masking
from warmstart_eo.data import BANDS
from warmstart_eo.models import (
    Classifier,
    GroupTokens,
    ModelConfig,
    PatchTokens,
    Segmenter,
    TubeletTokens,
    build_mae,
    load_model,
    satmae_groups,
    save_model,
    sincos_3d,
)


def _cfg(family: str, **kw) -> ModelConfig:
    frames = 2 if family == "prithvi" else 1
    return ModelConfig(family=family, bands=list(BANDS), frames=frames, img_size=16, patch_size=8, **kw)


def test_sincos_3d_split_and_uniqueness() -> None:
    pos = sincos_3d(64, 2, 3, 3)  # (18, 64): 24 x, 24 y, 16 t
    assert pos.shape == (18, 64)
    assert torch.unique(pos, dim=0).shape[0] == 18
    # the time block is the last 16 dims: equal for the same t, different across t
    assert torch.equal(pos[0, 48:], pos[8, 48:]) and not torch.equal(pos[0, 48:], pos[9, 48:])


def test_tubelet_targets_follow_the_3d_patch_layout() -> None:
    tok = TubeletTokens(bands=2, frames=4, dim=16, patch=2, tubelet=2)
    x = torch.arange(2 * 4 * 2 * 4 * 4, dtype=torch.float32).reshape(2, 8, 4, 4)  # (B, T·C, H, W)
    t = tok.targets(x)  # (B, 2·2·2, 2·2·2·2)
    assert t.shape == (2, 8, 16)
    cube = x.reshape(2, 4, 2, 4, 4)  # (B, T, C, H, W)
    # token (t'=1, h=0, w=1), pixel (u=1, p=0, q=1, c=1) = frame 3, row 0, col 3, band 1
    assert t[0, 1 * 4 + 0 * 2 + 1, ((1 * 2 + 0) * 2 + 1) * 2 + 1] == cube[0, 3, 1, 0, 3]


def test_satmae_groups_and_reconstruct_inverts_targets() -> None:
    groups = satmae_groups(list(BANDS))
    assert [[BANDS[i] for i in g] for g in groups[:3]] == [
        ["B02", "B03", "B04", "B08"],
        ["B05", "B06", "B07", "B8A"],
        ["B11", "B12"],
    ]
    assert sorted(i for g in groups for i in g) == list(range(13))
    model = build_mae(_cfg("satmaepp", scales=1))
    x = torch.randn(2, 13, 16, 16)
    targets = model.encoder.tokens.targets(x)
    assert torch.allclose(model.reconstruct(targets, model.encoder.tokens.grid(16, 16)), x)
    assert isinstance(model.encoder.tokens, GroupTokens)


@pytest.mark.parametrize("family", ["mae", "prithvi", "satmaepp"])
def test_mae_masks_and_learns(family: str) -> None:
    torch.manual_seed(0)
    cfg = _cfg(family, scales=1 if family == "satmaepp" else 0)
    model = build_mae(cfg)
    x = torch.randn(4, cfg.channels, cfg.input_size, cfg.input_size)
    out = model(x, generator=torch.Generator().manual_seed(0))
    n_tokens = out["mask"].shape[1]
    assert out["mask"].sum(1).eq(n_tokens - int(n_tokens * 0.25)).all()  # 75 % masked per sample
    if family == "satmaepp":
        assert torch.allclose(out["loss"], 0.6 * out["mse"] + 0.4 * out["l1_x2"])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = float(out["loss"].detach())
    for _ in range(40):  # 20 left Prithvi (8 tokens, 2 visible) at 0.74 of the first loss
        loss = model(x, generator=torch.Generator().manual_seed(0))["loss"]  # same mask: a memorisation test
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.7 * first


def test_patch_embedding_matmul_equals_the_conv_and_targets_at_gathers_patchify() -> None:
    tok = PatchTokens(channels=5, dim=12, patch=4)
    x = torch.randn(3, 5, 8, 12)  # non-square grid (2 × 3)
    conv = tok.proj(x).flatten(2).transpose(1, 2)  # the reference: the Conv2d itself
    assert torch.allclose(tok(x), conv, atol=1e-5)
    ids = torch.tensor([[5, 0], [1, 4], [3, 3]])
    full = patchify(x, 4)  # (3, 6, 80)
    assert torch.equal(tok.targets_at(x, ids), torch.stack([full[i, ids[i]] for i in range(3)]))


@pytest.mark.parametrize(("family", "norm_pix"), [("mae", False), ("mae", True), ("prithvi", False)])
def test_masked_only_prediction_equals_the_full_mae_loss(family: str, norm_pix: bool) -> None:
    """The fast path (decode → predict the removed tokens only) gives mae_loss over all predictions."""
    torch.manual_seed(0)
    cfg = _cfg(family, scales=0, norm_pix_loss=norm_pix)
    model = build_mae(cfg).eval()
    x = torch.randn(3, cfg.channels, 16, 16)
    out = model(x, generator=torch.Generator().manual_seed(1))
    _, mask, ids_restore = random_masking(
        model.encoder.embed(x)[0], cfg.mask_ratio, generator=torch.Generator().manual_seed(1)
    )
    tokens, grid = model.encoder.embed(x)
    kept = torch.gather(
        tokens,
        1,
        torch.argsort(ids_restore, 1)[:, : int(tokens.shape[1] * 0.25), None].expand(
            -1, -1, tokens.shape[-1]
        ),
    )
    pred = model.decoder_pred[0](model._decode(model.encoder.run(kept), ids_restore, grid))  # all tokens
    reference = mae_loss(pred, model.encoder.tokens.targets(x), mask, norm_pix_loss=norm_pix)
    assert torch.allclose(out["mse"], reference, rtol=1e-5) and torch.equal(out["mask"], mask)


def test_heads_and_native_size() -> None:
    model = build_mae(_cfg("prithvi"))
    x = torch.randn(2, 26, 32, 32)
    assert Classifier(model.encoder, 7)(x).shape == (2, 7)
    assert Segmenter(model.encoder, 7)(x).shape == (2, 7, 32, 32)
    with pytest.raises(ConfigError, match="expects"):
        model.encoder.pooled(torch.randn(1, 13, 16, 16))


def test_save_load_round_trip(tmp_path: Path) -> None:
    model = build_mae(_cfg("satmaepp"))
    save_model(model, tmp_path)
    again = load_model(tmp_path)
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="patch_size"):
        build_mae(ModelConfig(bands=list(BANDS), img_size=20, patch_size=8))
    with pytest.raises(ConfigError, match="tubelet"):
        build_mae(ModelConfig(family="prithvi", bands=list(BANDS), frames=3, tubelet=2))


@pytest.mark.parametrize("family", ["mae", "prithvi", "satmaepp"])
def test_reconstruction_pictures_match_what_the_loss_scores(family: str) -> None:
    """The full reconstruction, re-cut into the loss's target layout, gives the forward pass's masked MSE."""
    from warmstart_eo.models import reconstruct_image

    model = build_mae(_cfg(family, scales=0)).eval()
    x = torch.randn(2, model.config.channels, 16, 16)
    with torch.no_grad():
        mse = model(x, generator=torch.Generator().manual_seed(3))["mse"]
    seen, recon, removed = reconstruct_image(model, x, torch.Generator().manual_seed(3))
    assert torch.equal(seen, x) and recon.shape == x.shape and removed.shape == (2, 16, 16)
    tok = model.encoder.tokens
    mask = model(x, generator=torch.Generator().manual_seed(3))["mask"].bool()  # (B, N)
    if isinstance(tok, GroupTokens):
        per_token = torch.cat(
            [((a - b) ** 2).mean(-1) for a, b in zip(tok.targets(x), tok.targets(recon), strict=True)], 1
        )
    else:
        per_token = ((tok.targets(x) - tok.targets(recon)) ** 2).mean(-1)  # (B, N)
    assert torch.allclose(per_token[mask].mean(), mse, rtol=1e-4, atol=1e-6)
    assert 0.5 < float(removed.mean()) <= 0.8


def test_adapted_encoder_equals_the_source_on_the_shared_bands() -> None:
    """Dropping bands by name keeps the embedding of those that remain: with the dropped bands at zero the
    source encoder computes what the adapted one does (plain MAE and Prithvi; SatMAE++ drops whole groups)."""
    from warmstart_eo.models import adapt_encoder

    for family in ("mae", "prithvi"):
        model = build_mae(_cfg(family)).eval()
        keep = ["B08", "B04", "B02"]  # a subset, in another order
        small = adapt_encoder(model.encoder, keep).eval()
        frames = model.config.frames
        x = torch.randn(2, frames * 3, 16, 16)
        full = torch.zeros(2, frames * len(BANDS), 16, 16)
        for t in range(frames):
            for j, b in enumerate(keep):
                full[:, t * len(BANDS) + BANDS.index(b)] = x[:, t * 3 + j]
        with torch.no_grad():
            assert torch.allclose(small.pooled(x), model.encoder.pooled(full), atol=1e-5)
    sat = build_mae(_cfg("satmaepp")).encoder
    ten = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]
    assert adapt_encoder(sat, ten).tokens.ids == [0, 1, 2]
    assert adapt_encoder(sat, ["B11", "B12", "B02"]).tokens.ids == [0, 2]  # missing group 1 dropped, ids kept
