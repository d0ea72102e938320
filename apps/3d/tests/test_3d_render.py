import math

import pytest
import torch

from warmstart_3d.geometry import intrinsics, look_at
from warmstart_3d.render import rasterize

SIZE = 16


def tiny_scene(dtype=torch.float64, n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g, dtype=dtype) - 0.5) * 0.8
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    scales = 0.1 + 0.1 * torch.rand(n, 3, generator=g, dtype=dtype)
    opac = 0.3 + 0.5 * torch.rand(n, generator=g, dtype=dtype)
    sh = torch.randn(n, 4, 3, generator=g, dtype=dtype) * 0.3  # degree 1
    view = look_at(torch.tensor([0.3, -3.0, 0.5], dtype=dtype), torch.zeros(3, dtype=dtype))[None]
    K = intrinsics(SIZE, SIZE, 50.0).to(dtype)[None]
    return [means, quats, scales, opac, sh, view], K


def scalar(out, weights):
    return (out.colors * weights[0]).sum() + (out.alphas * weights[1]).sum() + (out.depths * weights[2]).sum()


def test_gradients_match_finite_differences_for_every_input_and_the_camera():
    inputs, K = tiny_scene()
    g = torch.Generator().manual_seed(1)
    weights = [torch.rand(1, SIZE, SIZE, c, generator=g, dtype=torch.float64) for c in (3, 1, 1)]
    leaves = [t.clone().requires_grad_() for t in inputs]
    out = rasterize(*leaves[:5], leaves[5], K, SIZE, SIZE, backgrounds=torch.ones(1, 3, dtype=torch.float64))
    scalar(out, weights).backward()
    eps = 1e-6
    for i, leaf in enumerate(leaves):
        direction = torch.randn(leaf.shape, generator=g, dtype=torch.float64)
        if i == 5:  # perturb only the rigid part of the view matrix
            direction[:, 3] = 0
        plus = [t.clone() for t in inputs]
        minus = [t.clone() for t in inputs]
        plus[i] = plus[i] + eps * direction
        minus[i] = minus[i] - eps * direction
        f_plus = scalar(
            rasterize(*plus[:5], plus[5], K, SIZE, SIZE, backgrounds=torch.ones(1, 3, dtype=torch.float64)),
            weights,
        )
        f_minus = scalar(
            rasterize(*minus[:5], minus[5], K, SIZE, SIZE, backgrounds=torch.ones(1, 3, dtype=torch.float64)),
            weights,
        )
        numeric = float(f_plus - f_minus) / (2 * eps)
        analytic = float((leaf.grad * direction).sum())
        assert analytic == pytest.approx(numeric, rel=1e-4, abs=1e-6), f"input {i}"


def test_single_gaussian_centre_pixel_is_opacity_times_colour_over_background():
    dtype = torch.float64
    view = torch.eye(4, dtype=dtype)[None]
    K = torch.tensor([[20.0, 0, 8], [0, 20, 8], [0, 0, 1]], dtype=dtype)[None]
    means = torch.tensor([[0.0, 0.0, 2.0]], dtype=dtype)  # projects to (8, 8): a pixel corner
    colour = torch.tensor([[0.2, 0.6, 0.9]], dtype=dtype)
    out = rasterize(
        means,
        torch.tensor([[1.0, 0, 0, 0]], dtype=dtype),
        torch.full((1, 3), 0.2, dtype=dtype),
        torch.tensor([0.7], dtype=dtype),
        colour,
        view,
        K,
        16,
        16,
        backgrounds=torch.ones(1, 3, dtype=dtype),
    )
    # the 4 pixels around (8, 8) are symmetric; alpha there is 0.7·exp(-σ) with σ from the conic at (±0.5, ±0.5)
    px = out.colors[0, 7:9, 7:9]
    assert torch.allclose(px, px[0, 0].expand_as(px))
    alpha = out.alphas[0, 7, 7, 0]
    assert torch.allclose(px[0, 0], alpha * colour[0] + (1 - alpha)), (
        "alpha compositing over a white background"
    )
    assert 0.6 < alpha < 0.7
    assert torch.allclose(out.depths[0, 7, 7, 0], alpha * 2.0), "accumulated depth = alpha · z"


def test_front_gaussian_occludes_and_input_order_does_not_matter():
    dtype = torch.float64
    view = torch.eye(4, dtype=dtype)[None]
    K = torch.tensor([[20.0, 0, 8], [0, 20, 8], [0, 0, 1]], dtype=dtype)[None]
    means = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 3.0]], dtype=dtype)
    quats = torch.tensor([[1.0, 0, 0, 0]] * 2, dtype=dtype)
    scales = torch.full((2, 3), 0.3, dtype=dtype)
    opac = torch.tensor([0.99, 0.99], dtype=dtype)
    colours = torch.tensor([[1.0, 0, 0], [0, 0, 1.0]], dtype=dtype)
    a = rasterize(means, quats, scales, opac, colours, view, K, 16, 16)
    b = rasterize(means.flip(0), quats, scales, opac, colours.flip(0), view, K, 16, 16)
    assert torch.allclose(a.colors, b.colors)
    centre = a.colors[0, 7, 7]
    assert centre[0] > 0.95 and centre[2] < 0.05, "the nearer (red) Gaussian hides the farther (blue) one"


def test_chunked_compositing_equals_one_pass_and_sh_depends_on_view():
    inputs, K = tiny_scene(n=40)
    one = rasterize(*inputs, K, SIZE, SIZE, chunk=4096)
    many = rasterize(*inputs, K, SIZE, SIZE, chunk=3)
    assert torch.allclose(one.colors, many.colors) and torch.allclose(one.depths, many.depths)
    # degree-0 colour is 0.5 + C0·dc, independent of the camera
    dc_only = inputs[4][:, :1]
    other_view = look_at(
        torch.tensor([3.0, 0.0, 0.5], dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    )[None]
    from warmstart_3d.render import gaussian_colors

    views = torch.cat([inputs[5], other_view])
    c0 = gaussian_colors(inputs[0], dc_only, views, 0)
    assert torch.allclose(c0[0], c0[1]) and torch.allclose(
        c0[0], (0.5 + 0.28209479177387814 * dc_only[:, 0]).clamp_min(0)
    )
    c1 = gaussian_colors(inputs[0], inputs[4], views, 1)
    assert not torch.allclose(c1[0], c1[1])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (gsplat)")
def test_reference_matches_gsplat_on_cuda():
    from warmstart_3d.data import orbit_cameras, scene_gaussians

    g, _ = scene_gaussians(2, 300, torch.Generator().manual_seed(0))
    view = orbit_cameras(2).cuda()
    K = intrinsics(64, 64).expand(2, 3, 3).cuda()
    grads = {}
    images = {}
    for backend in ("torch", "gsplat"):
        leaves = [t.cuda().clone().requires_grad_() for t in (g.means, g.quats, g.scales, g.opacities, g.sh)]
        out = rasterize(
            *leaves, view, K, 64, 64, backend=backend, backgrounds=torch.ones(2, 3, device="cuda")
        )
        (out.colors.square().sum() + out.depths.sum()).backward()
        images[backend] = out.colors.detach()
        grads[backend] = [leaf.grad for leaf in leaves]
    assert (images["torch"] - images["gsplat"]).abs().max() < 2e-3
    for a, b in zip(grads["torch"], grads["gsplat"], strict=True):
        assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.99
    assert math.isfinite(float(images["torch"].sum()))
