"""KD (T² scaling), EMA/frozen self-distillation, and emulated fine-tuning's logit arithmetic."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from warmstart.objectives import (
    SelfDistiller,
    ema_update,
    emulated_finetune_logits,
    kd_loss,
    make_teacher,
    self_distillation_loss,
)


def test_kd_loss_definition_and_zero_at_match() -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(3, 5, 7, generator=g), torch.randn(3, 5, 7, generator=g)
    T = 3.0
    pt = F.softmax(t / T, -1)
    expected = (pt * (pt.log() - F.log_softmax(s / T, -1))).sum(-1).mean() * T * T
    assert torch.allclose(kd_loss(s, t, temperature=T), expected, atol=1e-6)
    assert float(kd_loss(t, t, temperature=T)) < 1e-7


def test_kd_t_squared_keeps_gradient_scale_at_high_temperature() -> None:
    # Hinton et al.: for large T, ∂(T²·KL)/∂z_i → (z_i − v_i)/V for zero-mean logits, independent of T
    g = torch.Generator().manual_seed(1)
    z = torch.randn(1, 10, generator=g, dtype=torch.float64)
    v = torch.randn(1, 10, generator=g, dtype=torch.float64)
    z, v = z - z.mean(), v - v.mean()
    grads = []
    for T in (50.0, 200.0):
        zz = z.clone().requires_grad_(True)
        kd_loss(zz, v, temperature=T).backward()
        grads.append(zz.grad.clone())
    expected = (z - v) / 10
    for grad in grads:
        assert torch.allclose(grad, expected, atol=2e-3)


def test_ema_update_formula_and_frozen_teacher() -> None:
    student = torch.nn.Linear(3, 2)
    teacher = make_teacher(student)
    assert not any(p.requires_grad for p in teacher.parameters())
    before = teacher.weight.clone()
    with torch.no_grad():
        student.weight.add_(1.0)
    ema_update(teacher, student, decay=0.9)
    assert torch.allclose(teacher.weight, 0.9 * before + 0.1 * student.weight)


def test_self_distiller_frozen_vs_ema() -> None:
    student = torch.nn.Linear(2, 2)
    frozen, ema = SelfDistiller(student), SelfDistiller(student, decay=0.5)
    w0 = student.weight.detach().clone()
    with torch.no_grad():
        student.weight.add_(2.0)
    frozen.update()
    ema.update()
    assert torch.equal(frozen.teacher.weight, w0)
    assert torch.allclose(ema.teacher.weight, w0 + 1.0)
    x = torch.randn(4, 2)
    h_s, h_t = student(x), frozen.teacher(x)
    loss = frozen.loss(h_s, h_t, kind="mse")
    assert torch.allclose(loss, (h_s - h_t).pow(2).mean())
    loss.backward()
    assert student.weight.grad is not None and frozen.teacher.weight.grad is None


def test_self_distillation_cosine_and_mask() -> None:
    s = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    t = torch.tensor([[[2.0, 0.0], [1.0, 0.0]]])
    assert torch.allclose(self_distillation_loss(s, t, kind="cosine"), torch.tensor(0.5))
    assert float(self_distillation_loss(s, t, kind="cosine", mask=torch.tensor([[1, 0]]))) == 0.0


def test_emulated_finetune_is_exact_log_prob_arithmetic() -> None:
    g = torch.Generator().manual_seed(2)
    lb, st, sb = (torch.randn(2, 3, 11, generator=g) for _ in range(3))
    out = emulated_finetune_logits(lb, st, sb)
    assert torch.allclose(out.logsumexp(-1), torch.zeros(2, 3), atol=1e-6)  # normalised
    unnorm = F.log_softmax(lb, -1) + F.log_softmax(st, -1) - F.log_softmax(sb, -1)
    assert torch.allclose(out, unnorm - unnorm.logsumexp(-1, keepdim=True), atol=1e-6)
    # no fine-tuning delta → the large base model's distribution
    assert torch.allclose(emulated_finetune_logits(lb, sb, sb), F.log_softmax(lb, -1), atol=1e-6)
    # β scales the delta
    b2 = emulated_finetune_logits(lb, st, sb, beta=2.0)
    u2 = F.log_softmax(lb, -1) + 2 * (F.log_softmax(st, -1) - F.log_softmax(sb, -1))
    assert torch.allclose(b2, F.log_softmax(u2, -1), atol=1e-6)
