"""InstantSplat: sparse-view, pose-free Gaussian splatting (initialise → jointly optimise → align and evaluate).

Seed paper: "InstantSplat: Unbounded Sparse-view Pose-free Gaussian Splatting in 40 Seconds" (Fan et al.,
arXiv 2403.20309; code NVlabs/InstantSplat). Stage 1 (coarse geometric initialisation) is pluggable here:
``dust3r``/``mast3r`` when the user has the package and weights (the pretrained dense-stereo source model,
:mod:`warmstart_3d.stereo`; not on PyPI, so one line naming how to install it otherwise), ``prior`` (the default: from the images alone, a
transformers depth-estimation model and feature-matched poses, :mod:`warmstart_3d.prior`), ``depth``
(per-view depth maps — given in ``depths/*.npy`` — back-projected through the initial cameras; with the
true depth and poses this is the bench's oracle), and ``random`` (points in the cameras' common view volume: the baseline). Stage 2 is the paper's fast 3D
Gaussian optimisation: ~1k steps of 0.8·L1 + 0.2·(1 − SSIM), no densification, Gaussians and per-view poses
optimised jointly with a small decaying pose LR (optionally an explicit ‖ΔT‖² term). Evaluation follows the
paper: test views' poses are aligned at test time with the Gaussians frozen, then PSNR/SSIM; the training
trajectory's absolute trajectory error after a similarity alignment. Left out: confidence/co-visibility
masking of the point map (there is no stereo model here to produce confidences).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from warmstart.errors import DataError, UserError
from warmstart_3d.data import Scene
from warmstart_3d.geometry import absolute_trajectory_error, camera_centres, rotation_error_deg
from warmstart_3d.prior import PriorConfig, initialise_from_images
from warmstart_3d.splatfit import PoseCorrection, SplatFitConfig, align_poses, evaluate_views, train_splats
from warmstart_3d.splats import Gaussians
from warmstart_3d.stereo import StereoConfig

log = logging.getLogger(__name__)

InitName = Literal["prior", "random", "depth", "dust3r", "mast3r"]


@dataclass
class InstantSplatConfig:
    init: InitName = "prior"
    """Initialisation: prior (images only: a depth-estimation model + feature-matched poses,
    :mod:`warmstart_3d.prior`), depth (the folder's depths/*.npy through its poses: with true depth, the
    bench's oracle), random (the baseline), dust3r / mast3r (when installed)."""
    prior: PriorConfig = field(default_factory=PriorConfig)
    """The geometry prior of --isplat.init prior."""
    stereo: StereoConfig = field(default_factory=StereoConfig)
    """DUSt3R / MASt3R (--isplat.init dust3r|mast3r, when their packages are installed)."""
    n_points: int = 2000
    """Gaussians to initialise (subsampled from the point map, or drawn at random)."""
    optimize_poses: bool = True
    """Jointly optimise camera poses (False: keep the initial poses fixed)."""
    align_steps: int = 60
    """Test-time pose-alignment steps per held-out view set."""
    fit: SplatFitConfig = field(default_factory=lambda: SplatFitConfig(steps=300, densify=False))
    """The joint optimisation (InstantSplat: a short fixed schedule, no densification)."""


def knn_scale(points: torch.Tensor, k: int = 3) -> torch.Tensor:
    """(N,) mean distance to the k nearest neighbours (3DGS's initial scale), computed in chunks."""
    out = []
    for chunk in points.split(2048):
        d = torch.cdist(chunk, points)  # (B, N)
        out.append(d.topk(k + 1, largest=False).values[:, 1:].mean(-1))
    return torch.cat(out).clamp_min(1e-4)


def gaussians_from_points(points: torch.Tensor, colours: torch.Tensor, opacity: float = 0.1) -> Gaussians:
    scale = knn_scale(points)[:, None].expand(-1, 3)
    return Gaussians.from_activated(
        points,
        scale.clone(),
        torch.full((len(points),), opacity, device=points.device),
        colours.clamp(0.02, 0.98),
    )


def backproject(
    depths: torch.Tensor, images: torch.Tensor, Ks: torch.Tensor, viewmats: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """World points (M, 3) and colours (M, 3) of every pixel with depth > 0, through (V, 4, 4) cameras."""
    v, h, w = depths.shape
    grid = [torch.arange(n, device=depths.device) + 0.5 for n in (h, w)]
    ys, xs = torch.meshgrid(*grid, indexing="ij")
    pix = torch.stack([xs, ys, torch.ones_like(xs)], -1).reshape(-1, 3)  # (HW, 3)
    points, colours = [], []
    for i in range(v):
        z = depths[i].reshape(-1)
        valid = z > 0
        rays = pix[valid] @ torch.linalg.inv(Ks[i]).T  # (M, 3) camera rays with z = 1
        cam = rays * z[valid, None]
        c2w = torch.linalg.inv(viewmats[i])
        points.append(cam @ c2w[:3, :3].T + c2w[:3, 3])
        colours.append(images[i].reshape(-1, 3)[valid])
    return torch.cat(points), torch.cat(colours)


def look_centre(viewmats: torch.Tensor) -> torch.Tensor:
    """The point closest (least squares) to all optical axes: where the cameras look."""
    centres = camera_centres(viewmats)
    dirs = viewmats[:, 2, :3]  # (V, 3) forward axes in the world
    eye = torch.eye(3, device=viewmats.device)
    a = sum(eye - torch.outer(d, d) for d in dirs)
    b = sum((eye - torch.outer(d, d)) @ c for d, c in zip(dirs, centres, strict=True))
    return torch.linalg.lstsq(a, b[:, None]).solution[:, 0]


def initialise(
    scene: Scene, viewmats: torch.Tensor, config: InstantSplatConfig, generator: torch.Generator
) -> Gaussians:
    """Stage 1: Gaussians from the chosen initialiser, expressed in the frame of ``viewmats``."""
    views = scene.train if scene.train is not None else list(range(len(scene.images)))
    if config.init == "prior":
        raise UserError("--isplat.init prior: run stage 1 first (instantsplat.stage1), then the depth init")
    if config.init in ("dust3r", "mast3r"):
        raise UserError(
            f"--isplat.init {config.init}: run stage 1 first (instantsplat.stage1), then the depth init"
        )
    if config.init == "depth":
        if scene.depths is None:
            raise DataError(
                "--isplat.init depth: the scene has no depths/<image>.npy maps; add them (metric depth per pixel, "
                "0 = unknown) or use --isplat.init random"
            )
        points, colours = backproject(
            scene.depths[views], scene.images[views], scene.Ks[views], viewmats[views]
        )
        if len(points) == 0:
            raise DataError("--isplat.init depth: every depth map is empty (all zeros)")
        pick = torch.randperm(len(points), generator=generator)[: config.n_points]
        return gaussians_from_points(points[pick], colours[pick])
    centres = camera_centres(viewmats[views])
    if (
        float((centres - centres.mean(0)).norm(dim=-1).max()) < 1e-6
    ):  # coincident cameras: no common view point
        # (an images-only start whose views could not be posed): a ball one unit in front of them
        centre = centres.mean(0) + viewmats[views][:, 2, :3].mean(0)
        radius = 0.5
    else:
        centre = look_centre(viewmats[views])
        radius = 0.5 * float((centres - centre).norm(dim=-1).mean())
    # drawn on the CPU generator (the same points on every device), then moved to the cameras' device
    direction = torch.nn.functional.normalize(torch.randn(config.n_points, 3, generator=generator), dim=-1)
    depth = torch.rand(config.n_points, 1, generator=generator).pow(1 / 3)
    points = centre + (direction * radius * depth).to(centre.device)
    colours = torch.rand(config.n_points, 3, generator=generator)
    return gaussians_from_points(points, colours.to(centre.device))


def prior_scene(
    scene: Scene, config: InstantSplatConfig, model=None, processor=None
) -> tuple[Scene, torch.Tensor, dict]:
    """Stage 1 from the images alone: the scene with the prior's aligned depths and assumed intrinsics, the
    estimated poses (V, 4, 4) and what the stage reports."""
    from dataclasses import replace

    from warmstart_3d.geometry import intrinsics

    Ks = intrinsics(scene.width, scene.height, config.prior.fov_deg).expand(len(scene.images), 3, 3).clone()
    viewmats, depths, info = initialise_from_images(
        scene.images, Ks, config.prior, model, processor, seed=config.fit.seed
    )
    return replace(scene, Ks=Ks, depths=depths), viewmats, info


def stereo_scene(scene: Scene, config: InstantSplatConfig) -> tuple[Scene, torch.Tensor, dict]:
    """Stage 1 by DUSt3R / MASt3R: the scene with their depths and intrinsics, their poses, what they report."""
    from dataclasses import replace

    from warmstart_3d.stereo import stereo_stage1

    assert config.init in ("dust3r", "mast3r")
    viewmats, Ks, depths, info = stereo_stage1(scene.images, config.init, config.stereo)
    return replace(scene, Ks=Ks, depths=depths), viewmats, info


def run_instantsplat(
    scene: Scene,
    initial_viewmats: torch.Tensor,
    config: InstantSplatConfig,
    *,
    true_viewmats: torch.Tensor | None = None,
    tensors: dict[str, torch.Tensor] | None = None,
) -> tuple[Gaussians, dict[str, float]]:
    """Initialise, jointly optimise on the training views, align the test views and evaluate.

    ``initial_viewmats`` (V, 4, 4) are the starting poses of all views (noisy poses, or a stereo model's);
    ``true_viewmats`` (V, 4, 4), when known, give the ATE and rotation error of the optimised trajectory.
    ``tensors``, when given, receives the optimised training poses and the aligned test poses (for pictures).
    """
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(config.fit.seed)
    train = scene.train if scene.train is not None else list(range(len(scene.images)))
    test = scene.test or []
    gaussians = initialise(scene, initial_viewmats, config, generator)
    params = gaussians.to_params()
    poses = PoseCorrection(len(train)).to(initial_viewmats.device) if config.optimize_poses else None
    history = train_splats(
        params, scene.images[train], scene.Ks[train], initial_viewmats[train], config.fit, poses=poses
    )
    results: dict[str, float] = {
        "train_loss": history["loss"][-1],
        "n_gaussians": float(history["n_gaussians"]),
    }
    degree, background = config.fit.sh_degree, config.fit.background
    train_metrics = evaluate_views(
        params, scene.images[train], scene.Ks[train], history["viewmats"], degree, background
    )
    results.update({f"train_{k}": v for k, v in train_metrics.items()})
    if test:
        aligned = align_poses(
            params,
            scene.images[test],
            scene.Ks[test],
            initial_viewmats[test],
            steps=config.align_steps,
            sh_degree=degree,
            background=background,
        )
        results.update(
            evaluate_views(params, scene.images[test], scene.Ks[test], aligned, degree, background)
        )
        if tensors is not None:
            tensors["test_viewmats"] = aligned.detach()
    if tensors is not None:
        tensors["train_viewmats"] = history["viewmats"].detach()
    if true_viewmats is not None:
        results["ate"] = absolute_trajectory_error(history["viewmats"], true_viewmats[train])
        results["ate_initial"] = absolute_trajectory_error(initial_viewmats[train], true_viewmats[train])
        results["rot_err_deg"] = rotation_error_deg(history["viewmats"], true_viewmats[train])
    results["seconds"] = time.perf_counter() - start
    return Gaussians.from_params(params), results


def run_folder(data: Path, config: InstantSplatConfig, open_run: Callable[[], Path]) -> dict:
    """The ``instantsplat`` command: load the folder, stage 1, joint optimisation, write splats.ply and
    results.json into the run folder ``open_run()`` gives — opened only once everything has been checked
    and any model has loaded (bad input writes nothing)."""
    import json
    from dataclasses import replace

    from warmstart.errors import ConfigError
    from warmstart_3d.data import load_scene, load_true_poses
    from warmstart_3d.splats import write_ply

    scene = load_scene(data, fov_deg=config.prior.fov_deg)
    from_images = config.init in ("prior", "dust3r", "mast3r")
    if not from_images and scene.viewmats is None:
        raise DataError(
            f"{data}: no initial poses in sparse/0/; use --isplat.init prior (images only, with "
            "--isplat.prior.model), dust3r/mast3r where installed, or add a COLMAP text model of initial poses"
        )
    n_views = len(scene.train) if scene.train is not None else len(scene.images)
    if not 2 <= n_views <= 32:
        raise DataError(f"{data}: {n_views} training views; InstantSplat is for sparse views (3-12)")
    truth = load_true_poses(data, scene.names)
    stage: dict = {}
    if from_images:  # images only: poses and depth from stage 1 (the model loads before any write)
        truth = truth if truth is not None else scene.viewmats
        if config.init == "prior":
            from warmstart_3d.prior import load_depth_model

            if config.prior.model is None:
                raise ConfigError(
                    "--isplat.init prior needs --isplat.prior.model (a depth model: hub id or folder)"
                )
            model, processor = load_depth_model(config.prior.model)
            scene, initial, stage = prior_scene(replace(scene, depths=None), config, model, processor)
        else:
            scene, initial, stage = stereo_scene(replace(scene, depths=None), config)
        config = replace(config, init="depth")
    else:
        initial = scene.viewmats
    run_dir = open_run()
    poses: dict[str, torch.Tensor] = {}
    gaussians, results = run_instantsplat(scene, initial, config, true_viewmats=truth, tensors=poses)
    results |= stage
    ply = write_ply(run_dir / "splats.ply", gaussians)
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    pictures = log_pictures(run_dir, gaussians, scene, poses)
    return results | {"ply": str(ply), "pictures": str(pictures)}


def render_rgb(
    gaussians: Gaussians, viewmat: torch.Tensor, K: torch.Tensor, width: int, height: int
) -> torch.Tensor:
    """(H, W, 3) render of one camera on white."""
    from warmstart_3d.render import rasterize

    with torch.no_grad():
        out = rasterize(
            gaussians.means,
            gaussians.quats,
            gaussians.scales,
            gaussians.opacities,
            gaussians.sh,
            viewmat[None],
            K[None],
            width,
            height,
            backgrounds=torch.ones(1, 3, device=gaussians.means.device),
        )
    return out.colors[0].clamp(0, 1).cpu()


def depth_picture(depth: torch.Tensor) -> torch.Tensor:
    """(H, W, 3) grey inverse depth (near = bright) of a depth map, unknown (0) in white; normalised per map."""
    depth = depth.cpu()
    valid = depth > 0
    inv = torch.where(valid, 1.0 / depth.clamp_min(1e-6), torch.zeros_like(depth))
    if bool(valid.any()):
        lo, hi = float(inv[valid].min()), float(inv[valid].max())
        inv = (inv - lo) / max(hi - lo, 1e-9)
    grey = torch.where(valid, 0.1 + 0.8 * inv, torch.ones_like(inv))
    return grey[..., None].expand(*grey.shape, 3)


def picture_rows(
    gaussians: Gaussians, scene: Scene, poses: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Per view, (H, 3W, 3): the image, the render from its optimised (training) or aligned (held-out) pose,
    and the stage-1 depth map (blank without one)."""
    train = scene.train if scene.train is not None else list(range(len(scene.images)))
    test = scene.test or []
    views = [(i, poses["train_viewmats"][k]) for k, i in enumerate(train) if "train_viewmats" in poses]
    views += [(i, poses["test_viewmats"][k]) for k, i in enumerate(test) if "test_viewmats" in poses]
    rows = {}
    for i, viewmat in views:
        render = render_rgb(gaussians, viewmat, scene.Ks[i], scene.width, scene.height)
        blank = torch.ones(scene.height, scene.width)
        depth = depth_picture(scene.depths[i] if scene.depths is not None else blank * 0)
        kind = "test" if i in test else "train"
        rows[f"{kind}/{scene.names[i]}"] = torch.cat([scene.images[i].cpu(), render, depth], 1)
    return rows


def log_pictures(run_dir: Path, gaussians: Gaussians, scene: Scene, poses: dict[str, torch.Tensor]) -> Path:
    """TensorBoard images (``run/tensorboard``: image | render | depth per view) and the same as views.png."""
    import numpy as np
    from PIL import Image

    from warmstart.engine.metrics import log_pictures as log_to_tensorboard

    rows = picture_rows(gaussians, scene, poses)
    log_to_tensorboard(run_dir, images={f"views/{tag}": row for tag, row in rows.items()})
    grid = torch.cat(list(rows.values()), 0) if rows else torch.ones(1, 1, 3)
    path = run_dir / "views.png"
    Image.fromarray((grid.numpy() * 255).round().astype(np.uint8)).save(path)
    return path
