"""Procedural scenes: textured shapes on a floor as surface Gaussians, rendered from known cameras.

Seed paper: "InstantSplat" (arXiv 2403.20309). :func:`make_scene` assembles a scene
(:func:`scene_gaussians`), renders it with :func:`warmstart_3d.render.rasterize` from N orbit cameras and
writes PNG images, per-view depth (``.npy``), COLMAP text poses and the ground-truth splats as a 3DGS PLY —
the same files a user's capture would give (:mod:`warmstart_3d.scene_io` reads them back).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from warmstart_3d.geometry import intrinsics, look_at
from warmstart_3d.scene_io import write_colmap_text, write_scene_folder
from warmstart_3d.shapes import SHAPE_CLASSES, shape_instance, surface_area, surface_gaussians
from warmstart_3d.splats import Gaussians


def scene_gaussians(
    n_objects: int, n_per_object: int, generator: torch.Generator
) -> tuple[Gaussians, list[str]]:
    """Ground-truth splats of a procedural scene: ``n_objects`` textured shapes on a textured floor."""
    parts, labels = [], []
    angles = (
        torch.rand(1, generator=generator) * 2 * math.pi + torch.arange(n_objects) * 2 * math.pi / n_objects
    )
    for i in range(n_objects):
        name = SHAPE_CLASSES[int(torch.randint(len(SHAPE_CLASSES), (1,), generator=generator))]
        pts, nrm, col = shape_instance(name, n_per_object, generator)
        size = 0.35 + 0.15 * float(torch.rand(1, generator=generator))
        offset = torch.tensor([0.6 * math.cos(angles[i]), 0.6 * math.sin(angles[i]), size])
        parts.append(surface_gaussians(pts * size + offset, nrm, col, surface_area(pts) * size**2))
        labels.append(name)
    # floor: a textured disc at z = 0
    m = n_per_object
    rad = 1.4 * torch.rand(m, generator=generator).sqrt()
    theta = torch.rand(m, generator=generator) * 2 * math.pi
    floor = torch.stack([rad * torch.cos(theta), rad * torch.sin(theta), torch.zeros(m)], -1)
    checker = ((torch.floor(floor[:, 0] * 3) + torch.floor(floor[:, 1] * 3)) % 2)[:, None]
    col = checker * torch.tensor([0.85, 0.8, 0.7]) + (1 - checker) * torch.tensor([0.35, 0.4, 0.5])
    parts.append(surface_gaussians(floor, torch.tensor([0.0, 0, 1]).expand(m, 3), col, math.pi * 1.4**2))
    merged = Gaussians(
        *(
            torch.cat([getattr(p, k) for p in parts])
            for k in ("means", "quats", "log_scales", "opacity_logits", "sh")
        )
    )
    return merged, labels


def orbit_cameras(
    n_views: int,
    radius: float = 3.0,
    elevation_deg: float = 30.0,
    arc_deg: float = 120.0,
    start_deg: float = 0.0,
) -> torch.Tensor:
    """(V, 4, 4) world-to-camera matrices on an arc around the origin, looking at (0, 0, 0.3)."""
    views = []
    for i in range(n_views):
        azimuth = math.radians(start_deg + arc_deg * (i / max(n_views - 1, 1) - 0.5))
        elev = math.radians(elevation_deg)
        eye = torch.tensor(
            [
                radius * math.cos(elev) * math.cos(azimuth),
                radius * math.cos(elev) * math.sin(azimuth),
                radius * math.sin(elev),
            ]
        )
        views.append(look_at(eye, torch.tensor([0.0, 0.0, 0.3])))
    return torch.stack(views)


def render_scene(
    gaussians: Gaussians,
    viewmats: torch.Tensor,
    K: torch.Tensor,
    width: int,
    height: int,
    background: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (V, H, W, 3) and expected depth (V, H, W) (0 where the alpha is under 0.5)."""
    from warmstart_3d.render import rasterize

    with torch.no_grad():
        out = rasterize(
            gaussians.means,
            gaussians.quats,
            gaussians.scales,
            gaussians.opacities,
            gaussians.sh,
            viewmats,
            K.expand(len(viewmats), 3, 3),
            width,
            height,
            backgrounds=torch.full((len(viewmats), 3), background),
        )
    alpha = out.alphas[..., 0]
    depth = torch.where(alpha > 0.5, out.depths[..., 0] / alpha.clamp_min(1e-6), torch.zeros_like(alpha))
    return out.colors.clamp(0, 1), depth


def make_scene(
    out: Path,
    n_train: int = 3,
    n_test: int = 2,
    width: int = 64,
    height: int = 64,
    seed: int = 0,
    n_objects: int = 3,
    n_per_object: int = 1500,
    rot_noise_deg: float = 0.0,
    trans_noise: float = 0.0,
) -> Path:
    """Write a procedural scene folder: images/, depths/, sparse/0/ (COLMAP text), split.json, gt.ply.

    With pose noise, ``sparse/0`` holds the perturbed poses (what a stereo model would estimate) and
    ``gt/sparse/0`` the true ones (read by :func:`load_true_poses` for the trajectory error).
    """
    from warmstart_3d.splats import write_ply

    g = torch.Generator().manual_seed(seed)
    gaussians, labels = scene_gaussians(n_objects, n_per_object, g)
    n_views = n_train + n_test
    viewmats = orbit_cameras(n_views, start_deg=float(torch.rand(1, generator=g)) * 360)
    K = intrinsics(width, height, 60.0)
    images, depths = render_scene(gaussians, viewmats, K, width, height)
    names = [f"view_{i:03d}.png" for i in range(n_views)]
    test = [int(round(x)) for x in np.linspace(1, n_views - 2, n_test)] if n_test else []
    train = [i for i in range(n_views) if i not in test]
    stored = viewmats
    if rot_noise_deg > 0 or trans_noise > 0:
        from warmstart_3d.geometry import perturb_poses

        stored = perturb_poses(
            viewmats, rot_noise_deg, trans_noise, torch.Generator().manual_seed(seed + 7919)
        )
        write_colmap_text(
            out / "gt" / "sparse" / "0", K.expand(n_views, 3, 3), viewmats, names, width, height
        )
    write_scene_folder(out, images, K.expand(n_views, 3, 3), stored, names, depths)
    (out / "split.json").write_text(json.dumps({"train": train, "test": test, "objects": labels}))
    write_ply(out / "gt.ply", gaussians)
    return out
