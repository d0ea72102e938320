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

from gpu.common import Check, Context, Limit, Recipe, parse_command, synchronize

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
    g = torch.Generator().manual_seed(0)
    gaussians, _ = scene_gaussians(3, ctx.size(750, 60), g)  # DC colours only
    rest = 0.2 * torch.randn(len(gaussians.means), 15, 3, generator=g)  # (N, 15, 3): SH bands 1-3
    gaussians = dataclasses.replace(gaussians, sh=torch.cat([gaussians.sh, rest], dim=1))  # degree 3
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


def sparse_scene(size: int, device: str) -> tuple[Any, torch.Tensor]:
    """A 3-view scene (+2 held-out) rendered on ``device`` in memory: the app's procedural Gaussians and
    orbit cameras, its ``render_scene``, poses perturbed by 2 deg / 0.05 (what a stereo model would give).
    Returns the Scene (noisy poses) and the true poses. (``scene-make`` renders on the CPU reference: about
    4 min at 256² on two cores, so the check renders through gsplat instead.)"""
    from warmstart_3d.data import Scene, orbit_cameras, render_scene, scene_gaussians
    from warmstart_3d.geometry import intrinsics, perturb_poses

    g = torch.Generator().manual_seed(0)
    gaussians, _ = scene_gaussians(3, 1500, g)
    gaussians = dataclasses.replace(
        gaussians, **{f.name: getattr(gaussians, f.name).to(device) for f in dataclasses.fields(gaussians)}
    )
    truth = orbit_cameras(5, start_deg=float(torch.rand(1, generator=g)) * 360)  # (5, 4, 4)
    K = intrinsics(size, size, 60.0)
    images, depths = render_scene(gaussians, truth.to(device), K.to(device), size, size)
    noisy = perturb_poses(truth, 2.0, 0.05, torch.Generator().manual_seed(7919))
    names = [f"view_{i:03d}.png" for i in range(5)]
    scene = Scene(
        images, K.expand(5, 3, 3).to(device), noisy.to(device), names, depths, train=[0, 2, 4], test=[1, 3]
    )
    return scene, truth.to(device)


def instantsplat(ctx: Context) -> dict[str, Any]:
    from warmstart_3d.instantsplat import run_instantsplat

    smoke = (
        ["--isplat.fit.steps", "4", "--isplat.align_steps", "2", "--isplat.n_points", "300"]
        if ctx.smoke
        else []
    )
    config = parse_command("3d", ["instantsplat", "--config", RECIPE, "--data", "scene", *smoke])["isplat"]
    scene, truth = sparse_scene(ctx.size(256, 32), ctx.device)
    synchronize()
    start = time.perf_counter()
    _, results = run_instantsplat(scene, scene.viewmats, config, true_viewmats=truth)
    synchronize()
    out = {f"instantsplat_{k}": float(v) for k, v in results.items() if isinstance(v, int | float)}
    out["instantsplat_wall_s"] = time.perf_counter() - start
    out["instantsplat_fit_steps"] = config.fit.steps
    out["paper_seconds"] = PAPER_SECONDS
    return out


def prepare() -> dict[str, Any]:
    """gsplat JIT-compiles its CUDA kernels on first import (minutes, once; cached in torch's extension
    folder) and needs a CUDA toolkit (nvcc) for it; a wheel-only machine has none and gsplat is disabled."""
    start = time.perf_counter()
    from gsplat.cuda import _backend

    return {
        "cuda_toolkit": bool(_backend.cuda_toolkit_available()),
        "gsplat_kernels": _backend._C is not None,
        "gsplat_setup_s": time.perf_counter() - start,
    }


def run(ctx: Context) -> dict[str, Any]:
    if ctx.device == "cuda":
        ready = prepare()
        if not ready["gsplat_kernels"]:
            raise RuntimeError(
                "gsplat's CUDA kernels are unavailable: it compiles them on first import and needs a CUDA "
                f"toolkit with nvcc (found: {ready['cuda_toolkit']}); install one or a prebuilt gsplat wheel"
            )
    return parity(ctx) | instantsplat(ctx)


def models() -> dict[str, Any]:
    # the 3d check trains Gaussians, not networks: nothing to build on the meta device
    return {}


CHECK = Check(
    app="3d",
    plan=[
        "rasterize 3,000 SH-3 Gaussians into 4 x 128² views with gsplat and with the pure-torch reference; "
        f"image max |err| <= {IMAGE_TOL:g}, every gradient's cosine >= {GRAD_COS_TOL}",
        "a procedural scene rendered on the GPU: 3 training + 2 held-out views at 256², 2 deg / 0.05 pose noise",
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
    prepare=prepare,
    apis=[
        "warmstart_3d.cli:app",
        "warmstart_3d.render:rasterize",
        "warmstart_3d.data:scene_gaussians",
        "warmstart_3d.data:orbit_cameras",
        "warmstart_3d.data:Scene",
        "warmstart_3d.data:render_scene",
        "warmstart_3d.geometry:perturb_poses",
        "warmstart_3d.geometry:intrinsics",
        "warmstart_3d.instantsplat:run_instantsplat",
        "gsplat:rasterization",
    ],
)
