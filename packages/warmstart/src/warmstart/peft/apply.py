"""Swap matching ``nn.Linear`` layers of a model for SVFit / SLTrain layers, and merge them back.

SVFit: arXiv 2409.05926 (:mod:`warmstart.peft.svfit`); SLTrain: arXiv 2406.02214
(:mod:`warmstart.peft.sltrain`). Written by hand; module selection follows peft's conventions.

A pattern matches a module's qualified name when it equals it, is a dotted suffix of it
(``"q_proj"`` matches ``"model.layers.0.self_attn.q_proj"``), or matches it as a shell glob
(``"*.mlp.*"``). ``"all-linear"`` selects every ``nn.Linear`` except the model's output head.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from fnmatch import fnmatchcase

import torch
from torch import nn

from warmstart.peft.sltrain import SLTrainLinear
from warmstart.peft.svfit import SVFitLinear

log = logging.getLogger(__name__)


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(name == p or name.endswith("." + p) or fnmatchcase(name, p) for p in patterns)


def matching_linears(model: nn.Module, target_modules: Sequence[str] | str) -> list[str]:
    """Qualified names of the ``nn.Linear`` modules of ``model`` selected by ``target_modules``."""
    get_out = getattr(model, "get_output_embeddings", None)
    head = get_out() if callable(get_out) else None
    names = []
    for name, module in model.named_modules():
        if type(module) is not nn.Linear or not name:
            continue
        if target_modules == "all-linear":
            if module is not head:
                names.append(name)
        elif _matches(name, [target_modules] if isinstance(target_modules, str) else target_modules):
            names.append(name)
    return names


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def apply_svfit(
    model: nn.Module,
    rank: int,
    target_modules: Sequence[str] | str = "all-linear",
    *,
    freeze_rest: bool = True,
) -> list[str]:
    """Replace each selected ``nn.Linear`` by an :class:`SVFitLinear` in place; return the replaced names.

    ``rank`` is capped per layer at ``min(in, out)``. With ``freeze_rest`` every other parameter of the
    model is frozen, so only the singular values train (the paper's setting; unfreeze a new head after).
    """
    names = matching_linears(model, target_modules)
    if not names:
        raise ValueError(f"no nn.Linear in the model matches target_modules={target_modules!r}")
    if freeze_rest:
        for p in model.parameters():
            p.requires_grad_(False)
    for name in names:
        linear = _linear(model, name)
        _replace(model, name, SVFitLinear(linear, min(rank, *linear.weight.shape)))
    log.info("SVFit on %d layers, %d trainable singular values", len(names), _count(model, SVFitLinear))
    return names


def apply_sltrain(
    model: nn.Module,
    rank: int,
    target_modules: Sequence[str] | str = "all-linear",
    *,
    density: float = 0.03,
    seed: int = 0,
    warm_start: bool = True,
    freeze_rest: bool = False,
) -> list[str]:
    """Replace each selected ``nn.Linear`` by an :class:`SLTrainLinear` in place; return the replaced names.

    ``warm_start`` initialises from the layer's weights (SVD + residual on the support); otherwise from
    scratch, for pretraining. The supports are drawn from one ``torch.Generator`` seeded with ``seed``, in
    module order, so a run is reproducible.
    """
    names = matching_linears(model, target_modules)
    if not names:
        raise ValueError(f"no nn.Linear in the model matches target_modules={target_modules!r}")
    if freeze_rest:
        for p in model.parameters():
            p.requires_grad_(False)
    generator = torch.Generator().manual_seed(seed)
    for name in names:
        linear = _linear(model, name)
        r = min(rank, *linear.weight.shape)
        if warm_start:
            layer = SLTrainLinear.from_linear(linear, r, density=density, generator=generator)
        else:
            layer = SLTrainLinear(
                linear.in_features,
                linear.out_features,
                r,
                density=density,
                bias=linear.bias is not None,
                generator=generator,
                device=linear.weight.device,
                dtype=linear.weight.dtype,
            )
        _replace(model, name, layer)
    log.info("SLTrain on %d layers (rank %d, density %g)", len(names), rank, density)
    return names


def merge_adapters(model: nn.Module) -> list[str]:
    """Replace every SVFit / SLTrain layer of ``model`` by its merged dense ``nn.Linear``; return the names."""
    adapters = [(n, m) for n, m in model.named_modules() if isinstance(m, SVFitLinear | SLTrainLinear) and n]
    for name, adapter in adapters:
        _replace(model, name, adapter.merge())
    return [name for name, _ in adapters]


def _linear(model: nn.Module, name: str) -> nn.Linear:
    module = model.get_submodule(name)
    if not isinstance(module, nn.Linear):
        raise TypeError(f"{name} is a {type(module).__name__}, not an nn.Linear")
    return module


def _count(model: nn.Module, cls: type[nn.Module]) -> int:
    return sum(
        p.numel() for m in model.modules() if isinstance(m, cls) for p in m.parameters() if p.requires_grad
    )
