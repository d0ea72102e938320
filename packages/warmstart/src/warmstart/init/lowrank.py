"""Low rank from SVD: replace a linear layer by its truncated-SVD factors plus the residual.

Seed paper: *PELA: Learning Parameter-Efficient Models with Low-Rank Approximation* (Guo et al., CVPR 2024,
arXiv 2310.10700). ``svd_lowrank`` factorises ``W = U S V^T`` and returns ``up @ down`` with
``down = sqrt(S_r) V_r^T`` (r x in) and ``up = U_r sqrt(S_r)`` (out x r) as a module, and the residual
``W - up @ down``; by Eckart-Young its Frobenius norm is the root-sum-square of the tail singular values.
PELA's intermediate pretraining (feature distillation, weight-perturbation regularisation) is left to
the engine and objectives. Written by hand on ``torch.linalg.svd`` (computed in float64).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


class LowRankLinear(nn.Module):
    """``y = up(down(x)) (+ x @ residual^T)``: a rank-r linear layer, optionally carrying a frozen residual."""

    residual: Tensor | None  # a buffer: (out, in), or None

    def __init__(self, down: nn.Linear, up: nn.Linear, residual: Tensor | None = None) -> None:
        super().__init__()
        self.down = down  # in -> r, no bias
        self.up = up  # r -> out, the original bias
        self.register_buffer("residual", residual)  # (out, in) or None

    @property
    def rank(self) -> int:
        return self.down.out_features

    def forward(self, x: Tensor) -> Tensor:
        y: Tensor = self.up(self.down(x))
        if self.residual is not None:
            y = y + x @ self.residual.T
        return y

    def merged_weight(self) -> Tensor:
        """The dense (out, in) weight this module applies."""
        w = self.up.weight @ self.down.weight
        return w + self.residual if self.residual is not None else w


@dataclass
class LowRankFactors:
    """Result of ``svd_lowrank``."""

    module: LowRankLinear
    residual: Tensor  # (out, in): W - up @ down
    singular_values: Tensor  # (min(out, in),) all of W's singular values, descending

    @property
    def tail_energy(self) -> float:
        """Frobenius norm of the discarded part: sqrt(sum of squared tail singular values)."""
        r = self.module.rank
        return float(self.singular_values[r:].pow(2).sum().sqrt())


@torch.no_grad()
def svd_lowrank(linear: nn.Linear, rank: int, *, keep_residual: bool = False) -> LowRankFactors:
    """Truncated-SVD factors of ``linear.weight`` (the best rank-r approximation) and the residual.

    ``keep_residual=True`` stores the residual in the module as a buffer, so it computes the original
    layer exactly (up to rounding); by default the module is the rank-r approximation (PELA).
    """
    w = linear.weight  # (out, in)
    out_f, in_f = w.shape
    if not 1 <= rank <= min(out_f, in_f):
        raise ValueError(f"rank must be in [1, {min(out_f, in_f)}], got {rank}")
    u, s, vh = torch.linalg.svd(w.detach().double(), full_matrices=False)  # (out, k), (k,), (k, in)
    root = s[:rank].sqrt()
    up_w = u[:, :rank] * root  # (out, r)
    down_w = root.unsqueeze(1) * vh[:rank]  # (r, in)
    residual = (w.double() - up_w @ down_w).to(w.dtype)
    down = nn.Linear(in_f, rank, bias=False, device=w.device, dtype=w.dtype)
    up = nn.Linear(rank, out_f, bias=linear.bias is not None, device=w.device, dtype=w.dtype)
    down.weight.copy_(down_w.to(w.dtype))
    up.weight.copy_(up_w.to(w.dtype))
    if linear.bias is not None:
        up.bias.copy_(linear.bias)
    module = LowRankLinear(down, up, residual.clone() if keep_residual else None)
    return LowRankFactors(module=module, residual=residual, singular_values=s.to(w.dtype))
