"""ShapeSplat-style datasets: one 3DGS PLY per object plus a JSONL index with class labels.

Seed paper: "ShapeSplat: A Large-scale Dataset of Gaussian Splats and Their Self-Supervised Pretraining"
(arXiv 2408.10906). ShapeSplat fits 3DGS per ShapeNet/ModelNet object from 72 views (30k steps); here a fast,
documented initialiser stands in: area-uniform surface samples of a procedural shape become flat Gaussians
tangent to the surface (scale from the sample spacing, rotation from the normal, striped colour), optionally
refined by ``fit_steps`` of rasterizer fitting against 4 renders of a 4× denser ground-truth splat.

Part labels (for part segmentation, ShapeNetPart-style: per-class part lists in ``parts.json``) are stored per
object in a sidecar ``splats/<class>_<i>.parts.npy`` (int64, one label per Gaussian, in PLY vertex order; the
index line names it under ``"parts"``) so that the PLY stays the exact 3DGS layout every viewer and ShapeSplat
loader reads. Datasets written before part labels existed read as before (no part labels).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from warmstart.errors import ConfigError, DataError
from warmstart_3d.geometry import intrinsics
from warmstart_3d.scenes import orbit_cameras, render_scene
from warmstart_3d.shapes import (
    ALL_CLASSES,
    PART_NAMES,
    SHAPE_CLASSES,
    shape_instance,
    surface_area,
    surface_gaussians,
)
from warmstart_3d.splats import Gaussians, read_ply, write_ply

log = logging.getLogger(__name__)


def object_splat(
    name: str, n_gaussians: int, generator: torch.Generator, fit_steps: int = 0, rotate: bool = True
) -> Gaussians:
    """One object's splat in the unit sphere (surface initialiser, then an optional short fit)."""
    return object_splat_parts(name, n_gaussians, generator, fit_steps, rotate)[0]


def object_splat_parts(
    name: str, n_gaussians: int, generator: torch.Generator, fit_steps: int = 0, rotate: bool = True
) -> tuple[Gaussians, torch.Tensor]:
    """:func:`object_splat` plus the part label (N,) of each Gaussian (same random stream)."""
    points, normals, colours, parts = shape_instance(
        name, n_gaussians * (4 if fit_steps else 1), generator, rotate=rotate, parts=True
    )
    area = surface_area(points)
    if not fit_steps:
        return surface_gaussians(points, normals, colours, area), parts
    from warmstart_3d.splatfit import SplatFitConfig, train_splats

    truth = surface_gaussians(points, normals, colours, area)
    views = orbit_cameras(4, radius=2.6, elevation_deg=25, arc_deg=270)
    K = intrinsics(32, 32, 50.0)
    images, _ = render_scene(truth, views, K, 32, 32)
    keep = torch.randperm(len(points), generator=generator)[:n_gaussians]
    params = surface_gaussians(points[keep], normals[keep], colours[keep], area).to_params()
    cfg = SplatFitConfig(steps=fit_steps, densify=False)
    train_splats(params, images, K.expand(4, 3, 3), views, cfg)
    return Gaussians.from_params(params), parts[keep]


def make_splat_dataset(
    out: Path,
    per_class: int = 10,
    classes: list[str] | None = None,
    n_gaussians: int = 1024,
    fit_steps: int = 0,
    seed: int = 0,
    rotate: bool = True,
) -> Path:
    """Write ``out/splats/<class>_<i>.ply`` (+ ``.parts.npy`` part labels), ``out/index.jsonl``
    (``{"path", "label", "class", "parts"}`` per line), ``classes.json`` and ``parts.json``."""
    import numpy as np

    classes = classes or list(SHAPE_CLASSES)
    unknown = [c for c in classes if c not in ALL_CLASSES]
    if unknown:
        raise ConfigError(f"--classes: unknown {', '.join(unknown)}; known: {', '.join(ALL_CLASSES)}")
    if per_class < 1 or n_gaussians < 16:
        raise ConfigError("--per_class must be >= 1 and --n_gaussians >= 16")
    generator = torch.Generator().manual_seed(seed)
    (out / "splats").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(per_class):
        for label, name in enumerate(classes):
            g, parts = object_splat_parts(name, n_gaussians, generator, fit_steps, rotate)
            rel = f"splats/{name}_{i:04d}.ply"
            write_ply(out / rel, g)
            np.save(out / rel.replace(".ply", ".parts.npy"), parts.numpy().astype(np.int64))
            lines.append(
                json.dumps(
                    {"path": rel, "label": label, "class": name, "parts": rel.replace(".ply", ".parts.npy")}
                )
            )
    index = out / "index.jsonl"
    index.write_text("\n".join(lines) + "\n")
    (out / "classes.json").write_text(json.dumps(classes))
    (out / "parts.json").write_text(json.dumps({c: PART_NAMES[c] for c in classes}))
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
    for r, g in zip(records, splats, strict=True):
        if len(g) < 2:
            raise DataError(f"{folder / r['path']}: {len(g)} Gaussian(s); every object needs at least 2")
    labels = torch.tensor([int(r["label"]) for r in records])
    return splats, labels, classes


def read_part_labels(
    folder: Path, n_splats: list[int] | None = None
) -> tuple[list[torch.Tensor], dict[str, list[str]]]:
    """Per-object part labels (N_i,) from the ``.parts.npy`` sidecars and the per-class part names.

    ``n_splats``: the Gaussian count of each object (from :func:`read_splat_dataset`) to check the sidecars
    against. One-line :class:`DataError` when the dataset has no part labels or a sidecar does not fit.
    """
    import numpy as np

    folder = Path(folder)
    records = [json.loads(line) for line in (folder / "index.jsonl").read_text().splitlines() if line.strip()]
    parts_file = folder / "parts.json"
    if not parts_file.is_file() or any("parts" not in r for r in records):
        raise DataError(
            f"{folder}: no part labels (parts.json / .parts.npy); rebuild it with `warmstart-3d splats-make`"
        )
    names = json.loads(parts_file.read_text())
    labels = []
    for i, r in enumerate(records):
        path = folder / r["parts"]
        if not path.is_file():
            raise DataError(f"{path}: missing part-label file named in {folder / 'index.jsonl'}")
        y = torch.from_numpy(np.load(path).astype(np.int64)).flatten()
        n_parts = len(names.get(r["class"], []))
        if n_splats is not None and len(y) != n_splats[i]:
            raise DataError(
                f"{path}: {len(y)} labels for {n_splats[i]} Gaussians; the sidecar must match the PLY"
            )
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= n_parts):
            raise DataError(
                f"{path}: part labels outside 0..{n_parts - 1} for class {r['class']!r} (parts.json)"
            )
        labels.append(y)
    return labels, names
