"""SLTrain: a sparse-plus-low-rank linear layer with a random, fixed sparse support.

Seed paper: *SLTrain: a sparse plus low-rank approach for parameter and memory efficient pretraining*
(Han et al., NeurIPS 2024, arXiv 2406.02214). Each weight is

    W = scale * B A + S,      B: (out, r), A: (r, in), scale = alpha / r,

where ``S`` is sparse on a support drawn uniformly at random once (``density`` of the entries) and then
fixed: only its non-zero values are parameters, so the layer has ``r (in + out) + nnz`` weights instead
of ``in * out``.

Written by hand (no library offers it). Simplifications: the dense ``W`` is rebuilt in each forward
(a scatter of the values plus ``B A``) and autograd takes care of the rest, where the paper's kernel
avoids storing the dense weight for backward; that costs activation memory, not correctness. Two
initialisations: ``from_linear`` warm-starts from a pretrained layer (``B A`` = its best rank-r
approximation from the SVD, split symmetrically, and ``S`` = the residual on the support), and the
constructor initialises from scratch for pretraining (Kaiming-uniform ``A``, zero ``B``, uniform ``S``
values in +-1/sqrt(in)).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class SLTrainLinear(nn.Module):
    """``y = x (scale * B A + S)^T + b`` with ``S`` on a fixed random support (see module docstring)."""

    indices: torch.Tensor  # buffer: (nnz,) int64 flat indices of the support

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        *,
        density: float = 0.03,
        alpha: float | None = None,
        bias: bool = True,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if not 1 <= rank <= min(in_features, out_features):
            raise ValueError(f"SLTrain rank must lie in [1, {min(in_features, out_features)}], got {rank}")
        if not 0.0 <= density <= 1.0:
            raise ValueError(f"SLTrain density must lie in [0, 1], got {density}")
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.density = density
        self.scale = (rank if alpha is None else alpha) / rank
        nnz = round(density * in_features * out_features)
        # The support: nnz distinct flat indices into the (out, in) matrix, sorted; a buffer, never trained.
        perm = torch.randperm(in_features * out_features, generator=generator)[:nnz]
        self.register_buffer("indices", perm.sort().values.to(device))  # (nnz,) int64
        self.values = nn.Parameter(torch.empty(nnz, device=device, dtype=dtype))  # (nnz,)
        self.lora_b = nn.Parameter(torch.empty(out_features, rank, device=device, dtype=dtype))  # (O, r)
        self.lora_a = nn.Parameter(torch.empty(rank, in_features, device=device, dtype=dtype))  # (r, I)
        self.bias = nn.Parameter(torch.empty(out_features, device=device, dtype=dtype)) if bias else None
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """From-scratch init: Kaiming-uniform A, zero B, sparse values and bias uniform in +-1/sqrt(in)."""
        bound = 1.0 / math.sqrt(self.in_features)

        def uniform_(t: torch.Tensor, b: float) -> None:
            sample = torch.rand(t.shape, generator=generator, dtype=torch.float32)
            t.copy_((sample * 2 - 1) * b)

        uniform_(self.lora_a, bound)  # = nn.Linear's kaiming_uniform(a=sqrt(5)) bound
        self.lora_b.zero_()
        uniform_(self.values, bound)
        if self.bias is not None:
            uniform_(self.bias, bound)

    @classmethod
    @torch.no_grad()
    def from_linear(
        cls,
        linear: nn.Linear,
        rank: int,
        *,
        density: float = 0.03,
        generator: torch.Generator | None = None,
    ) -> SLTrainLinear:
        """Warm-start from a pretrained layer: ``B A`` = its top-``rank`` SVD, ``S`` = the residual on the support."""
        out_features, in_features = linear.weight.shape
        weight = linear.weight.detach()
        layer = cls(
            in_features,
            out_features,
            rank,
            density=density,
            bias=linear.bias is not None,
            generator=generator,
            device=weight.device,
            dtype=weight.dtype,
        )
        u, s, vh = torch.linalg.svd(weight.double(), full_matrices=False)  # (O, k), (k,), (k, I)
        root = s[:rank].sqrt()
        b = u[:, :rank] * root  # (O, r)
        a = root[:, None] * vh[:rank]  # (r, I)
        layer.lora_b.copy_(b.to(weight.dtype))
        layer.lora_a.copy_(a.to(weight.dtype))
        residual = (weight.double() - b @ a).flatten()
        layer.values.copy_(residual[layer.indices].to(weight.dtype))
        if linear.bias is not None and layer.bias is not None:
            layer.bias.copy_(linear.bias.detach())
        return layer

    def sparse_weight(self) -> torch.Tensor:
        """The dense form of ``S``: zero off the support. (O, I)"""
        flat = self.values.new_zeros(self.out_features * self.in_features)
        flat = flat.index_put((self.indices,), self.values)
        return flat.view(self.out_features, self.in_features)

    def dense_weight(self) -> torch.Tensor:
        """``scale * B A + S``. (O, I)"""
        return self.scale * (self.lora_b @ self.lora_a) + self.sparse_weight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., I) -> (..., O)
        return F.linear(x, self.dense_weight(), self.bias)

    @torch.no_grad()
    def merge(self) -> nn.Linear:
        """A dense ``nn.Linear`` with the weight ``scale * B A + S`` (and the same bias)."""
        weight = self.dense_weight()
        merged = nn.Linear(
            self.in_features,
            self.out_features,
            bias=self.bias is not None,
            device=weight.device,
            dtype=weight.dtype,
        )
        merged.weight.copy_(weight)
        if self.bias is not None:
            merged.bias.copy_(self.bias)
        return merged

    @property
    def nnz(self) -> int:
        return int(self.indices.numel())

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, "
            f"nnz={self.nnz} (density {self.density}), scale={self.scale:g}"
        )
