"""Shape datasets by name, read from a local ``--root`` in their published layouts.

Seed papers and layouts: ModelNet40 ("3D ShapeNets", Wu et al., arXiv 1406.5670: ``<root>/<class>/{train,
test}/<class>_0001.off``, and the PointNet++ resampled release ``modelnet40_shape_names.txt`` +
``modelnet40_{train,test}.txt`` + ``<class>/<class>_0001.txt`` rows ``x,y,z,nx,ny,nz``); ScanObjectNN (Uy et
al., arXiv 1908.04616: ``[main_split/]{training,test}_objectdataset[_variant].h5`` with ``data`` (M, 2048, 3)
and ``label`` (M,)); ShapeNetPart (Yi et al. 2016, the PointNet++ ``shapenetcore_partanno_segmentation_
benchmark_v0_normal`` release: ``synsetoffset2category.txt``, ``<synset>/<id>.txt`` rows ``x y z nx ny nz
part``, ``train_test_split/shuffled_{train,val,test}_file_list.json``); ShapeSplat ("ShapeSplat", arXiv
2408.10906: 3DGS PLYs, ``<root>/<synset>-<id>/point_cloud.ply`` or class folders of PLYs). A plain folder of
class sub-folders holding any shape file (:mod:`warmstart_3d.clouds`) works too. Class names, class counts
and part counts come from the files, never from a constant. A file that cannot be read is one line naming it
(``on_bad_file=fail``) or skipped and counted (``skip``). Left out: ShapeNetPart's older ``points/*.pts`` +
``points_label/*.seg`` layout, ScanObjectNN's background masks.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from warmstart.errors import DataError
from warmstart_3d.clouds import SUFFIXES, check_cloud, read_cloud, resample

log = logging.getLogger(__name__)

DatasetName = Literal["auto", "modelnet40", "scanobjectnn", "shapenetpart", "shapesplat", "folder"]
OnBadFile = Literal["fail", "skip"]
SCANOBJECTNN_CLASSES = [
    "bag",
    "bin",
    "box",
    "cabinet",
    "chair",
    "desk",
    "display",
    "door",
    "shelf",
    "table",
    "bed",
    "pillow",
    "sink",
    "sofa",
    "toilet",
]
"""The published names of ScanObjectNN's 15 labels (the h5 files hold only the indices)."""


