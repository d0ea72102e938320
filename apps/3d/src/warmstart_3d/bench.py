"""``bench splat``: InstantSplat from images alone against random init and an oracle, equal steps.

Seed paper: "InstantSplat" (arXiv 2403.20309), whose ablations compare the geometry prior's initialisation
with random points. Here on procedural scenes (true depth and poses known), every arm runs the same joint
optimisation of Gaussians and poses for the same steps, the same test-time pose alignment and seeds:
``prior`` — images only: a depth-estimation model (``--splat.prior_model``, or a tiny Depth Anything trained
once on other procedural scenes and cached, :func:`warmstart_3d.prior.depth_source`) plus feature-matched
poses, :mod:`warmstart_3d.prior`; ``random`` — the same estimated poses with random points; ``oracle`` — the
scene's true depth back-projected through its true poses (an upper bound, never a default). Novel-view
PSNR/SSIM, ATE after a similarity alignment, wall time, through the core's bench report writer.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from warmstart_3d.instantsplat import InstantSplatConfig, run_instantsplat
from warmstart_3d.prior import DepthSourceConfig
from warmstart_3d.splat_scenes import downsample, textured_scene

log = logging.getLogger(__name__)


@dataclass
class SplatBenchConfig:
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """Seeds (scene and optimisation change with the seed)."""
    steps: int = 150
    """Joint-optimisation steps of every arm."""
    n_train: int = 3
    """Training views (sparse, as in InstantSplat)."""
    n_test: int = 2
    """Held-out views for novel-view metrics."""
    size: int = 128
    """Image width = height of the views stage 1 sees (SIFT features and matches need the pixels)."""
    fit_size: int = 64
    """Width = height the Gaussians are optimised and scored at (the views downsampled, as InstantSplat's
    splatting runs below its stereo model's resolution)."""
    detect_min_side: int = 384
    """Stage 1 detects features on the views upsampled to this shorter side (``PriorConfig``)."""
    texture_cells: float = 6.0
    """Cells per unit of the scenes' 3-D colour texture (0: the plain procedural colours)."""
    n_points: int = 800
    """Initial Gaussians."""
    objects_gaussians: int = 2000
    """Ground-truth Gaussians per scene object."""
    align_steps: int = 40
    """Test-time pose alignment steps."""
    prior_model: str | None = None
    """A depth-estimation model (hub id or folder) for the prior row; None: the cached tiny one."""
    depth_source: DepthSourceConfig = field(default_factory=DepthSourceConfig)
    """Settings of the tiny depth prior trained on other procedural scenes (when no prior_model is given)."""


ARMS = ("prior (images only)", "random (images only)", "oracle (true depth + poses)")
BASELINE = "random (images only)"


def run_splat_bench(config: SplatBenchConfig, out_dir: Path) -> dict[str, Any]:
    """Run every arm on every seed; write report.md / plot.png / results.json into ``out_dir``."""
    from dataclasses import replace

    from warmstart.eval import write_bench_report
    from warmstart_3d.instantsplat import prior_scene
    from warmstart_3d.prior import PriorConfig, depth_source, load_depth_model

    if config.prior_model is not None:
        source, input_size = config.prior_model, 518
    else:
        source, input_size = str(depth_source(config.depth_source) / "model"), config.depth_source.size
    model, processor = load_depth_model(source)
    psnr: dict[str, dict[int, float]] = {arm: {} for arm in ARMS}
    keys = ("SSIM", "ATE", "ATE before joint optimisation", "seconds")
    extra: dict[str, dict[str, dict[int, float]]] = {k: {arm: {} for arm in ARMS} for k in keys}
    posed: dict[int, float] = {}
    pictures: dict[str, torch.Tensor] = {}
    for seed in config.seeds:
        full = textured_scene(
            seed, config.n_train, config.n_test, config.size, config.objects_gaussians, config.texture_cells
        )
        truth = full.viewmats
        assert truth is not None
        base = InstantSplatConfig(n_points=config.n_points, align_steps=config.align_steps)
        base.fit.steps, base.fit.seed = config.steps, seed
        base.prior = PriorConfig(model=source, input_size=input_size, detect_min_side=config.detect_min_side)
        images_only, estimated, info = prior_scene(replace(full, depths=None), base, model, processor)
        posed[seed] = info["prior_views_posed"]
        images_only, scene = downsample(images_only, config.fit_size), downsample(full, config.fit_size)
        runs = {
            "prior (images only)": (images_only, estimated, "depth"),
            "random (images only)": (images_only, estimated, "random"),
            "oracle (true depth + poses)": (scene, truth, "depth"),
        }
        for arm, (arm_scene, initial, init) in runs.items():
            poses: dict[str, torch.Tensor] = {}
            gaussians, result = run_instantsplat(
                arm_scene, initial, replace(base, init=init), true_viewmats=truth, tensors=poses
            )
            psnr[arm][seed] = result["psnr"]
            extra["SSIM"][arm][seed] = result["ssim"]
            extra["ATE"][arm][seed] = result["ate"]
            extra["ATE before joint optimisation"][arm][seed] = result["ate_initial"]
            extra["seconds"][arm][seed] = result["seconds"]
            log.info("seed %d %s: %s", seed, arm, result)
            if seed == config.seeds[0]:
                pictures[arm] = picture_row(
                    gaussians, scene, arm_scene if init == "depth" else replace(arm_scene, depths=None), poses
                )
    views = config.n_train + config.n_test
    report = write_bench_report(
        out_dir,
        "3d: InstantSplat from images (depth prior + matched poses) vs random init vs oracle, equal steps",
        psnr,
        metric="novel-view PSNR (dB)",
        higher_is_better=True,
        baseline=BASELINE,
        extra_metrics=extra,
        description=(
            f"Procedural scenes, {config.n_train} training + {config.n_test} held-out views. "
            f"Prior: {source if config.prior_model else 'a tiny Depth Anything trained once on other procedural scenes (cached)'}; "
            f"poses: SIFT matches (detected at ≥ 384 px), view 0's depth shift searched by PnP consistency with view "
            f"1, every later view by RANSAC PnP of its matches with all earlier posed views back-projected through "
            f"their aligned depths (views posed, of {views}: {', '.join(f'{v:.0f}' for v in posed.values())} per "
            f"seed; an unposed view keeps the previous view's pose). Scenes: cell-textured procedural scenes at "
            f"{config.size}px for stage 1, optimised and scored at {config.fit_size}px. "
            f"Every arm: {config.steps} steps of joint Gaussian + pose optimisation (0.8·L1 + 0.2·(1−SSIM), no "
            f"densification) and {config.align_steps} steps of test-time pose alignment; ATE after a similarity "
            "alignment to the true trajectory. CPU reference rasterizer."
        ),
        config={**asdict(config), "views_posed_by_matching": posed},
    )
    figure = write_picture(out_dir / "views.png", pictures)
    with report.report_md.open("a", encoding="utf-8") as f:
        f.write(
            f"\n## Novel view and stage-1 depth (seed {config.seeds[0]})\n\nPer row (one arm): the held-out view, its "
            "render after test-time pose alignment, the first training view's initial depth map (the arm's "
            f"stage 1; random: no depth, blank).\n\n![views]({figure.name})\n"
        )
    return {"report": report, "psnr": psnr, "extra": extra, "figure": figure}


def picture_row(gaussians, scene, arm_scene, poses: dict[str, torch.Tensor]) -> torch.Tensor:
    """(H, 3W, 3): the first held-out view, the arm's render of it, its first training view's depth map."""
    from warmstart_3d.instantsplat import depth_picture, render_rgb

    test = (scene.test or [0])[0]
    view = poses["test_viewmats"][0] if "test_viewmats" in poses else scene.viewmats[test]
    render = render_rgb(gaussians, view, scene.Ks[test], scene.width, scene.height)
    train = (scene.train or [0])[0]
    depth = (
        arm_scene.depths[train] if arm_scene.depths is not None else torch.zeros(scene.height, scene.width)
    )
    return torch.cat([scene.images[test], render, depth_picture(depth)], 1)


def write_picture(path: Path, rows: dict[str, torch.Tensor]) -> Path:
    """Stack the arms' rows into one PNG (the report lists the arms in this order: ARMS)."""
    import numpy as np
    from PIL import Image

    grid = torch.cat([rows[arm] for arm in ARMS if arm in rows], 0)
    Image.fromarray((grid.numpy() * 255).round().astype(np.uint8)).save(path)
    return path
