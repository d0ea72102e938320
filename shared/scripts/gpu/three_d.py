"""3d on a GPU: gsplat's CUDA rasterizer against the pure-torch reference, and InstantSplat in ≤ 40 s.

Seeds: *3D Gaussian Splatting* (Kerbl et al., arXiv 2308.04079) through gsplat (arXiv 2409.06765), and
*InstantSplat: Unbounded Sparse-view Pose-free Gaussian Splatting in 40 Seconds* (Fan et al., arXiv
2403.20309). Parity: 3,000 Gaussians of a procedural scene with degree-3 SH rendered into four 128² views
by both backends (``warmstart_3d.render.rasterize``), colour + depth loss backpropagated; the image's
largest absolute error and each attribute's gradient cosine are judged. InstantSplat: a 3-view 256² scene
(2 held-out views, 2° / 0.05 pose noise) optimised with ``instantsplat-gpu.yaml`` (1,000 joint steps,
SH 3, depth initialisation, test-time alignment) on the GPU, timed against the paper's 40 s. Left out:
classic 3DGS with densification (30k steps, minutes) and CLIP2Point (needs CLIP weights).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch

from gpu.common import Check, Context, Limit, Recipe, cli, parse_command, synchronize

RECIPE = "apps/3d/src/warmstart_3d/recipes/instantsplat-gpu.yaml"
IMAGE_TOL = 2e-3  # largest |torch - gsplat| of a colour in [0, 1]: the CPU test's tolerance
GRAD_COS_TOL = 0.99  # cosine of each attribute's gradient (means, quats, scales, opacities, sh)
PAPER_SECONDS = 40.0  # InstantSplat's headline time for sparse-view reconstruction


def _render(backend: str, gaussians: Any, views: torch.Tensor, Ks: torch.Tensor, size: int, device: str):
    from warmstart_3d.render import rasterize

    leaves = [
        t.to(device).clone().requires_grad_()
        for t in (gaussians.means, gaussians.quats, gaussians.scales, gaussians.opacities, gaussians.sh)
    ]
    backgrounds = torch.ones(len(views), 3, device=device)
    synchronize()
    start = time.perf_counter()
    out = rasterize(*leaves, views, Ks, size, size, backend=backend, backgrounds=backgrounds)
    (out.colors.square().sum() + out.depths.sum()).backward()
    synchronize()
    seconds = time.perf_counter() - start
    return out.colors.detach(), out.depths.detach(), [leaf.grad for leaf in leaves], seconds


def parity(ctx: Context) -> dict[str, Any]:
    from warmstart_3d.data import orbit_cameras, scene_gaussians
    from warmstart_3d.geometry import intrinsics

    size, n_views = ctx.size(128, 32), ctx.size(4, 2)
    gaussians, _ = scene_gaussians(3, ctx.size(750, 60), torch.Generator().manual_seed(0))
    views = orbit_cameras(n_views).to(ctx.device)
    Ks = intrinsics(size, size).expand(n_views, 3, 3).to(ctx.device)
    ref_img, ref_depth, ref_grads, ref_s = _render("torch", gaussians, views, Ks, size, ctx.device)
    metrics: dict[str, Any] = {"parity_gaussians": len(gaussians.means), "torch_render_backward_s": ref_s}
    if ctx.device != "cuda":
        metrics["parity_skipped"] = "gsplat needs CUDA; the reference path ran alone"
        return metrics
    _render("gsplat", gaussians, views, Ks, size, ctx.device)  # JIT compile + warm-up, not timed
    img, depth, grads, seconds = _render("gsplat", gaussians, views, Ks, size, ctx.device)
    metrics["gsplat_render_backward_s"] = seconds
    metrics["image_max_abs_err"] = float((img - ref_img).abs().max())
    metrics["image_mean_abs_err"] = float((img - ref_img).abs().mean())
    metrics["depth_max_rel_err"] = float(((depth - ref_depth).abs() / ref_depth.abs().clamp_min(1e-3)).max())
    names = ("means", "quats", "scales", "opacities", "sh")
    for name, a, b in zip(names, ref_grads, grads, strict=True):
        cos = torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0)
        metrics[f"grad_cos_{name}"] = float(cos)
    metrics["grad_cos_min"] = min(metrics[f"grad_cos_{n}"] for n in names)
    return metrics


def instantsplat(ctx: Context) -> dict[str, Any]:
    from warmstart_3d.data import load_scene, load_true_poses
    from warmstart_3d.instantsplat import run_instantsplat

    folder = ctx.out / "scene"
    cli(
        "3d",
        [
            "scene-make",
            "--out",
            folder,
            "--n_train",
            "3",
            "--n_test",
            "2",
            "--size",
            ctx.size(256, 32),
            "--rot_noise_deg",
            "2",
            "--trans_noise",
            "0.05",
        ],
    )
    smoke = (
        ["--isplat.fit.steps", "4", "--isplat.align_steps", "2", "--isplat.n_points", "300"]
        if ctx.smoke
        else []
    )
    config = parse_command("3d", ["instantsplat", "--config", RECIPE, "--data", folder, *smoke])["isplat"]
    scene = load_scene(folder)
    truth = load_true_poses(folder, scene.names)
    device = ctx.device
    moved = dataclasses.replace(
        scene,
        images=scene.images.to(device),
        Ks=scene.Ks.to(device),
        viewmats=scene.viewmats.to(device),
        depths=scene.depths.to(device) if scene.depths is not None else None,
    )
    synchronize()
    start = time.perf_counter()
    _, results = run_instantsplat(
        moved, moved.viewmats, config, true_viewmats=truth.to(device) if truth is not None else None
    )
    synchronize()
    out = {f"instantsplat_{k}": float(v) for k, v in results.items() if isinstance(v, int | float)}
    out["instantsplat_wall_s"] = time.perf_counter() - start
    out["instantsplat_fit_steps"] = config.fit.steps
    out["paper_seconds"] = PAPER_SECONDS
    return out


def run(ctx: Context) -> dict[str, Any]:
    return parity(ctx) | instantsplat(ctx)


def models() -> dict[str, Any]:
    # the 3d check trains Gaussians, not networks: nothing to build on the meta device
    return {}


CHECK = Check(
    app="3d",
    plan=[
        "rasterize 3,000 SH-3 Gaussians into 4 x 128² views with gsplat and with the pure-torch reference; "
        f"image max |err| <= {IMAGE_TOL:g}, every gradient's cosine >= {GRAD_COS_TOL}",
        "scene-make: 3 training + 2 held-out views at 256², 2 deg / 0.05 pose noise",
        f"InstantSplat --config instantsplat-gpu.yaml on CUDA (1,000 joint steps), timed against {PAPER_SECONDS:g} s",
    ],
    budget_s=80,
    recipes=[Recipe("3d", "instantsplat", RECIPE, ["--data", "scene"])],
    models=models,
    run=run,
    limits=[
        Limit("image_max_abs_err", "<=", IMAGE_TOL, "gsplat and the reference draw the same image"),
        Limit("grad_cos_min", ">=", GRAD_COS_TOL, "and send the same gradients"),
        Limit("instantsplat_seconds", "<=", PAPER_SECONDS, "the paper's 40 s"),
        Limit("instantsplat_psnr", ">=", 15.0, "floor: held-out views after alignment are recognisable"),
    ],
    apis=[
        "warmstart_3d.cli:app",
        "warmstart_3d.render:rasterize",
        "warmstart_3d.data:scene_gaussians",
        "warmstart_3d.data:orbit_cameras",
        "warmstart_3d.data:load_scene",
        "warmstart_3d.data:load_true_poses",
        "warmstart_3d.geometry:intrinsics",
        "warmstart_3d.instantsplat:run_instantsplat",
        "gsplat:rasterization",
    ],
)
