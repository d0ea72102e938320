import math

import torch

from warmstart_3d.data import orbit_cameras
from warmstart_3d.geometry import (
    absolute_trajectory_error,
    axis_angle_to_rotmat,
    camera_centres,
    perturb_poses,
    quat_to_rotmat,
    rotmat_to_quat,
    umeyama,
)


def test_quaternion_round_trip():
    q = torch.nn.functional.normalize(torch.randn(50, 4, generator=torch.Generator().manual_seed(0)), dim=-1)
    q = torch.where(q[:, :1] < 0, -q, q)
    assert torch.allclose(rotmat_to_quat(quat_to_rotmat(q)), q, atol=1e-5)


def test_umeyama_recovers_a_similarity_and_ate_is_invariant_to_it():
    g = torch.Generator().manual_seed(0)
    src = torch.randn(10, 3, generator=g)
    rot = axis_angle_to_rotmat(torch.tensor([0.3, -0.2, 0.5]))
    dst = 2.5 * src @ rot.T + torch.tensor([1.0, 2.0, 3.0])
    s, r, t = umeyama(src, dst)
    assert math.isclose(s, 2.5, rel_tol=1e-5) and torch.allclose(r, rot, atol=1e-5)
    views = orbit_cameras(5)
    # the same trajectory expressed in another similarity frame has zero ATE
    centres = camera_centres(views)
    assert absolute_trajectory_error(views, views) < 1e-5
    noisy = perturb_poses(views, 0.0, 0.2, g)
    assert absolute_trajectory_error(noisy, views) > 0.01
    assert centres.shape == (5, 3)
