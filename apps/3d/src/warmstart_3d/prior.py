"""InstantSplat's stage 1 from images alone: a pretrained depth prior, poses from feature matches, aligned depth.

Seed paper: "InstantSplat: Unbounded Sparse-view Pose-free Gaussian Splatting in 40 Seconds" (arXiv
2403.20309), whose stage 1 is a pretrained dense-stereo model (DUSt3R/MASt3R) giving per-view point maps
and poses. Here the geometry prior is a monocular depth model a user can get, any transformers
``AutoModelForDepthEstimation`` (Depth Anything, arXiv 2401.10891; DPT, arXiv 2103.13413) from a hub id or a
local folder, and the poses come from classical correspondences, as COLMAP's incremental start does: kornia's
SIFT features, mutual nearest-neighbour matching with a ratio test, a RANSAC fundamental matrix turned into
the essential matrix with the (assumed) intrinsics, and the cheirality-checked relative pose of every view
against the first. The relative poses' translations have no scale; the prior's depth fixes it: view 0's
depth is aligned (scale and shift, least squares in the prior's own space — disparity for Depth Anything /
MiDaS) to the triangulated depths of the first pair, every other pair's baseline is scaled so that its
triangulation agrees with that depth, and each view's prediction is aligned to the triangulated points it
sees. The aligned depths are back-projected through the poses as the Gaussians' initialisation; the joint
optimisation of Gaussians and poses is :mod:`warmstart_3d.instantsplat`. With too few matches for a pair the
view falls back to view 0's pose (reported). Left out: focal estimation (a field of view is assumed), bundle
adjustment, DUSt3R's confidence maps.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from warmstart.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class PriorConfig:
    model: str | None = None
    """A transformers depth-estimation model: hub id (depth-anything/Depth-Anything-V2-Small-hf,
    Intel/dpt-hybrid-midas, ...) or a local folder with config.json + weights."""
    output: Literal["disparity", "depth"] = "disparity"
    """What the model predicts: relative inverse depth (Depth Anything, MiDaS/DPT) or depth."""
    input_size: int = 518
    """Shorter side fed to the model (rounded to its patch size; Depth Anything: 518)."""
    fov_deg: float = 60.0
    """Assumed horizontal field of view of the cameras (images carry no intrinsics)."""
    features: int = 2000
    """SIFT features per view."""
    ratio: float = 0.95
    """Mutual-nearest-neighbour ratio threshold of the matcher."""
    inlier_px: float = 1.0
    """RANSAC inlier threshold of the fundamental matrix (pixels)."""
    min_matches: int = 12
    """Fewer inlier matches than this: the view keeps view 0's pose (reported)."""


def load_depth_model(source: str):  # -> (model, processor or None)
    """A transformers depth-estimation model from a hub id or a local folder; one line when it fails."""
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    try:
        model = AutoModelForDepthEstimation.from_pretrained(source)
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"--isplat.prior.model {source}: not a loadable depth-estimation model "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); pass a local folder or a hub id"
        ) from None
    try:
        processor = AutoImageProcessor.from_pretrained(source)
    except (OSError, ValueError, KeyError):
        processor = None
    return model.eval(), processor


def _patch_size(model) -> int:
    cfg = model.config
    backbone = getattr(cfg, "backbone_config", None)
    return int(getattr(cfg, "patch_size", None) or getattr(backbone, "patch_size", 16) or 16)


