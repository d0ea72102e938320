"""Procedural scenes for the InstantSplat bench: the app's scenes with a high-frequency texture, in memory.

Real users bring ≥ 512 px photos of textured surfaces; the plain procedural scenes (two-tone stripes, a
low-frequency checker floor, 64 px) give SIFT a handful of matches, so stage 1 cannot pose them. Here every
Gaussian of :func:`warmstart_3d.data.scene_gaussians` is recoloured by a 3-D cell texture (a random colour of
random brightness per cell of side 1/``cells``), rendered at ``size`` px for stage 1, and the views are
downsampled to ``fit_size`` px for the Gaussian optimisation (as InstantSplat runs its stereo model and its
splatting at different resolutions). The depth prior is trained on other draws of the same generator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from warmstart_3d.data import Scene, orbit_cameras, render_scene, scene_gaussians
from warmstart_3d.geometry import intrinsics
from warmstart_3d.splats import Gaussians, rgb_to_sh


def cell_texture(means: torch.Tensor, cells: float, generator: torch.Generator) -> torch.Tensor:
    """(N, 3) colours: one random colour (brightness spread over [0.05, 0.95]) per 3-D cell of ``means``."""
    idx = torch.floor(means * cells).long()
    hashed = (idx[:, 0] * 73856093) ^ (idx[:, 1] * 19349663) ^ (idx[:, 2] * 83492791)
    palette = torch.rand(997, 3, generator=generator) * 0.3 + torch.rand(997, 1, generator=generator) * 0.65
    return palette[hashed % 997].clamp(0.02, 0.98)


def textured_gaussians(seed: int, n_objects: int, n_per_object: int, cells: float) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    gaussians, _ = scene_gaussians(n_objects, n_per_object, g)
    if cells > 0:
        gaussians.sh[:, 0] = rgb_to_sh(cell_texture(gaussians.means, cells, g))
    return gaussians


def textured_scene(
    seed: int, n_train: int, n_test: int, size: int, n_per_object: int = 2000, cells: float = 6.0
) -> Scene:
    """A posed scene (true poses, true depth) of ``n_train + n_test`` views on a 120° arc, test views inside."""
    gaussians = textured_gaussians(seed, 3, n_per_object, cells)
    n = n_train + n_test
    start = float(torch.rand(1, generator=torch.Generator().manual_seed(seed + 1)) * 360)
    viewmats = orbit_cameras(n, start_deg=start)
    K = intrinsics(size, size, 60.0)
    images, depths = render_scene(gaussians, viewmats, K, size, size)
    test = sorted({int(round(1 + i * (n - 3) / max(n_test - 1, 1))) for i in range(n_test)}) if n_test else []
    train = [i for i in range(n) if i not in test]
    names = [f"view_{i:03d}.png" for i in range(n)]
    return Scene(images, K.expand(n, 3, 3).clone(), viewmats, names, depths, train, test)


def downsample(scene: Scene, size: int) -> Scene:
    """The scene at ``size`` px: area-averaged images, intrinsics scaled, nearest depth (0 stays unknown)."""
    from dataclasses import replace

    if size == scene.width:
        return scene
    factor = size / scene.width
    images = F.interpolate(scene.images.permute(0, 3, 1, 2), size=(size, size), mode="area").permute(
        0, 2, 3, 1
    )
    Ks = scene.Ks.clone()
    Ks[:, :2] *= factor
    depths = None
    if scene.depths is not None:
        depths = F.interpolate(scene.depths[:, None], size=(size, size), mode="nearest")[:, 0]
    return replace(scene, images=images.contiguous(), Ks=Ks, depths=depths)
