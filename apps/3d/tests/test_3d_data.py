import pytest
import torch
from PIL import Image

from warmstart.errors import DataError
from warmstart_3d.data import (
    SHAPE_CLASSES,
    load_points,
    load_scene,
    load_true_poses,
    make_scene,
    sample_shape,
)
from warmstart_3d.instantsplat import backproject


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory):
    return make_scene(
        tmp_path_factory.mktemp("s") / "scene",
        2,
        1,
        16,
        16,
        seed=0,
        n_per_object=150,
        rot_noise_deg=2.0,
        trans_noise=0.05,
    )


def test_scene_round_trip_poses_and_depth_are_consistent(scene_dir):
    scene = load_scene(scene_dir)
    truth = load_true_poses(scene_dir, scene.names)
    assert scene.images.shape == (3, 16, 16, 3) and scene.train == [0, 2] and scene.test == [1]
    assert truth is not None and not torch.allclose(truth, scene.viewmats)  # stored poses are the noisy ones
    # back-projected true depth lands on the ground-truth splats
    from warmstart_3d.splats import read_ply

    gt = read_ply(scene_dir / "gt.ply")
    points, _ = backproject(scene.depths[:1], scene.images[:1], scene.Ks[:1], truth[:1])
    nearest = torch.cdist(points, gt.means).min(dim=1).values.median()
    shifted = truth[:1].clone()
    shifted[:, :3, 3] += 0.3
    wrong, _ = backproject(scene.depths[:1], scene.images[:1], scene.Ks[:1], shifted)
    assert nearest < 0.2 and nearest < 0.6 * torch.cdist(wrong, gt.means).min(dim=1).values.median()


def test_bad_scene_folders_are_refused(tmp_path, scene_dir):
    bad = tmp_path / "bad" / "images"
    bad.mkdir(parents=True)
    Image.new("RGB", (16, 16)).save(bad / "a.png")
    Image.new("RGB", (20, 16)).save(bad / "b.png")
    with pytest.raises(DataError, match="different sizes"):
        load_scene(bad.parent)
    (bad / "b.png").unlink()
    (bad / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="non-image files"):
        load_scene(bad.parent)
    (bad / "notes.txt").unlink()
    (bad / "c.png").write_text("not an image")
    with pytest.raises(DataError, match="not a readable image"):
        load_scene(bad.parent)


def test_shapes_are_on_their_surfaces_and_clouds_are_validated(tmp_path):
    g = torch.Generator().manual_seed(0)
    pts, nrm = sample_shape("sphere", 100, g)
    assert torch.allclose(pts.norm(dim=-1), torch.full((100,), 0.9), atol=1e-5)
    for name in SHAPE_CLASSES:
        pts, nrm = sample_shape(name, 64, g)
        assert pts.shape == (64, 3) and torch.allclose(nrm.norm(dim=-1), torch.ones(64), atol=1e-4)
    torch.save  # noqa: B018
    import numpy as np

    np.save(tmp_path / "nan.npy", np.array([[0, 0, 0], [np.nan, 1, 1]], dtype=np.float32))
    with pytest.raises(DataError, match="NaN"):
        load_points(tmp_path / "nan.npy")
    np.save(tmp_path / "one.npy", np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(DataError, match="only 1 point"):
        load_points(tmp_path / "one.npy")
    (tmp_path / "cube.off").write_text("OFF\n4 2 0\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n4 0 1 2 3\n3 0 1 2\n")
    cloud = load_points(tmp_path / "cube.off", n_points=50)
    assert cloud.shape == (50, 3) and cloud[:, 2].abs().max() == 0
