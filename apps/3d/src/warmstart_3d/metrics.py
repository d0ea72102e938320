"""Image metrics for novel-view synthesis (PSNR, SSIM through torchmetrics) and the 3DGS photometric loss.

Seed papers: "Image Quality Assessment: From Error Visibility to Structural Similarity" (Wang et al., 2004)
for SSIM with an 11×11 Gaussian window (σ = 1.5), constants (0.01, 0.03); "3D Gaussian Splatting" (arXiv
2308.04079) for the loss 0.8·L1 + 0.2·(1 − SSIM). Reported PSNR/SSIM are torchmetrics' (as gsplat's
``simple_trainer`` reports them). The loss keeps the reference 3DGS code's SSIM (``utils/loss_utils.py``: a
zero-padded grouped convolution over the whole image), which torchmetrics does not offer (it pads by
reflection); the two SSIM maps agree exactly away from the border (a test checks it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _window(size: int, sigma: float, channels: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim_map(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-pixel SSIM (B, C, H, W) of (B, H, W, C) images, 3DGS's zero-padded form."""
    x, y = a.permute(0, 3, 1, 2), b.permute(0, 3, 1, 2)  # (B, C, H, W)
    c = x.shape[1]
    w = _window(window, sigma, c, x.device, x.dtype)
    pad = window // 2
    mu_x, mu_y = F.conv2d(x, w, padding=pad, groups=c), F.conv2d(y, w, padding=pad, groups=c)
    sxx = F.conv2d(x * x, w, padding=pad, groups=c) - mu_x**2
    syy = F.conv2d(y * y, w, padding=pad, groups=c) - mu_y**2
    sxy = F.conv2d(x * y, w, padding=pad, groups=c) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    return ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM of (B, H, W, C) images in [0, 1] (channels last, as the rasterizer returns them): the
    differentiable 3DGS form used in the loss."""
    return ssim_map(a, b, window, sigma).mean()


def image_ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Reported SSIM of (B, H, W, C) images in [0, 1]: torchmetrics' (11×11 Gaussian, σ 1.5, range 1)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    x, y = a.clamp(0, 1).permute(0, 3, 1, 2), b.permute(0, 3, 1, 2).to(a.dtype)
    return float(structural_similarity_index_measure(x, y, data_range=1.0, kernel_size=11, sigma=1.5))


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [0, 1], per image then averaged over the batch (torchmetrics)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    x, y = a.clamp(0, 1), b.to(a.dtype)
    per_image = peak_signal_noise_ratio(x, y, data_range=1.0, reduction="none", dim=(1, 2, 3))
    return float(per_image.mean())


def photometric_loss(render: torch.Tensor, target: torch.Tensor, ssim_lambda: float = 0.2) -> torch.Tensor:
    """(1 − λ)·L1 + λ·(1 − SSIM), λ = 0.2 as in 3DGS and InstantSplat."""
    l1 = (render - target).abs().mean()
    if ssim_lambda == 0:
        return l1
    return (1 - ssim_lambda) * l1 + ssim_lambda * (1 - ssim(render, target))
