"""Shape files in, surface samples out: meshes of every common format, point clouds and 3DGS splats.

Seed papers: "PointNet" (Qi et al., arXiv 1612.00593) for the practice of sampling a fixed number of points
on a mesh surface, area-weighted, and normalising into the unit sphere (what every ModelNet40 loader does);
"ShapeSplat" (arXiv 2408.10906) for 3DGS PLYs as shapes. Meshes (STL, OBJ, OFF with comments or colours,
GLB/GLTF, mesh PLY) are read and sampled by ``trimesh`` (``sample_surface``: area-weighted, with face normals
and vertex/face/texture colours where the file has them); point clouds come from PLY (any ``x y z`` vertex
element, ``nx ny nz`` and ``red green blue`` when present), XYZ/TXT/CSV (3 or 6+ columns: ModelNet40's
resampled ``x,y,z,nx,ny,nz``), NPY, PCL's PCD (``pypcd4``: ascii, binary and binary_compressed; ``normal_x``…
and packed ``rgb`` when present) and ASPRS LAS (``laspy``; scaled coordinates, 16-bit colour when the point
format has it); a 3DGS PLY (``f_dc_*``, ``opacity``, ...) is read exactly by
:func:`warmstart_3d.splats.read_ply` and gives its centres. Every broken or degenerate file is a one-line
:class:`~warmstart.errors.DataError` naming it. Left out: compressed LAZ (needs a laz backend), OFF colours
(trimesh drops them), texture sampling beyond trimesh's ``to_color``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from warmstart.errors import DataError

log = logging.getLogger(__name__)

MESH_SUFFIXES = {".stl", ".obj", ".off", ".glb", ".gltf"}
CLOUD_SUFFIXES = {".xyz", ".txt", ".csv", ".pts", ".npy", ".pcd", ".las"}
SUFFIXES = MESH_SUFFIXES | CLOUD_SUFFIXES | {".ply"}
SPLAT_PROPERTIES = {"f_dc_0", "opacity", "scale_0", "rot_0"}


@dataclass
class Cloud:
    """Points on a shape's surface, with what the file offered."""

    points: torch.Tensor
    """(N, 3) positions."""
    normals: torch.Tensor | None = None
    """(N, 3) unit normals (mesh face normals, or the file's nx ny nz)."""
    colours: torch.Tensor | None = None
    """(N, 3) RGB in [0, 1]."""
    kind: str = "points"
    """What the file held: mesh, points or splats."""

    def __len__(self) -> int:
        return self.points.shape[0]


def check_cloud(points: torch.Tensor, source: str, min_points: int = 2) -> torch.Tensor:
    """Refuse an (N, 3+) array that is not a usable cloud: wrong shape, too few points, NaN/inf, no extent."""
    if points.dim() != 2 or points.shape[1] < 3:
        raise DataError(f"{source}: expected an (N, 3+) array of points, got shape {tuple(points.shape)}")
    if points.shape[0] == 0:
        raise DataError(f"{source}: empty point cloud")
    if points.shape[0] < min_points:
        raise DataError(f"{source}: only {points.shape[0]} point(s); need at least {min_points}")
    if not torch.isfinite(points[:, :3]).all():
        bad = int((~torch.isfinite(points[:, :3]).all(-1)).sum())
        raise DataError(f"{source}: {bad} point(s) with NaN/inf coordinates; drop them before loading")
    if float((points[:, :3] - points[:1, :3]).abs().max()) == 0.0:
        raise DataError(f"{source}: every point is at the same position (a degenerate shape)")
    return points


def _ply_header(path: Path):  # -> PlyData (header and data; plyfile reads both)
    from plyfile import PlyData

    try:
        return PlyData.read(str(path))
    except Exception as exc:  # noqa: BLE001 - plyfile raises PlyHeaderParseError, UnicodeDecodeError, ...
        raise DataError(f"{path}: not a readable PLY file ({type(exc).__name__}: {str(exc)[:80]})") from None


