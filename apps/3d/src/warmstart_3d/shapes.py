"""Procedural shapes: analytic surfaces (8 classes) and multi-part objects, sampled area-uniformly.

Seed papers: "ShapeSplat" (arXiv 2408.10906; per-object splats with class labels) and "Masked Autoencoders for
Point Cloud Self-supervised Learning" (Point-MAE; ShapeNetPart-style part labels). Every shape yields surface
samples with normals and a part label per sample (:func:`sample_shape_parts`, ``PART_NAMES``): the branch of the
analytic surface a sample came from (cylinder side/cap, cone side/base, ...), and for the opt-in multi-part
classes (lamp, table, chair, mug, built from boxes, frustums, discs and a half torus; the ShapeNetPart-style
targets of part segmentation) the primitive it lies on. :func:`shape_instance` adds a random stretch,
rotation and striped texture; :func:`surface_gaussians` turns samples into flat surface Gaussians.
Generation only: files are read by :mod:`warmstart_3d.clouds`, scenes are :mod:`warmstart_3d.scenes`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from warmstart.errors import DataError
from warmstart_3d.geometry import quat_to_rotmat, rotmat_to_quat
from warmstart_3d.splats import Gaussians

SHAPE_CLASSES = ["sphere", "cube", "cylinder", "cone", "torus", "pyramid", "capsule", "octahedron"]
COMPOSITE_CLASSES = ["lamp", "table", "chair", "mug"]
"""Multi-part objects for part segmentation (opt-in: not in the default class list, so every existing
dataset, bench and seed stays as it was)."""
ALL_CLASSES = SHAPE_CLASSES + COMPOSITE_CLASSES
PART_NAMES: dict[str, list[str]] = {
    "sphere": ["surface"],
    "cube": ["surface"],
    "octahedron": ["surface"],
    "cylinder": ["side", "cap"],
    "capsule": ["body", "cap"],
    "cone": ["side", "base"],
    "torus": ["outer", "inner"],
    "pyramid": ["base", "side"],
    "lamp": ["base", "stem", "shade"],
    "table": ["top", "leg"],
    "chair": ["seat", "back", "leg"],
    "mug": ["body", "handle"],
}
"""Part names per class (ShapeNetPart-style: each category has its own parts; labels index this list).
Basic shapes with no distinguishable parts under rotation (sphere, cube, octahedron) have one part."""


def _mesh(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if name == "cube":
        v = torch.tensor([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=torch.float32)
        return v * 0.7, torch.tensor(_BOX_FACES)
    if name == "pyramid":
        v = torch.tensor([[-1, -1, -0.8], [1, -1, -0.8], [1, 1, -0.8], [-1, 1, -0.8], [0, 0, 1.0]])
        f = [[0, 2, 1], [0, 3, 2], [0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4]]
        return v * 0.8, torch.tensor(f)
    if name == "octahedron":
        v = torch.tensor([[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]])
        f = [[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]]
        return v, torch.tensor(f)
    raise KeyError(name)


def sample_mesh(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    n: int,
    generator: torch.Generator,
    return_faces: bool = False,
) -> tuple[torch.Tensor, ...]:
    """Area-uniform surface samples of a triangle mesh: points (n, 3) and outward-ish face normals (n, 3)
    (and, with ``return_faces``, the face index (n,) of each sample)."""
    tri = vertices[faces]  # (F, 3, 3)
    cross = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # (F, 3)
    area = cross.norm(dim=-1)
    if not (area > 0).any():
        raise DataError("mesh has no faces with positive area")
    face = torch.multinomial(area / area.sum(), n, replacement=True, generator=generator)
    u, v = torch.rand(n, generator=generator), torch.rand(n, generator=generator)
    flip = u + v > 1
    u, v = torch.where(flip, 1 - u, u), torch.where(flip, 1 - v, v)
    t = tri[face]
    points = t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + v[:, None] * (t[:, 2] - t[:, 0])
    normals = F.normalize(cross[face], dim=-1)
    centre = vertices.mean(0)
    normals = torch.where(((points - centre) * normals).sum(-1, keepdim=True) < 0, -normals, normals)
    return (points, normals, face) if return_faces else (points, normals)


_BOX_FACES = [
    [0, 1, 3],
    [0, 3, 2],
    [4, 6, 7],
    [4, 7, 5],
    [0, 4, 5],
    [0, 5, 1],
    [2, 3, 7],
    [2, 7, 6],
    [0, 2, 6],
    [0, 6, 4],
    [1, 5, 7],
    [1, 7, 3],
]


def _box(centre: tuple, half: tuple, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    corners = torch.tensor(
        [[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=torch.float32
    )
    return sample_mesh(corners * torch.tensor(half) + torch.tensor(centre), torch.tensor(_BOX_FACES), n, g)


def _box_area(half: tuple) -> float:
    a, b, c = half
    return 8 * (a * b + b * c + c * a)


def _frustum(
    z0: float, r0: float, z1: float, r1: float, n: int, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lateral surface of a z-axis frustum (radius r0 at z0 to r1 at z1), area-uniform by rejection."""
    t = torch.empty(0)
    while len(t) < n:
        cand = torch.rand(4 * n, generator=g)
        keep = torch.rand(4 * n, generator=g) * max(r0, r1) < r0 + (r1 - r0) * cand
        t = torch.cat([t, cand[keep]])
    t = t[:n]
    theta = torch.rand(n, generator=g) * 2 * math.pi
    r, z = r0 + (r1 - r0) * t, z0 + (z1 - z0) * t
    pts = torch.stack([r * torch.cos(theta), r * torch.sin(theta), z], -1)
    nrm = torch.stack(
        [(z1 - z0) * torch.cos(theta), (z1 - z0) * torch.sin(theta), torch.full_like(t, r0 - r1)], -1
    )
    return pts, F.normalize(nrm, dim=-1)


