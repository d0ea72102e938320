"""CLIP2Point's depth maps: orthographic multi-view projection of point clouds into dense, z-buffered depth.

Seed paper: "CLIP2Point: Transfer CLIP to Point Cloud Classification with Image-Depth Pre-training"
(arXiv 2210.01055; code tyhuang0428/CLIP2Point), whose renderer replaces PointCLIP's sparse scatter
(arXiv 2112.02413) by pytorch3d's point rasterizer: each point a disc of a world radius, one point per pixel
(z-buffered), so the front surface closes and the back surface never shows. Written here in torch (no
pytorch3d): disc splats through ``scatter_reduce`` amin (differentiable to the winning points' depth), the
radius from the cloud's density by default, and a visibility pass (a second z-buffer of twice-wide discs at
half resolution) that replaces depths seen through gaps between front discs. Then optional min pooling and
smoothing inside the object, min-max normalisation into [0, 200/255] on a white background, 3 channels; the
paper's fixed view sets (6 views zero-shot, 10 few-shot). Also the shaded RGB point renders that stand in
for the reference's mesh renders of ShapeNet. Left out: perspective cameras.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from warmstart.errors import ConfigError

# (elevation, azimuth) in degrees, the reference's fixed view sets (render/selector.py)
VIEW_SETS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "six": ((0, 0, 0, 0, 90, -90), (0, 90, 180, 270, 0, 180)),
    "ten": ((0, 90, 180, 270, 225, 225, 315, 315, 0, 0), (0, 0, 0, 0, -45, 45, -45, 45, -90, 90)),
}


# -- projection ---------------------------------------------------------------------------------------
@dataclass
class DepthConfig:
    size: int | None = None
    """Depth-map width = height in pixels; None: the CLIP image tower's input size (paper: 224)."""
    point_radius: float | None = None
    """World radius of each point's disc splat in the z-buffer (the reference's point-rasterizer radius);
    None: from the cloud's density, sqrt(4π/N) (one mean point spacing on the unit sphere), so that the
    front surface closes and the back never shows through; 0: one pixel per point (PointCLIP)."""
    densify: int = 1
    """Extra min-pool window in pixels after splatting (odd; 1 = off; PointCLIP-style densification)."""
    smooth: float = 0.0
    """Std in pixels of the Gaussian smoothing of depth inside the object (0: off)."""
    distance: float = 1.0
    """Orthographic camera distance: the cloud (unit sphere) is scaled by 1/distance."""
    distance_jitter: float = 0.1
    """Pretraining renders each depth pair at distance·(1 ± jitter·U) (the paper's ±10 %)."""


def view_rotations(elevation: torch.Tensor, azimuth: torch.Tensor) -> torch.Tensor:
    """World-to-view rotations (..., 3, 3): turn by ``azimuth`` about y, then tilt by ``elevation`` about x."""
    e, a = torch.deg2rad(elevation.float()), torch.deg2rad(azimuth.float())
    one, zero = torch.ones_like(e), torch.zeros_like(e)
    rx = torch.stack([one, zero, zero, zero, e.cos(), -e.sin(), zero, e.sin(), e.cos()], -1)
    ry = torch.stack([a.cos(), zero, a.sin(), zero, one, zero, -a.sin(), zero, a.cos()], -1)
    return rx.unflatten(-1, (3, 3)) @ ry.unflatten(-1, (3, 3))