def _mesh(path: Path):  # -> trimesh.Trimesh
    import trimesh

    try:
        loaded = trimesh.load(str(path), force="mesh", process=True)
    except Exception as exc:  # noqa: BLE001 - trimesh raises ValueError, IndexError, KeyError, ...
        raise DataError(f"{path}: not a readable mesh ({type(exc).__name__}: {str(exc)[:80]})") from None
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0:
        raise DataError(f"{path}: no triangles in the file (empty or not a {path.suffix.lstrip('.')} mesh)")
    if len(loaded.vertices) < 4 or not np.isfinite(loaded.vertices).all():
        raise DataError(
            f"{path}: {len(loaded.vertices)} vertices; a shape needs at least 4 finite ones (a tetrahedron)"
        )
    if not loaded.area > 0:
        raise DataError(f"{path}: every face has zero area (a degenerate mesh)")
    return loaded


def sample_trimesh(mesh, n: int, seed: int) -> Cloud:
    """``n`` area-weighted surface samples of a trimesh mesh, face normals, colours when it has any."""
    import trimesh

    has_colour = mesh.visual.kind in ("vertex", "face", "texture")
    if mesh.visual.kind == "texture":
        try:
            mesh.visual = mesh.visual.to_color()
        except Exception:  # noqa: BLE001 - a texture trimesh cannot bake: sample without colour
            has_colour = False
    out = trimesh.sample.sample_surface(mesh, n, sample_color=has_colour, seed=seed)
    points, faces = out[0], out[1]
    colours = None
    if has_colour and len(out) > 2 and out[2] is not None:
        colours = torch.from_numpy(np.asarray(out[2], dtype=np.float32)[:, :3] / 255.0)
    normals = torch.from_numpy(np.asarray(mesh.face_normals[faces], dtype=np.float32))
    return Cloud(torch.from_numpy(np.asarray(points, dtype=np.float32)), normals, colours, "mesh")


def _ply_cloud(path: Path, n_points: int, seed: int) -> Cloud:
    ply = _ply_header(path)
    if "vertex" not in ply or ply["vertex"].count == 0:
        raise DataError(f"{path}: PLY with no vertices (header only?)")
    vertex = ply["vertex"]
    names = {p.name for p in vertex.properties}
    if not {"x", "y", "z"} <= names:
        raise DataError(f"{path}: PLY vertices have no x y z properties")
    if names >= SPLAT_PROPERTIES:
        from warmstart_3d.splats import read_ply

        g = read_ply(path)
        return Cloud(g.means, None, g.rgb, "splats")
    if "face" in ply and ply["face"].count > 0:
        return sample_trimesh(_mesh(path), n_points, seed)

    def cols(keys: tuple[str, ...]) -> torch.Tensor:
        return torch.from_numpy(np.stack([np.asarray(vertex[k], np.float32) for k in keys], 1))

    normals = cols(("nx", "ny", "nz")) if {"nx", "ny", "nz"} <= names else None
    colours = None
    for keys in (("red", "green", "blue"), ("r", "g", "b")):
        if set(keys) <= names:
            raw = cols(keys)
            colours = raw / 255.0 if float(raw.max()) > 1.0 else raw
    return Cloud(cols(("x", "y", "z")), normals, colours, "points")


def _array_cloud(path: Path) -> Cloud:
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            arr = np.loadtxt(path, delimiter="," if suffix == ".csv" else None, ndmin=2, dtype=np.float32)
    except Exception as exc:  # noqa: BLE001 - numpy raises ValueError, UnicodeDecodeError, EOFError, ...
        raise DataError(
            f"{path}: not a readable {suffix.lstrip('.')} point file ({type(exc).__name__})"
        ) from None
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim != 2:
        arr = arr.reshape(-1, arr.shape[-1]) if arr.ndim > 2 else arr.reshape(1, -1)
    points = torch.from_numpy(np.ascontiguousarray(arr))
    normals = points[:, 3:6].clone() if points.shape[1] >= 6 else None
    return Cloud(points, normals, None, "points")


