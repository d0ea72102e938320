"""Grow a pretrained language model into a bigger one: bert2BERT (FPI / AKI, width and depth) or learngene.

Seed papers: *bert2BERT: Towards Reusable Pretrained Language Models* (Chen et al., ACL 2022, arXiv
2110.07143) and *Exploring Learngene via Stage-wise Weight Sharing for Initializing Variable-sized
Models* (Xia et al., IJCAI 2024, arXiv 2404.16897). The maths is the core's (``warmstart.init.grow``,
``warmstart.init.build_from_stages``); this module picks the method per family, checks the target
sizes, and gives the training its first stage: bert2BERT's two-stage pre-training, read here as
"first train sub-models made of the grown model's bottom layers (a depth drawn per step from the
source depth up to the full depth), then the whole model" (our reading of the paper's sub-model stage;
the exact sampling of its schedule is unverified). Left out: growing a Llama/T5 with FPI/AKI (the core's
rules cover BERT and GPT-2; learngene serves every family with a layer list).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from warmstart.errors import ConfigError

log = logging.getLogger(__name__)

GROW_MODEL_TYPES = ("bert", "gpt2")
"""Model types whose every parameter has a bert2BERT rule in ``warmstart.init.growth``."""


@dataclass
class GrowConfig:
    """How to grow the model and the first training stage."""

    method: Literal["fpi", "aki", "learngene"] = "aki"
    """fpi (function preserving), aki (new units from the layer above; the paper's best), learngene
    (each source layer a stage, repeated to the target depth; width unchanged)."""
    width: int | None = None
    """Target hidden size (default: unchanged); a multiple of the head size."""
    depth: int | None = None
    """Target number of layers (default: unchanged)."""
    intermediate: int | None = None
    """Target FFN size (default: scaled with the width)."""
    mapping: Literal["cyclic", "random"] = "cyclic"
    """Which old unit a new unit copies (cyclic: exact FPI for integer width ratios)."""
    stage1_steps: int = 0
    """bert2BERT's first stage: steps of sub-model training before the full model (0: off)."""
    seed: int = 0


def _layers(model: nn.Module) -> tuple[nn.Module, str, nn.ModuleList]:
    from warmstart.init import find_layer_list

    name, layers = find_layer_list(model)
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    return parent, attr, layers


@contextmanager
def bottom_layers(model: nn.Module, depth: int) -> Iterator[None]:
    """Run ``model`` with its bottom ``depth`` layers only (a sub-model sharing the full model's weights)."""
    parent, attr, layers = _layers(
        getattr(model, "base_model", model) if hasattr(model, "peft_config") else model
    )
    if depth >= len(layers):
        yield
        return
    setattr(parent, attr, nn.ModuleList(list(layers)[:depth]))
    try:
        yield
    finally:
        setattr(parent, attr, layers)


def submodel_depths(source_depth: int, target_depth: int) -> list[int]:
    """Depths sampled in the sub-model stage: from the source depth (at least 1) to the full depth."""
    return list(range(max(1, min(source_depth, target_depth)), target_depth + 1))


def grow_model(model: Any, cfg: GrowConfig, where: str = "grow") -> tuple[Any, dict[str, Any]]:
    """The grown model (a new instance of the same class) and a record of what changed."""
    from warmstart.init import build_from_stages, find_layer_list, grow

    mt = model.config.model_type
    _, layers = find_layer_list(model)
    depth0 = len(layers)
    hidden0 = model.get_input_embeddings().weight.shape[1]
    params0 = sum(p.numel() for p in model.parameters())
    if cfg.method in ("fpi", "aki"):
        if mt not in GROW_MODEL_TYPES:
            raise ConfigError(
                f"{where}: grow.method={cfg.method} covers BERT-style encoders and GPT-2 decoders "
                f"({', '.join(GROW_MODEL_TYPES)}), not {type(model).__name__} ({mt}); use --grow.method learngene"
            )
        try:
            grown = grow(
                model,
                cfg.width,
                cfg.depth,
                intermediate=cfg.intermediate,
                method=cfg.method,
                mapping=cfg.mapping,
                seed=cfg.seed,
            )
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    elif cfg.method == "learngene":
        if cfg.width not in (None, hidden0) or cfg.intermediate is not None:
            raise ConfigError(f"{where}: learngene keeps the width ({hidden0}); drop --grow.width or use aki")
        depth = cfg.depth or depth0
        if depth < depth0:
            raise ConfigError(f"{where}: grow.depth={depth} is below the model's {depth0} layers")
        stages = [depth // depth0 + (1 if s < depth % depth0 else 0) for s in range(depth0)]
        grown = build_from_stages(model, stages)
    else:
        raise ConfigError(f"{where}: grow.method={cfg.method!r} is unknown: use fpi, aki or learngene")
    _, new_layers = find_layer_list(grown)
    info = {
        "method": cfg.method,
        "model_type": mt,
        "depth": [depth0, len(new_layers)],
        "width": [hidden0, grown.get_input_embeddings().weight.shape[1]],
        "params": [params0, sum(p.numel() for p in grown.parameters())],
    }
    return grown, info
