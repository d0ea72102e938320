"""Learngene stage-wise weight sharing: initialise models of any depth from a few stage layers.

Seed paper: *Exploring Learngene via Stage-wise Weight Sharing for Initializing Variable-sized Models*
(Xia et al., IJCAI 2024, arXiv 2404.16897; SWS). An auxiliary model's layers are grouped into stages, each
stage one set of weights repeated (shared); a descendant of any depth copies stage s's weights into its
d_s layers.

Implements the weight-sharing view (``share_stages``), the expansion into independent layers
(``expand_stages``) and, for transformers models, ``build_from_stages`` (a deeper model of the same class
whose layer j copies its stage's auxiliary layer). The distillation that trains the auxiliary model from a
teacher is left to the engine/objectives (``warmstart.objectives`` KD).
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Sequence

from torch import nn

logger = logging.getLogger(__name__)

_LAYER_FIELDS = ("num_hidden_layers", "n_layer", "num_layers")


def stage_of_layer(depths: Sequence[int]) -> list[int]:
    """Stage index of every layer of a descendant with ``depths[s]`` layers in stage ``s``."""
    if any(d < 1 for d in depths):
        raise ValueError(f"every stage needs at least one layer, got {list(depths)}")
    return [s for s, d in enumerate(depths) for _ in range(d)]


def share_stages(stage_layers: Sequence[nn.Module], repeats: Sequence[int]) -> nn.ModuleList:
    """The auxiliary model's layer list: stage s's module repeated ``repeats[s]`` times (weights shared)."""
    if len(stage_layers) != len(repeats):
        raise ValueError("one repeat count per stage")
    return nn.ModuleList([stage_layers[s] for s in stage_of_layer(repeats)])


def expand_stages(stage_layers: Sequence[nn.Module], depths: Sequence[int]) -> nn.ModuleList:
    """A descendant's layer list: ``depths[s]`` independent deep copies of stage s's layer."""
    if len(stage_layers) != len(depths):
        raise ValueError("one depth per stage")
    return nn.ModuleList([copy.deepcopy(stage_layers[s]) for s in stage_of_layer(depths)])


def find_layer_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The (qualified name, module) of the model's transformer-layer list: the ModuleList whose length is
    the config's layer count (``transformer.h``, ``bert.encoder.layer``, ``model.layers`` ...)."""
    cfg = getattr(model, "config", None)
    n = next((getattr(cfg, f) for f in _LAYER_FIELDS if cfg is not None and hasattr(cfg, f)), None)
    lists = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList)]
    if n is not None:
        lists = [(name, m) for name, m in lists if len(m) == n] or lists
    if not lists:
        raise ValueError("model has no nn.ModuleList of layers")
    return max(lists, key=lambda nm: len(nm[1]))


def _layer_field(cfg: object) -> str:
    for f in _LAYER_FIELDS:
        if hasattr(cfg, f):
            return f
    raise ValueError("config has no layer-count field")


def build_from_stages(aux_model: nn.Module, depths: Sequence[int]) -> nn.Module:
    """A new model of ``type(aux_model)`` with ``sum(depths)`` layers initialised from the auxiliary model.

    ``aux_model`` has one layer per stage (``len(depths)`` layers: its shared stage weights). Every weight
    outside the layer list (embeddings, final norm, head) is copied; layer j copies stage
    ``stage_of_layer(depths)[j]``. Layer-index attributes (KV-cache slots) are the new model's own, since
    the model is built fresh from its config and only the state dict is copied.
    """
    prefix, layers = find_layer_list(aux_model)
    if len(layers) != len(depths):
        raise ValueError(f"auxiliary model has {len(layers)} layers but {len(depths)} stages were given")
    cfg = copy.deepcopy(aux_model.config)
    setattr(cfg, _layer_field(cfg), sum(depths))
    model = type(aux_model)(cfg)
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.(.*)$")
    sd = aux_model.state_dict()
    new_sd = {}
    stages = stage_of_layer(depths)
    for name, t in sd.items():
        m = pattern.match(name)
        if m is None:
            new_sd[name] = t.clone()
            continue
        s, rest = int(m.group(1)), m.group(2)
        for j, stage in enumerate(stages):
            if stage == s:
                new_sd[f"{prefix}.{j}.{rest}"] = t.clone()
    missing, unexpected = model.load_state_dict(new_sd, strict=False)
    tied = {n for n, _ in model.named_parameters(remove_duplicate=False)} - set(model.state_dict())
    if [k for k in missing if k not in tied] or unexpected:
        raise RuntimeError(f"build_from_stages: missing {missing}, unexpected {unexpected}")
    tie_weights = getattr(model, "tie_weights", None)
    if callable(tie_weights):
        tie_weights()
    model.train(aux_model.training)
    logger.info(
        "built a %d-layer %s from %d stages %s", sum(depths), type(model).__name__, len(depths), depths
    )
    return model
