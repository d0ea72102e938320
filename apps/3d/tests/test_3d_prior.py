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
        "--isplat.prior.detect_min_side",
        "64",
        "--out",
        str(tmp_path / "run"),
    ]
    assert app.main(argv) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["prior_views_posed"] >= 1 and results["n_gaussians"] == 200 and "ate" not in results
    assert (tmp_path / "run" / "splats.ply").is_file()
    # renders and stage-1 depth maps: TensorBoard images and the same rows as a PNG (no split: all train)
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload()
    assert sorted(events.Tags()["images"]) == [f"views/train/view_{i:03d}.png" for i in range(4)]
    assert Image.open(tmp_path / "run" / "views.png").size == (3 * 64, 4 * 64)
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


def _stereo_geometry(h=8, w=12):
    """Three cameras in an arbitrary world frame, their intrinsics, depth maps and world point maps."""
    from warmstart_3d.instantsplat import backproject

    eyes = [torch.tensor([0.3, -3.0, 0.5]), torch.tensor([1.2, -2.7, 0.7]), torch.tensor([-1.0, -2.8, 0.2])]
    viewmats = torch.stack([look_at(e, torch.tensor([0.1, 0.2, 0.3])) for e in eyes])
    K = intrinsics(w, h, 50.0)
    depth = 2.5 + torch.rand(3, h, w, generator=torch.Generator().manual_seed(0))
    pts = torch.stack(
        [
            backproject(depth[i : i + 1], torch.zeros(1, h, w, 3), K[None], viewmats[i : i + 1])[0]
            for i in range(3)
        ]
    ).reshape(3, h, w, 3)
    return viewmats, K, depth, pts


def test_pointmaps_convert_to_depths_poses_and_intrinsics_at_the_images_resolution():
    from warmstart_3d.stereo import from_pointmaps

    viewmats, K, depth, pts = _stereo_geometry()
    masks = torch.ones(3, 8, 12, dtype=torch.bool)
    masks[1, 0, 0] = False
    out_v, out_K, out_d = from_pointmaps(
        pts,
        torch.linalg.inv(viewmats),
        torch.full((3, 1), float(K[0, 0])),
        K[:2, 2].expand(3, 2),
        masks,
        24,
        16,
    )
    assert torch.allclose(out_v, viewmats @ torch.linalg.inv(viewmats[0]), atol=1e-4)  # view 0's frame
    assert torch.allclose(out_v[0], torch.eye(4), atol=1e-5)
    assert torch.allclose(out_K[:, 0, 0], 2 * K[0, 0].expand(3)) and torch.allclose(
        out_K[:, :2, 2], 2 * K[:2, 2]
    )
    assert out_d.shape == (3, 16, 24)
    expected = depth.repeat_interleave(2, 1).repeat_interleave(2, 2)
    expected[1, :2, :2] = 0  # the confidence mask's pixel, upsampled
    assert torch.allclose(out_d, expected, atol=1e-4)


def test_dust3r_adapter_runs_a_fake_dust3r_and_refuses_in_one_line_without_it(monkeypatch, tmp_path, capsys):
    import sys
    import types

    from warmstart_3d.stereo import StereoConfig, stereo_stage1

    viewmats, K, depth, pts = _stereo_geometry()
    seen = {}

    class Aligner:
        def compute_global_alignment(self, **kw):
            seen["align"] = kw
            return torch.tensor(0.25)

        def get_pts3d(self):
            return list(pts)

        def get_masks(self):
            return list(torch.ones(3, 8, 12, dtype=torch.bool))

        def get_im_poses(self):
            return torch.linalg.inv(viewmats)

        def get_focals(self):
            return torch.full((3, 1), float(K[0, 0]))

        def get_principal_points(self):
            return K[:2, 2].expand(3, 2)

    class Model:
        @classmethod
        def from_pretrained(cls, name):
            seen["checkpoint"] = name
            return cls()

        def to(self, device):
            return self

    def inference(pairs, model, device, batch_size=1):
        seen["pairs"] = pairs
        return {"pairs": len(pairs)}

    modules = {
        "dust3r": types.ModuleType("dust3r"),
        "dust3r.cloud_opt": types.SimpleNamespace(
            GlobalAlignerMode=types.SimpleNamespace(PointCloudOptimizer="pco"),
            global_aligner=lambda *a, **k: Aligner(),
        ),
        "dust3r.image_pairs": types.SimpleNamespace(
            make_pairs=lambda views, **kw: [(a, b) for a in views for b in views if a["idx"] != b["idx"]]
        ),
        "dust3r.inference": types.SimpleNamespace(inference=inference),
        "dust3r.model": types.SimpleNamespace(AsymmetricCroCo3DStereo=Model),
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    images = torch.rand(3, 8, 12, 3)
    out_v, out_K, out_d, info = stereo_stage1(images, "dust3r", StereoConfig(checkpoint="ckpt", device="cpu"))
    assert seen["checkpoint"] == "ckpt" and len(seen["pairs"]) == 6 and seen["align"]["init"] == "mst"
    assert tuple(seen["pairs"][0][0]["img"].shape[-2:]) == (336, 512)  # long side 512, multiples of 16
    assert torch.allclose(out_v, viewmats @ torch.linalg.inv(viewmats[0]), atol=1e-4)
    assert torch.allclose(out_d, depth, atol=1e-4) and torch.allclose(out_K, K.expand(3, 3, 3), atol=1e-4)
    assert info["stereo_alignment_loss"] == 0.25
    # without the package: one line naming how to install it, exit 2, nothing written
    monkeypatch.setitem(sys.modules, "dust3r", None)
    from warmstart_3d.cli import app
    from warmstart_3d.data import write_scene_folder

    write_scene_folder(tmp_path / "s", images, K.expand(3, 3, 3), None, ["a.png", "b.png", "c.png"])
    capsys.readouterr()
    assert (
        app.main(
            [
                "instantsplat",
                "--data",
                str(tmp_path / "s"),
                "--isplat.init",
                "dust3r",
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not on PyPI" in err and "git clone" in err
    assert not (tmp_path / "r").exists()


def test_pnp_ransac_recovers_the_pose_through_outliers_and_a_planar_sample():
    from warmstart_3d.prior import pnp_ransac

    g = torch.Generator().manual_seed(1)
    world = torch.randn(80, 3, generator=g) * 0.5
    world[:30, 2] = 0.0  # a plane (a floor) among the points: DLT samples on it are degenerate, not fatal
    view = look_at(torch.tensor([1.0, -2.8, 0.9]), torch.zeros(3))
    K = intrinsics(64, 64, 60.0)
    cam = world @ view[:3, :3].T + view[:3, 3]
    pix = (cam @ K.T)[:, :2] / cam[:, 2:]
    pix[50:] = torch.rand(30, 2, generator=g) * 64  # 37 % wrong matches
    found = pnp_ransac(world, pix, K, PriorConfig(pnp_hypotheses=300))
    assert found is not None
    pose, inliers = found
    assert torch.allclose(pose, view, atol=1e-3) and bool(inliers[:50].all()) and int(inliers[50:].sum()) <= 2
