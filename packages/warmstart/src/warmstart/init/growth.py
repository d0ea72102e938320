"""Model growth: widen and deepen a trained transformer (FPI and AKI), then stack layers.

Seed paper: *bert2BERT: Towards Reusable Pretrained Language Models* (Chen et al., ACL 2022, arXiv
2110.07143). ``grow`` builds a bigger transformers BERT or GPT-2 model of the same class from a smaller one:
**FPI** (function-preserving initialisation) widens every hidden, attention-head and FFN dimension with a
map g (identity for old units, another old unit for each new one), copies the out-dimension and divides
the in-dimension by the copy count; **AKI** (advanced knowledge initialisation) fills the new out-units
of layer l from layer l+1 instead. Depth grows by stacking the widened layers (StackBERT). The two-stage
sub-model training schedule of the paper is left out.

Written by hand (no library grows transformers models). Heads keep their size (``head_dim`` fixed), so the
number of heads grows with the width, as in BERT-small -> BERT-base.

**Exactness of FPI (measured, see tests/init/test_init_growth.py).** Copying units changes the mean and
variance that LayerNorm sees, unless every old unit is copied the same number of times. With the default
``mapping="cyclic"`` (new unit j copies old unit j mod h) and a width that is an integer multiple of the
old one, the grown model computes the same logits up to float rounding: the tests require a relative
max error below 1e-5 (fp32; measured 2e-7 to 4e-7 on GPT-2 and BERT, tied and untied). For other widths
FPI is approximate: grown 32 -> 48 (1.5x), tiny random-init GPT-2/BERT models drift by 0.06-0.19 of the
largest |logit| (the random map at 2x: 0.10-0.15); the tests bound it at 0.35. Random-init tiny models
have small logits, so this relative figure is pessimistic next to the 0.1-0.5 % community ports report
for trained models. Depth growth by stacking
is not function preserving (neither in the paper). A tied output head is handled by dividing the last
LayerNorm's affine parameters by the copy counts (the head itself must copy, as the tied input
embedding does); an untied head divides its own in-dimension.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypedDict

import torch
from torch import Tensor, nn

from warmstart.init.rows import make_generator

if TYPE_CHECKING:
    from transformers import PreTrainedModel

logger = logging.getLogger(__name__)

GrowMethod = Literal["fpi", "aki"]
Mapping = Literal["cyclic", "random"]

# Axis roles: H = hidden (residual stream), A = attention inner (heads * head_dim), F = FFN inner;
# "_out" copies units, "_in" copies and divides by the copy count, "H_div" copies and divides (the last
# LayerNorm before a tied head), "QKV_out" is GPT-2's fused (3 * A) output.
_Axes = tuple[str | None, ...]

_GPT2_RULES: list[tuple[str, _Axes]] = [
    (r"\.wte\.weight$", (None, "H_out")),
    (r"\.wpe\.weight$", (None, "H_out")),
    (r"\.ln_[12]\.(weight|bias)$", ("H_out",)),
    (r"\.attn\.c_attn\.weight$", ("H_in", "QKV_out")),
    (r"\.attn\.c_attn\.bias$", ("QKV_out",)),
    (r"\.attn\.c_proj\.weight$", ("A_in", "H_out")),
    (r"\.(attn|mlp)\.c_proj\.bias$", ("H_out",)),
    (r"\.mlp\.c_fc\.weight$", ("H_in", "F_out")),
    (r"\.mlp\.c_fc\.bias$", ("F_out",)),
    (r"\.mlp\.c_proj\.weight$", ("F_in", "H_out")),
    (r"(^|\.)(lm_head|score)\.weight$", (None, "H_in")),
    (r"(^|\.)score\.bias$", (None,)),
]
_GPT2_FINAL_NORM = r"\.ln_f\.(weight|bias)$"

_BERT_RULES: list[tuple[str, _Axes]] = [
    (r"embeddings\.(word|position|token_type)_embeddings\.weight$", (None, "H_out")),
    (r"LayerNorm\.(weight|bias)$", ("H_out",)),
    (r"attention\.self\.(query|key|value)\.weight$", ("A_out", "H_in")),
    (r"attention\.self\.(query|key|value)\.bias$", ("A_out",)),
    (r"attention\.output\.dense\.weight$", ("H_out", "A_in")),
    (r"(attention\.output|layer\.\d+\.output|pooler|transform)\.dense\.bias$", ("H_out",)),
    (r"intermediate\.dense\.weight$", ("F_out", "H_in")),
    (r"intermediate\.dense\.bias$", ("F_out",)),
    (r"layer\.\d+\.output\.dense\.weight$", ("H_out", "F_in")),
    (r"(pooler|transform)\.dense\.weight$", ("H_out", "H_in")),
    (r"(decoder|classifier|seq_relationship)\.weight$", (None, "H_in")),
    (r"(predictions\.bias|decoder\.bias|classifier\.bias|seq_relationship\.bias)$", (None,)),
]
_BERT_FINAL_NORM = r"predictions\.transform\.LayerNorm\.(weight|bias)$"

_ZERO_ON_NEW_LAYER = r"\.(attn|mlp)\.c_proj\.(weight|bias)$"


class _Family(TypedDict):
    """How one transformers model family names its weights and its size fields."""

    rules: list[tuple[str, _Axes]]  # (parameter-name pattern, the role of each axis)
    final_norm: str  # pattern of the final norm (its roles depend on tied embeddings)
    layers: str  # pattern whose last group is the layer index
    fields: tuple[str, str, str, str]  # config fields: hidden, heads, intermediate, layers


_FAMILIES: dict[str, _Family] = {
    "gpt2": _Family(
        rules=_GPT2_RULES,
        final_norm=_GPT2_FINAL_NORM,
        layers=r"(^|\.)h\.(\d+)\.",
        fields=("n_embd", "n_head", "n_inner", "n_layer"),
    ),
    "bert": _Family(
        rules=_BERT_RULES,
        final_norm=_BERT_FINAL_NORM,
        layers=r"encoder\.layer\.(\d+)\.",
        fields=("hidden_size", "num_attention_heads", "intermediate_size", "num_hidden_layers"),
    ),
}


@dataclass
class GrowthMaps:
    """Index maps new unit -> old unit for each widened dimension, and the copy counts."""

    hidden: Tensor  # (h',)
    heads: Tensor  # (n',)
    ffn: Tensor  # (f',)
    head_dim: int

    @property
    def attn(self) -> Tensor:  # (n' * head_dim,)
        return (self.heads.unsqueeze(1) * self.head_dim + torch.arange(self.head_dim)).reshape(-1)

    def get(self, role: str) -> Tensor:
        return {"H": self.hidden, "A": self.attn, "F": self.ffn}[role]


def unit_map(old: int, new: int, mapping: Mapping, generator: torch.Generator) -> Tensor:
    """g: identity on the first ``old`` units, then cyclic (j mod old) or uniformly random old units."""
    if new < old:
        raise ValueError(f"cannot shrink a dimension ({old} -> {new})")
    extra = new - old
    if mapping == "cyclic":
        tail = torch.arange(extra) % old
    elif mapping == "random":
        tail = torch.randint(old, (extra,), generator=generator)
    else:
        raise ValueError(f"unknown mapping {mapping!r}")
    return torch.cat([torch.arange(old), tail])


def _expand_in(t: Tensor, axis: int, g: Tensor) -> Tensor:
    g = g.to(t.device)
    counts = torch.bincount(g, minlength=t.shape[axis]).to(t.dtype)
    out = t.index_select(axis, g)
    shape = [1] * t.dim()
    shape[axis] = -1
    return out / counts[g].view(shape)


def _expand_out(t: Tensor, axis: int, g: Tensor, upper: Tensor | None, n_old: int) -> Tensor:
    """Copy units along ``axis``; with ``upper`` (AKI) the new units come from the next layer's tensor."""
    g = g.to(t.device)
    out = t.index_select(axis, g)
    if upper is not None and g.numel() > n_old:
        new_part = upper.index_select(axis, g[n_old:])
        out = torch.cat([out.narrow(axis, 0, n_old), new_part], dim=axis)
    return out


