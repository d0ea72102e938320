"""Camera geometry: look-at cameras, quaternions, SE(3) perturbations, Umeyama alignment and ATE.

Seed paper: "InstantSplat: Unbounded Sparse-view Pose-free Gaussian Splatting in 40 Seconds" (arXiv
2403.20309) evaluates poses by absolute trajectory error after a similarity alignment; the alignment is
Umeyama's ("Least-squares estimation of transformation parameters between two point patterns", 1991).
Conventions are OpenCV's / COLMAP's / gsplat's: world-to-camera ``viewmats``, x right, y down, z forward.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def look_at(eye: torch.Tensor, target: torch.Tensor, up: torch.Tensor | None = None) -> torch.Tensor:
    """World-to-camera (4, 4) for a camera at ``eye`` looking at ``target`` (OpenCV axes)."""
    up = up if up is not None else eye.new_tensor([0.0, 0.0, 1.0])
    forward = F.normalize(target - eye, dim=0)
    right = F.normalize(torch.linalg.cross(forward, up), dim=0)
    down = torch.linalg.cross(forward, right)
    rot = torch.stack([right, down, forward])  # (3, 3) rows: camera axes in the world
    view = torch.eye(4, dtype=eye.dtype)
    view[:3, :3] = rot
    view[:3, 3] = -rot @ eye
    return view


def intrinsics(width: int, height: int, fov_deg: float = 60.0) -> torch.Tensor:
    """(3, 3) pinhole K with the given horizontal field of view and the principal point at the centre."""
    focal = 0.5 * width / math.tan(math.radians(fov_deg) / 2)
    return torch.tensor([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1.0]])


def quat_to_rotmat(q: torch.Tensor) -> torch.Tensor:
    """(..., 4) wxyz (normalised here) → (..., 3, 3)."""
    w, x, y, z = F.normalize(q, dim=-1).unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - w * z),
            2 * (x * z + w * y),
            2 * (x * y + w * z),
            1 - 2 * (x * x + z * z),
            2 * (y * z - w * x),
            2 * (x * z - w * y),
            2 * (y * z + w * x),
            1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(q.shape[:-1] + (3, 3))


def rotmat_to_quat(rot: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) → (..., 4) wxyz with w ≥ 0 (robust branch per element)."""
    m = rot
    trace = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    candidates = torch.stack(
        [
            torch.stack(
                [
                    1 + trace,
                    m[..., 2, 1] - m[..., 1, 2],
                    m[..., 0, 2] - m[..., 2, 0],
                    m[..., 1, 0] - m[..., 0, 1],
                ],
                -1,
            ),
            torch.stack(
                [
                    m[..., 2, 1] - m[..., 1, 2],
                    1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
                    m[..., 0, 1] + m[..., 1, 0],
                    m[..., 0, 2] + m[..., 2, 0],
                ],
                -1,
            ),
            torch.stack(
                [
                    m[..., 0, 2] - m[..., 2, 0],
                    m[..., 0, 1] + m[..., 1, 0],
                    1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2],
                    m[..., 1, 2] + m[..., 2, 1],
                ],
                -1,
            ),
            torch.stack(
                [
                    m[..., 1, 0] - m[..., 0, 1],
                    m[..., 0, 2] + m[..., 2, 0],
                    m[..., 1, 2] + m[..., 2, 1],
                    1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2],
                ],
                -1,
            ),
        ],
        dim=-2,
    )  # (..., 4, 4)
    diag = torch.stack(
        [
            trace,
            m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
            m[..., 1, 1] - m[..., 0, 0] - m[..., 2, 2],
            m[..., 2, 2] - m[..., 0, 0] - m[..., 1, 1],
        ],
        -1,
    )
    best = diag.argmax(dim=-1)
    q = torch.gather(candidates, -2, best[..., None, None].expand(best.shape + (1, 4))).squeeze(-2)
    q = F.normalize(q, dim=-1)
    return torch.where(q[..., :1] < 0, -q, q)


def axis_angle_to_rotmat(v: torch.Tensor) -> torch.Tensor:
    """Rodrigues: (..., 3) → (..., 3, 3)."""
    angle = v.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    half = 0.5 * angle
    q = torch.cat([torch.cos(half), torch.sin(half) * v / angle], dim=-1)
    return quat_to_rotmat(q)


def perturb_poses(
    viewmats: torch.Tensor, rot_deg: float, trans: float, generator: torch.Generator
) -> torch.Tensor:
    """Apply a random rotation (about ``rot_deg`` degrees) and camera-centre shift (about ``trans``) per view."""
    n = viewmats.shape[0]
    axis = F.normalize(torch.randn(n, 3, generator=generator), dim=-1)
    angle = torch.randn(n, 1, generator=generator).abs() * math.radians(rot_deg)
    delta_r = axis_angle_to_rotmat(axis * angle)  # (V, 3, 3)
    c2w = torch.linalg.inv(viewmats)
    c2w = c2w.clone()
    c2w[:, :3, :3] = delta_r @ c2w[:, :3, :3]
    c2w[:, :3, 3] = c2w[:, :3, 3] + torch.randn(n, 3, generator=generator) * trans
    return torch.linalg.inv(c2w)


def camera_centres(viewmats: torch.Tensor) -> torch.Tensor:
    """(V, 4, 4) world-to-camera → (V, 3) centres in the world."""
    rot = viewmats[:, :3, :3]
    return -torch.einsum("vji,vj->vi", rot, viewmats[:, :3, 3])


def umeyama(
    src: torch.Tensor, dst: torch.Tensor, with_scale: bool = True
) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Similarity (s, R, t) minimising Σ‖dst − (s R src + t)‖² for (N, 3) point sets (N ≥ 3 recommended)."""
    src, dst = src.double(), dst.double()
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)
    u, sig, vt = torch.linalg.svd(cov)
    d = torch.ones(3, dtype=src.dtype, device=src.device)
    if torch.det(u) * torch.det(vt) < 0:
        d[-1] = -1
    rot = u @ torch.diag(d) @ vt
    var = xs.pow(2).sum() / len(src)
    scale = float((sig * d).sum() / var) if with_scale and var > 0 else 1.0
    t = mu_d - scale * rot @ mu_s
    return scale, rot.float(), t.float()


def absolute_trajectory_error(estimated: torch.Tensor, truth: torch.Tensor) -> float:
    """RMSE of camera centres after Umeyama similarity alignment (the ATE of InstantSplat's tables)."""
    est, gt = camera_centres(estimated), camera_centres(truth)
    if len(est) < 3:
        scale, rot, t = 1.0, torch.eye(3, device=gt.device), gt.mean(0) - est.mean(0)
    else:
        scale, rot, t = umeyama(est, gt)
    aligned = scale * est @ rot.T + t
    return float((aligned - gt).pow(2).sum(-1).mean().sqrt())


def rotation_error_deg(estimated: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean geodesic angle between the estimated and true camera rotations, in degrees (no alignment)."""
    rel = estimated[:, :3, :3] @ truth[:, :3, :3].transpose(1, 2)
    cos = ((rel.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1)
    return float(torch.rad2deg(torch.arccos(cos)).mean())
