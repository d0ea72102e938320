"""InstantSplat from images alone: a local tiny depth model, feature-matched poses, the end-to-end path."""

import json
import shutil

import pytest
import torch

from warmstart_3d.geometry import intrinsics, look_at
from warmstart_3d.prior import PriorConfig, _align, _to_depth, relative_pose


def tiny_depth_model(folder):
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    backbone = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        patch_size=8,
        image_size=32,
        out_features=["stage1", "stage2"],
        out_indices=[1, 2],
        reshape_hidden_states=False,
    )
    cfg = DepthAnythingConfig(
        backbone_config=backbone,
        reassemble_hidden_size=32,
        fusion_hidden_size=16,
        neck_hidden_sizes=[16, 32],
        reassemble_factors=[2, 1],
        head_hidden_size=8,
        patch_size=8,
    )
    torch.manual_seed(0)
    DepthAnythingForDepthEstimation(cfg).save_pretrained(folder)
    return folder


def test_relative_pose_from_correspondences_recovers_the_motion():
    g = torch.Generator().manual_seed(0)
    world = torch.randn(60, 3, generator=g) * 0.5
    views = torch.stack(
        [
            look_at(torch.tensor([0.0, -3, 0.5]), torch.zeros(3)),
            look_at(torch.tensor([1.0, -2.8, 0.6]), torch.zeros(3)),
        ]
    )
    K = intrinsics(64, 64, 60.0)
    cams = [world @ v[:3, :3].T + v[:3, 3] for v in views]
    pix = [(c @ K.T)[:, :2] / c[:, 2:] for c in cams]
    found = relative_pose(pix[0], pix[1], K, PriorConfig(inlier_px=0.5))
    assert found is not None
    R, t, inliers, points = found
    rel = views[1] @ torch.linalg.inv(views[0])
    assert torch.allclose(R, rel[:3, :3], atol=1e-3)
    assert torch.allclose(t / t.norm(), rel[:3, 3] / rel[:3, 3].norm(), atol=1e-3)  # direction; no scale
    assert int(inliers.sum()) == 60 and (points[:, 2] > 0).all()


def test_scale_shift_alignment_in_disparity_space():
    depth = torch.rand(50) * 3 + 1
    disparity = (1 / depth - 0.1) / 2.5  # what a relative-inverse-depth model might predict
    scale, shift = _align(disparity, depth, "disparity")
    assert torch.allclose(_to_depth(disparity, scale, shift, "disparity"), depth, rtol=1e-4)


@pytest.mark.slow  # ~10 s: a tiny Depth Anything, SIFT on 4 views, a short joint optimisation
def test_instantsplat_from_a_folder_of_images_only(tmp_path, capsys):
    from warmstart_3d.cli import app
    from warmstart_3d.data import make_scene

    scene = make_scene(tmp_path / "scene", 3, 1, 64, 64, seed=0, n_per_object=400)
    images = tmp_path / "images_only"
    shutil.copytree(scene / "images", images)  # nothing but the images
    model = tiny_depth_model(tmp_path / "depth-model")
    argv = [
        "instantsplat",
        "--data",
        str(images),
        "--isplat.prior.model",
        str(model),
        "--isplat.fit.steps",
        "4",
        "--isplat.n_points",
        "200",
        "--isplat.align_steps",
        "1",
        "--out",
        str(tmp_path / "run"),
    ]
    assert app.main(argv) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["prior_views_posed"] >= 1 and results["n_gaussians"] == 200 and "ate" not in results
    assert (tmp_path / "run" / "splats.ply").is_file()
    # with the true poses beside the images (for the ATE only), the estimated trajectory is scored
    assert app.main([*argv[:2], str(scene), *argv[3:-1], str(tmp_path / "run2")]) == 0
    assert json.loads((tmp_path / "run2" / "results.json").read_text())["ate"] >= 0
    capsys.readouterr()
    assert (
        app.main([*argv[:3], "--isplat.prior.model", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "not a loadable depth-estimation model" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_random_init_in_front_of_coincident_cameras():
    from warmstart_3d.data import Scene
    from warmstart_3d.instantsplat import InstantSplatConfig, initialise

    views = torch.eye(4).repeat(3, 1, 1)  # three unposed views at one pose, looking along +z
    scene = Scene(torch.rand(3, 8, 8, 3), intrinsics(8, 8).expand(3, 3, 3), views, ["a", "b", "c"])
    g = initialise(
        scene, views, InstantSplatConfig(init="random", n_points=50), torch.Generator().manual_seed(0)
    )
    assert (g.means[:, 2] > 0.4).all() and (g.means[:, 2] < 1.6).all()  # in front of the cameras, not on them
