"""Distillation: temperature KD, self-distillation from a frozen/EMA teacher, and emulated fine-tuning.

Seed papers: "Distilling the Knowledge in a Neural Network" (Hinton et al., arXiv 1503.02531) — KL between
temperature-softened distributions scaled by T² so gradient magnitudes do not shrink with T; self-
distillation for further pretraining as in "Self-Distillation for Further Pre-training of Transformers"
(Lee et al., arXiv 2210.02871; teacher = a frozen copy of the further-pretrained model, matching hidden
states) and the EMA teacher of BYOL/DINO (arXiv 2006.07733, 2104.14294); "An Emulator for Fine-Tuning Large
Language Models using Small Language Models" (Mitchell et al., arXiv 2310.12962) for EFT's logit
arithmetic. Written by hand (a few tensor ops each). Left out: feature-projection heads for students and
teachers of different widths (pass a projection yourself) and EFT's speculative decoding.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    temperature: float = 2.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``T² · KL(softmax(t/T) ‖ softmax(s/T))`` averaged over positions (last dim = classes).

    Logits are (..., V); ``mask`` (...) selects the positions that count (all by default). The teacher is
    detached.
    """
    t = temperature
    log_p_s = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.detach().float() / t, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)  # (...)
    if mask is None:
        return kl.mean() * t * t
    w = mask.float()
    return (kl * w).sum() / w.sum().clamp_min(1) * t * t


def make_teacher(model: nn.Module) -> nn.Module:
    """A frozen deep copy of ``model`` in eval mode (the self-distillation / EMA teacher)."""
    teacher = copy.deepcopy(model)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """``θ_teacher ← decay · θ_teacher + (1 − decay) · θ_student``; floating buffers are copied."""
    for pt, ps in zip(teacher.parameters(), student.parameters(), strict=True):
        pt.mul_(decay).add_(ps.detach().to(pt.dtype), alpha=1 - decay)
    for bt, bs in zip(teacher.buffers(), student.buffers(), strict=True):
        bt.copy_(bs)


def self_distillation_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    *,
    kind: Literal["mse", "cosine", "kl"] = "mse",
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Match the student's hidden states or logits (..., D) to the (detached) teacher's.

    ``mse``: mean squared error per position; ``cosine``: 1 − cosine similarity; ``kl``: :func:`kd_loss` at
    ``temperature``. ``mask`` (...) selects positions (e.g. non-padding tokens).
    """
    if kind == "kl":
        return kd_loss(student, teacher, temperature=temperature, mask=mask)
    t = teacher.detach().float()
    s = student.float()
    per = (s - t).pow(2).mean(-1) if kind == "mse" else 1 - F.cosine_similarity(s, t, dim=-1)  # (...)
    if mask is None:
        return per.mean()
    w = mask.float()
    return (per * w).sum() / w.sum().clamp_min(1)


class SelfDistiller:
    """Keeps a teacher beside a student for further pretraining with a self-distillation term.

    ``decay=None`` keeps the teacher frozen at the student's initial weights (Lee et al.); a float makes it
    an EMA of the student (call :meth:`update` after each optimiser step). It is a plain object, not a
    module, so the student's optimiser never sees the teacher; checkpoint it with :meth:`state_dict`.

    >>> distiller = SelfDistiller(model, decay=0.999)
    >>> loss = task_loss + 0.5 * distiller.loss(student_hidden, distiller.teacher(**batch).last_hidden_state)
    >>> distiller.update()  # after optimizer.step()
    """

    def __init__(self, student: nn.Module, *, decay: float | None = None) -> None:
        self.student = student
        self.decay = decay
        self.teacher = make_teacher(student)

    @torch.no_grad()
    def update(self) -> None:
        if self.decay is not None:
            ema_update(self.teacher, self.student, self.decay)

    def loss(self, student_out: torch.Tensor, teacher_out: torch.Tensor, **kwargs: object) -> torch.Tensor:
        return self_distillation_loss(student_out, teacher_out, **kwargs)  # type: ignore[arg-type]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The teacher's weights (the student is checkpointed as the trained model)."""
        return self.teacher.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.teacher.load_state_dict(state)


def emulated_finetune_logits(
    large_base: torch.Tensor, small_tuned: torch.Tensor, small_base: torch.Tensor, *, beta: float = 1.0
) -> torch.Tensor:
    """EFT up-scaling: ``log p_large_base + β (log p_small_tuned − log p_small_base)``, renormalised.

    All inputs are logits (..., V) over the same vocabulary; the result is normalised log-probabilities
    (logsumexp over V is 0). ``β`` scales the fine-tuning behaviour delta (EFT's "behaviour scale").
    """
    lp = F.log_softmax(large_base.float(), dim=-1)
    delta = F.log_softmax(small_tuned.float(), dim=-1) - F.log_softmax(small_base.float(), dim=-1)
    return F.log_softmax(lp + beta * delta, dim=-1)
