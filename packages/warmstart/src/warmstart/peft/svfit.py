"""SVFit: fine-tune only the top-r singular values of a pretrained weight.

Seed paper: *SVFit: Parameter-Efficient Fine-Tuning of Large Pre-Trained Models Using Singular Values*
(Sun et al., arXiv 2409.05926). A pretrained weight is split by its SVD into

    W = U_r diag(sigma) V_r^T + W_res,

where ``U_r``, ``V_r`` hold the top-r singular vectors and ``W_res`` the rest; ``U_r``, ``V_r`` and
``W_res`` are frozen and only the r singular values ``sigma`` are trained (r parameters per matrix).

Written by hand (peft has PiSSA, which trains U and V too, but not SVFit). Implementation choice: we
keep the original ``W`` (a frozen buffer) and the initial values ``sigma_0`` and compute

    y = x W^T + ((x V_r) * (sigma - sigma_0)) U_r^T + b,

which is the same parametrisation (``W_res = W - U_r diag(sigma_0) V_r^T``) rearranged so that at
initialisation the output is *bit-identical* to the original layer and no SVD rounding error enters the
frozen part. The SVD runs in float64. The bias stays frozen (the paper trains singular values only).
Left out: the paper's selection of which matrices to adapt beyond name patterns.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class SVFitLinear(nn.Module):
    """A frozen ``nn.Linear`` whose top-``rank`` singular values are the only trainable parameters."""

    # buffers (registered in __init__)
    weight: torch.Tensor  # (O, I)
    bias: torch.Tensor | None  # (O,)
    u: torch.Tensor  # (O, r)
    vh: torch.Tensor  # (r, I)
    sigma0: torch.Tensor  # (r,)

    def __init__(self, linear: nn.Linear, rank: int) -> None:
        super().__init__()
        out_features, in_features = linear.weight.shape
        if not 1 <= rank <= min(out_features, in_features):
            raise ValueError(f"SVFit rank must lie in [1, {min(out_features, in_features)}], got {rank}")
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        weight = linear.weight.detach()
        dtype = weight.dtype
        u, s, vh = torch.linalg.svd(weight.double(), full_matrices=False)  # (O, k), (k,), (k, I)
        self.register_buffer("weight", weight.clone())  # (O, I) frozen original
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())
        self.register_buffer("u", u[:, :rank].to(dtype).contiguous())  # (O, r)
        self.register_buffer("vh", vh[:rank].to(dtype).contiguous())  # (r, I)
        self.register_buffer("sigma0", s[:rank].to(dtype).clone())  # (r,)
        self.sigma = nn.Parameter(s[:rank].to(dtype).clone())  # (r,) the only trainable tensor

    def delta_weight(self) -> torch.Tensor:
        """``U_r diag(sigma - sigma_0) V_r^T``: the change learned so far. (O, I)"""
        return (self.u * (self.sigma - self.sigma0)) @ self.vh

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., I) -> (..., O)
        base = F.linear(x, self.weight, self.bias)
        coeff = F.linear(x, self.vh) * (self.sigma - self.sigma0)  # (..., r)
        return base + F.linear(coeff, self.u)

    @torch.no_grad()
    def merge(self) -> nn.Linear:
        """A dense ``nn.Linear`` computing the same function: ``W + U_r diag(sigma - sigma_0) V_r^T``."""
        merged = nn.Linear(
            self.in_features,
            self.out_features,
            bias=self.bias is not None,
            device=self.weight.device,
            dtype=self.weight.dtype,
        )
        merged.weight.copy_(self.weight + self.delta_weight())
        if self.bias is not None:
            merged.bias.copy_(self.bias)
        return merged

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"