def _pcd_cloud(path: Path) -> Cloud:
    """A PCL .pcd file through pypcd4; a bad header, a body shorter than its POINTS, or no x y z: one line."""
    from pypcd4 import PointCloud

    try:
        pc = PointCloud.from_path(path)
        fields = list(pc.fields)
        if not {"x", "y", "z"} <= set(fields):
            raise DataError(f"{path}: PCD without x y z fields (has {' '.join(fields)})")
        arr = pc.numpy(tuple(fields))
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - pypcd4 raises pydantic's ValidationError, ValueError, ...
        raise DataError(f"{path}: not a readable PCD file ({type(exc).__name__})") from None
    if arr.shape[0] != pc.points:
        raise DataError(
            f"{path}: PCD header says {pc.points} points, the body holds {arr.shape[0]}; truncated?"
        )

    def cols(keys: tuple[str, ...]) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(arr[:, [fields.index(k) for k in keys]], np.float32))

    normal_keys = ("normal_x", "normal_y", "normal_z")
    normals = cols(normal_keys) if set(normal_keys) <= set(fields) else None
    colours = None
    for key in ("rgb", "rgba"):
        if key in fields:  # PCL packs 8-bit r g b into one float32 (TYPE F) or uint32 (TYPE U)
            column = arr[:, fields.index(key)]
            is_uint = np.dtype(pc.types[fields.index(key)]).kind == "u"
            packed = column.astype(np.uint32).view(np.float32) if is_uint else column.astype(np.float32)
            colours = torch.from_numpy(PointCloud.decode_rgb(packed).astype(np.float32) / 255.0)
    return Cloud(cols(("x", "y", "z")), normals, colours, "points")


def _las_cloud(path: Path) -> Cloud:
    """An ASPRS .las file through laspy (scaled x y z; red green blue of 16 bits when present)."""
    import laspy

    try:
        las = laspy.read(path)
    except Exception as exc:  # noqa: BLE001 - laspy raises LaspyException, ValueError, ...
        raise DataError(f"{path}: not a readable LAS file ({type(exc).__name__}: {exc})") from None
    points = torch.from_numpy(
        np.stack([np.asarray(las.x), np.asarray(las.y), np.asarray(las.z)], 1).astype(np.float32)
    )
    colours = None
    if {"red", "green", "blue"} <= set(las.point_format.dimension_names):
        rgb = np.stack([np.asarray(las.red), np.asarray(las.green), np.asarray(las.blue)], 1).astype(
            np.float32
        )
        if len(rgb) and rgb.max() > 0:
            colours = torch.from_numpy(rgb / (65535.0 if rgb.max() > 255 else 255.0))
    return Cloud(points, None, colours, "points")


def _txt_with_commas(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return b"," in fh.read(256)
    except OSError:
        return False


def read_cloud(path: str | Path, n_points: int = 1024, seed: int = 0, min_points: int = 2) -> Cloud:
    """The surface of one shape file: a mesh sampled with ``n_points`` points, or the file's own points.

    ``min_points``: fewer points than this (a model's group count) is refused as a degenerate shape.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such shape file")
    suffix = path.suffix.lower()
    if suffix == ".ply":
        cloud = _ply_cloud(path, n_points, seed)
    elif suffix in MESH_SUFFIXES:
        cloud = sample_trimesh(_mesh(path), n_points, seed)
    elif suffix in (".txt", ".xyz") and _txt_with_commas(path):
        try:
            arr = np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float32)
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"{path}: not a readable point file ({type(exc).__name__})") from None
        points = torch.from_numpy(arr)
        cloud = Cloud(points, points[:, 3:6].clone() if points.shape[1] >= 6 else None, None, "points")
    elif suffix == ".pcd":
        cloud = _pcd_cloud(path)
    elif suffix == ".las":
        cloud = _las_cloud(path)
    elif suffix in CLOUD_SUFFIXES:
        cloud = _array_cloud(path)
    else:
        raise DataError(
            f"{path}: unknown shape format {suffix!r}; use a mesh ({', '.join(sorted(MESH_SUFFIXES))}, .ply) "
            "or points (.ply, .xyz, .txt, .csv, .npy, .pcd, .las)"
        )
    check_cloud(cloud.points, str(path), min_points)
    cloud.points = cloud.points[:, :3].contiguous()
    if cloud.normals is not None:
        cloud.normals = torch.nn.functional.normalize(cloud.normals, dim=-1)
    return cloud


def load_points(path: str | Path, n_points: int = 1024, seed: int = 0, min_points: int = 2) -> torch.Tensor:
    """(N, 3) points of any shape file :func:`read_cloud` reads (meshes sampled with ``n_points``)."""
    return read_cloud(path, n_points, seed, min_points).points


def resample(cloud: torch.Tensor, n_points: int, generator: torch.Generator) -> torch.Tensor:
    """``n_points`` indices into a cloud of N: a random subset, repeated at random when N < n_points."""
    pick = torch.randperm(len(cloud), generator=generator)[:n_points]
    if len(pick) < n_points:
        pick = torch.cat([pick, pick[torch.randint(len(pick), (n_points - len(pick),), generator=generator)]])
    return pick
