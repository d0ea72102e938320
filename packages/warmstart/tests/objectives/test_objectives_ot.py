"""Sinkhorn: marginals hold, cost → exact OT as ε → 0 (brute force and 1-D closed forms), envelope gradient."""

from __future__ import annotations

import itertools

import torch

from warmstart.objectives import append_position, pairwise_cost, sinkhorn, sinkhorn_loss, uniform_weights


def _brute_force_ot(cost: torch.Tensor) -> float:
    """Exact OT between uniform equal-size sets: the best permutation (Birkhoff)."""
    n = cost.shape[0]
    return min(sum(float(cost[i, p[i]]) for i in range(n)) / n for p in itertools.permutations(range(n)))


def test_sinkhorn_approaches_brute_force_as_epsilon_shrinks() -> None:
    g = torch.Generator().manual_seed(0)
    x, y = (
        torch.randn(6, 2, generator=g, dtype=torch.float64),
        torch.randn(6, 2, generator=g, dtype=torch.float64),
    )
    cost = pairwise_cost(x, y)
    exact = _brute_force_ot(cost)
    gaps = []
    for eps in (0.5, 0.1, 0.01, 0.001):
        res = sinkhorn(cost, epsilon=eps, max_iter=300, scaling=0.7)
        gaps.append(float(res.transport_cost) - exact)
    assert all(gap >= -1e-6 for gap in gaps)  # no plan beats the exact optimum
    assert gaps == sorted(gaps, reverse=True)  # the gap shrinks with ε
    assert gaps[-1] < 1e-4 * max(1.0, exact)


def test_sinkhorn_1d_quantile_closed_form_unequal_sizes() -> None:
    # W_2² / 2 between empirical 1-D measures = ½ ∫₀¹ (F⁻¹(t) − G⁻¹(t))² dt (piecewise constant)
    x = torch.tensor([0.0, 0.3, 1.0, 2.5], dtype=torch.float64)
    y = torch.tensor([-1.0, 0.1, 0.2, 0.9, 1.4, 3.0], dtype=torch.float64)
    breaks = sorted({k / 4 for k in range(5)} | {k / 6 for k in range(7)})
    exact = 0.0
    for lo, hi in itertools.pairwise(breaks):
        mid = (lo + hi) / 2
        exact += (
            0.5
            * (float(x.sort().values[int(mid * 4)]) - float(y.sort().values[int(mid * 6)])) ** 2
            * (hi - lo)
        )
    res = sinkhorn(pairwise_cost(x[:, None], y[:, None]), epsilon=1e-3, max_iter=3000, scaling=0.7, tol=1e-8)
    assert torch.allclose(res.plan.sum(2), torch.full((1, 4), 0.25, dtype=torch.float64), atol=1e-7)
    assert abs(float(res.transport_cost) - exact) < 1e-4


def test_marginals_batched_with_padding() -> None:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(3, 7, 4, generator=g), torch.randn(3, 5, 4, generator=g)
    xm = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5])
    ym = torch.tensor([[1] * 5, [1] * 5, [1] * 3 + [0] * 2])
    a, b = uniform_weights(xm), uniform_weights(ym)
    res = sinkhorn(pairwise_cost(x, y), a, b, epsilon=0.05, max_iter=500)
    assert torch.allclose(res.plan.sum(2), a, atol=1e-4)
    assert torch.allclose(res.plan.sum(1), b, atol=1e-5)
    assert (res.plan[2, 2:] == 0).all() and (res.plan[2, :, 3:] == 0).all()
    # each batch element equals solving it alone on its real points
    alone = sinkhorn(pairwise_cost(x[2:3, :2], y[2:3, :3]), epsilon=0.05, max_iter=500)
    assert torch.allclose(alone.transport_cost, res.transport_cost[2:3], atol=1e-5)


def test_dual_gradient_is_the_plan() -> None:
    # envelope theorem: ∂OT_ε / ∂C_ij = P_ij at convergence — checks differentiability end to end
    g = torch.Generator().manual_seed(2)
    cost = torch.rand(2, 4, 5, generator=g, dtype=torch.float64).requires_grad_(True)
    res = sinkhorn(cost, epsilon=0.1, max_iter=400)
    res.dual.sum().backward()
    assert torch.allclose(cost.grad, res.plan.detach(), atol=1e-6)


def test_sinkhorn_loss_debiased_is_zero_on_identical_clouds_and_differentiable() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 6, 3, generator=g)
    assert float(sinkhorn_loss(x, x.clone()).abs().max()) < 1e-4
    y = (x + 1.0).requires_grad_(True)
    loss = sinkhorn_loss(x, y).sum()
    assert float(loss.detach()) > 0.1
    loss.backward()
    # moving y towards x lowers the loss: the gradient points along +1 shift on average
    assert float(y.grad.sum()) > 0


def test_append_position() -> None:
    feats = torch.zeros(2, 4, 3)
    out = append_position(feats, torch.tensor([4, 3]), weight=2.0, pad_value=99.0)
    assert out.shape == (2, 4, 4)
    assert torch.allclose(out[0, :, -1], torch.tensor([0.0, 2 / 3, 4 / 3, 2.0]))
    assert torch.allclose(out[1, :, -1], torch.tensor([0.0, 1.0, 2.0, 99.0]))


def test_geomloss_backend_matches_the_reference() -> None:
    """geomloss's SamplesLoss behind sinkhorn_loss: ours converged within 2.5 %, padding by zero weight,
    gradients to the points."""
    import pytest

    pytest.importorskip("geomloss")
    g = torch.Generator().manual_seed(3)
    x = (0.3 * torch.randn(3, 50, 16, generator=g)).requires_grad_(True)
    y = 0.3 * torch.randn(3, 20, 16, generator=g) + 0.2
    ours = sinkhorn_loss(x, y, epsilon=0.05**2, max_iter=200, scaling=0.5)
    theirs = sinkhorn_loss(x, y, epsilon=0.05**2, scaling=0.5, backend="geomloss")
    assert theirs.shape == (3,) and torch.allclose(theirs, ours, rtol=0.025)  # geomloss: one step per ε
    mask = torch.ones(3, 50)
    mask[1, 30:] = 0
    padded = sinkhorn_loss(x, y, x_weights=uniform_weights(mask), epsilon=0.05**2, backend="geomloss")
    alone = sinkhorn_loss(x[1:2, :30], y[1:2], epsilon=0.05**2, backend="geomloss")
    assert torch.allclose(padded[1], alone[0], rtol=1e-3)
    theirs.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    auto = sinkhorn_loss(x.detach(), y, epsilon=0.05**2, backend="auto")
    assert torch.allclose(auto, theirs.detach())
