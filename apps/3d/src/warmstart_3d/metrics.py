"""Image metrics for novel-view synthesis: PSNR and SSIM, and the 3DGS photometric loss.

Seed papers: "Image Quality Assessment: From Error Visibility to Structural Similarity" (Wang et al., 2004)
for SSIM with an 11×11 Gaussian window (σ = 1.5), constants (0.01, 0.03), as the 3DGS / InstantSplat code
uses it; "3D Gaussian Splatting" (arXiv 2308.04079) for the loss 0.8·L1 + 0.2·(1 − SSIM). Written by hand
(a grouped convolution; no new dependency).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _window(size: int, sigma: float, channels: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM of (B, H, W, C) images in [0, 1] (channels last, as the rasterizer returns them)."""
    x, y = a.permute(0, 3, 1, 2), b.permute(0, 3, 1, 2)  # (B, C, H, W)
    c = x.shape[1]
    w = _window(window, sigma, c, x.device, x.dtype)
    pad = window // 2
    mu_x, mu_y = F.conv2d(x, w, padding=pad, groups=c), F.conv2d(y, w, padding=pad, groups=c)
    sxx = F.conv2d(x * x, w, padding=pad, groups=c) - mu_x**2
    syy = F.conv2d(y * y, w, padding=pad, groups=c) - mu_y**2
    sxy = F.conv2d(x * y, w, padding=pad, groups=c) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    value = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return value.mean()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [0, 1] (mean over the batch of the per-image PSNR)."""
    mse = (a.clamp(0, 1) - b).pow(2).flatten(1).mean(1).clamp_min(1e-10)  # (B,)
    return float((-10 * torch.log10(mse)).mean())


def photometric_loss(render: torch.Tensor, target: torch.Tensor, ssim_lambda: float = 0.2) -> torch.Tensor:
    """(1 − λ)·L1 + λ·(1 − SSIM), λ = 0.2 as in 3DGS and InstantSplat."""
    l1 = (render - target).abs().mean()
    if ssim_lambda == 0:
        return l1
    return (1 - ssim_lambda) * l1 + ssim_lambda * (1 - ssim(render, target))
