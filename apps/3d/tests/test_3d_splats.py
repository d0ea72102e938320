import numpy as np
import pytest
import torch
from plyfile import PlyData, PlyElement

from warmstart.errors import DataError
from warmstart_3d.splats import Gaussians, check_gaussians, read_ply, write_ply


def random_gaussians(n=20, degree=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    k = (degree + 1) ** 2
    return Gaussians(
        torch.randn(n, 3, generator=g),
        torch.randn(n, 4, generator=g),
        torch.randn(n, 3, generator=g) - 3,
        torch.randn(n, generator=g),
        torch.randn(n, k, 3, generator=g),
    )


def test_ply_round_trip_is_exact_and_uses_the_3dgs_layout(tmp_path):
    g = random_gaussians()
    path = write_ply(tmp_path / "s.ply", g)
    back = read_ply(path)
    for name in ("means", "quats", "log_scales", "opacity_logits", "sh"):
        assert torch.equal(getattr(back, name), getattr(g, name)), name
    names = [p.name for p in PlyData.read(str(path))["vertex"].properties]
    assert names[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert names[-8:] == ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    # f_rest is channel-major: the first (K-1) entries are the red channel's higher bands
    vertex = PlyData.read(str(path))["vertex"]
    assert np.allclose(vertex["f_rest_0"], g.sh[:, 1, 0].numpy()) and np.allclose(
        vertex["f_rest_8"], g.sh[:, 1, 1].numpy()
    )


def test_missing_property_is_a_one_line_data_error(tmp_path):
    records = np.zeros(3, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    PlyData([PlyElement.describe(records, "vertex")]).write(str(tmp_path / "points.ply"))
    with pytest.raises(DataError, match="missing 3DGS properties.*f_dc_0"):
        read_ply(tmp_path / "points.ply")


def test_degenerate_gaussians_are_refused_or_repaired():
    g = random_gaussians(6, degree=0)
    g.quats[0] = float("nan")
    g.quats[1] = 0.0
    g.log_scales[2, 0] = float("-inf")  # a zero scale
    g.means[3, 1] = float("nan")
    with pytest.raises(DataError, match="NaN or zero quaternions"):
        check_gaussians(g)
    fixed = check_gaussians(g, repair=True)
    assert len(fixed) == 5  # the NaN position is dropped
    assert torch.isfinite(fixed.quats).all() and (fixed.quats.norm(dim=-1) > 0).all()
    assert torch.isfinite(fixed.log_scales).all()
    with pytest.raises(DataError, match="scales must be positive"):
        Gaussians.from_activated(
            torch.zeros(2, 3),
            torch.tensor([[0.1, 0.1, 0.0], [0.1, 0.1, 0.1]]),
            torch.full((2,), 0.5),
            torch.rand(2, 3),
        )
