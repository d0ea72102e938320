import torch

from warmstart_3d.gmae import GaussianMAE, GMAEConfig, chamfer, farthest_point_sample, group


def test_fps_spreads_and_groups_are_centred():
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(2, 200, 3, generator=g)
    idx = farthest_point_sample(pts, 10)
    assert idx.unique(dim=1).shape[1] == 10
    centres, groups = group(pts, 10, 8)
    assert torch.allclose(groups[:, :, 0, :3], torch.zeros(2, 10, 3), atol=1e-6), (
        "nearest member is the centre itself"
    )


def test_chamfer_is_zero_for_permuted_sets_and_positive_otherwise():
    a = torch.rand(3, 16, 3, generator=torch.Generator().manual_seed(1))
    perm = a[:, torch.randperm(16)]
    assert chamfer(a, perm)[0] < 1e-10
    assert chamfer(a, a + 0.1)[0] > 1e-3


def test_gmae_pretraining_lowers_its_loss(gaussian_features):
    feats = gaussian_features(4, 64)
    torch.manual_seed(0)
    model = GaussianMAE(GMAEConfig(n_groups=8, group_size=8, dim=32, depth=1), n_classes=2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = model.pretrain_loss(feats, torch.Generator().manual_seed(0))
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0]


def _two_colour_cloud(n: int = 128) -> torch.Tensor:
    """(1, n, 14): two interleaved halves on the same random positions, one red, one blue."""
    g = torch.Generator().manual_seed(3)
    f = torch.zeros(1, n, 14)
    f[..., :3] = torch.rand(1, n, 3, generator=g) * 2 - 1
    f[..., 3], f[..., 4:7], f[..., 7] = 0.9, 0.1, 1.0
    red = torch.arange(n) % 2 == 0
    f[0, red, 11] = 1.0
    f[0, ~red, 13] = 1.0
    return f


def test_feature_grouping_groups_alike_gaussians_and_xyz_grouping_mixes_them():
    from warmstart_3d.gmae import group_features, grouping_space

    f = _two_colour_cloud()
    space = grouping_space(f, ["xyz", "colour"])
    assert space.shape == (1, 128, 6)
    _, centre_space, groups = group_features(f, 8, 16, space)
    red_share = groups[..., 11].mean(-1)  # per group: the fraction of red members
    assert set(red_share.flatten().tolist()) <= {0.0, 1.0}, "grouped by colour too: every group is one colour"
    assert 0 < (centre_space[..., 3] > 0).sum() < 8, "FPS in feature space picks centres of both colours"
    _, plain = group(f, 8, 16)
    mixed = plain[..., 11].mean(-1)
    assert ((mixed > 0) & (mixed < 1)).float().mean() > 0.5, "by xyz alone most groups mix the colours"


def test_grouping_space_is_normalised_per_object(gaussian_features):
    from warmstart_3d.gmae import grouping_space

    f = gaussian_features(2, 50)
    big = f.clone()
    big[..., :3] = big[..., :3] * 5 + 3  # a larger, shifted object with larger Gaussians
    big[..., 4:7] = big[..., 4:7] * 5
    attrs = ["xyz", "opacity", "scale", "rotation", "colour"]
    a, b = grouping_space(f, attrs), grouping_space(big, attrs)
    assert torch.allclose(a, b, atol=1e-5)
    assert a[..., :3].norm(dim=-1).amax(1).allclose(torch.ones(2)) and a.abs().max() <= 1.0 + 1e-6


def test_splats_pooling_soft_neighbours_span_nearest_to_mean_and_ignore_candidate_order():
    from warmstart_3d.gmae import SplatsPooling

    torch.manual_seed(0)
    pool = SplatsPooling(5, 16, k=4, width=8)
    groups = torch.randn(2, 3, 10, 5)
    w = pool.weights(pool.first(groups))  # (B, G, k, O)
    assert torch.allclose(w.sum(-1), torch.ones(2, 3, 4))
    neighbours = 1 / w.pow(2).sum(-1)  # effective number of candidates each slot averages
    assert (neighbours[..., 0] < 2).all(), "the coldest slot is (nearly) a hard nearest neighbour"
    assert (neighbours[..., -1] > 8).all(), "the hottest slot is nearly the mean of all 10 candidates"
    assert (neighbours.diff(dim=-1) > 0).all(), "the slots differ (the reference's start with equal ones)"
    perm = torch.randperm(10)
    assert torch.allclose(pool(groups), pool(groups[:, :, perm]), atol=1e-5)
    pool(groups).sum().backward()
    assert pool.log_temperature.grad is not None and pool.log_temperature.grad.abs().sum() > 0


def test_splats_pooling_model_reads_more_candidates_and_reconstructs_k(gaussian_features):
    feats = gaussian_features(2, 64)
    cfg = GMAEConfig(n_groups=8, group_size=8, dim=16, depth=1, heads=2, embed_width=16, pooling="splats")
    model = GaussianMAE(cfg, n_classes=3)
    _, _, pos_in, groups = model.grouped(feats)
    assert groups.shape == (2, 8, 10, 14) and pos_in.shape == (2, 8, 3)  # 1.25 x 8 candidates
    assert model(feats).shape == (2, 3) and torch.isfinite(model.pretrain_loss(feats))
    grouped = GaussianMAE(GMAEConfig(**{**cfg.__dict__, "group_attributes": ["xyz", "colour"]}), 0)
    assert grouped.grouped(feats)[2].shape == (2, 8, 6)  # the positional input carries the centre's colour


def test_gmae_command_takes_feature_grouping_and_splats_pooling(tmp_path, one_line_error):
    import json

    from warmstart_3d.cli import app
    from warmstart_3d.splat_dataset import make_splat_dataset

    make_splat_dataset(tmp_path / "ds", per_class=2, classes=["cube", "sphere"], n_gaussians=32)
    argv = ["gmae", "--data", str(tmp_path / "ds"), "--n_points", "32", "--model.n_groups", "4"]
    argv += ["--model.group_size", "8", "--model.dim", "16", "--model.depth", "1", "--model.heads", "2"]
    argv += [
        "--model.embed_width",
        "16",
        "--pretrain_steps",
        "2",
        "--finetune_steps",
        "2",
        "--batch_size",
        "2",
    ]
    ours = ["--model.group_attributes", "[xyz,scale,rotation]", "--model.pooling", "splats"]
    assert app.main([*argv, *ours, "--out", str(tmp_path / "g")]) == 0
    saved = GaussianMAE.from_pretrained(tmp_path / "g" / "model")
    assert saved.config.pooling == "splats" and saved.config.group_attributes == ["xyz", "scale", "rotation"]
    assert json.loads((tmp_path / "g" / "results.json").read_text())["pretrain_loss_last"] is not None
    assert app.main([*argv, "--model.pooling", "mean", "--out", str(tmp_path / "bad")]) == 2
    one_line_error("--model.pooling")
    assert not (tmp_path / "bad").exists()
