"""SAM / ASAM: the ascent has norm rho, weights return before descent, descent uses the grad at w + eps."""

from __future__ import annotations

import copy

import pytest
import torch

from warmstart.optim import SAM, OptimizerConfig, build_optimizer


def make_problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    x = torch.randn(16, 4, generator=g)  # (B, D_in)
    y = torch.randn(16, 2, generator=g)  # (B, D_out)
    return model, x, y


def loss_fn(model, x, y):
    return torch.nn.functional.mse_loss(model(x), y)


def grads_at(model, x, y, weights: list[torch.Tensor]) -> list[torch.Tensor]:
    """Gradient of the loss at ``weights``, on a separate copy of the model."""
    probe = copy.deepcopy(model)
    with torch.no_grad():
        for p, w in zip(probe.parameters(), weights, strict=True):
            p.copy_(w)
    probe.zero_grad()
    loss_fn(probe, x, y).backward()
    return [p.grad.clone() for p in probe.parameters()]


class RecordingSGD(torch.optim.SGD):
    """Plain SGD that records the weights and grads it sees when it steps."""

    def step(self, closure=None):
        self.seen_weights = [p.detach().clone() for g in self.param_groups for p in g["params"]]
        self.seen_grads = [p.grad.clone() for g in self.param_groups for p in g["params"]]
        return super().step(closure)


def sam_step(model, opt, x, y):
    """What the engine does: first forward/backward, then step(closure) with a closure for the second pass."""
    opt.zero_grad()
    loss_fn(model, x, y).backward()
    perturbed: list[list[torch.Tensor]] = []

    def closure():
        perturbed.append([p.detach().clone() for p in model.parameters()])
        opt.zero_grad()
        loss = loss_fn(model, x, y)
        loss.backward()
        return loss

    loss = opt.step(closure)
    return loss, perturbed[0]


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_ascent_restore_and_descent(adaptive):
    model, x, y = make_problem()
    rho, lr = 0.3, 0.1
    opt = SAM(model.parameters(), RecordingSGD, rho=rho, adaptive=adaptive, lr=lr)
    w0 = [p.detach().clone() for p in model.parameters()]
    g0 = grads_at(model, x, y, w0)

    loss, w_pert = sam_step(model, opt, x, y)
    eps = [wp - w for wp, w in zip(w_pert, w0, strict=True)]

    if adaptive:  # ASAM: || eps / |w| || = rho, eps parallel to |w|^2 g
        scaled = torch.cat([(e / w.abs()).flatten() for e, w in zip(eps, w0, strict=True)])
        assert scaled.norm().item() == pytest.approx(rho, rel=1e-5)
        direction = torch.cat([(w.square() * g).flatten() for w, g in zip(w0, g0, strict=True)])
    else:  # SAM: ||eps|| = rho, eps parallel to g
        assert torch.cat([e.flatten() for e in eps]).norm().item() == pytest.approx(rho, rel=1e-5)
        direction = torch.cat([g.flatten() for g in g0])
    flat_eps = torch.cat([e.flatten() for e in eps])
    cos = torch.nn.functional.cosine_similarity(flat_eps, direction, dim=0)
    assert cos.item() == pytest.approx(1.0, abs=1e-5)

    # the base optimizer stepped from the original weights, bit for bit
    for seen, w in zip(opt.base_optimizer.seen_weights, w0, strict=True):
        assert torch.equal(seen, w)
    # ... with the gradient at w + eps (not the one at w)
    g_pert = grads_at(model, x, y, w_pert)
    for seen, gp, g in zip(opt.base_optimizer.seen_grads, g_pert, g0, strict=True):
        torch.testing.assert_close(seen, gp)
        assert not torch.allclose(gp, g)
    for p, w, gp in zip(model.parameters(), w0, g_pert, strict=True):
        torch.testing.assert_close(p.detach(), w - lr * gp)
    # the returned loss is the loss at the perturbed point, which is higher (we ascended)
    assert loss.item() > loss_fn(make_problem()[0], x, y).item()


def test_sam_needs_a_closure_and_flags_it():
    model, *_ = make_problem()
    opt = build_optimizer(OptimizerConfig(name="sam", sam_base="sgd", lr=0.1), model.parameters())
    assert isinstance(opt, SAM) and opt.requires_closure is True
    assert not getattr(build_optimizer(OptimizerConfig(), model.parameters()), "requires_closure", False)
    with pytest.raises(ValueError, match="closure"):
        opt.step()


def test_sam_lr_scheduler_drives_the_base_optimizer():
    model, x, y = make_problem()
    opt = SAM(model.parameters(), RecordingSGD, rho=0.05, lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5**step)
    for step in range(3):
        assert opt.base_optimizer.param_groups[0]["lr"] == pytest.approx(0.5**step)
        w0 = [p.detach().clone() for p in model.parameters()]
        sam_step(model, opt, x, y)
        for p, w, g in zip(model.parameters(), w0, opt.base_optimizer.seen_grads, strict=True):
            torch.testing.assert_close(p.detach(), w - 0.5**step * g)
        sched.step()


def test_sam_state_dict_round_trip():
    model, x, y = make_problem()
    config = OptimizerConfig(name="sam", sam_base="adamw", lr=1e-2, rho=0.1, adaptive=True, weight_decay=0.01)
    opt = build_optimizer(config, model.parameters())
    for _ in range(2):
        sam_step(model, opt, x, y)
    state = opt.state_dict()
    assert state["param_groups"][0]["rho"] == 0.1 and state["param_groups"][0]["adaptive"] is True
    assert len(state["state"]) == len(list(model.parameters()))  # AdamW moments live in SAM's state dict

    twin = copy.deepcopy(model)
    opt2 = build_optimizer(OptimizerConfig(name="sam", sam_base="adamw", lr=5.0), twin.parameters())
    opt2.load_state_dict(copy.deepcopy(state))
    assert opt2.param_groups is opt2.base_optimizer.param_groups
    assert opt2.param_groups[0]["lr"] == 1e-2  # loaded, and the base optimizer sees it
    for _ in range(2):
        sam_step(model, opt, x, y)
        sam_step(twin, opt2, x, y)
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.slow  # importing lightning costs several seconds on 2 cores
def test_sam_through_fabric_wrapper():
    """The engine's path: Fabric wraps the optimizer (a dynamic subclass that forwards attributes)."""
    fabric_mod = pytest.importorskip("lightning.fabric")
    fabric = fabric_mod.Fabric(accelerator="cpu", devices=1)
    model, x, y = make_problem()
    reference = copy.deepcopy(model)
    opt = SAM(model.parameters(), RecordingSGD, rho=0.1, lr=0.1)
    ref_opt = SAM(reference.parameters(), RecordingSGD, rho=0.1, lr=0.1)
    module = fabric.setup_module(model)
    wrapped = fabric.setup_optimizers(opt)
    assert wrapped.requires_closure and wrapped.param_groups is opt.base_optimizer.param_groups
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (step + 1))
    ref_sched = torch.optim.lr_scheduler.LambdaLR(ref_opt, lambda step: 1.0 / (step + 1))
    for _ in range(2):
        wrapped.zero_grad(set_to_none=True)
        fabric.backward(loss_fn(module, x, y))

        def closure():
            wrapped.zero_grad(set_to_none=True)
            loss = loss_fn(module, x, y)
            fabric.backward(loss)
            return loss

        wrapped.step(closure)
        sched.step()
        sam_step(reference, ref_opt, x, y)
        ref_sched.step()
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    wrapped.load_state_dict(ref_opt.state_dict())
    assert wrapped.param_groups[0]["lr"] == ref_opt.param_groups[0]["lr"]
