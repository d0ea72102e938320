"""Masked autoencoding on patch tokens: random masking, (un)patchify, and the masked reconstruction loss.

Seed paper: "Masked Autoencoders Are Scalable Vision Learners" (He et al., arXiv 2111.06377); the functions
follow the reference code (``facebookresearch/mae``, ``models_mae.py``): per-sample random masking by
argsort of uniform noise with ``ids_restore``, ``patchify`` in the ``nchpwq -> nhwpqc`` order, and an MSE
averaged per patch then over the *masked* patches only, optionally on per-patch normalised pixels. Written
by hand (small, and no library exposes them as functions with an explicit generator). Left out: the
encoder/decoder themselves (the apps build those) and multi-scale / multi-group variants (SatMAE++ in the
``eo`` app).
"""

from __future__ import annotations

import torch


def masking_indices(
    n: int,
    length: int,
    mask_ratio: float,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The random draw behind :func:`random_masking`, as indices only, for callers that gather once.

    Returns ``ids_keep`` (N, L_keep), ``ids_masked`` (N, L − L_keep), ``ids_restore`` (N, L) and ``mask``
    (N, L, float) with 1 = removed. A token is kept iff its rank in the shuffle is < ``L_keep``.
    """
    len_keep = int(length * (1 - mask_ratio))
    noise = torch.rand(n, length, generator=generator, device="cpu").to(device)  # (N, L)
    ids_shuffle = torch.argsort(noise, dim=1)  # ascending: small noise is kept
    ids_restore = torch.argsort(ids_shuffle, dim=1)  # (N, L) rank of each token
    mask = (ids_restore >= len_keep).float()  # (N, L)
    return ids_shuffle[:, :len_keep], ids_shuffle[:, len_keep:], ids_restore, mask


def random_masking(
    x: torch.Tensor, mask_ratio: float, *, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep a random ``1 - mask_ratio`` of the tokens of every sample, independently per sample.

    ``x`` is (N, L, D). Returns ``(x_kept, mask, ids_restore)``: ``x_kept`` (N, L_keep, D) with
    ``L_keep = int(L · (1 - mask_ratio))``; ``mask`` (N, L) with 0 = kept, 1 = removed, in the original
    order; ``ids_restore`` (N, L) such that ``gather(cat(kept, mask_tokens), ids_restore)`` puts the tokens
    back in order (the MAE decoder's unshuffle).
    """
    n, length, dim = x.shape
    ids_keep, _, ids_restore, mask = masking_indices(
        n, length, mask_ratio, generator=generator, device=x.device
    )
    x_kept = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, dim))  # (N, L_keep, D)
    return x_kept, mask.to(x.dtype), ids_restore


def restore_order(tokens: torch.Tensor, ids_restore: torch.Tensor, mask_token: torch.Tensor) -> torch.Tensor:
    """Append mask tokens to the kept tokens (N, L_keep, D) and unshuffle to (N, L, D)."""
    n, length = ids_restore.shape
    fill = mask_token.reshape(1, 1, -1).expand(n, length - tokens.shape[1], -1).to(tokens.dtype)
    full = torch.cat([tokens, fill], dim=1)  # (N, L, D) in shuffled order
    return torch.gather(full, 1, ids_restore.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(N, C, H, W) → (N, L, p·p·C) with ``L = (H/p)·(W/p)``, row-major patches, pixels ``(p, q, c)``."""
    n, c, h, w = images.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"image size {h}x{w} is not divisible by the patch size {p}")
    gh, gw = h // p, w // p
    x = images.reshape(n, c, gh, p, gw, p)
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(n, gh * gw, p * p * c)


def unpatchify(
    patches: torch.Tensor, patch_size: int, *, channels: int, grid: tuple[int, int] | None = None
) -> torch.Tensor:
    """Inverse of :func:`patchify`: (N, L, p·p·C) → (N, C, H, W). ``grid`` = (H/p, W/p), square if omitted."""
    n, length, _ = patches.shape
    p = patch_size
    if grid is None:
        side = int(round(length**0.5))
        if side * side != length:
            raise ValueError(f"{length} patches do not form a square grid; pass grid=(rows, cols)")
        grid = (side, side)
    gh, gw = grid
    x = patches.reshape(n, gh, gw, p, p, channels)
    x = torch.einsum("nhwpqc->nchpwq", x)
    return x.reshape(n, channels, gh * p, gw * p)


def mae_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    *,
    norm_pix_loss: bool = False,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Mean squared error on the masked patches only.

    ``pred`` and ``target`` are (N, L, P) patch tokens (``target = patchify(images, p)``), ``mask`` (N, L)
    with 1 on removed patches. With ``norm_pix_loss`` each target patch is normalised by its own mean and
    variance (MAE's ``norm_pix_loss``; off by default, as in Prithvi — see METHODS.md). The per-patch MSE
    is averaged over the masked patches: visible patches contribute nothing.
    """
    target = target.float()
    if norm_pix_loss:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + eps) ** 0.5
    per_patch = (pred.float() - target).pow(2).mean(dim=-1)  # (N, L)
    mask = mask.float()
    return (per_patch * mask).sum() / mask.sum().clamp_min(1)
