"""Build an optimizer from a typed config: AdamW, SGD, SAM/ASAM around either, or SGD-SaI.

SAM: arXiv 2106.01548 (ViTs without pretraining) / 2010.01412, see :mod:`warmstart.optim.sam`.
SGD-SaI: *No More Adam* (arXiv 2412.11768), see :mod:`warmstart.optim.sgd_sai`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from warmstart.errors import ConfigError
from warmstart.optim.sam import SAM
from warmstart.optim.sgd_sai import SGDSaI


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
    """Fused AdamW kernel (CPU and CUDA); None picks it whenever every parameter allows it."""
    sam_base: Literal["adamw", "sgd"] = "adamw"
    """sam: the base optimizer that takes the descent step."""
    rho: float = 0.05
    """sam: radius of the ascent step (the paper's 0.05 for SAM; ASAM uses larger values, e.g. 0.5-2)."""
    adaptive: bool = False
    """sam: ASAM, the scale-invariant perturbation eps = rho |w|^2 g / || |w| g ||."""


def _fusable(params: list[Any]) -> bool:
    """True when torch's fused AdamW kernel applies: every parameter a floating tensor on CPU or CUDA."""
    tensors = [t for p in params for t in (p["params"] if isinstance(p, dict) else [p])]
    return bool(tensors) and all(
        t.is_floating_point() and t.device.type in ("cpu", "cuda") and t.device == tensors[0].device
        for t in tensors
    )


def _base(
    name: str, config: OptimizerConfig, params: list[Any]
) -> tuple[type[torch.optim.Optimizer], dict[str, Any]]:
    """The class and keyword arguments of a plain optimizer named ``name``."""
    if name == "adamw":
        fused = config.fused if config.fused is not None else _fusable(params)
        return torch.optim.AdamW, dict(
            lr=config.lr,
            betas=tuple(config.betas),
            eps=config.eps,
            weight_decay=config.weight_decay,
            fused=fused or None,
        )
    if name == "sgd":
        return torch.optim.SGD, dict(lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    raise ConfigError(f"optimizer.sam_base={name!r} is unknown: use adamw or sgd")


def build_optimizer(config: OptimizerConfig, params: Iterable[Any]) -> torch.optim.Optimizer:
    """Create the optimizer named by ``config`` over ``params`` (tensors or param groups).

    ``sam`` returns a :class:`~warmstart.optim.sam.SAM` (``requires_closure = True``) whose base is
    ``config.sam_base``; every other optimizer takes a plain ``step()``.
    """
    params = list(params)
    if config.name in ("adamw", "sgd"):
        cls, kwargs = _base(config.name, config, params)
        return cls(params, **kwargs)
    if config.name == "sam":
        if config.rho < 0:
            raise ConfigError(f"optimizer.rho={config.rho} must be >= 0")
        cls, kwargs = _base(config.sam_base, config, params)
        return SAM(params, cls, rho=config.rho, adaptive=config.adaptive, **kwargs)
    if config.name == "sgd-sai":
        return SGDSaI(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, eps=config.eps
        )
    raise ConfigError(f"optimizer.name={config.name!r} is unknown: use adamw, sgd, sam or sgd-sai")