@dataclass
class ShapeSet:
    """Shapes of one split, each resampled to the same number of points, in the unit sphere."""

    points: torch.Tensor
    """(M, N, 3)."""
    labels: torch.Tensor
    """(M,) class indices into ``classes``."""
    classes: list[str]
    files: list[str]
    """Where each shape came from (a path, or ``file.h5[i]``)."""
    parts: torch.Tensor | None = None
    """(M, N) per-class part labels (ShapeNetPart), indices into ``part_names[class]``."""
    part_names: dict[str, list[str]] | None = None
    splats: list | None = None
    """The :class:`~warmstart_3d.splats.Gaussians` of each shape when the files are 3DGS PLYs."""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(file, reason) of every file left out under ``on_bad_file=skip``."""
    layout: str = "folder"


def normalise(points: torch.Tensor) -> torch.Tensor:
    """Centre on the centroid and scale into the unit sphere (the ModelNet normalisation)."""
    centred = points - points.mean(0)
    return centred / centred.norm(dim=-1).max().clamp_min(1e-9)


def detect_layout(root: Path) -> str:
    """The name of the published layout ``root`` is in (see the module docstring)."""
    if not root.is_dir():
        raise DataError(f"{root}: no such dataset folder")
    if (root / "index.jsonl").is_file():
        return "shapesplat"
    if (root / "synsetoffset2category.txt").is_file() and (root / "train_test_split").is_dir():
        return "shapenetpart"
    if any(root.glob("*_shape_names.txt")):
        return "modelnet40"
    if any(root.glob("*objectdataset*.h5")) or any(root.glob("*/*objectdataset*.h5")):
        return "scanobjectnn"
    subs = [p for p in root.iterdir() if p.is_dir()]
    if any((s / "train").is_dir() or (s / "test").is_dir() for s in subs):
        return "modelnet40"
    if subs and all((s / "point_cloud.ply").is_file() for s in subs[:20]):
        return "shapesplat"
    if not subs:
        raise DataError(
            f"{root}: no class sub-folders and no known dataset files (ModelNet40, ScanObjectNN h5, "
            "ShapeNetPart, ShapeSplat PLYs)"
        )
    return "folder"


class _Reader:
    """Reads files one by one under the skip policy and stacks them."""

    def __init__(self, n_points: int, seed: int, on_bad_file: OnBadFile, min_points: int) -> None:
        self.n_points, self.on_bad_file, self.min_points = n_points, on_bad_file, min_points
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.skipped: list[tuple[str, str]] = []
        self.points: list[torch.Tensor] = []
        self.labels: list[str] = []
        self.files: list[str] = []
        self.parts: list[torch.Tensor] = []
        self.splats: list = []

    def fail(self, source: str, why: str) -> None:
        if self.on_bad_file == "fail":
            raise DataError(f"{why} (or pass --on_bad_file skip to leave such files out)")
        log.warning("skipping %s", why)
        self.skipped.append((source, why))

    def add(self, points: torch.Tensor, label: str, source: str, parts: torch.Tensor | None = None) -> None:
        try:
            check_cloud(points, source, self.min_points)
        except DataError as exc:
            self.fail(source, str(exc))
            return
        pick = resample(points, self.n_points, self.generator)
        self.points.append(normalise(points[pick, :3].float()))
        self.labels.append(label)
        self.files.append(source)
        if parts is not None:
            self.parts.append(parts[pick])

    def add_file(self, path: Path, label: str) -> None:
        try:
            cloud = read_cloud(path, self.n_points, self.seed, self.min_points)
        except DataError as exc:
            self.fail(str(path), str(exc))
            return
        self.add(cloud.points, label, str(path))

    def add_splat(self, path: Path, label: str) -> None:
        from warmstart_3d.splats import read_ply

        try:
            g = read_ply(path)
            check_cloud(g.means, str(path), self.min_points)
        except DataError as exc:
            self.fail(str(path), str(exc))
            return
        self.splats.append(g)
        self.add(g.means, label, str(path))

    def result(self, layout: str, classes: list[str] | None = None) -> ShapeSet:
        if not self.points:
            detail = f"; {len(self.skipped)} skipped, first: {self.skipped[0][1]}" if self.skipped else ""
            raise DataError(f"no readable shapes found{detail}")
        names = classes or sorted(set(self.labels))
        labels = torch.tensor([names.index(name) for name in self.labels])
        if self.skipped:
            log.warning("%d file(s) skipped under on_bad_file=skip", len(self.skipped))
        return ShapeSet(
            torch.stack(self.points),
            labels,
            names,
            self.files,
            torch.stack(self.parts) if self.parts else None,
            None,
            self.splats or None,
            self.skipped,
            layout,
        )


def _shape_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)


def _modelnet(root: Path, split: str, reader: _Reader) -> ShapeSet:
    names_file = next(iter(sorted(root.glob("*_shape_names.txt"))), None)
    if names_file is not None:  # PointNet++ resampled release
        classes = [ln.strip() for ln in names_file.read_text().splitlines() if ln.strip()]
        stem = names_file.name.replace("_shape_names.txt", "")
        splits = ["train", "test"] if split == "all" else [split]
        for s in splits:
            listing = root / f"{stem}_{s}.txt"
            if not listing.is_file():
                raise DataError(f"{listing}: missing split list of the ModelNet40 resampled release")
            for shape in (ln.strip() for ln in listing.read_text().splitlines() if ln.strip()):
                cls = shape.rsplit("_", 1)[0]
                reader.add_file(root / cls / f"{shape}.txt", cls)
        return reader.result("modelnet40", classes)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    for cls in classes:
        for s in ["train", "test"] if split == "all" else [split]:
            folder = root / cls / s
            if not folder.is_dir():
                reader.fail(str(folder), f"{folder}: no {s}/ folder for class {cls} (ModelNet40 layout)")
                continue
            for path in _shape_files(folder):
                reader.add_file(path, cls)
    return reader.result("modelnet40", classes)


def _scanobjectnn(root: Path, split: str, variant: str, reader: _Reader) -> ShapeSet:
    import h5py

    prefixes = {"train": ["training"], "test": ["test"], "all": ["training", "test"]}[split]
    for prefix in prefixes:
        name = f"{prefix}_objectdataset{variant}.h5"
        found = [p for p in (root / name, root / "main_split" / name) if p.is_file()]
        if not found:
            raise DataError(
                f"{root}: no {name} (ScanObjectNN h5; --dataset.variant picks e.g. _augmentedrot_scale75)"
            )
        path = found[0]
        try:
            with h5py.File(path, "r") as fh:
                data, label = np.asarray(fh["data"], np.float32), np.asarray(fh["label"]).reshape(-1)
        except (OSError, KeyError) as exc:
            raise DataError(f"{path}: not a ScanObjectNN h5 with 'data' and 'label' ({exc})") from None
        if data.ndim != 3 or data.shape[-1] < 3 or len(data) != len(label):
            raise DataError(
                f"{path}: 'data' {data.shape} and 'label' {label.shape} do not fit (M, N, 3) / (M,)"
            )
        for i in range(len(data)):
            y = int(label[i])
            cls = SCANOBJECTNN_CLASSES[y] if y < len(SCANOBJECTNN_CLASSES) else f"class_{y}"
            reader.add(torch.from_numpy(data[i, :, :3]), cls, f"{path}[{i}]")
    seen = set(reader.labels)
    present = [c for c in SCANOBJECTNN_CLASSES if c in seen] + sorted(seen - set(SCANOBJECTNN_CLASSES))
    return reader.result("scanobjectnn", present)


def _shapenetpart(root: Path, split: str, reader: _Reader) -> ShapeSet:
    synsets = {}
    for line in (root / "synsetoffset2category.txt").read_text().splitlines():
        if line.strip():
            name, synset = line.split()[:2]
            synsets[synset] = name
    lists = root / "train_test_split"
    splits = {"train": ["train", "val"], "test": ["test"], "all": ["train", "val", "test"]}[split]
    entries: list[str] = []
    for s in splits:
        listing = lists / f"shuffled_{s}_file_list.json"
        if not listing.is_file():
            raise DataError(f"{listing}: missing ShapeNetPart split list")
        entries += json.loads(listing.read_text())
    global_parts: dict[str, set[int]] = {}
    raw: list[tuple[torch.Tensor, torch.Tensor, str, str]] = []
    for entry in entries:
        _, synset, shape = entry.split("/")[-3:]
        path = root / synset / f"{shape}.txt"
        cls = synsets.get(synset, synset)
        try:
            arr = np.loadtxt(path, ndmin=2, dtype=np.float32)
            if arr.shape[1] < 4:
                raise ValueError(f"{arr.shape[1]} columns")
        except (OSError, ValueError) as exc:
            reader.fail(str(path), f"{path}: not a ShapeNetPart row file 'x y z [nx ny nz] part' ({exc})")
            continue
        part = torch.from_numpy(arr[:, -1].astype(np.int64))
        global_parts.setdefault(cls, set()).update(part.tolist())
        raw.append((torch.from_numpy(arr[:, :3]), part, cls, str(path)))
    # part ids are global (50 over 16 categories); each category's own parts, from the data, in order
    part_ids = {cls: sorted(ids) for cls, ids in global_parts.items()}
    for points, part, cls, source in raw:
        local = torch.tensor([part_ids[cls].index(int(p)) for p in part.tolist()])
        reader.add(points, cls, source, local)
    result = reader.result("shapenetpart")
    result.part_names = {cls: [f"part_{i}" for i in ids] for cls, ids in part_ids.items()}
    return result


def _shapesplat(root: Path, split: str, reader: _Reader) -> ShapeSet:
    if (root / "index.jsonl").is_file():
        records = [json.loads(ln) for ln in (root / "index.jsonl").read_text().splitlines() if ln.strip()]
        classes = (
            json.loads((root / "classes.json").read_text()) if (root / "classes.json").is_file() else None
        )
        for r in records:
            reader.add_splat(root / r["path"], r["class"])
        return reader.result("shapesplat", classes)
    synsets = {}
    taxonomy = root / "synsetoffset2category.txt"
    if taxonomy.is_file():
        for line in taxonomy.read_text().splitlines():
            if line.strip():
                name, synset = line.split()[:2]
                synsets[synset] = name
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if (folder / "point_cloud.ply").is_file():
            synset = folder.name.split("-", 1)[0]
            reader.add_splat(folder / "point_cloud.ply", synsets.get(synset, synset))
        else:
            for path in sorted(folder.rglob("*.ply")):
                reader.add_splat(path, folder.name)
    return reader.result("shapesplat")


def _folder(root: Path, reader: _Reader) -> ShapeSet:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    for cls in classes:
        files = sorted(p for p in (root / cls).rglob("*") if p.is_file())
        for path in files:
            if path.suffix.lower() in SUFFIXES:
                reader.add_file(path, cls)
            else:
                reader.fail(str(path), f"{path}: unknown shape format {path.suffix!r}")
    return reader.result("folder", [c for c in classes if c in set(reader.labels)])


def load_shape_set(
    root: str | Path,
    *,
    n_points: int = 1024,
    split: Literal["train", "test", "all"] = "all",
    name: DatasetName = "auto",
    on_bad_file: OnBadFile = "fail",
    min_points: int = 2,
    variant: str = "",
    seed: int = 0,
) -> ShapeSet:
    """Read a dataset from ``root`` (layout detected unless ``name`` says it), ``n_points`` per shape.

    ``min_points``: shapes with fewer points (e.g. than the model's groups) are refused or skipped.
    ``variant``: ScanObjectNN's file suffix (``""`` = OBJ_ONLY, ``_augmentedrot_scale75`` = PB_T50_RS).
    """
    root = Path(root)
    layout = detect_layout(root) if name == "auto" else name
    reader = _Reader(n_points, seed, on_bad_file, min_points)
    if layout == "modelnet40":
        return _modelnet(root, split, reader)
    if layout == "scanobjectnn":
        return _scanobjectnn(root, split, variant, reader)
    if layout == "shapenetpart":
        return _shapenetpart(root, split, reader)
    if layout == "shapesplat":
        return _shapesplat(root, split, reader)
    return _folder(root, reader)