def view_angles(views: str, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    if views not in VIEW_SETS:
        raise ConfigError(f"views: unknown view set {views!r}; use one of {', '.join(VIEW_SETS)}")
    elev, azim = VIEW_SETS[views]
    return torch.tensor(elev, device=device), torch.tensor(azim, device=device)


def _project(
    points: torch.Tensor, elevation: torch.Tensor, azimuth: torch.Tensor, distance: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, N, 3) points, (B, V) angles/distances → pixel column u, row v (B·V, N) long, depth (B·V, N), rotations."""
    rot = view_rotations(elevation, azimuth)  # (B, V, 3, 3)
    cam = torch.einsum("bvij,bnj->bvni", rot, points) / distance[..., None, None]  # (B, V, N, 3)
    cam = cam.flatten(0, 1)  # (B·V, N, 3)
    u = ((cam[..., 0] + 1) * 0.5 * size).floor().long()
    v = ((1 - cam[..., 1]) * 0.5 * size).floor().long()
    depth = cam[..., 2] + 1.0  # near = small, positive for a unit-sphere cloud
    return u, v, depth, rot


def splat_radius_px(n_points: int, size: int, radius: float | None, distance: float = 1.0) -> float:
    """Pixel radius of a point's disc: ``radius`` (world units) or the density rule sqrt(4π/N)."""
    world = math.sqrt(4 * math.pi / max(n_points, 1)) if radius is None else radius
    return world / distance * size / 2


def _disc_offsets(radius_px: float, device: torch.device) -> torch.Tensor:
    """(K, 2) integer (du, dv) inside a disc of ``radius_px`` pixels (just (0, 0) under half a pixel)."""
    r = int(math.floor(radius_px))
    grid = torch.arange(-r, r + 1, device=device)
    du, dv = torch.meshgrid(grid, grid, indexing="xy")
    keep = du.pow(2) + dv.pow(2) <= max(radius_px, 0.0) ** 2
    return torch.stack([du[keep], dv[keep]], -1) if keep.any() else torch.zeros(1, 2, dtype=torch.long)


def _splats(
    u: torch.Tensor, v: torch.Tensor, depth: torch.Tensor, size: int, offsets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel index (M, N·K) and depth (+inf off the image) of every point's disc pixels ``offsets`` (K, 2)."""
    uu = u.unsqueeze(-1) + offsets[:, 0]  # (M, N, K)
    vv = v.unsqueeze(-1) + offsets[:, 1]
    inside = (uu >= 0) & (uu < size) & (vv >= 0) & (vv < size)
    pix = (vv.clamp(0, size - 1) * size + uu.clamp(0, size - 1)).flatten(1)
    z = torch.where(
        inside, depth.unsqueeze(-1).expand_as(inside), torch.full_like(inside, math.inf, dtype=depth.dtype)
    )
    return pix, z.flatten(1)


def _offset_chunks(
    offsets: torch.Tensor, n_points: int, rows: int, budget: int = 1 << 24
) -> list[torch.Tensor]:
    per = max(1, budget // max(1, n_points * rows))
    return list(offsets.split(per))


def _zbuffer(
    u: torch.Tensor, v: torch.Tensor, depth: torch.Tensor, size: int, radius_px: float = 0.0
) -> torch.Tensor:
    """Nearest depth per pixel (M, H·W) of disc splats of ``radius_px``, +inf where no point lands
    (z-buffered, one point per pixel; gradients reach the winning points' depth)."""
    buf = torch.full((depth.shape[0], size * size), math.inf, dtype=depth.dtype, device=depth.device)
    offsets = _disc_offsets(radius_px, depth.device)
    for chunk in _offset_chunks(offsets, depth.shape[1], depth.shape[0]):
        pix, z = _splats(u, v, depth, size, chunk)
        buf = buf.scatter_reduce(1, pix, z, reduce="amin", include_self=True)
    return buf


def _close_holes(
    buf: torch.Tensor, u: torch.Tensor, v: torch.Tensor, depth: torch.Tensor, size: int, radius_px: float
) -> torch.Tensor:
    """Keep the back surface from showing through gaps between the front discs (visibility splatting).

    A second z-buffer with discs twice as wide (at half resolution, so at the same cost) closes the front
    surface; a pixel of ``buf`` (M, H·W) lying more than two of those radii behind it sees through a gap, and
    takes the wide buffer's front depth instead. Background pixels stay background (no extra dilation).
    """
    half = (size + 1) // 2
    coarse = _zbuffer(u // 2, v // 2, depth, half, radius_px).view(-1, half, half)
    coarse = coarse.repeat_interleave(2, 1).repeat_interleave(2, 2)[:, :size, :size].reshape(buf.shape)
    tolerance = 2 * (2 * radius_px) * 2 / size  # two wide radii, in depth units (the view spans 2)
    through = buf.isfinite() & (buf - coarse > tolerance)
    return torch.where(through, coarse, buf)


def _smooth(depth: torch.Tensor, sigma: float) -> torch.Tensor:
    """Normalised Gaussian smoothing of (M, H, W) depth over the valid (finite) pixels only."""
    radius = max(1, int(math.ceil(2 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=depth.dtype, device=depth.device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = (k / k.sum())[None, None]  # (1, 1, K)
    valid = depth.isfinite().to(depth.dtype)[:, None]  # (M, 1, H, W)
    filled = torch.where(valid.bool(), depth[:, None], torch.zeros_like(depth[:, None]))

    def blur(t: torch.Tensor) -> torch.Tensor:
        t = F.conv2d(F.pad(t, (radius, radius, 0, 0), mode="replicate"), k[..., None, :])
        return F.conv2d(F.pad(t, (0, 0, radius, radius), mode="replicate"), k[..., :, None])

    out = blur(filled) / blur(valid).clamp_min(1e-6)
    return torch.where(valid.bool(), out, torch.full_like(out, math.inf))[:, 0]


def render_depth(
    points: torch.Tensor,
    elevation: torch.Tensor,
    azimuth: torch.Tensor,
    distance: torch.Tensor | float,
    size: int,
    densify: int = 1,
    smooth: float = 0.0,
    radius: float | None = 0.0,
) -> torch.Tensor:
    """Raw depth maps (B, V, H, W) of clouds (B, N, 3): view-space depth, +inf on the background.

    ``elevation``/``azimuth`` are (V,) or (B, V) degrees; ``distance`` a float or (B, V); ``radius`` each
    point's disc radius in world units (None: the density rule of :func:`splat_radius_px`; 0: one pixel).
    Batched torch: runs where the points live (CPU or CUDA).
    """
    b = points.shape[0]
    elevation = elevation.to(points.device).expand(b, -1) if elevation.dim() == 1 else elevation
    azimuth = azimuth.to(points.device).expand(b, -1) if azimuth.dim() == 1 else azimuth
    v = elevation.shape[1]
    if not torch.is_tensor(distance):
        distance = torch.full((b, v), float(distance), device=points.device)
    u, rows, depth, _ = _project(points, elevation, azimuth, distance, size)
    mean_distance = float(distance.mean()) if distance.numel() else 1.0
    radius_px = splat_radius_px(points.shape[1], size, radius, mean_distance)
    buf = _zbuffer(u, rows, depth, size, radius_px)
    if radius_px >= 1.0:
        buf = _close_holes(buf, u, rows, depth, size, radius_px)
    buf = buf.view(b * v, 1, size, size)
    if densify > 1:
        buf = -F.max_pool2d(-buf, densify, stride=1, padding=densify // 2)  # min pooling: square splats
    buf = buf[:, 0]
    if smooth > 0:
        buf = _smooth(buf, smooth)
    return buf.view(b, v, size, size)


def depth_to_image(depth: torch.Tensor) -> torch.Tensor:
    """(..., H, W) raw depth → (..., 3, H, W) in [0, 1]: object min-max normalised to [0, 200/255], white bg."""
    valid = depth.isfinite()
    filled_lo = torch.where(valid, depth, torch.full_like(depth, math.inf))
    filled_hi = torch.where(valid, depth, torch.full_like(depth, -math.inf))
    lo = filled_lo.flatten(-2).min(-1).values[..., None, None]
    hi = filled_hi.flatten(-2).max(-1).values[..., None, None]
    scale = (hi - lo).clamp_min(1e-6)
    img = torch.where(
        valid, (torch.where(valid, depth, lo) - lo) / scale * (200.0 / 255.0), torch.ones_like(depth)
    )
    return img.unsqueeze(-3).expand(*img.shape[:-2], 3, *img.shape[-2:])


def depth_images(
    points: torch.Tensor, views: str, config: DepthConfig, size: int, distance: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, N, 3) → (B, V, 3, H, W) CLIP-ready depth images of a named view set."""
    elev, azim = view_angles(views, points.device)
    dist = config.distance if distance is None else distance
    raw = render_depth(points, elev, azim, dist, size, config.densify, config.smooth, config.point_radius)
    return depth_to_image(raw)


def render_shaded(
    points: torch.Tensor,
    normals: torch.Tensor,
    colours: torch.Tensor,
    size: int,
    densify: int = 1,
    radius: float | None = None,
) -> torch.Tensor:
    """RGB images (B, 3, H, W) of coloured, Lambert-shaded surface points seen from the identity view.

    The stand-in for the paper's rendered mesh images: the same orthographic camera and disc splats as
    :func:`render_depth` with view elevation = azimuth = 0, a head light, white background; a pixel shows
    the colour of the nearest disc over it (ties averaged).
    """
    b, n, _ = points.shape
    zero = torch.zeros(b, 1, device=points.device)
    u, v, depth, _ = _project(points, zero, zero, torch.ones(b, 1, device=points.device), size)
    radius_px = splat_radius_px(n, size, radius)
    buf = _zbuffer(u, v, depth, size, radius_px)  # (B, H·W)
    light = F.normalize(torch.tensor([0.4, 0.5, -1.0], device=points.device), dim=0)
    shade = 0.3 + 0.7 * (normals @ light).clamp_min(0)  # camera looks along +z: facing normals have z < 0
    rgb = colours * shade[..., None]  # (B, N, 3)
    total = torch.zeros(b, size * size, 3, device=points.device)
    count = torch.zeros(b, size * size, device=points.device)
    offsets = _disc_offsets(radius_px, points.device)
    for chunk in _offset_chunks(offsets, n, b):
        pix, z = _splats(u, v, depth, size, chunk)  # (B, N·K)
        won = (z.isfinite() & (z <= buf.gather(1, pix) + 1e-6)).float()
        colour = rgb.unsqueeze(2).expand(-1, -1, len(chunk), -1).flatten(1, 2)  # (B, N·K, 3)
        total = total.scatter_add(1, pix[..., None].expand(-1, -1, 3), colour * won[..., None])
        count = count.scatter_add(1, pix, won)
    image = (total / count.clamp_min(1)[..., None]).permute(0, 2, 1).reshape(b, 3, size, size)
    zmap = buf.view(b, 1, size, size)
    if densify > 1:
        pooled, where = F.max_pool2d(-zmap, densify, stride=1, padding=densify // 2, return_indices=True)
        image = image.flatten(2).gather(2, where.flatten(2).expand(-1, 3, -1)).view(b, 3, size, size)
        zmap = -pooled
    return torch.where(zmap.isfinite(), image, torch.ones_like(image))


def depth_render_speed(
    n_points: int = 1024, views: int = 6, batch: int = 32, repeats: int = 5
) -> dict[str, float]:
    """Clouds per second of :func:`render_depth` + normalisation at 224 px (the paper's size) and 32 px."""
    g = torch.Generator().manual_seed(0)
    points = F.normalize(torch.randn(batch, n_points, 3, generator=g), dim=-1)
    elev, azim = view_angles("six" if views == 6 else "ten")
    out = {}
    for size in (224, 32):
        depth_to_image(render_depth(points, elev, azim, 1.0, size, radius=None))
        start = time.perf_counter()
        for _ in range(repeats):
            depth_to_image(render_depth(points, elev, azim, 1.0, size, radius=None))
        out[f"clouds_per_s_{size}px"] = batch * repeats / (time.perf_counter() - start)
    return out