def _expand(t: Tensor, axes: _Axes, maps: GrowthMaps, upper: Tensor | None) -> Tensor:
    """Apply the in-axes first (to ``t`` and ``upper``), then the out-axes."""

    def in_pass(x: Tensor) -> Tensor:
        for ax, role in enumerate(axes):
            if role is not None and role.endswith("_in"):
                x = _expand_in(x, ax, maps.get(role[0]))
        return x

    t = in_pass(t)
    upper = in_pass(upper) if upper is not None else None
    for ax, role in enumerate(axes):
        if role is None or role.endswith("_in"):
            continue
        if role == "QKV_out":
            g = maps.attn
            n_old = t.shape[ax] // 3
            split = (*t.shape[:ax], 3, n_old)
            up = upper.reshape(split) if upper is not None else None
            x = _expand_out(t.reshape(split), ax + 1, g, up, n_old)
            t = x.reshape(*t.shape[:ax], 3 * g.numel())
            continue
        g = maps.get(role[0])
        n_old = t.shape[ax]
        t = _expand_out(t, ax, g, upper, n_old)
        if role == "H_div":
            g = g.to(t.device)
            t = t / torch.bincount(g, minlength=n_old).to(t.dtype)[g]
        upper = None if upper is None else _expand_out(upper, ax, g, None, n_old)
    return t


