"""Rasterizer speed: frames/s of the pure-torch reference (and, on CUDA, gsplat with parity and speed ratio).

Seed: gsplat ("gsplat: An Open-Source Library for Gaussian Splatting", arXiv 2409.06765), the peer of our CPU
reference. Scene: a procedural splat scene of ``n_gaussians`` at ``size``² pixels, one camera.
"""

from __future__ import annotations

import time

import torch

from warmstart_3d.data import orbit_cameras, scene_gaussians
from warmstart_3d.geometry import intrinsics
from warmstart_3d.render import rasterize


def _time(fn, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def render_speed(n_gaussians: int = 5000, size: int = 128, repeats: int = 3) -> dict[str, float]:
    """Seconds and frames/s, forward and forward+backward; on CUDA also gsplat's and the max |Δ| (parity)."""
    g, _ = scene_gaussians(3, n_gaussians // 4, torch.Generator().manual_seed(0))
    view = orbit_cameras(1)
    K = intrinsics(size, size)[None]
    results: dict[str, float] = {"n_gaussians": float(len(g)), "size": float(size)}
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    outputs = {}
    for device in devices:
        for backend in ["torch", "gsplat"] if device == "cuda" else ["torch"]:
            tensors = [t.to(device).requires_grad_() for t in (g.means, g.quats, g.scales, g.opacities, g.sh)]
            args = (*tensors, view.to(device), K.to(device), size, size)

            def forward(args=args, backend=backend):
                with torch.no_grad():
                    return rasterize(*args, backend=backend)

            def forward_backward(args=args, backend=backend):
                out = rasterize(*args, backend=backend)
                out.colors.sum().backward()

            key = f"{backend}_{device}"
            fwd, fb = _time(forward, repeats), _time(forward_backward, repeats)
            results[f"{key}_fps_forward"] = 1.0 / fwd
            results[f"{key}_fps_forward_backward"] = 1.0 / fb
            outputs[key] = forward().colors.float().cpu()
    if "gsplat_cuda" in outputs:
        results["parity_max_abs"] = float((outputs["gsplat_cuda"] - outputs["torch_cuda"]).abs().max())
        results["speed_ratio_gsplat_vs_torch_cuda"] = (
            results["gsplat_cuda_fps_forward_backward"] / results["torch_cuda_fps_forward_backward"]
        )
    return results
