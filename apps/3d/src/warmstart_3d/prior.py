"""InstantSplat's stage 1 from images alone: a pretrained depth prior, poses from feature matches, aligned depth.

Seed paper: "InstantSplat: Unbounded Sparse-view Pose-free Gaussian Splatting in 40 Seconds" (arXiv
2403.20309), whose stage 1 is a pretrained dense-stereo model (DUSt3R/MASt3R) giving per-view point maps
and poses. Here the geometry prior is a monocular depth model a user can get, any transformers
``AutoModelForDepthEstimation`` (Depth Anything, arXiv 2401.10891; DPT, arXiv 2103.13413) from a hub id or a
local folder, and the poses come from classical correspondences and that depth: kornia's SIFT features (on
views upsampled to a few hundred pixels, low-contrast keypoints dropped) matched mutually with a ratio test;
view 0's prediction is fixed up to its unknown disparity shift by a 1-D search (the shift under which RANSAC
PnP of its back-projected matches into view 1 is most consistent with view 1's own aligned prediction); every
later view is posed by RANSAC PnP (6-point DLT, refined on the reprojection error) of its matches with all
earlier posed views, back-projected through their aligned depths (a co-visibility chain), and its prediction
is then scale/shift-aligned to those points (least squares in the prior's space: disparity for Depth
Anything / MiDaS). Where PnP fails, the essential matrix against the previous view (RANSAC fundamental matrix
with the assumed intrinsics) gives the pose, its baseline scaled by that view's depth. The aligned depths are
back-projected as the Gaussians' initialisation; the joint optimisation of Gaussians and poses is
:mod:`warmstart_3d.instantsplat`. Left out: focal estimation (a field of view is assumed), bundle
adjustment, DUSt3R's confidence maps (:mod:`warmstart_3d.stereo` runs DUSt3R/MASt3R where installed).
"""

from __future__ import annotations

import logging
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
    ratio: float = 0.9
    """Mutual-nearest-neighbour ratio threshold of the matcher."""
    inlier_px: float = 1.0
    """RANSAC inlier threshold of the fundamental matrix (pixels)."""
    min_matches: int = 12
    """Fewer inlier matches than this: the view keeps the previous view's pose (reported)."""
    min_contrast: float = 0.02
    """Keypoints whose neighbourhood's grey-level std is under this are dropped (flat backdrop)."""
    detect_min_side: int = 384
    """Features are detected on images upsampled (bicubic) to at least this shorter side: SIFT needs some
    pixels per structure (photos of 512 px and more are used as they are)."""
    pnp_px: float = 2.0
    """RANSAC inlier threshold of PnP (pixels of the input images)."""
    pnp_hypotheses: int = 2000
    """RANSAC hypotheses (6-point DLT samples) per PnP."""
    shift_candidates: int = 16
    """Candidates of view 0's unknown disparity shift searched by PnP consistency with view 1."""
    max_depth_ratio: float = 4.0
    """Aligned depth beyond this multiple of the median is unknown (0); 0 keeps all."""


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


def _local_std(gray: torch.Tensor, radius: int = 4) -> torch.Tensor:
    """(H, W) standard deviation of ``gray`` in a (2r+1)² window."""
    x = gray[None, None]
    mean = F.avg_pool2d(x, 2 * radius + 1, 1, radius, count_include_pad=False)
    sq = F.avg_pool2d(x * x, 2 * radius + 1, 1, radius, count_include_pad=False)
    return (sq - mean * mean).clamp_min(0).sqrt()[0, 0]


def _matches(
    gray: torch.Tensor, i: int, j: int, config: PriorConfig, cache: dict
) -> tuple[torch.Tensor, ...]:
    import kornia.feature as KF

    for k in (i, j):
        if k not in cache:
            sift = KF.SIFTFeature(num_features=config.features, upright=False)
            with torch.no_grad():
                lafs, _, descs = sift(gray[k : k + 1])
            xy, desc = KF.get_laf_center(lafs)[0], descs[0]  # (N, 2), (N, 128)
            # kornia's SIFT has no contrast threshold: flat regions (a plain backdrop) give noise keypoints
            # that "match" at the same pixel in every view; keep those with local contrast
            keep = _sample(_local_std(gray[k, 0]), xy) > config.min_contrast
            cache[k] = (xy[keep], desc[keep])
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


