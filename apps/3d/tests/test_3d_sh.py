"""Spherical harmonics up to degree 3: the CPU reference's colours, fitting with --fit.sh_degree 3, PLY export."""

import json

import pytest
import torch

from warmstart_3d.render import gaussian_colors
from warmstart_3d.splats import Gaussians, read_ply, write_ply

C0, C1 = 0.28209479177387814, 0.4886025119029199
C2 = [1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396]
C3 = [
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
]


def eval_sh_3dgs(sh: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """The reference 3DGS code's ``eval_sh`` (utils/sh_utils.py), written out for degree 3."""
    x, y, z = torch.nn.functional.normalize(dirs, dim=-1).unbind(-1)
    xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
    basis = [
        torch.full_like(x, C0),
        -C1 * y,
        C1 * z,
        -C1 * x,
        C2[0] * xy,
        C2[1] * yz,
        C2[2] * (2 * zz - xx - yy),
        C2[3] * xz,
        C2[4] * (xx - yy),
        C3[0] * y * (3 * xx - yy),
        C3[1] * xy * z,
        C3[2] * y * (4 * zz - xx - yy),
        C3[3] * z * (2 * zz - 3 * xx - 3 * yy),
        C3[4] * x * (4 * zz - xx - yy),
        C3[5] * z * (xx - yy),
        C3[6] * x * (xx - 3 * yy),
    ]
    return (torch.stack(basis, -1).unsqueeze(-1) * sh).sum(-2)


@pytest.mark.parametrize("degree", [1, 2, 3])
def test_reference_sh_colours_match_the_3dgs_basis(degree):
    from warmstart_3d.geometry import look_at

    g = torch.Generator().manual_seed(degree)
    means = torch.randn(50, 3, generator=g, dtype=torch.float64)
    sh = torch.randn(50, 16, 3, generator=g, dtype=torch.float64) * 0.3
    sh[:, (degree + 1) ** 2 :] = 0
    view = look_at(torch.tensor([4.0, 1.0, 2.0], dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    ours = gaussian_colors(means, sh[:, : (degree + 1) ** 2], view[None], degree)[0]
    centre = torch.linalg.inv(view)[:3, 3]
    expected = (eval_sh_3dgs(sh, means - centre) + 0.5).clamp_min(0)
    assert torch.allclose(ours, expected, atol=1e-10)
    assert not torch.allclose(ours, (C0 * sh[:, 0] + 0.5).clamp_min(0))  # the higher bands matter


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_ply_round_trip_is_exact_at_every_degree(tmp_path, degree):
    g = torch.Generator().manual_seed(0)
    k = (degree + 1) ** 2
    splat = Gaussians(
        torch.randn(9, 3, generator=g),
        torch.randn(9, 4, generator=g),
        torch.randn(9, 3, generator=g),
        torch.randn(9, generator=g),
        torch.randn(9, k, 3, generator=g),
    )
    back = read_ply(write_ply(tmp_path / "s.ply", splat))
    assert (
        back.sh_degree == degree and torch.equal(back.sh, splat.sh) and torch.equal(back.means, splat.means)
    )


@pytest.mark.slow  # ~10 s: a scene, a fit and two InstantSplat runs
def test_fit_sh_degree_3_fits_and_writes_view_dependent_colour(tmp_path):
    from warmstart_3d.cli import app

    scene = tmp_path / "scene"
    assert app.main(["scene-make", "--out", str(scene), "--size", "16", "--gaussians_per_object", "100"]) == 0
    argv = ["splat-fit", "--data", str(scene), "--fit.steps", "8", "--n_points", "80", "--fit.sh_degree", "3"]
    assert app.main([*argv, "--out", str(tmp_path / "fit")]) == 0
    splats = read_ply(tmp_path / "fit" / "splats.ply")
    assert splats.sh_degree == 3 and splats.sh[:, 9:].abs().max() > 0  # degree-3 bands were trained
    assert json.loads((tmp_path / "fit" / "results.json").read_text())["sh_degree"] == 3
    argv = [
        "instantsplat",
        "--data",
        str(scene),
        "--isplat.fit.steps",
        "4",
        "--isplat.n_points",
        "60",
        "--isplat.align_steps",
        "1",
        "--isplat.fit.sh_degree",
        "3",
        "--isplat.init",
        "random",
    ]
    assert app.main([*argv, "--out", str(tmp_path / "is")]) == 0
    assert read_ply(tmp_path / "is" / "splats.ply").sh_degree == 3
    assert app.main([*argv[:-4], "--isplat.fit.sh_degree", "4", "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()  # refused before the run directory is made


def test_sh_schedule_grows_one_degree_per_interval():
    from warmstart_3d.splatfit import SplatFitConfig, active_sh_degree

    cfg = SplatFitConfig(steps=60, sh_degree=3)
    assert [active_sh_degree(cfg, s) for s in (0, 9, 10, 20, 30, 59)] == [0, 0, 1, 2, 3, 3]
    cfg.sh_degree_interval = 1000
    assert active_sh_degree(cfg, 2999) == 2 and active_sh_degree(cfg, 3000) == 3


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (gsplat)")
def test_degree_3_reference_matches_gsplat_on_cuda():
    from warmstart_3d.data import orbit_cameras, scene_gaussians
    from warmstart_3d.geometry import intrinsics
    from warmstart_3d.render import rasterize

    g, _ = scene_gaussians(2, 200, torch.Generator().manual_seed(0))
    sh = torch.cat([g.sh, 0.2 * torch.randn(len(g), 15, 3, generator=torch.Generator().manual_seed(1))], 1)
    view, K = orbit_cameras(2).cuda(), intrinsics(48, 48).expand(2, 3, 3).cuda()
    args = [t.cuda() for t in (g.means, g.quats, g.scales, g.opacities, sh)]
    images = {
        b: rasterize(*args, view, K, 48, 48, backend=b, sh_degree=3).colors for b in ("torch", "gsplat")
    }
    assert (images["torch"] - images["gsplat"]).abs().max() < 2e-3