def _axes_for(name: str, family: _Family, tied: bool) -> _Axes | None:
    if re.search(family["final_norm"], name):
        return ("H_div",) if tied else ("H_out",)
    for pattern, axes in family["rules"]:
        if re.search(pattern, name):
            return axes
    return None


def _layer_key(name: str, family: _Family) -> tuple[int, str] | None:
    m = re.search(family["layers"], name)
    if m is None:
        return None
    idx = int(m.group(m.lastindex or 1))
    return idx, name[: m.start(m.lastindex or 1)] + "{}" + name[m.end(m.lastindex or 1) :]


def _family(model: PreTrainedModel) -> _Family:
    mt = getattr(model.config, "model_type", None)
    if mt not in _FAMILIES:
        raise NotImplementedError(f"grow() supports BERT and GPT-2 models, not {mt!r}")
    return _FAMILIES[mt]


def _tied(model: PreTrainedModel) -> bool:
    get_out = getattr(model, "get_output_embeddings", None)
    head = get_out() if callable(get_out) else None
    return head is not None and head.weight is model.get_input_embeddings().weight


@torch.no_grad()
def grow(
    model: PreTrainedModel,
    width: int | None = None,
    depth: int | None = None,
    *,
    intermediate: int | None = None,
    method: GrowMethod = "fpi",
    mapping: Mapping = "cyclic",
    depth_init: Literal["stack", "zero"] = "stack",
    generator: torch.Generator | None = None,
    seed: int | None = None,
) -> PreTrainedModel:
    """Return a new model of ``type(model)`` with hidden size ``width`` and ``depth`` layers.

    ``intermediate`` defaults to the old FFN size scaled by ``width / old width``; the number of heads is
    ``width / head_dim``. ``method="fpi"`` is function preserving (exactly, up to rounding, for an integer
    width ratio with the cyclic map; approximately otherwise, see the module docstring); ``"aki"`` takes
    each layer's new out-units from the layer above (the top layer from itself). Extra depth repeats the
    widened layers cyclically (layer j <- layer j mod L); ``depth_init="zero"`` (GPT-2 only, not in the
    paper) also zeroes the new layers' residual output projections, so that pre-LN blocks start as the
    identity and depth growth is exactly function preserving too. The result is in eval mode if ``model`` was.
    """
    family = _family(model)
    cfg = model.config
    f_hidden, f_heads, f_inner, f_layers = family["fields"]
    h, n_heads, n_layers = getattr(cfg, f_hidden), getattr(cfg, f_heads), getattr(cfg, f_layers)
    ffn = getattr(cfg, f_inner) or 4 * h  # GPT-2's n_inner=None means 4h
    head_dim = h // n_heads
    width = width or h
    depth = depth or n_layers
    if width % head_dim:
        raise ValueError(f"width {width} must be a multiple of head_dim {head_dim}")
    if depth < n_layers:
        raise ValueError("depth must not shrink")
    if depth_init == "zero" and family is not _FAMILIES["gpt2"]:
        raise ValueError(
            "depth_init='zero' needs a pre-LayerNorm model (GPT-2); post-LN BERT is not identity"
        )
    intermediate = intermediate or ffn * width // h
    g = make_generator(generator, seed)
    maps = GrowthMaps(
        hidden=unit_map(h, width, mapping, g),
        heads=unit_map(n_heads, width // head_dim, mapping, g),
        ffn=unit_map(ffn, intermediate, mapping, g),
        head_dim=head_dim,
    )
    tied = _tied(model)
    old_sd = model.state_dict()
    param_names = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    seen: dict[int, str] = {}
    wide: dict[str, Tensor] = {}
    for name, t in old_sd.items():
        ptr = t.data_ptr()
        if ptr in seen and t.numel() > 0:  # a tied alias (lm_head.weight of a tied model)
            wide[name] = wide[seen[ptr]]
            continue
        seen[ptr] = name
        axes = _axes_for(name, family, tied)
        if axes is None:
            if name in param_names:
                raise NotImplementedError(f"grow(): no rule for parameter {name}")
            wide[name] = t.clone()  # buffers such as position_ids
            continue
        if len(axes) != t.dim():
            raise RuntimeError(f"rule for {name} expects {len(axes)} dims, got {tuple(t.shape)}")
        upper = None
        lk = _layer_key(name, family)
        if method == "aki" and lk is not None:
            idx, template = lk
            upper = old_sd.get(template.format(idx + 1)) if idx + 1 < n_layers else None
        elif method not in ("fpi", "aki"):
            raise ValueError(f"unknown method {method!r}")
        wide[name] = _expand(t.float() if t.is_floating_point() else t, axes, maps, upper).to(t.dtype)

    new_cfg = copy.deepcopy(cfg)
    setattr(new_cfg, f_hidden, width)
    setattr(new_cfg, f_heads, width // head_dim)
    setattr(new_cfg, f_inner, intermediate)
    setattr(new_cfg, f_layers, depth)
    new_sd: dict[str, Tensor] = {}
    for name, t in wide.items():
        lk = _layer_key(name, family)
        if lk is None:
            new_sd[name] = t
            continue
        idx, template = lk
        for j in range(idx, depth, n_layers):  # stacking: new layer j copies widened layer j mod L
            new_sd[template.format(j)] = t.clone() if j != idx else t
            if j >= n_layers and depth_init == "zero" and re.search(_ZERO_ON_NEW_LAYER, name):
                new_sd[template.format(j)].zero_()
    grown = type(model)(new_cfg)
    missing, unexpected = grown.load_state_dict(new_sd, strict=False)
    missing = [k for k in missing if not (tied and k in _tied_keys(grown))]
    if missing or unexpected:
        raise RuntimeError(f"grow(): missing {missing}, unexpected {unexpected}")
    grown.tie_weights()
    grown.train(model.training)
    logger.info(
        "grew %s: width %d -> %d, heads %d -> %d, ffn %d -> %d, depth %d -> %d (%s, %s map)",
        type(model).__name__,
        h,
        width,
        n_heads,
        width // head_dim,
        ffn,
        intermediate,
        n_layers,
        depth,
        method,
        mapping,
    )
    return grown


def _tied_keys(model: PreTrainedModel) -> set[str]:
    get_out = getattr(model, "get_output_embeddings", None)
    head = get_out() if callable(get_out) else None
    if head is None:
        return set()
    return {n for n, p in model.named_parameters(remove_duplicate=False) if p is head.weight}


def output_drift(small: nn.Module, grown: nn.Module, inputs: Sequence[Tensor] | Tensor) -> dict[str, float]:
    """Max abs and max relative (to the small model's max |logit|) difference of the two models' outputs."""
    batches = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    abs_err, scale = 0.0, 0.0
    with torch.no_grad():
        for ids in batches:
            a = _logits(small(ids))
            b = _logits(grown(ids))
            if b.shape != a.shape:  # a base model: compare the old hidden units
                b = b[..., : a.shape[-1]]
            abs_err = max(abs_err, float((a - b).abs().max()))
            scale = max(scale, float(a.abs().max()))
    return {"max_abs": abs_err, "max_rel": abs_err / max(scale, 1e-12)}


def _logits(out: object) -> Tensor:
    for key in ("logits", "prediction_logits", "last_hidden_state"):
        v = getattr(out, key, None)
        if isinstance(v, Tensor):
            return v
    raise TypeError("model output has no logits / last_hidden_state")
