"""Gaussian-MAE augmentations respect the attributes: the augmented splat is the same object, transformed."""

import torch

from warmstart_3d.geometry import quat_to_rotmat
from warmstart_3d.gmae import augment


def test_rotation_turns_quaternions_and_scale_scales_the_gaussians(gaussian_features):
    f = gaussian_features(3, 20)
    out = augment(f, torch.Generator().manual_seed(1), shift=0.0)
    assert torch.equal(out[..., 3], f[..., 3]) and torch.equal(out[..., 11:], f[..., 11:])  # opacity, colour

    def covariance(x):  # Σ = R diag(s²) Rᵀ per Gaussian
        rot = quat_to_rotmat(x[..., 7:11])
        return rot @ torch.diag_embed(x[..., 4:7] ** 2) @ rot.transpose(-1, -2)

    for i in range(3):
        # recover the object's similarity from its centres, then check every covariance follows it
        a, b = f[i, :, :3], out[i, :, :3]
        s = (b.norm(dim=-1) / a.norm(dim=-1)).mean()
        rot = torch.linalg.lstsq(a, b / s).solution.T  # (3, 3), b = s R a
        assert torch.allclose(rot @ rot.T, torch.eye(3), atol=1e-4)
        expected = s**2 * rot @ covariance(f[i]) @ rot.T
        assert torch.allclose(covariance(out[i]), expected, atol=1e-4)
