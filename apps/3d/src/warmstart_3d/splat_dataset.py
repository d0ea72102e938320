"""ShapeSplat-style datasets: one 3DGS PLY per object plus a JSONL index with class labels.

Seed paper: "ShapeSplat: A Large-scale Dataset of Gaussian Splats and Their Self-Supervised Pretraining"
(arXiv 2408.10906). ShapeSplat fits 3DGS per ShapeNet/ModelNet object from 72 views (30k steps); here a fast,
documented initialiser stands in: area-uniform surface samples of a procedural shape become flat Gaussians
tangent to the surface (scale from the sample spacing, rotation from the normal, striped colour), optionally
refined by ``fit_steps`` of rasterizer fitting against 4 renders of a 4× denser ground-truth splat.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from warmstart.errors import ConfigError, DataError
from warmstart_3d.data import (
    SHAPE_CLASSES,
    orbit_cameras,
    render_scene,
    shape_instance,
    surface_area,
    surface_gaussians,
)
from warmstart_3d.geometry import intrinsics
from warmstart_3d.splats import Gaussians, read_ply, write_ply

log = logging.getLogger(__name__)


def object_splat(name: str, n_gaussians: int, generator: torch.Generator, fit_steps: int = 0) -> Gaussians:
    """One object's splat in the unit sphere (surface initialiser, then an optional short fit)."""
    points, normals, colours = shape_instance(name, n_gaussians * (4 if fit_steps else 1), generator)
    area = surface_area(points)
    if not fit_steps:
        return surface_gaussians(points, normals, colours, area)
    from warmstart_3d.splatfit import SplatFitConfig, train_splats

    truth = surface_gaussians(points, normals, colours, area)
    views = orbit_cameras(4, radius=2.6, elevation_deg=25, arc_deg=270)
    K = intrinsics(32, 32, 50.0)
    images, _ = render_scene(truth, views, K, 32, 32)
    keep = torch.randperm(len(points), generator=generator)[:n_gaussians]
    params = surface_gaussians(points[keep], normals[keep], colours[keep], area).to_params()
    cfg = SplatFitConfig(steps=fit_steps, densify=False)
    train_splats(params, images, K.expand(4, 3, 3), views, cfg)
    return Gaussians.from_params(params)


def make_splat_dataset(
    out: Path,
    per_class: int = 10,
    classes: list[str] | None = None,
    n_gaussians: int = 1024,
    fit_steps: int = 0,
    seed: int = 0,
) -> Path:
    """Write ``out/splats/<class>_<i>.ply`` and ``out/index.jsonl`` (``{"path", "label", "class"}`` per line)."""
    classes = classes or list(SHAPE_CLASSES)
    unknown = [c for c in classes if c not in SHAPE_CLASSES]
    if unknown:
        raise ConfigError(f"--classes: unknown {', '.join(unknown)}; known: {', '.join(SHAPE_CLASSES)}")
    if per_class < 1 or n_gaussians < 16:
        raise ConfigError("--per_class must be >= 1 and --n_gaussians >= 16")
    generator = torch.Generator().manual_seed(seed)
    (out / "splats").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(per_class):
        for label, name in enumerate(classes):
            g = object_splat(name, n_gaussians, generator, fit_steps)
            rel = f"splats/{name}_{i:04d}.ply"
            write_ply(out / rel, g)
            lines.append(json.dumps({"path": rel, "label": label, "class": name}))
    index = out / "index.jsonl"
    index.write_text("\n".join(lines) + "\n")
    (out / "classes.json").write_text(json.dumps(classes))
    return index


def read_splat_dataset(folder: Path) -> tuple[list[Gaussians], torch.Tensor, list[str]]:
    """All splats, labels (N,) and class names of a dataset written by :func:`make_splat_dataset`."""
    index = folder / "index.jsonl"
    if not index.is_file():
        raise DataError(f"{folder}: no index.jsonl; build one with `warmstart-3d splats-make --out {folder}`")
    records = [json.loads(line) for line in index.read_text().splitlines() if line.strip()]
    if not records:
        raise DataError(f"{index}: empty index")
    classes_file = folder / "classes.json"
    classes = (
        json.loads(classes_file.read_text())
        if classes_file.is_file()
        else sorted({r["class"] for r in records})
    )
    splats = [read_ply(folder / r["path"]) for r in records]
    labels = torch.tensor([int(r["label"]) for r in records])
    return splats, labels, classes
