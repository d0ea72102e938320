"""Scene folders on disk: images, per-view depth, COLMAP text poses, the train/test split.

Seed paper: "InstantSplat" (arXiv 2403.20309; sparse image folders, optionally with COLMAP poses). Reads an
image folder (``folder/images/*`` or ``folder/*``) with poses from ``sparse/0`` when present, depth maps from
``depths/*.npy`` and ``split.json``; writes the same layout. Every bad folder is one line naming it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from warmstart.errors import DataError
from warmstart_3d.geometry import intrinsics, quat_to_rotmat, rotmat_to_quat

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


@dataclass
class Scene:
    """A set of posed (or unposed) views."""

    images: torch.Tensor
    """(V, H, W, 3) in [0, 1]."""
    Ks: torch.Tensor
    """(V, 3, 3) intrinsics."""
    viewmats: torch.Tensor | None
    """(V, 4, 4) world-to-camera, or None when the folder has no poses."""
    names: list[str]
    depths: torch.Tensor | None = None
    """(V, H, W) metric depth (0 = unknown), when the folder has ``depths/*.npy``."""
    train: list[int] | None = None
    """Indices of the training views (``split.json``), None: all."""
    test: list[int] | None = None

    @property
    def width(self) -> int:
        return self.images.shape[2]

    @property
    def height(self) -> int:
        return self.images.shape[1]


def write_scene_folder(
    out: Path,
    images: torch.Tensor,
    Ks: torch.Tensor,
    viewmats: torch.Tensor | None,
    names: list[str],
    depths: torch.Tensor | None = None,
) -> None:
    from PIL import Image

    (out / "images").mkdir(parents=True, exist_ok=True)
    for img, name in zip(images, names, strict=True):
        Image.fromarray((img.clamp(0, 1).numpy() * 255).round().astype(np.uint8)).save(out / "images" / name)
    if depths is not None:
        (out / "depths").mkdir(exist_ok=True)
        for depth, name in zip(depths, names, strict=True):
            np.save(out / "depths" / f"{Path(name).stem}.npy", depth.numpy().astype(np.float32))
    if viewmats is not None:
        write_colmap_text(out / "sparse" / "0", Ks, viewmats, names, images.shape[2], images.shape[1])


def write_colmap_text(
    folder: Path, Ks: torch.Tensor, viewmats: torch.Tensor, names: list[str], w: int, h: int
) -> None:
    """COLMAP's text model: one PINHOLE camera per image, world-to-camera quaternion (wxyz) and translation."""
    folder.mkdir(parents=True, exist_ok=True)
    cams = ["# CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]"]
    imgs = ["# IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME", "# POINTS2D[] as (X, Y, POINT3D_ID)"]
    for i, (K, view, name) in enumerate(zip(Ks, viewmats, names, strict=True), start=1):
        cams.append(f"{i} PINHOLE {w} {h} {K[0, 0]:.6f} {K[1, 1]:.6f} {K[0, 2]:.6f} {K[1, 2]:.6f}")
        q = rotmat_to_quat(view[:3, :3])
        t = view[:3, 3]
        imgs.append(
            f"{i} {q[0]:.8f} {q[1]:.8f} {q[2]:.8f} {q[3]:.8f} {t[0]:.8f} {t[1]:.8f} {t[2]:.8f} {i} {name}"
        )
        imgs.append("")
    (folder / "cameras.txt").write_text("\n".join(cams) + "\n")
    (folder / "images.txt").write_text("\n".join(imgs) + "\n")
    (folder / "points3D.txt").write_text("# 3D point list (empty: poses only)\n")


def read_colmap_text(folder: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{image name: (K (3, 3), viewmat (4, 4))} from COLMAP ``cameras.txt`` + ``images.txt`` (PINHOLE,
    SIMPLE_PINHOLE, or the focal/centre of SIMPLE_RADIAL/OPENCV with distortion ignored)."""
    cams: dict[int, torch.Tensor] = {}
    for line in (folder / "cameras.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        model, params = parts[1], [float(x) for x in parts[4:]]
        if model in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL"):
            fx = fy = params[0]
            cx, cy = params[1], params[2]
        else:
            fx, fy, cx, cy = params[:4]
        cams[int(parts[0])] = torch.tensor([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])
    poses: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    lines = [ln for ln in (folder / "images.txt").read_text().splitlines() if not ln.startswith("#")]
    for line in lines[::2]:
        parts = line.split()
        if len(parts) < 10:
            continue
        q = torch.tensor([float(x) for x in parts[1:5]])
        t = torch.tensor([float(x) for x in parts[5:8]])
        view = torch.eye(4)
        view[:3, :3] = quat_to_rotmat(q)
        view[:3, 3] = t
        poses[parts[9]] = (cams[int(parts[8])], view)
    return poses


def load_true_poses(folder: str | Path, names: list[str]) -> torch.Tensor | None:
    """Ground-truth (V, 4, 4) poses from ``gt/sparse/0`` (generated scenes), None when absent."""
    sparse = Path(folder) / "gt" / "sparse" / "0"
    if not (sparse / "images.txt").is_file():
        return None
    poses = read_colmap_text(sparse)
    return torch.stack([poses[n][1] for n in names]) if all(n in poses for n in names) else None


def load_scene(folder: str | Path, *, fov_deg: float = 60.0) -> Scene:
    """Read an image folder (``folder/images/*`` or ``folder/*``), with poses from ``sparse/0`` when present."""
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such scene folder")
    image_dir = folder / "images" if (folder / "images").is_dir() else folder
    files = sorted(p for p in image_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    others = sorted(
        p.name
        for p in image_dir.iterdir()
        if p.is_file() and p.suffix.lower() not in IMAGE_SUFFIXES and image_dir != folder
    )
    if others:
        raise DataError(
            f"{image_dir}: non-image files {', '.join(others[:3])}; keep only .png/.jpg images there"
        )
    if not files:
        raise DataError(f"{image_dir}: no .png/.jpg images found; pass a folder of views")
    arrays = []
    for path in files:
        try:
            with Image.open(path) as im:
                arrays.append(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0)
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(
                f"{path}: not a readable image ({exc.__class__.__name__}); remove or replace it"
            ) from exc
    sizes = {a.shape[:2] for a in arrays}
    if len(sizes) > 1:
        detail = ", ".join(
            f"{p.name} {a.shape[1]}x{a.shape[0]}" for p, a in list(zip(files, arrays, strict=True))[:4]
        )
        raise DataError(f"{image_dir}: images of different sizes ({detail}); resize them to one size first")
    images = torch.from_numpy(np.stack(arrays))  # (V, H, W, 3)
    names = [p.name for p in files]
    h, w = images.shape[1:3]
    viewmats = None
    Ks = intrinsics(w, h, fov_deg).expand(len(names), 3, 3).clone()
    sparse = folder / "sparse" / "0"
    if (sparse / "images.txt").is_file() and (sparse / "cameras.txt").is_file():
        poses = read_colmap_text(sparse)
        missing = [n for n in names if n not in poses]
        if missing:
            raise DataError(
                f"{sparse / 'images.txt'}: no pose for {', '.join(missing[:3])}; add them or remove sparse/"
            )
        Ks = torch.stack([poses[n][0] for n in names])
        viewmats = torch.stack([poses[n][1] for n in names])
    depths = None
    if (folder / "depths").is_dir():
        found = [folder / "depths" / f"{Path(n).stem}.npy" for n in names]
        if all(p.is_file() for p in found):
            depths = torch.from_numpy(np.stack([np.load(p).astype(np.float32) for p in found]))
    train = test = None
    if (folder / "split.json").is_file():
        split = json.loads((folder / "split.json").read_text())
        train, test = split.get("train"), split.get("test")
    return Scene(images, Ks, viewmats, names, depths, train, test)
