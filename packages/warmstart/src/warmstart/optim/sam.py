"""Sharpness-Aware Minimization as a wrapper around any base optimizer.

Seed papers: *When Vision Transformers Outperform ResNets without Pre-training or Strong Data
Augmentations* (Chen, Hsieh & Gong, arXiv 2106.01548), which applies **SAM** (*Sharpness-Aware
Minimization for Efficiently Improving Generalization*, Foret et al., arXiv 2010.01412) to ViTs and
MLP-Mixers, and **ASAM** (*Adaptive Sharpness-Aware Minimization*, Kwon et al., arXiv 2102.11600).

One SAM step, given the gradient ``g`` at ``w`` (from the caller's first forward/backward):

1. ascend: ``eps = rho * T^2 g / ||T g||`` with ``T = I`` (SAM) or ``T = diag(|w|)`` (ASAM, ``adaptive``),
   so ``||eps|| = rho`` (SAM) or ``||eps / |w| || = rho`` (ASAM); move to ``w + eps``;
2. ``closure()`` zeroes the gradients and recomputes loss + backward at ``w + eps``;
3. restore ``w`` exactly (a saved copy, not ``w + eps - eps``) and let the base optimizer descend with
   the gradient taken at ``w + eps``.

Written by hand: torch ships no SAM. Left out: m-sharpness (per-shard perturbations; under DDP the
gradients are already all-reduced, so the perturbation is the global one) and GSAM/ESAM variants. The
gradient norm is one global norm over every parameter of every group (as in the paper); ``rho`` and
``adaptive`` may differ per param group.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch


class SAM(torch.optim.Optimizer):
    """SAM / ASAM around a base optimizer; call ``step(closure)`` after a first forward/backward.

    ``SAM(params, torch.optim.AdamW, rho=0.05, lr=1e-3, weight_decay=0.01)`` builds the base optimizer
    over the *same* param-group dicts, so an LR scheduler attached to the SAM object drives the base's
    learning rate, and ``state_dict()`` / ``load_state_dict()`` are the base optimizer's (with ``rho`` and
    ``adaptive`` stored in its param groups).
    """

    requires_closure = True
    """Tells the engine to call ``step(closure)`` (after its first backward) instead of ``step()``."""

    def __init__(
        self,
        params: Iterable[Any],
        base_optimizer: type[torch.optim.Optimizer],
        *,
        rho: float = 0.05,
        adaptive: bool = False,
        eps: float = 1e-12,
        **base_kwargs: Any,
    ) -> None:
        if rho < 0:
            raise ValueError(f"SAM rho must be >= 0, got {rho}")
        self.__dict__["_sam_building"] = True
        super().__init__(params, dict(rho=rho, adaptive=adaptive, sam_eps=eps, **base_kwargs))
        # From here on `param_groups` and `state` are the base optimizer's (see the properties below).
        self.base_optimizer = base_optimizer(self.__dict__.pop("_sam_param_groups"), **base_kwargs)
        self.__dict__.pop("_sam_state", None)
        del self.__dict__["_sam_building"]
        self.defaults.update(self.base_optimizer.defaults)

    # `param_groups` and `state` always resolve to the base optimizer's, so LR schedulers, load_state_dict
    # (which replaces the group dicts) and wrappers all see one set. Raising AttributeError where neither
    # is in our __dict__ lets a delegating wrapper (Fabric's optimizer subclasses us and forwards unknown
    # attributes through __getattr__) reach the wrapped SAM.
    def _slot(self, name: str) -> tuple[Any, str]:
        own = self.__dict__
        if "base_optimizer" in own:
            return own["base_optimizer"], name
        if "_sam_building" in own:  # inside torch.optim.Optimizer.__init__, before the base exists
            return None, f"_sam_{name}"
        raise AttributeError(name)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        owner, key = self._slot("param_groups")
        groups: list[dict[str, Any]] = owner.param_groups if owner is not None else self.__dict__[key]
        return groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        owner, key = self._slot("param_groups")
        if owner is not None:
            owner.param_groups = value
        else:
            self.__dict__[key] = value

    @property
    def state(self) -> Any:
        owner, key = self._slot("state")
        return owner.state if owner is not None else self.__dict__[key]

    @state.setter
    def state(self, value: Any) -> None:
        owner, key = self._slot("state")
        if owner is not None:
            owner.state = value
        else:
            self.__dict__[key] = value

    @torch.no_grad()
    def _grad_norm(self) -> torch.Tensor:
        """``||T g||_2`` over every parameter with a gradient (T = |w| for adaptive groups, else I)."""
        norms = [
            ((p.abs() if group["adaptive"] else 1.0) * p.grad).norm(p=2)
            for group in self.param_groups
            for p in group["params"]
            if p.grad is not None
        ]
        if not norms:
            return torch.zeros(())
        device = norms[0].device
        total: torch.Tensor = torch.stack([n.to(device) for n in norms]).norm(p=2)
        return total

    @torch.no_grad()
    def first_step(self) -> dict[torch.Tensor, torch.Tensor]:
        """Move to ``w + eps`` using the current gradients; return the saved original weights."""
        grad_norm = self._grad_norm()
        saved: dict[torch.Tensor, torch.Tensor] = {}
        for group in self.param_groups:
            scale = group["rho"] / (grad_norm + group["sam_eps"])
            for p in group["params"]:
                if p.grad is None:
                    continue
                saved[p] = p.detach().clone()
                e_w = (p.square() if group["adaptive"] else 1.0) * p.grad * scale.to(p.device)
                p.add_(e_w)
        return saved

    @torch.no_grad()
    def second_step(self, saved: dict[torch.Tensor, torch.Tensor]) -> None:
        """Restore the original weights, then descend with the gradients now held (taken at ``w + eps``)."""
        for p, original in saved.items():
            p.copy_(original)
        self.base_optimizer.step()

    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:  # type: ignore[override]
        """One SAM step. ``closure`` must zero the grads, recompute the loss, backward, and return the loss.

        The gradients of the first pass (at ``w``) must already be present. Returns the closure's loss
        (the loss at the perturbed point).
        """
        if closure is None:
            raise ValueError(
                "SAM.step needs a closure that zeroes the grads, recomputes the loss and calls backward: "
                "optimizer.step(closure)"
            )
        saved = self.first_step()
        with torch.enable_grad():
            loss = closure()
        self.second_step(saved)
        return loss

    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's state dict (its param groups carry ``rho`` and ``adaptive``)."""
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load into the base optimizer (whose new param groups and state we share)."""
        self.base_optimizer.load_state_dict(state_dict)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base_optimizer.zero_grad(set_to_none=set_to_none)

    def __repr__(self) -> str:
        return f"SAM(rho={self.defaults['rho']}, adaptive={self.defaults['adaptive']}, base={self.base_optimizer!r})"