def _disc(z: float, r: float, n: int, g: torch.Generator, up: float) -> tuple[torch.Tensor, torch.Tensor]:
    rad, theta = r * torch.rand(n, generator=g).sqrt(), torch.rand(n, generator=g) * 2 * math.pi
    pts = torch.stack([rad * torch.cos(theta), rad * torch.sin(theta), torch.full_like(rad, z)], -1)
    return pts, torch.tensor([0.0, 0.0, up]).expand(n, 3)


def _half_torus(
    centre: tuple, big: float, small: float, n: int, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Half a torus in the xz-plane bulging towards +x (a mug handle), area-uniform by rejection."""
    u, v = torch.empty(0), torch.empty(0)
    while len(u) < n:
        cu = (torch.rand(4 * n, generator=g) - 0.5) * math.pi
        cv = torch.rand(4 * n, generator=g) * 2 * math.pi
        keep = torch.rand(4 * n, generator=g) < (big + small * torch.cos(cv)) / (big + small)
        u, v = torch.cat([u, cu[keep]]), torch.cat([v, cv[keep]])
    u, v = u[:n], v[:n]
    nrm = torch.stack([torch.cos(v) * torch.cos(u), torch.sin(v), torch.cos(v) * torch.sin(u)], -1)
    ring = torch.stack([big * torch.cos(u), torch.zeros_like(u), big * torch.sin(u)], -1)
    return ring + small * nrm + torch.tensor(centre), nrm


def _composite(name: str, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A multi-part object from primitives: points spread over the parts by area, then shuffled."""
    prims: list[tuple[int, float, object]] = []  # (part, area, sampler(count) -> (points, normals))
    if name == "lamp":
        prims += [
            (0, 2 * math.pi * 0.45 * 0.08, lambda k: _frustum(-0.79, 0.45, -0.71, 0.45, k, g)),
            (0, math.pi * 0.45**2, lambda k: _disc(-0.71, 0.45, k, g, 1.0)),
            (0, math.pi * 0.45**2, lambda k: _disc(-0.79, 0.45, k, g, -1.0)),
            (1, 2 * math.pi * 0.05 * 1.0, lambda k: _frustum(-0.71, 0.05, 0.29, 0.05, k, g)),
            (
                2,
                math.pi * (0.55 + 0.22) * math.hypot(0.33, 0.55),
                lambda k: _frustum(0.2, 0.55, 0.75, 0.22, k, g),
            ),
        ]
    elif name == "table":
        prims.append((0, _box_area((0.9, 0.55, 0.05)), lambda k: _box((0, 0, 0.45), (0.9, 0.55, 0.05), k, g)))
        for x in (-0.8, 0.8):
            for y in (-0.45, 0.45):
                prims.append(
                    (
                        1,
                        _box_area((0.05, 0.05, 0.4)),
                        lambda k, x=x, y=y: _box((x, y, 0.0), (0.05, 0.05, 0.4), k, g),
                    )
                )
    elif name == "chair":
        prims += [
            (0, _box_area((0.45, 0.45, 0.05)), lambda k: _box((0, 0, 0), (0.45, 0.45, 0.05), k, g)),
            (1, _box_area((0.45, 0.04, 0.45)), lambda k: _box((0, -0.41, 0.5), (0.45, 0.04, 0.45), k, g)),
        ]
        for x in (-0.4, 0.4):
            for y in (-0.4, 0.4):
                prims.append(
                    (
                        2,
                        _box_area((0.04, 0.04, 0.3)),
                        lambda k, x=x, y=y: _box((x, y, -0.35), (0.04, 0.04, 0.3), k, g),
                    )
                )
    elif name == "mug":
        prims += [
            (0, 2 * math.pi * 0.45 * 1.0, lambda k: _frustum(-0.5, 0.45, 0.5, 0.45, k, g)),
            (0, math.pi * 0.45**2, lambda k: _disc(-0.5, 0.45, k, g, -1.0)),
            (1, 2 * math.pi**2 * 0.28 * 0.06, lambda k: _half_torus((0.45, 0, 0), 0.28, 0.06, k, g)),
        ]
    else:
        raise DataError(f"unknown composite class {name!r}; known: {', '.join(COMPOSITE_CLASSES)}")
    areas = torch.tensor([a for _, a, _ in prims])
    counts = torch.bincount(
        torch.multinomial(areas / areas.sum(), n, replacement=True, generator=g), minlength=len(prims)
    )
    pts, nrm, parts = [], [], []
    for (part, _, sampler), k in zip(prims, counts.tolist(), strict=True):
        if k:
            p, q = sampler(k)
            pts.append(p)
            nrm.append(q)
            parts.append(torch.full((k,), part, dtype=torch.long))
    order = torch.randperm(n, generator=g)
    return torch.cat(pts)[order], torch.cat(nrm)[order], torch.cat(parts)[order]


def sample_shape(name: str, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Surface samples (n, 3) and normals (n, 3) of one analytic shape of class ``name`` (canonical pose)."""
    points, normals, _ = sample_shape_parts(name, n, generator)
    return points, normals


def sample_shape_parts(
    name: str, n: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Surface samples (n, 3), normals (n, 3) and part labels (n,) (indices into ``PART_NAMES[name]``).

    The random stream of the 8 basic classes is the one :func:`sample_shape` always used (same files for the
    same seed); the part label is read off the branch each sample came from.
    """
    g = generator
    if name in COMPOSITE_CLASSES:
        return _composite(name, n, g)
    if name == "sphere":
        normals = F.normalize(torch.randn(n, 3, generator=g), dim=-1)
        return normals * 0.9, normals, torch.zeros(n, dtype=torch.long)
    if name in ("cube", "pyramid", "octahedron"):
        points, normals, face = sample_mesh(*_mesh(name), n, g, return_faces=True)
        parts = (face >= 2).long() if name == "pyramid" else torch.zeros(n, dtype=torch.long)
        return points, normals, parts  # pyramid faces 0-1 are the base
    if name in ("cylinder", "capsule"):
        r, h = 0.55, 1.5 if name == "cylinder" else 1.0
        side, cap = 2 * math.pi * r * h, (math.pi * r * r if name == "cylinder" else 2 * math.pi * r * r)
        on_side = torch.rand(n, generator=g) < side / (side + 2 * cap)
        theta = torch.rand(n, generator=g) * 2 * math.pi
        z = (torch.rand(n, generator=g) - 0.5) * h
        pts_side = torch.stack([r * torch.cos(theta), r * torch.sin(theta), z], -1)
        nrm_side = torch.stack([torch.cos(theta), torch.sin(theta), torch.zeros_like(z)], -1)
        top = torch.where(torch.rand(n, generator=g) < 0.5, 1.0, -1.0)
        if name == "cylinder":
            rad = r * torch.rand(n, generator=g).sqrt()
            pts_cap = torch.stack([rad * torch.cos(theta), rad * torch.sin(theta), top * h / 2], -1)
            nrm_cap = torch.stack([torch.zeros_like(z), torch.zeros_like(z), top], -1)
        else:
            d = F.normalize(torch.randn(n, 3, generator=g), dim=-1)
            d[:, 2] = d[:, 2].abs() * top
            pts_cap = d * r + torch.stack([torch.zeros_like(z), torch.zeros_like(z), top * h / 2], -1)
            nrm_cap = d
        m = on_side[:, None]
        return torch.where(m, pts_side, pts_cap), torch.where(m, nrm_side, nrm_cap), (~on_side).long()
    if name == "cone":
        r, h = 0.8, 1.6
        slant = math.hypot(r, h)
        lateral, base = math.pi * r * slant, math.pi * r * r
        on_side = torch.rand(n, generator=g) < lateral / (lateral + base)
        theta = torch.rand(n, generator=g) * 2 * math.pi
        u = torch.rand(n, generator=g).sqrt()  # area-uniform distance from the apex
        pts_side = torch.stack([r * u * torch.cos(theta), r * u * torch.sin(theta), h / 2 - h * u], -1)
        nrm_side = F.normalize(
            torch.stack([h * torch.cos(theta), h * torch.sin(theta), torch.full_like(u, r)], -1), dim=-1
        )
        rad = r * torch.rand(n, generator=g).sqrt()
        pts_base = torch.stack(
            [rad * torch.cos(theta), rad * torch.sin(theta), torch.full_like(u, -h / 2)], -1
        )
        nrm_base = torch.tensor([0.0, 0.0, -1.0]).expand(n, 3)
        m = on_side[:, None]
        return torch.where(m, pts_side, pts_base), torch.where(m, nrm_side, nrm_base), (~on_side).long()
    if name == "torus":
        big, small = 0.65, 0.28
        u = torch.rand(4 * n, generator=g) * 2 * math.pi
        v = torch.rand(4 * n, generator=g) * 2 * math.pi
        accept = torch.rand(4 * n, generator=g) < (big + small * torch.cos(v)) / (big + small)
        u, v = u[accept][:n], v[accept][:n]
        normals = torch.stack([torch.cos(v) * torch.cos(u), torch.cos(v) * torch.sin(u), torch.sin(v)], -1)
        centre = torch.stack([big * torch.cos(u), big * torch.sin(u), torch.zeros_like(u)], -1)
        return centre + small * normals, normals, (torch.cos(v) < 0).long()  # outer / inner half of the tube
    raise DataError(f"unknown shape class {name!r}; known: {', '.join(ALL_CLASSES)}")


def random_rotation(generator: torch.Generator) -> torch.Tensor:
    return quat_to_rotmat(torch.randn(4, generator=generator))


def normalise_cloud(points: torch.Tensor) -> torch.Tensor:
    """Centre on the centroid and scale into the unit sphere (the usual ModelNet normalisation)."""
    centred = points - points.mean(0)
    return centred / centred.norm(dim=-1).max().clamp_min(1e-9)


def shape_instance(
    name: str, n: int, generator: torch.Generator, rotate: bool = True, parts: bool = False
) -> tuple[torch.Tensor, ...]:
    """One random instance: points (n, 3) in the unit sphere, normals (n, 3), per-point colour (n, 3), and
    with ``parts`` the part label of each point (n,) (indices into ``PART_NAMES[name]``).

    Instances vary by anisotropic stretch (±15 %), rotation (``rotate``; part segmentation uses aligned
    objects, as ShapeNetPart does) and a random two-tone striped texture, so neither size nor colour gives the
    class away. The random stream does not depend on ``parts``.
    """
    points, normals, labels = sample_shape_parts(name, n, generator)
    stretch = 0.85 + 0.3 * torch.rand(3, generator=generator)
    points = points * stretch
    normals = F.normalize(normals / stretch, dim=-1)
    if rotate:
        rot = random_rotation(generator)
        points, normals = points @ rot.T, normals @ rot.T
    points = normalise_cloud(points)
    base, other = torch.rand(2, 3, generator=generator) * 0.8 + 0.1
    freq = 3 + 5 * torch.rand(1, generator=generator)
    axis = F.normalize(torch.randn(3, generator=generator), dim=0)
    stripe = (torch.sin(freq * math.pi * points @ axis) > 0).float()[:, None]
    colours = stripe * base + (1 - stripe) * other
    return (points, normals, colours, labels) if parts else (points, normals, colours)


def surface_gaussians(
    points: torch.Tensor, normals: torch.Tensor, colours: torch.Tensor, area: float, opacity: float = 0.9
) -> Gaussians:
    """Flat Gaussians on a sampled surface: discs tangent to it (thin along the normal), sized by spacing."""
    n = points.shape[0]
    radius = math.sqrt(area / n) * 0.8
    z = F.normalize(normals, dim=-1)
    helper = torch.where(z[:, :1].abs() < 0.9, torch.tensor([1.0, 0, 0]), torch.tensor([0, 1.0, 0]))
    x = F.normalize(torch.linalg.cross(helper, z), dim=-1)
    y = torch.linalg.cross(z, x)
    rot = torch.stack([x, y, z], dim=-1)  # (N, 3, 3) columns: local axes
    scales = torch.tensor([radius, radius, radius * 0.15]).expand(n, 3)
    return Gaussians.from_activated(
        points, scales, torch.full((n,), opacity), colours.clamp(0.02, 0.98), quats=rotmat_to_quat(rot)
    )


def surface_area(points: torch.Tensor) -> float:
    """Rough area of a unit-normalised closed shape (for Gaussian sizing): 4π r² of its RMS radius."""
    return float(4 * math.pi * points.pow(2).sum(-1).mean())
