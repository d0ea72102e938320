"""3DGS fitting: per-group Adam, gsplat's densification strategy, optional joint camera-pose optimisation.

Seed papers: "3D Gaussian Splatting for Real-Time Radiance Field Rendering" (arXiv 2308.04079) and gsplat's
``examples/simple_trainer.py`` (learning rates per attribute group, the ``Strategy`` object with pre/post
backward hooks); "InstantSplat" (arXiv 2403.20309) for the joint optimisation of Gaussians and poses, the
poses as per-view quaternion + translation corrections under a small, decaying Adam learning rate (the
paper's pose regulariser), plus an optional explicit ‖ΔT‖² penalty. The densification strategy is gsplat's own
``DefaultStrategy`` on both devices (our CPU rasterizer returns the ``means2d``/``radii`` info it reads),
subclassed to fix its opacity reset, which never fires in 1.5.3 (``step % every == 0 & step > 0`` parses as
``step % every == (0 & step) > 0``). The loop is ours, not the core engine's: densification changes the
parameter set and the optimizer state mid-run, which the engine's fixed-parameter loop does not allow.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from warmstart_3d.geometry import camera_centres, quat_to_rotmat
from warmstart_3d.metrics import image_ssim, photometric_loss, psnr
from warmstart_3d.render import rasterize

log = logging.getLogger(__name__)


@dataclass
class SplatFitConfig:
    steps: int = 300
    """Optimisation steps (one training view per step)."""
    lr_means: float = 1.6e-4
    """Adam LR of the centres, times the scene scale (gsplat: 1.6e-4, decayed 100× over the run)."""
    lr_scales: float = 5e-3
    """Adam LR of the log-scales."""
    lr_quats: float = 1e-3
    """Adam LR of the quaternions."""
    lr_opacities: float = 5e-2
    """Adam LR of the opacity logits."""
    lr_sh0: float = 2.5e-3
    """Adam LR of the DC colour."""
    lr_shN: float = 2.5e-3 / 20
    """Adam LR of the higher SH bands."""
    lr_pose: float = 1e-3
    """Adam LR of the pose corrections (decays exponentially to lr_pose_final)."""
    lr_pose_final: float = 1e-5
    """Final pose LR (InstantSplat: 1e-4 → 1e-6 in DUSt3R units; our scenes are ~3 units across)."""
    pose_reg: float = 0.0
    """Weight of the explicit ‖Δq‖² + ‖Δt‖² regulariser to the initial poses (0: the small LR alone)."""
    ssim_lambda: float = 0.2
    """Loss = (1 − λ)·L1 + λ·(1 − SSIM)."""
    densify: bool = True
    """Run the densify/prune strategy (off for InstantSplat's fixed schedule)."""
    refine_start: int = 50
    """Strategy: first step that may densify."""
    refine_every: int = 50
    """Strategy: densify/prune every N steps."""
    refine_stop_fraction: float = 0.7
    """Strategy: stop densifying after this fraction of the steps."""
    reset_every: int = 1000
    """Strategy: reset opacities every N steps (gsplat's bug worked around)."""
    grow_grad2d: float = 2e-4
    """Strategy: screen-space gradient threshold for cloning/splitting."""
    prune_opa: float = 0.005
    """Strategy: prune Gaussians below this opacity."""
    sh_degree: int = 0
    """Spherical-harmonic degree of the colours (0-3): the splats get (d+1)² coefficients per channel and
    the degree in use grows by one every ``sh_degree_interval`` steps (3DGS's schedule)."""
    sh_degree_interval: int | None = None
    """Steps per SH degree increase (3DGS / gsplat: 1000 of 30k); None: the degrees are reached by half of
    the run (steps // (2·sh_degree))."""
    background: float = 1.0
    """Background grey level of the renders (the generator uses white)."""
    seed: int = 0
    """Seed of the view order."""


class PoseCorrection(nn.Module):
    """Per-view rigid corrections: ``viewmat = [R(q) | t] · viewmat₀`` with q = (1, 0, 0, 0) + δq, t = δt."""

    def __init__(self, n_views: int) -> None:
        super().__init__()
        self.dq = nn.Parameter(torch.zeros(n_views, 4))  # (V, 4) added to the identity quaternion
        self.dt = nn.Parameter(torch.zeros(n_views, 3))  # (V, 3)

    def forward(self, viewmats0: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        dq, dt = self.dq, self.dt
        if index is not None:
            dq, dt, viewmats0 = dq[index], dt[index], viewmats0[index]
        q = dq + dq.new_tensor([1.0, 0, 0, 0])
        delta = torch.eye(4, dtype=viewmats0.dtype, device=viewmats0.device).repeat(len(q), 1, 1)
        delta = torch.cat(
            [torch.cat([quat_to_rotmat(q), dt[:, :, None]], dim=2), delta[:, 3:]], dim=1
        )  # (V, 4, 4)
        return delta @ viewmats0

    def penalty(self) -> torch.Tensor:
        return self.dq.pow(2).sum() + self.dt.pow(2).sum()


def active_sh_degree(config: SplatFitConfig, step: int) -> int:
    """The SH degree in use at ``step``: 0 at first, +1 every interval, capped at ``config.sh_degree``."""
    if config.sh_degree <= 0:
        return 0
    interval = config.sh_degree_interval or max(1, config.steps // (2 * config.sh_degree))
    return min(config.sh_degree, step // interval)


def ensure_sh_degree(params: nn.ParameterDict, degree: int) -> nn.ParameterDict:
    """Give ``shN`` the (d+1)² − 1 rows degree ``degree`` needs (new rows start at 0, as in 3DGS)."""
    if not 0 <= degree <= 3:
        from warmstart.errors import ConfigError

        raise ConfigError(f"--fit.sh_degree {degree}: the rasterizers support degrees 0 to 3")
    rows = (degree + 1) ** 2 - 1
    have = params["shN"].shape[1]
    if have < rows:
        pad = params["shN"].new_zeros(params["shN"].shape[0], rows - have, 3)
        params["shN"] = nn.Parameter(torch.cat([params["shN"].detach(), pad], dim=1))
    return params


def scene_scale(viewmats: torch.Tensor) -> float:
    """gsplat's scene scale: 1.1 × the largest camera distance from the mean camera centre (≥ 1)."""
    centres = camera_centres(viewmats)
    return max(1.0, 1.1 * float((centres - centres.mean(0)).norm(dim=-1).max()))


def make_optimizers(
    params: nn.ParameterDict, config: SplatFitConfig, scale: float
) -> dict[str, torch.optim.Optimizer]:
    lrs = {
        "means": config.lr_means * scale,
        "scales": config.lr_scales,
        "quats": config.lr_quats,
        "opacities": config.lr_opacities,
        "sh0": config.lr_sh0,
        "shN": config.lr_shN,
    }
    return {
        name: torch.optim.Adam([{"params": params[name], "lr": lr, "name": name}], eps=1e-15)
        for name, lr in lrs.items()
    }


def make_strategy(config: SplatFitConfig):
    """gsplat's DefaultStrategy with the opacity-reset fix (see the module docstring)."""
    from gsplat.strategy import DefaultStrategy
    from gsplat.strategy.ops import reset_opa

    class FixedDefaultStrategy(DefaultStrategy):
        def step_post_backward(self, params, optimizers, state, step, info, packed=False):  # noqa: ANN001
            super().step_post_backward(params, optimizers, state, step, info, packed=packed)
            if step < self.refine_stop_iter and step > 0 and step % self.reset_every == 0:
                reset_opa(params=params, optimizers=optimizers, state=state, value=self.prune_opa * 2.0)

    stop = max(1, int(config.steps * config.refine_stop_fraction))
    return FixedDefaultStrategy(
        prune_opa=config.prune_opa,
        grow_grad2d=config.grow_grad2d,
        refine_start_iter=config.refine_start,
        refine_stop_iter=stop,
        refine_every=config.refine_every,
        reset_every=config.reset_every,
        pause_refine_after_reset=0,
    )


def render_params(
    params: nn.ParameterDict | dict[str, torch.Tensor],
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    width: int,
    height: int,
    sh_degree: int = 0,
    background: float = 1.0,
):
    """Render the trainable splats (gsplat ``simple_trainer`` names) into cameras: a RenderOutput."""
    sh = torch.cat([params["sh0"], params["shN"]], dim=1)  # (N, K, 3)
    k = (sh_degree + 1) ** 2
    return rasterize(
        params["means"],
        params["quats"],
        params["scales"].exp(),
        torch.sigmoid(params["opacities"]),
        sh[:, :k],
        viewmats,
        Ks,
        width,
        height,
        sh_degree=sh_degree,
        backgrounds=torch.full((len(viewmats), 3), background, device=viewmats.device),
    )


def train_splats(
    params: nn.ParameterDict,
    images: torch.Tensor,
    Ks: torch.Tensor,
    viewmats0: torch.Tensor,
    config: SplatFitConfig,
    *,
    poses: PoseCorrection | None = None,
) -> dict[str, Any]:
    """Fit splats to (V, H, W, 3) images; with ``poses`` the per-view corrections are optimised too.

    Returns a history: ``loss`` per step, ``seconds``, ``n_gaussians``, ``viewmats`` (the corrected ones).
    """
    height, width = images.shape[1:3]
    scale = scene_scale(viewmats0)
    ensure_sh_degree(params, config.sh_degree)
    optimizers = make_optimizers(params, config, scale)
    strategy = make_strategy(config) if config.densify else None
    state = strategy.initialize_state(scene_scale=scale) if strategy is not None else None
    means_decay = 0.01 ** (1.0 / max(config.steps, 1))
    pose_opt = pose_decay = None
    if poses is not None:
        pose_opt = torch.optim.Adam(poses.parameters(), lr=config.lr_pose)
        pose_decay = (config.lr_pose_final / config.lr_pose) ** (1.0 / max(config.steps, 1))
    generator = torch.Generator().manual_seed(config.seed)
    order: list[int] = []
    losses: list[float] = []
    start = time.perf_counter()
    for step in range(config.steps):
        if not order:
            order = torch.randperm(len(images), generator=generator).tolist()
        view = order.pop()
        index = torch.tensor([view])
        viewmat = poses(viewmats0, index) if poses is not None else viewmats0[index]
        degree = active_sh_degree(config, step)
        out = render_params(params, viewmat, Ks[index], width, height, degree, config.background)
        if strategy is not None:
            strategy.step_pre_backward(params, optimizers, state, step, out.meta)
        loss = photometric_loss(out.colors, images[index], config.ssim_lambda)
        if poses is not None and config.pose_reg > 0:
            loss = loss + config.pose_reg * poses.penalty()
        if not loss.requires_grad:  # no Gaussian reached this view (all outside it): nothing to learn here
            losses.append(float(loss))
            continue
        loss.backward()
        if strategy is not None:
            strategy.step_post_backward(params, optimizers, state, step, out.meta, packed=False)
        for opt in optimizers.values():
            opt.step()
            opt.zero_grad(set_to_none=True)
        optimizers["means"].param_groups[0]["lr"] *= means_decay
        if pose_opt is not None:
            pose_opt.step()
            pose_opt.zero_grad(set_to_none=True)
            pose_opt.param_groups[0]["lr"] *= pose_decay
        losses.append(float(loss.detach()))
    seconds = time.perf_counter() - start
    with torch.no_grad():
        final_views = poses(viewmats0) if poses is not None else viewmats0
    return {
        "loss": losses,
        "seconds": seconds,
        "n_gaussians": len(params["means"]),
        "viewmats": final_views.detach(),
    }


def align_poses(
    params: nn.ParameterDict,
    images: torch.Tensor,
    Ks: torch.Tensor,
    viewmats0: torch.Tensor,
    steps: int = 100,
    lr: float = 3e-3,
    sh_degree: int = 0,
    background: float = 1.0,
) -> torch.Tensor:
    """Test-time pose alignment (InstantSplat's evaluation): optimise only the cameras of held-out views
    against their images, Gaussians frozen. Returns the aligned (V, 4, 4)."""
    frozen = {k: v.detach() for k, v in params.items()}
    poses = PoseCorrection(len(images)).to(viewmats0.device)
    opt = torch.optim.Adam(poses.parameters(), lr=lr)
    height, width = images.shape[1:3]
    for _ in range(steps):
        out = render_params(frozen, poses(viewmats0), Ks, width, height, sh_degree, background)
        loss = photometric_loss(out.colors, images, 0.2)
        if not loss.requires_grad:
            break
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    with torch.no_grad():
        return poses(viewmats0)


@torch.no_grad()
def evaluate_views(
    params: nn.ParameterDict | dict[str, torch.Tensor],
    images: torch.Tensor,
    Ks: torch.Tensor,
    viewmats: torch.Tensor,
    sh_degree: int = 0,
    background: float = 1.0,
) -> dict[str, float]:
    """PSNR and SSIM of the renders against (V, H, W, 3) images."""
    height, width = images.shape[1:3]
    out = render_params(params, viewmats, Ks, width, height, sh_degree, background)
    render = out.colors.clamp(0, 1)
    return {"psnr": psnr(render, images), "ssim": image_ssim(render, images)}


def fit_folder(
    data: Path,
    fit: SplatFitConfig,
    init: Literal["random", "depth"],
    n_points: int,
    open_run: Callable[[], Path],
) -> dict:
    """The ``splat-fit`` command: classic 3DGS on a posed scene folder; splats.ply and results.json go into
    the run folder ``open_run()`` gives, opened once the folder has been checked."""
    import json

    from warmstart.errors import DataError
    from warmstart_3d.data import load_scene
    from warmstart_3d.instantsplat import InstantSplatConfig, initialise
    from warmstart_3d.splats import Gaussians, write_ply

    scene = load_scene(data)
    if scene.viewmats is None:
        raise DataError(
            f"{data}: no poses (sparse/0/images.txt); splat-fit needs known poses — use instantsplat"
        )
    run_dir = open_run()
    cfg = InstantSplatConfig(init=init, n_points=n_points, fit=fit)
    params = initialise(scene, scene.viewmats, cfg, torch.Generator().manual_seed(fit.seed)).to_params()
    train = scene.train if scene.train is not None else list(range(len(scene.images)))
    history = train_splats(params, scene.images[train], scene.Ks[train], scene.viewmats[train], fit)
    results = {"steps": fit.steps, "seconds": history["seconds"], "n_gaussians": history["n_gaussians"]}
    shown = (fit.sh_degree, fit.background)
    train_metrics = evaluate_views(
        params, scene.images[train], scene.Ks[train], scene.viewmats[train], *shown
    )
    results |= {f"train_{k}": v for k, v in train_metrics.items()}
    if scene.test:
        test = scene.test
        results |= evaluate_views(params, scene.images[test], scene.Ks[test], scene.viewmats[test], *shown)
    results["sh_degree"] = fit.sh_degree
    ply = write_ply(run_dir / "splats.ply", Gaussians.from_params(params))
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    return results | {"ply": str(ply)}
