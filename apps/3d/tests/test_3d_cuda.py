"""3d on CUDA: InstantSplat end to end with the scene on the GPU (gsplat backend, poses optimised there too).

gsplat/torch rasterizer parity is in test_3d_render.py. Skipped without CUDA (gsplat has no CPU path)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from warmstart_3d.data import load_scene, load_true_poses, make_scene
from warmstart_3d.instantsplat import InstantSplatConfig, run_instantsplat
from warmstart_3d.splatfit import SplatFitConfig

DEVICE = "cuda"
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (gsplat)"),
]


def test_instantsplat_runs_on_cuda(tmp_path) -> None:
    folder = make_scene(tmp_path / "scene", 3, 1, 32, 32, 0, 2, 200, 2.0, 0.05)
    scene = load_scene(folder)
    truth = load_true_poses(folder, scene.names)
    cuda = dataclasses.replace(
        scene,
        images=scene.images.to(DEVICE),
        Ks=scene.Ks.to(DEVICE),
        viewmats=scene.viewmats.to(DEVICE),
        depths=scene.depths.to(DEVICE) if scene.depths is not None else None,
    )
    config = InstantSplatConfig(
        init="depth", n_points=400, align_steps=3, fit=SplatFitConfig(steps=20, densify=False)
    )
    gaussians, results = run_instantsplat(cuda, cuda.viewmats, config, true_viewmats=truth.to(DEVICE))
    assert gaussians.means.device.type == DEVICE
    assert math.isfinite(results["train_loss"]) and math.isfinite(results["psnr"])
    assert math.isfinite(results["ate"])
