"""Build an optimizer from a typed config."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch


@dataclass
class OptimizerConfig:
    name: Literal["adamw", "sgd", "sam", "sgd-sai"] = "adamw"
    """adamw, sgd (momentum), sam (SAM around a base optimizer), or sgd-sai (SGD-SaI, Adam-free)."""
    lr: float = 3e-4
    """Peak learning rate (schedules scale it)."""
    weight_decay: float = 0.0
    """Decoupled weight decay."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    momentum: float = 0.9
    """SGD / SGD-SaI momentum."""
    eps: float = 1e-8
    """Numerical epsilon."""
    fused: bool | None = None
    """Fused AdamW kernel; None picks it on CUDA."""


def build_optimizer(config: OptimizerConfig, params: Iterable) -> torch.optim.Optimizer:
    """Create the optimizer named by ``config`` over ``params`` (tensors or param groups)."""
    params = list(params)
    if config.name == "adamw":
        fused = config.fused
        if fused is None:
            fused = bool(params) and all(
                (p["params"][0] if isinstance(p, dict) else p).is_cuda for p in params[:1]
            )
        return torch.optim.AdamW(
            params,
            lr=config.lr,
            betas=config.betas,
            eps=config.eps,
            weight_decay=config.weight_decay,
            fused=fused or None,
        )
    if config.name == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    raise NotImplementedError(f"optimizer {config.name!r} is not implemented yet")