def _pnp_dlt(world: torch.Tensor, pix: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Batched DLT PnP: world (B, N, 3), pixels (B, N, 2) → world-to-camera (B, 4, 4) (rotation orthonormalised).

    Hand-written rather than kornia's ``solve_pnp_dlt``, which raises on a (near-)planar sample; a RANSAC loop
    draws many of those and must score them, not crash. Points are centred and scaled first (Hartley).
    """
    b, n, _ = world.shape
    mu = world.mean(1, keepdim=True)
    spread = (world - mu).norm(dim=-1).mean(1, keepdim=True).clamp_min(1e-9)[..., None]
    xw = (world - mu) / spread
    rays = torch.cat([pix, torch.ones_like(pix[..., :1])], -1) @ torch.linalg.inv(K).T  # (B, N, 3)
    u, v = rays[..., 0:1], rays[..., 1:2]
    xh = torch.cat([xw, torch.ones_like(xw[..., :1])], -1)  # (B, N, 4)
    zero = torch.zeros_like(xh)
    rows = torch.cat(
        [torch.cat([xh, zero, -u * xh], -1), torch.cat([zero, xh, -v * xh], -1)], 1
    )  # (B, 2N, 12)
    p = torch.linalg.svd(rows.double()).Vh[:, -1].reshape(b, 3, 4).float()
    m = p[:, :, :3]
    us, sv, vh = torch.linalg.svd(m)
    rot = us @ vh
    sign = torch.linalg.det(rot).sign()[:, None, None]
    rot, scale = rot * sign, sv.mean(-1)[:, None] * sign[:, 0]
    t = p[:, :, 3] / scale  # camera-frame translation of the normalised points
    out = torch.eye(4).repeat(b, 1, 1)
    out[:, :3, :3] = rot
    # undo the normalisation: X_cam = R (X - mu) / spread + t  →  scaled back by the spread
    out[:, :3, 3] = spread[:, 0] * t - (rot @ mu.transpose(1, 2))[..., 0]
    return out


def _reprojection(
    viewmat: torch.Tensor, world: torch.Tensor, pix: torch.Tensor, K: torch.Tensor
) -> torch.Tensor:
    """(N,) pixel errors of ``world`` (N, 3) in camera ``viewmat`` (…, 4, 4); inf behind the camera."""
    cam = world @ viewmat[..., :3, :3].transpose(-1, -2) + viewmat[..., None, :3, 3]
    proj = cam @ K.T
    err = (proj[..., :2] / proj[..., 2:].clamp_min(1e-9) - pix).norm(dim=-1)
    return torch.where(cam[..., 2] > 1e-6, err, torch.full_like(err, float("inf")))


def pnp_ransac(
    world: torch.Tensor, pix: torch.Tensor, K: torch.Tensor, config: PriorConfig, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """World-to-camera pose (4, 4) and inlier mask of 3D–2D matches: RANSAC over 6-point DLT samples, the
    best hypothesis refitted on its inliers and refined by Gauss–Newton (LBFGS) on the reprojection error."""
    from warmstart_3d.geometry import axis_angle_to_rotmat

    world, pix = world.detach().float(), pix.detach().float()
    n = len(world)
    if n < max(6, config.min_matches):
        return None
    g = torch.Generator().manual_seed(seed)
    samples = torch.rand(config.pnp_hypotheses, n, generator=g).argsort(-1)[:, :6]
    hyps = _pnp_dlt(world[samples], pix[samples], K)  # (H, 4, 4)
    errors = _reprojection(hyps, world[None], pix[None], K)  # (H, N)
    inliers = errors < config.pnp_px
    score = inliers.sum(-1).float() - 1e-3 * torch.where(inliers, errors, 0).sum(-1)
    best = inliers[int(score.argmax())]
    if int(best.sum()) < config.min_matches:
        return None
    pose = _pnp_dlt(world[best][None], pix[best][None], K)[0]
    rvec = torch.zeros(3, requires_grad=True)
    tvec = torch.zeros(3, requires_grad=True)
    opt = torch.optim.LBFGS([rvec, tvec], max_iter=30, line_search_fn="strong_wolfe")
    w, x = world[best], pix[best]

    def current() -> torch.Tensor:
        delta = torch.eye(4)
        delta = torch.cat([torch.cat([axis_angle_to_rotmat(rvec + 1e-9), tvec[:, None]], 1), delta[3:]], 0)
        return delta @ pose

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.huber_loss(_reprojection(current(), w, x, K).clamp_max(1e3), torch.zeros(len(w)), delta=1.0)
        loss.backward()
        return loss

    before = float(_reprojection(pose, w, x, K).median())
    opt.step(closure)
    with torch.no_grad():
        refined = current()
    if float(_reprojection(refined, w, x, K).median()) <= before:
        pose = refined
    mask = _reprojection(pose, world, pix, K) < config.pnp_px
    return pose, mask


def _depth_from_prior(fraction: float, reference: float, output: str) -> tuple[float, float]:
    """(scale, shift) that give depth 1 at the prediction ``reference`` with ``fraction`` of it from the shift."""
    return (1 - fraction) / reference, fraction  # depth or disparity 1 at the reference: scale + shift


def _backproject_pixels(
    depth: torch.Tensor, xy: torch.Tensor, K: torch.Tensor, viewmat: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """World points of pixels ``xy`` (N, 2) through ``depth`` (H, W) and the camera; and which had depth."""
    z = _sample(depth, xy)
    rays = torch.cat([xy, torch.ones_like(xy[:, :1])], -1) @ torch.linalg.inv(K).T
    cam = rays * z[:, None]
    c2w = torch.linalg.inv(viewmat)
    return cam @ c2w[:3, :3].T + c2w[:3, 3], z > 0


def _essential_step(
    pair: tuple[torch.Tensor, torch.Tensor],
    previous_depth: torch.Tensor,
    Ks: torch.Tensor,
    previous: torch.Tensor,
    j: int,
    config: PriorConfig,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """View j's pose from the essential matrix against view j − 1, its unit baseline scaled so that the
    triangulated points agree (median) with view j − 1's aligned depth; (pose, mask, world, pixels) or None."""
    xa, xb = pair
    found = relative_pose(xa, xb, Ks[j], config, seed + j)
    if found is None:
        return None
    R, t, inliers, points = found
    keep = points[:, 2] > 1e-6
    prior = _sample(previous_depth, xa[inliers][keep])
    valid = prior > 0
    if int(valid.sum()) < 4:
        return None
    baseline = float((prior[valid] / points[keep][valid, 2]).median())
    rel = torch.eye(4)
    rel[:3, :3], rel[:3, 3] = R, t * baseline
    pose = rel @ previous
    cam = points[keep] * baseline  # in view j − 1's camera frame
    c2w = torch.linalg.inv(previous)
    world = cam @ c2w[:3, :3].T + c2w[:3, 3]
    return pose, torch.ones(len(world), dtype=torch.bool), world, xb[inliers][keep]


def initialise_from_images(
    images: torch.Tensor, Ks: torch.Tensor, config: PriorConfig, model=None, processor=None, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """World-to-camera poses (V, 4, 4) in view 0's frame and aligned depths (V, H, W), view 0's median = 1.

    View 0's depth is the prior's up to its unknown shift: the shift is chosen (a 1-D search) as the one under
    which PnP of its matches into view 1 has the most inliers whose depth in view 1 agrees (within 5 %) with
    view 1's own scale/shift-aligned prediction (a wrong shift bends the geometry; a flat one fits any pose). Each later view j is posed by RANSAC PnP of
    the matches it shares with every earlier posed view (co-visibility: their pixels back-projected through
    their aligned depths), and its own prediction is then scale/shift-aligned to those points' depths in j.
    A view PnP cannot pose falls back to the essential matrix against the previous view (SIFT + RANSAC
    fundamental matrix with the assumed intrinsics), its baseline scaled by the previous view's aligned depth;
    a view neither can pose keeps the previous view's pose and view 0's alignment (reported).
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
    up = max(1.0, config.detect_min_side / min(images.shape[1:3]))
    if up > 1:  # SIFT finds few features at a few dozen pixels per object: detect on an upsampled copy
        gray = F.interpolate(gray, scale_factor=up, mode="bicubic", align_corners=False)
    raw: dict = {}
    cache: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def matches(i: int, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        if (i, j) not in cache:
            a, b = _matches(gray, i, j, config, raw)
            cache[i, j] = ((a + 0.5) / up - 0.5, (b + 0.5) / up - 0.5)
        return cache[i, j]

    viewmats = torch.eye(4).repeat(v, 1, 1)
    depths = torch.zeros_like(pred)
    posed = [False] * v
    posed[0] = True
    info: dict[str, float] = {"prior_views_posed": 1.0}
    reference = float(pred[0].median())
    # view 0: the shift that makes its back-projected matches most consistent with view 1 (one PnP each)
    best: tuple[float, float, float] = (-1.0, 0.0, 0.0)  # (score, scale, shift)
    if v > 1:
        x0, x1 = matches(0, 1)
        if len(x0):  # the gauge: depth 1 at the matched pixels' median prediction (not the backdrop's)
            reference = float(_sample(pred[0], x0).median())
        for fraction in torch.linspace(-0.6, 0.9, config.shift_candidates).tolist():
            scale, shift = _depth_from_prior(fraction, reference, config.output)
            d0 = _to_depth(pred[0], scale, shift, config.output)
            world, ok = _backproject_pixels(d0, x0, Ks[0], viewmats[0])
            found = pnp_ransac(world[ok], x1[ok], Ks[1], config, seed)
            score = 0.0
            if found is not None:  # inliers whose depth in view 1 view 1's own (aligned) prior agrees with
                pose, inl = found
                z1 = (world[ok][inl] @ pose[:3, :3].T + pose[:3, 3])[:, 2]
                p1 = _sample(pred[1], x1[ok][inl])
                d1 = _to_depth(p1, *_align(p1, z1, config.output), config.output)
                score = float(((d1 - z1).abs() < 0.05 * z1).sum())
            if score > best[0]:
                best = (score, scale, shift)
    scale0 = best[1:] if best[0] > 0 else _depth_from_prior(0.0, reference, config.output)
    if best[0] <= 0 and v > 1:  # no consistent shift: align view 0 to the first pair's two-view triangulation
        x0, x1 = matches(0, 1)
        pair = relative_pose(x0, x1, Ks[0], config, seed)
        if pair is not None and int((pair[3][:, 2] > 1e-6).sum()) >= 4:
            keep = pair[3][:, 2] > 1e-6
            scale0 = _align(_sample(pred[0], x0[pair[2]][keep]), pair[3][keep, 2], config.output)
    depths[0] = _to_depth(pred[0], *scale0, config.output)
    info["prior_first_pair_inliers"] = max(best[0], 0.0)
    info["prior_views_posed_by_essential"] = 0.0
    for j in range(1, v):
        world_all, pix_all = [], []
        for i in range(j):
            if not posed[i]:
                continue
            xi, xj = matches(i, j)
            world, ok = _backproject_pixels(depths[i], xi, Ks[i], viewmats[i])
            world_all.append(world[ok])
            pix_all.append(xj[ok])
        world, pix = torch.cat(world_all), torch.cat(pix_all)
        found = pnp_ransac(world, pix, Ks[j], config, seed + j)
        if found is None and posed[j - 1]:  # the two-view fallback: essential matrix against view j - 1,
            found = _essential_step(matches(j - 1, j), depths[j - 1], Ks, viewmats[j - 1], j, config, seed)
            if found is not None:
                world, pix = found[2], found[3]
                found = found[:2]
                info["prior_views_posed_by_essential"] += 1
        if found is None:
            log.warning(
                "view %d: too few PnP inliers (%d matches); it keeps view %d's pose", j, len(world), j - 1
            )
            viewmats[j] = viewmats[j - 1]
            depths[j] = _to_depth(pred[j], *scale0, config.output)
            continue
        viewmats[j], inliers = found
        cam = world[inliers] @ viewmats[j, :3, :3].T + viewmats[j, :3, 3]
        depths[j] = _to_depth(
            pred[j], *_align(_sample(pred[j], pix[inliers]), cam[:, 2], config.output), config.output
        )
        posed[j] = True
        info["prior_views_posed"] += 1
    if config.max_depth_ratio > 0:  # far predictions (sky, backdrop) carry no geometry: unknown beyond
        far = config.max_depth_ratio * float(depths[depths > 0].median()) if bool((depths > 0).any()) else 0.0
        depths = torch.where(depths <= far, depths, torch.zeros_like(depths))
    info["prior_matches_first_pair"] = float(len(matches(0, 1)[0])) if v > 1 else 0.0
    if not bool(torch.isfinite(viewmats).all()):
        raise ConfigError("the prior's pose estimation did not converge (non-finite pose); check the images")
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
    texture_cells: float = 6.0
    """The bench scenes' cell texture (:mod:`warmstart_3d.splat_scenes`); 0: the plain procedural colours."""


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
    from warmstart_3d.data import orbit_cameras, render_scene
    from warmstart_3d.geometry import intrinsics
    from warmstart_3d.splat_scenes import textured_gaussians
    from warmstart_3d.training import fit_tensors

    images, disparities = [], []
    K = intrinsics(config.size, config.size, 60.0)
    for s in range(config.scenes):
        g = torch.Generator().manual_seed(seed + s)
        gaussians = textured_gaussians(seed + s, 3, 300, config.texture_cells)
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
    from warmstart_3d import scenes, shapes, splat_scenes

    def build(folder: Path) -> None:
        info = train_depth_source(config, folder / "model")
        (folder / "training.json").write_text(json.dumps(info))

    return cached(
        "3d.depth-prior",
        config,
        build,
        data={"generator": "data.scene_gaussians", "seed": 50_000},
        code=code_version(scenes, shapes, splat_scenes, sys.modules[__name__]),
        description="tiny Depth Anything on procedural scenes",
    )
