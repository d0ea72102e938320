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
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from warmstart_3d.data import load_scene, make_scene
from warmstart_3d.instantsplat import InstantSplatConfig, run_instantsplat
from warmstart_3d.prior import DepthSourceConfig

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
    size: int = 64
    """Image width = height in pixels (SIFT needs some resolution)."""
    n_points: int = 800
    """Initial Gaussians."""
    objects_gaussians: int = 800
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
    with tempfile.TemporaryDirectory() as tmp:
        for seed in config.seeds:
            folder = make_scene(
                Path(tmp) / f"scene-{seed}",
                config.n_train,
                config.n_test,
                config.size,
                config.size,
                seed=seed,
                n_per_object=config.objects_gaussians,
            )
            scene = load_scene(folder)
            truth = scene.viewmats
            base = InstantSplatConfig(n_points=config.n_points, align_steps=config.align_steps)
            base.fit.steps, base.fit.seed = config.steps, seed
            base.prior = PriorConfig(model=source, input_size=input_size)
            images_only, estimated, info = prior_scene(replace(scene, depths=None), base, model, processor)
            posed[seed] = info["prior_views_posed"]
            runs = {
                "prior (images only)": (images_only, estimated, "depth"),
                "random (images only)": (images_only, estimated, "random"),
                "oracle (true depth + poses)": (scene, truth, "depth"),
            }
            for arm, (arm_scene, initial, init) in runs.items():
                _, result = run_instantsplat(
                    arm_scene, initial, replace(base, init=init), true_viewmats=truth
                )
                psnr[arm][seed] = result["psnr"]
                extra["SSIM"][arm][seed] = result["ssim"]
                extra["ATE"][arm][seed] = result["ate"]
                extra["ATE before joint optimisation"][arm][seed] = result["ate_initial"]
                extra["seconds"][arm][seed] = result["seconds"]
                log.info("seed %d %s: %s", seed, arm, result)
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
            f"Procedural scenes, {config.n_train} training + {config.n_test} held-out views at {config.size}px. "
            f"Prior: {source if config.prior_model else 'a tiny Depth Anything trained once on other procedural scenes (cached)'}; "
            f"poses from SIFT + RANSAC essential matrices (views posed by matching, of {views}: "
            f"{', '.join(f'{v:.0f}' for v in posed.values())} per seed; unposed views start at view 0's pose). "
            f"Every arm: {config.steps} steps of joint Gaussian + pose optimisation (0.8·L1 + 0.2·(1−SSIM), no "
            f"densification) and {config.align_steps} steps of test-time pose alignment; ATE after a similarity "
            "alignment to the true trajectory. CPU reference rasterizer."
        ),
        config={**asdict(config), "views_posed_by_matching": posed},
    )
    return {"report": report, "psnr": psnr, "extra": extra}
