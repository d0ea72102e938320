"""SGD-SaI: one buffer per parameter, g-SNR frozen after step 1, the exact update, state_dict round trip."""

from __future__ import annotations

import copy

import pytest
import torch

from warmstart.optim import OptimizerConfig, SGDSaI, build_optimizer


def make_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))


def backward(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(8, 6, generator=g)  # (B, D)
    y = torch.randn(8, 3, generator=g)  # (B, C)
    model.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()


def param_sized_buffers(opt: torch.optim.Optimizer, p: torch.Tensor) -> int:
    return sum(1 for v in opt.state[p].values() if torch.is_tensor(v) and v.shape == p.shape)


def test_one_buffer_per_parameter_half_of_adamw():
    model = make_model()
    sai = build_optimizer(OptimizerConfig(name="sgd-sai", lr=1e-2), model.parameters())
    assert isinstance(sai, SGDSaI)
    adamw = torch.optim.AdamW(copy.deepcopy(model).parameters())
    backward(model, 0)
    sai.step()
    twin = list(adamw.param_groups[0]["params"])
    for q, p in zip(twin, model.parameters(), strict=True):
        q.grad = p.grad.clone()
    adamw.step()
    for p, q in zip(model.parameters(), twin, strict=True):
        assert param_sized_buffers(sai, p) == 1
        assert param_sized_buffers(adamw, q) == 2
    sai_bytes = sum(v.numel() for s in sai.state.values() for v in s.values() if v.dim() > 0)
    adamw_bytes = sum(v.numel() for s in adamw.state.values() for v in s.values() if v.dim() > 0)
    assert sai_bytes * 2 == adamw_bytes


def test_gsnr_frozen_after_first_step_and_exact_update():
    model = make_model()
    lr, mu, wd, eps = 0.05, 0.9, 0.1, 1e-8
    opt = SGDSaI(model.parameters(), lr=lr, momentum=mu, weight_decay=wd, eps=eps)
    params = list(model.parameters())

    backward(model, 1)
    w0 = [p.detach().clone() for p in params]
    g0 = [p.grad.clone() for p in params]
    opt.step()
    gsnr = [g.norm() / (g.std() + eps) for g in g0]
    for p, s, w, g in zip(params, gsnr, w0, g0, strict=True):
        torch.testing.assert_close(opt.state[p]["gsnr"], s)
        torch.testing.assert_close(p.detach(), w * (1 - lr * wd) - lr * s * g)  # momentum starts at g

    backward(model, 2)  # a different batch: different grads, same g-SNR
    w1 = [p.detach().clone() for p in params]
    g1 = [p.grad.clone() for p in params]
    opt.step()
    for p, s, w, ga, gb in zip(params, gsnr, w1, g0, g1, strict=True):
        assert not torch.allclose(gb.norm() / (gb.std() + eps), s)  # a recomputation would differ
        torch.testing.assert_close(opt.state[p]["gsnr"], s)  # ... but it stayed frozen
        m = mu * ga + (1 - mu) * gb
        torch.testing.assert_close(p.detach(), w * (1 - lr * wd) - lr * s * m)


def test_blocks_get_different_scales_and_scalar_is_neutral():
    scalar = torch.nn.Parameter(torch.tensor(1.0))
    vec = torch.nn.Parameter(torch.zeros(4))
    opt = SGDSaI([scalar, vec], lr=0.1, momentum=0.0, weight_decay=0.0)
    scalar.grad = torch.tensor(3.0)
    vec.grad = torch.tensor([1.0, 1.1, 0.9, 1.0])  # high SNR: consistent signs
    opt.step()
    assert opt.state[scalar]["gsnr"].item() == 1.0
    assert scalar.item() == pytest.approx(1.0 - 0.1 * 3.0)
    assert opt.state[vec]["gsnr"].item() > 10
    assert "momentum_buffer" not in opt.state[vec]  # momentum 0 keeps no buffer


def test_state_dict_round_trip():
    model = make_model()
    opt = SGDSaI(model.parameters(), lr=0.05, weight_decay=0.01)
    backward(model, 3)
    opt.step()
    twin = copy.deepcopy(model)
    opt2 = SGDSaI(twin.parameters(), lr=1.0)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    for seed in (4, 5):
        backward(model, seed)
        backward(twin, seed)
        opt.step()
        opt2.step()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(opt.state[p]["gsnr"], opt2.state[q]["gsnr"])


def test_sgd_sai_trains():
    """A sanity check on a least-squares problem: the loss drops by an order of magnitude."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 10, generator=g)  # (N, D)
    w_true = torch.randn(10, 1, generator=g)
    y = x @ w_true
    lin = torch.nn.Linear(10, 1, bias=False)
    torch.nn.init.zeros_(lin.weight)
    opt = SGDSaI(lin.parameters(), lr=0.02, weight_decay=0.0)
    first = None
    for _ in range(100):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(lin(x), y)
        first = first if first is not None else loss.item()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * first
