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


def test_gmae_pretraining_lowers_its_loss():
    g = torch.Generator().manual_seed(0)
    feats = torch.rand(4, 64, 14, generator=g)
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
