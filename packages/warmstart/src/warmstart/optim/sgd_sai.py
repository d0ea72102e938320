"""SGD-SaI: SGD with momentum and a per-block learning-rate scale fixed at initialisation.

Seed paper: *No More Adam: Learning Rate Scaling at Initialization is All You Need* (Xu et al.,
arXiv 2412.11768). On the first step each parameter block ``p`` (one tensor) gets its gradient
signal-to-noise ratio

    g-SNR(p) = ||g||_2 / (std(g) + eps),

computed once and frozen. Every step then does decoupled weight decay and SGD with momentum, each
block's step scaled by its g-SNR:

    p <- p * (1 - lr * weight_decay)
    m <- momentum * m + (1 - momentum) * g      (m starts at the first gradient)
    p <- p - lr * g-SNR(p) * m

so the optimiser keeps **one** param-sized buffer (the momentum) per parameter where AdamW keeps two.

Written by hand (torch has no SGD-SaI); it follows the update of the authors' reference code. One
deliberate difference: the std of a single-element block is undefined (the reference turns the NaN into
0, which makes the g-SNR ``|g| / eps``, an enormous step); we give such blocks a neutral g-SNR of 1.
``momentum=0`` steps with the raw gradient and keeps no buffer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch


class SGDSaI(torch.optim.Optimizer):
    """SGD-SaI (see the module docstring). Plain ``step()``; a closure, if given, is evaluated first."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        momentum: float = 0.9,
        weight_decay: float = 1e-2,
        eps: float = 1e-8,
    ) -> None:
        if lr < 0:
            raise ValueError(f"SGD-SaI lr must be >= 0, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"SGD-SaI momentum must lie in [0, 1), got {momentum}")
        if weight_decay < 0:
            raise ValueError(f"SGD-SaI weight_decay must be >= 0, got {weight_decay}")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eps=eps))

    @staticmethod
    def gsnr(grad: torch.Tensor, eps: float) -> torch.Tensor:
        """``||g||_2 / (std(g) + eps)`` of one block (1 for a single-element block), as a 0-d fp32 tensor."""
        g = grad.detach().float()
        if g.numel() < 2:
            return torch.ones((), device=g.device)
        ratio: torch.Tensor = g.norm(p=2) / (g.std() + eps)
        return ratio

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("SGD-SaI does not support sparse gradients")
                grad = p.grad
                state = self.state[p]
                if "gsnr" not in state:  # the block's first step: measure and freeze its g-SNR
                    state["gsnr"] = self.gsnr(grad, group["eps"])
                if momentum > 0:
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = grad.detach().clone()
                    else:
                        state["momentum_buffer"].mul_(momentum).add_(grad, alpha=1.0 - momentum)
                    direction = state["momentum_buffer"]
                else:
                    direction = grad
                if wd != 0:
                    p.mul_(1.0 - lr * wd)
                p.addcmul_(direction, state["gsnr"].to(device=p.device, dtype=p.dtype), value=-lr)
        return loss
