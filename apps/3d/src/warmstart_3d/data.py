"""Procedural shapes and scenes in real file formats, and the loaders that read them back (one import place).

The work is split by what it does: generation of shapes (:mod:`warmstart_3d.shapes`: analytic classes,
multi-part objects, part labels, surface Gaussians) and of scenes (:mod:`warmstart_3d.scenes`: textured
multi-object scenes rendered from known cameras and written as a capture folder), IO of scene folders
(:mod:`warmstart_3d.scene_io`: images, depth, COLMAP text poses, split.json) and seeded index batches
(:mod:`warmstart_3d.sampling`). Shape files (meshes, clouds, splats) are read by :mod:`warmstart_3d.clouds`.
This module re-exports the names it always had, so ``from warmstart_3d.data import ...`` keeps working.
"""

from __future__ import annotations

from warmstart_3d.clouds import check_cloud, load_points
from warmstart_3d.sampling import (
    index_batches,
)
from warmstart_3d.scene_io import (
    IMAGE_SUFFIXES,
    Scene,
    load_scene,
    load_true_poses,
    read_colmap_text,
    write_colmap_text,
    write_scene_folder,
)
from warmstart_3d.scenes import (
    make_scene,
    orbit_cameras,
    render_scene,
    scene_gaussians,
)
from warmstart_3d.shapes import (
    ALL_CLASSES,
    COMPOSITE_CLASSES,
    PART_NAMES,
    SHAPE_CLASSES,
    normalise_cloud,
    random_rotation,
    sample_mesh,
    sample_shape,
    sample_shape_parts,
    shape_instance,
    surface_area,
    surface_gaussians,
)

__all__ = [
    "ALL_CLASSES",
    "COMPOSITE_CLASSES",
    "IMAGE_SUFFIXES",
    "PART_NAMES",
    "SHAPE_CLASSES",
    "Scene",
    "check_cloud",
    "index_batches",
    "load_points",
    "load_scene",
    "load_true_poses",
    "make_scene",
    "normalise_cloud",
    "orbit_cameras",
    "random_rotation",
    "read_colmap_text",
    "render_scene",
    "sample_mesh",
    "sample_shape",
    "sample_shape_parts",
    "scene_gaussians",
    "shape_instance",
    "surface_area",
    "surface_gaussians",
    "write_colmap_text",
    "write_scene_folder",
]