@torch.no_grad()
def predict(model, images: torch.Tensor, config: PriorConfig, processor=None) -> torch.Tensor:
    """(V, H, W) positive predictions of the model for (V, H, W, 3) images, at the images' resolution."""
    v, h, w, _ = images.shape
    x = images.permute(0, 3, 1, 2).float()  # (V, 3, H, W)
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    if processor is not None and getattr(processor, "image_mean", None) is not None:
        mean, std = tuple(processor.image_mean), tuple(processor.image_std)
    patch = _patch_size(model)
    scale = config.input_size / min(h, w)
    size = [max(patch, round(h * scale / patch) * patch), max(patch, round(w * scale / patch) * patch)]
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    out = model(pixel_values=x).predicted_depth  # (V, h', w')
    out = F.interpolate(out[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    return out.clamp_min(1e-6)


def _matches(
    gray: torch.Tensor, i: int, j: int, config: PriorConfig, cache: dict
) -> tuple[torch.Tensor, ...]:
    import kornia.feature as KF

    for k in (i, j):
        if k not in cache:
            sift = KF.SIFTFeature(num_features=config.features, upright=False)
            lafs, _, descs = sift(gray[k : k + 1])
            cache[k] = (KF.get_laf_center(lafs)[0], descs[0])  # (N, 2), (N, 128)
    (xy_i, d_i), (xy_j, d_j) = cache[i], cache[j]
    if len(d_i) < 8 or len(d_j) < 8:
        return xy_i[:0], xy_j[:0]
    _, idx = KF.match_smnn(d_i, d_j, config.ratio)
    return xy_i[idx[:, 0]], xy_j[idx[:, 1]]


def relative_pose(
    x0: torch.Tensor, x1: torch.Tensor, K: torch.Tensor, config: PriorConfig, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(R, t (unit), inlier mask, triangulated points in camera 0) from matches (N, 2), or None if too few."""
    from kornia.geometry import epipolar
    from kornia.geometry.ransac import RANSAC

    if len(x0) < max(8, config.min_matches):
        return None
    ransac = RANSAC("fundamental", inl_th=config.inlier_px, max_iter=50, seed=seed)
    fundamental, inliers = ransac(x0.double(), x1.double())
    if int(inliers.sum()) < config.min_matches:
        return None
    E = epipolar.essential_from_fundamental(fundamental[None].float(), K[None], K[None])
    a, b = x0[inliers][None], x1[inliers][None]
    R, t, points = epipolar.motion_from_essential_choose_solution(E, K[None], K[None], a, b)[:3]
    return R[0], t[0, :, 0], inliers, points[0]


def _align(pred: torch.Tensor, target: torch.Tensor, output: str) -> tuple[float, float]:
    """Least-squares (scale, shift) taking ``pred`` to ``target`` depth, in the prior's own space."""
    y = 1.0 / target if output == "disparity" else target
    a = torch.stack([pred, torch.ones_like(pred)], -1).double()
    if len(pred) < 2 or float(pred.std()) < 1e-9:
        return float((y / pred).median()), 0.0
    sol = torch.linalg.lstsq(a, y.double()[:, None]).solution[:, 0]
    return float(sol[0]), float(sol[1])


def _to_depth(pred: torch.Tensor, scale: float, shift: float, output: str) -> torch.Tensor:
    y = scale * pred + shift
    depth = 1.0 / y if output == "disparity" else y
    return torch.where(torch.isfinite(depth) & (depth > 0), depth, torch.zeros_like(depth))


def _sample(map_: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    h, w = map_.shape
    u = xy[:, 0].long().clamp(0, w - 1)
    v = xy[:, 1].long().clamp(0, h - 1)
    return map_[v, u]


def initialise_from_images(
    images: torch.Tensor, Ks: torch.Tensor, config: PriorConfig, model=None, processor=None, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """World-to-camera poses (V, 4, 4) in view 0's frame and aligned metric-free depths (V, H, W).

    The depth scale is the prior's (view 0's median depth set by the first pair's baseline = 1 unit).
    """
    if config.model is None and model is None:
        raise ConfigError(
            "--isplat.init prior needs --isplat.prior.model: a depth-estimation model (hub id or local folder, "
            "e.g. depth-anything/Depth-Anything-V2-Small-hf)"
        )
    if model is None:
        model, processor = load_depth_model(str(config.model))
    v = len(images)
    pred = predict(model, images, config, processor)  # (V, H, W)
    gray = images.permute(0, 3, 1, 2).mean(1, keepdim=True).float()  # (V, 1, H, W)
    cache: dict = {}
    viewmats = torch.eye(4).repeat(v, 1, 1)
    scales = [(1.0, 0.0)] * v
    info: dict[str, float] = {"prior_views_posed": 1.0}
    reference_depth: torch.Tensor | None = None
    pair_points: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for j in range(1, v):
        x0, x1 = _matches(gray, 0, j, config, cache)
        found = relative_pose(x0, x1, Ks[0], config, seed)
        if found is None:
            log.warning("view %d: too few matches with view 0 (%d); it starts at view 0's pose", j, len(x0))
            continue
        R, t, inliers, points = found
        z = points[:, 2]
        keep = z > 1e-6
        if int(keep.sum()) < 4:
            continue
        xy0 = x0[inliers][keep]
        if reference_depth is None:  # the first pair fixes view 0's depth: its baseline is one unit
            scales[0] = _align(_sample(pred[0], xy0), z[keep], config.output)
            reference_depth = _to_depth(pred[0], *scales[0], config.output)
            baseline = 1.0
        else:  # later pairs: the baseline that makes their triangulation agree with view 0's depth
            prior = _sample(reference_depth, xy0)
            valid = prior > 0
            baseline = float((prior[valid] / z[keep][valid]).median()) if valid.any() else 1.0
        viewmats[j, :3, :3], viewmats[j, :3, 3] = R, t * baseline
        world = points[keep] * baseline  # (M, 3) in view 0's frame = the world
        pair_points[j] = (world, x1[inliers][keep])
        info["prior_views_posed"] += 1
    depths = torch.zeros_like(pred)
    if reference_depth is not None:
        depths[0] = reference_depth
    for j, (world, xy) in pair_points.items():
        cam = world @ viewmats[j, :3, :3].T + viewmats[j, :3, 3]
        ok = cam[:, 2] > 1e-6
        scales[j] = _align(_sample(pred[j], xy[ok]), cam[ok, 2], config.output)
        depths[j] = _to_depth(pred[j], *scales[j], config.output)
    for j in range(v):  # views without their own alignment take view 0's scale and shift
        if not bool((depths[j] > 0).any()):
            depths[j] = _to_depth(pred[j], *scales[0], config.output)
    info["prior_matches_first_pair"] = float(len(_matches(gray, 0, 1, config, cache)[0])) if v > 1 else 0.0
    if not all(math.isfinite(x) for s in scales for x in s):
        raise ConfigError("the depth prior's alignment did not converge (non-finite scale); check the images")
    return viewmats, depths, info


def describe(source: str | Path | None) -> str:
    return str(source) if source is not None else "none"


@dataclass
class DepthSourceConfig:
    """A tiny Depth Anything trained on procedural scenes: the bench's stand-in for a pretrained depth model
    (no weights are downloaded here; a user passes a real one with --splat.prior_model)."""

    scenes: int = 48
    """Procedural training scenes (seeds disjoint from the bench's test scenes)."""
    views: int = 4
    """Rendered views per scene."""
    size: int = 64
    """Image size."""
    steps: int = 300
    """Training steps (AdamW, cosine)."""
    batch_size: int = 16
    """Batch size."""
    lr: float = 2e-3
    """Peak learning rate."""
    hidden: int = 48
    """Backbone width (DINOv2 layers with patch 8)."""


def ssi_loss(pred: torch.Tensor, disparity: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """MiDaS's scale-and-shift-invariant loss: per image, least-squares align ``pred`` to the true disparity
    on the valid pixels, then the mean absolute error (Ranftl et al., arXiv 1907.01341)."""
    losses = []
    for p, d, m in zip(pred, disparity, valid, strict=True):
        x, y = p[m], d[m]
        a = torch.stack([x, torch.ones_like(x)], -1)
        sol = torch.linalg.lstsq(a.detach(), y[:, None]).solution[:, 0]
        losses.append((sol[0].detach() * x + sol[1].detach() - y).abs().mean())
    return torch.stack(losses).mean()


def train_depth_source(config: DepthSourceConfig, folder: Path, seed: int = 50_000) -> dict[str, float]:
    """Render procedural scenes, train a tiny Depth Anything on their disparity, ``save_pretrained`` it."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    from warmstart.optim import ScheduleConfig
    from warmstart_3d.data import orbit_cameras, render_scene, scene_gaussians
    from warmstart_3d.geometry import intrinsics
    from warmstart_3d.training import fit_tensors

    images, disparities = [], []
    K = intrinsics(config.size, config.size, 60.0)
    for s in range(config.scenes):
        g = torch.Generator().manual_seed(seed + s)
        gaussians, _ = scene_gaussians(3, 300, g)
        views = orbit_cameras(config.views, start_deg=float(torch.rand(1, generator=g)) * 360, arc_deg=300)
        rgb, depth = render_scene(gaussians, views, K, config.size, config.size)
        images.append(rgb)
        disparities.append(torch.where(depth > 0, 1.0 / depth.clamp_min(1e-6), torch.zeros_like(depth)))
    x = torch.cat(images).permute(0, 3, 1, 2)  # (M, 3, H, W)
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    y = torch.cat(disparities)
    h = config.hidden
    backbone = Dinov2Config(
        hidden_size=h,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=2 * h,
        patch_size=8,
        image_size=config.size,
        out_features=["stage2", "stage4"],
        out_indices=[2, 4],
        reshape_hidden_states=False,
    )
    cfg = DepthAnythingConfig(
        backbone_config=backbone,
        reassemble_hidden_size=h,
        fusion_hidden_size=32,
        neck_hidden_sizes=[32, 48],
        reassemble_factors=[2, 1],
        head_hidden_size=16,
        patch_size=8,
    )
    torch.manual_seed(0)
    model = DepthAnythingForDepthEstimation(cfg)
    task = type("DepthTask", (), {"model": model})()

    def loss(batch: list[torch.Tensor]) -> torch.Tensor:
        pred = model(pixel_values=batch[0]).predicted_depth  # (b, H, W)
        return ssi_loss(pred, batch[1], batch[1] > 0)

    losses = fit_tensors(
        task,
        (x, y),
        config.steps,
        config.batch_size,
        config.lr,
        0.01,
        0,
        loss=loss,
        schedule=ScheduleConfig("cosine", min_lr_ratio=0.05),
    )
    model.save_pretrained(folder)
    return {"loss_first": losses[0], "loss_last": losses[-1], "train_images": float(len(x))}


def depth_source(config: DepthSourceConfig) -> Path:
    """The tiny depth prior, trained once and cached by its config hash (``warmstart cache list``)."""
    import json
    import sys

    from warmstart.cache import cached, code_version
    from warmstart_3d import data

    def build(folder: Path) -> None:
        info = train_depth_source(config, folder / "model")
        (folder / "training.json").write_text(json.dumps(info))

    return cached(
        "3d.depth-prior",
        config,
        build,
        data={"generator": "data.scene_gaussians", "seed": 50_000},
        code=code_version(data, sys.modules[__name__]),
        description="tiny Depth Anything on procedural scenes",
    )
