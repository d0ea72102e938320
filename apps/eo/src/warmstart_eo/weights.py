"""Load and convert pretrained encoder weights into our :class:`~warmstart_eo.models.MaskedAutoencoder`:
ours (``model.safetensors`` + ``model.json``), torchgeo's pretrained weight enums (timm ViTs), and the
reference checkpoints of Prithvi and SatMAE++, from a local path or a Hugging Face hub id.

Seed papers: "Foundation Models for Generalist Geospatial Artificial Intelligence" (Prithvi, arXiv
2310.18660; key layout of ``Prithvi_EO_V1_100M.pt`` and, with ``encoder.`` / ``decoder.`` prefixes, of
Prithvi-EO-2.0's ``PrithviMAE``); "Rethinking Transformers Pre-training for Multi-Spectral Satellite
Imagery" (SatMAE++, arXiv 2403.05419; ``MaskedAutoencoderGroupChannelViT`` of the reference code).

Key mapping (reference → ours; ``blocks.*`` are timm ``Block`` s on both sides, so their names carry over):

=================================  =============================================  ===========================
reference                          ours                                           note
=================================  =============================================  ===========================
``patch_embed.proj.*``             ``encoder.tokens.proj.*``                      Conv2d (timm), Conv3d (Prithvi)
``patch_embed.{g}.proj.*``         ``encoder.tokens.proj.{g}.*``                  SatMAE++ band groups
``blocks.{i}.*`` / ``norm.*``      ``encoder.blocks.{i}.*`` / ``encoder.norm.*``
``decoder_embed.*``                ``decoder_embed.*``
``mask_token`` (1, 1, Dd)          ``mask_token`` (Dd,)
``decoder_blocks.{i}.*``           ``decoder_blocks.{i}.*``
``decoder_norm.*``                 ``decoder_norm.*``
``decoder_pred.*``                 ``decoder_pred.0.*``                           same (u, p, q, C) patch order
``decoder_pred.{g}.*``             ``decoder_pred.{g}.*``                         rows (c, p, q) → (p, q, c)
``pos_embed``, ``channel_embed``   —  (fixed sin-cos, recomputed)                 checked; sets ``pos_order``
``cls_token``                      —                                              dropped: no class token here
=================================  =============================================  ===========================

Prithvi-EO-2.0 keys lose their ``encoder.`` / ``decoder.`` prefixes first; ``module.`` / ``model.``
prefixes and ``{"model": …}`` / ``{"state_dict": …}`` wrappers are removed. Attention heads are not in a
state dict: they come from the standard ViT table (192→3, 384→6, 768→12, 1024/1280→16) unless given.
Left out (reported, never silently): learned position embeddings (ours are fixed sin-cos; a checkpoint
whose positions match neither layout is flagged), Prithvi-EO-2.0's time / location encoders, SatMAE++'s
upsampling convolutions (a different block design than ours; they stay at initialisation and the
converted model uses ``scales=0``), timm heads and ``fc_norm``.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from warmstart.errors import CheckpointError, ConfigError
from warmstart_eo.data import BANDS
from warmstart_eo.models import (
    MaskedAutoencoder,
    ModelConfig,
    build_mae,
    load_model,
    satmae_groups,
    sincos_1d,
    sincos_2d,
    sincos_3d,
)

log = logging.getLogger(__name__)

Layout = Literal["auto", "ours", "timm", "prithvi", "satmaepp"]
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
VIT_HEADS = {192: 3, 384: 6, 512: 16, 768: 12, 1024: 16, 1280: 16}
"""Attention heads of the standard ViT widths (512: the MAE / Prithvi / SatMAE++ decoder)."""
PRITHVI_BANDS = ["B02", "B03", "B04", "B8A", "B11", "B12"]
"""HLS bands of Prithvi (blue, green, red, narrow NIR, SWIR 1, SWIR 2) as Sentinel-2 names."""
SATMAE_BANDS = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]
"""The 10 bands of the SatMAE / SatMAE++ fMoW-Sentinel models, in the reference's channel order."""
_DROPPED = re.compile(
    r"^(cls_token|pos_embed|decoder_pos_embed|channel_embed|decoder_channel_embed|head\..*|fc_norm\..*)$"
)


@dataclass
class Conversion:
    """A converted model and what happened to every tensor."""

    model: MaskedAutoencoder
    layout: str
    source: str
    loaded: list[str] = field(default_factory=list)
    """Our keys filled from the checkpoint."""
    missing: list[str] = field(default_factory=list)
    """Our keys left at initialisation."""
    unused: list[str] = field(default_factory=list)
    """Checkpoint keys not mapped (besides the fixed positions and the class token)."""
    notes: list[str] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "layout": self.layout,
            "loaded": len(self.loaded),
            "missing": self.missing,
            "unused": self.unused,
            "notes": self.notes,
        }


# ---------------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------------
def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A flat ``{name: tensor}`` from a ``.safetensors`` / ``.pt`` / ``.pth`` / ``.bin`` / ``.ckpt`` file."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad checkpoint file
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({str(exc).splitlines()[0][:120]})"
        ) from exc
    for key in ("model", "state_dict", "model_state_dict", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: no state dict of tensors inside (keys: {list(state)[:5]})")
    return dict(state)


def _strip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        while key.startswith(("module.", "model.")):
            key = key.split(".", 1)[1]
        out[key] = value
    return out


def detect_layout(state: dict[str, torch.Tensor]) -> str:
    """``ours`` | ``prithvi`` (v1 or v2) | ``satmaepp`` | ``timm`` from the key names and shapes."""
    if any(k.startswith("encoder.tokens.") for k in state):
        return "ours"
    if "patch_embed.0.proj.weight" in state:
        return "satmaepp"
    w = state.get("patch_embed.proj.weight", state.get("encoder.patch_embed.proj.weight"))
    if w is None:
        raise CheckpointError(
            f"no patch embedding among the checkpoint's keys ({', '.join(list(state)[:4])}, …); "
            "expected a ViT / Prithvi / SatMAE++ / warmstart-eo state dict"
        )
    return "prithvi" if w.dim() == 5 else "timm"


def _prithvi_v1_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Prithvi-EO-2.0's ``encoder.`` / ``decoder.`` prefixes removed (its decoder keys are already
    ``decoder.decoder_*``, its encoder keys the v1 names)."""
    return {k.removeprefix("encoder.").removeprefix("decoder."): v for k, v in state.items()}


# ---------------------------------------------------------------------------------------------------
# configuration inferred from the tensors
# ---------------------------------------------------------------------------------------------------
def _count(state: dict[str, torch.Tensor], prefix: str) -> int:
    idx = {int(m.group(1)) for k in state if (m := re.match(rf"^{prefix}\.(\d+)\.", k))}
    return max(idx) + 1 if idx else 0


def _heads(dim: int, given: int | None) -> int:
    heads = given or VIT_HEADS.get(dim) or max(1, dim // 64)
    if dim % heads:
        raise ConfigError(f"--heads {heads} does not divide the checkpoint's width {dim}")
    return heads


def _band_names(bands: list[str] | None, default: list[str] | None, channels: int, what: str) -> list[str]:
    names = list(bands) if bands else (default or (list(BANDS) if channels == len(BANDS) else []))
    names = [re.sub(r"^B(\d)$", r"B0\1", b.upper()) for b in names]  # torchgeo's 'B1', 'B8a' → 'B01', 'B8A'
    if len(names) != channels:
        raise ConfigError(
            f"{what} has {channels} input channels but {len(names)} band names; pass --bands with {channels}"
        )
    return names


def infer_config(
    state: dict[str, torch.Tensor],
    layout: str,
    *,
    bands: list[str] | None = None,
    frames: int | None = None,
    img_size: int | None = None,
    heads: int | None = None,
    decoder_heads: int | None = None,
) -> ModelConfig:
    """Our :class:`ModelConfig` for a reference state dict (in v1 / timm / SatMAE++ key names)."""
    dim = state["blocks.0.attn.qkv.weight"].shape[1]
    depth = _count(state, "blocks")
    pos = state.get("pos_embed")
    n_pos = None if pos is None else pos.shape[1] - int("cls_token" in state)  # patch tokens
    if layout == "satmaepp":
        family, w = "satmaepp", state["patch_embed.0.proj.weight"]
        channels = sum(
            state[f"patch_embed.{g}.proj.weight"].shape[1] for g in range(_count(state, "patch_embed"))
        )
        names = _band_names(bands or SATMAE_BANDS, None, len(bands or SATMAE_BANDS), "")
        if channels != len(SATMAE_BANDS) or not set(SATMAE_BANDS) <= set(names):
            raise ConfigError(
                f"a SatMAE++ checkpoint over {channels} channels converts onto its 10 bands {SATMAE_BANDS} "
                f"(--bands may add more, which form an extra group); got --bands {names}"
            )
        frames = 1
    elif layout == "prithvi":
        family, w = "prithvi", state["patch_embed.proj.weight"]  # (D, C, tubelet, p, p)
        names = _band_names(bands, PRITHVI_BANDS, w.shape[1], "the Prithvi checkpoint")
    else:
        family, w = "mae", state["patch_embed.proj.weight"]  # (D, C, p, p)
        names = _band_names(bands, None, w.shape[1], "the ViT checkpoint")
        frames = 1
    patch = w.shape[-1]
    tubelet = w.shape[2] if layout == "prithvi" else 1
    if layout == "prithvi":
        if frames is None and n_pos is not None:  # tokens = t·h·w; the paper's 224 px unless given
            side = (img_size or 224) // patch
            frames = n_pos // (side * side) * tubelet if n_pos % (side * side) == 0 else None
        frames = frames or tubelet
        if img_size is None and n_pos is not None:
            side2 = n_pos // (frames // tubelet)
            img_size = math.isqrt(side2) * patch if math.isqrt(side2) ** 2 == side2 else None
    elif img_size is None and n_pos is not None and math.isqrt(n_pos) ** 2 == n_pos:
        img_size = math.isqrt(n_pos) * patch
    img_size = img_size or 224
    if "decoder_embed.weight" in state:
        ddim, ddepth = state["decoder_embed.weight"].shape[0], _count(state, "decoder_blocks")
    else:  # encoder-only checkpoint: a small decoder at initialisation (only MAE continuation needs it)
        ddim, ddepth = 16 * max(2, dim // 32), 1
    return ModelConfig(
        family=family,
        size="base",
        img_size=img_size,
        patch_size=patch,
        tubelet=tubelet,
        scales=0,
        bands=names,
        frames=frames,
        embed_dim=dim,
        depth=depth,
        heads=_heads(dim, heads),
        decoder_dim=ddim,
        decoder_depth=ddepth,
        decoder_heads=_heads(ddim, decoder_heads),
    )  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------
# mapping
# ---------------------------------------------------------------------------------------------------
def _group_rows(weight: torch.Tensor, channels: int, patch: int) -> torch.Tensor:
    """SatMAE++'s per-group prediction rows (c, p, q) → ours (p, q, c) (weight (R, Dd) or bias (R,))."""
    tail = weight.shape[1:]
    w = weight.reshape(channels, patch, patch, *tail)
    return w.permute(1, 2, 0, *range(3, w.dim())).reshape(channels * patch * patch, *tail)


def map_keys(state: dict[str, torch.Tensor], layout: str, config: ModelConfig) -> dict[str, torch.Tensor]:
    """Reference names → ours, shapes adapted; keys without a counterpart are left out."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("patch_embed."):
            out["encoder.tokens.proj." + key.removeprefix("patch_embed.").replace("proj.", "", 1)] = value
        elif key.startswith(("blocks.", "norm.")):
            out["encoder." + key] = value
        elif key.startswith(("decoder_embed.", "decoder_blocks.", "decoder_norm.")):
            out[key] = value
        elif key == "mask_token":
            out[key] = value.reshape(-1)
        elif key.startswith("decoder_pred."):
            if layout == "satmaepp":
                channels = value.shape[0] // config.patch_size**2
                out[key] = _group_rows(value, channels, config.patch_size)
            else:
                out["decoder_pred.0." + key.removeprefix("decoder_pred.")] = value
    return out


def _closest_order(
    reference: torch.Tensor, candidates: dict[str, torch.Tensor], tol: float = 1e-3
) -> tuple[str | None, float]:
    errors = {
        name: float((reference - c).abs().max())
        for name, c in candidates.items()
        if c.shape == reference.shape
    }
    if not errors:
        return None, float("inf")
    name = min(errors, key=errors.__getitem__)
    return (name if errors[name] < tol else None), errors[name]


def check_positions(
    state: dict[str, torch.Tensor], layout: str, config: ModelConfig
) -> tuple[str, list[str]]:
    """Compare the checkpoint's fixed positions with ours: the 2D order to use, and notes on mismatches."""
    pos, notes = state.get("pos_embed"), []
    if pos is None:
        return "yx", ["checkpoint has no pos_embed: fixed sin-cos positions (order yx) assumed"]
    pos = pos.reshape(-1, pos.shape[-1]).float()  # (1 + N, D') or (N, D')
    pos = pos[1:] if "cls_token" in state else pos  # without the class token's row
    dim, p = config.dims[0], config.patch_size
    if layout == "prithvi":
        grid = (pos.shape[0] // (config.img_size // p) ** 2, config.img_size // p, config.img_size // p)
        order, err = _closest_order(pos, {"yx": sincos_3d(dim, *grid)})
        if order is None:
            notes.append(
                f"pos_embed differs from Prithvi's 3D sin-cos (max |Δ| {err:.3g}): learned? replaced"
            )
        return "yx", notes
    side = math.isqrt(pos.shape[0])
    width = pos.shape[1]
    order, err = _closest_order(pos, {o: sincos_2d(width, side, side, order=o) for o in ("yx", "xy")})
    if layout == "satmaepp":
        groups = state.get("channel_embed")
        if width != dim - dim // 4 or groups is None or groups.shape[-1] != dim // 4:
            notes.append(
                f"channel_embed width ≠ D/4 = {dim // 4}: group positions differ from the checkpoint's"
            )
        elif float((groups[0] - sincos_1d(dim // 4, torch.arange(groups.shape[1]))).abs().max()) > 1e-3:
            notes.append("channel_embed is not the 1D sin-cos of the group index: replaced")
    if order is None:
        notes.append(
            f"pos_embed matches neither sin-cos layout (max |Δ| {err:.3g}; learned?): replaced by fixed"
        )
        return "yx", notes
    return order, notes


def convert_state_dict(
    state: dict[str, torch.Tensor],
    layout: Layout = "auto",
    *,
    source: str = "<state dict>",
    bands: list[str] | None = None,
    frames: int | None = None,
    img_size: int | None = None,
    heads: int | None = None,
    decoder_heads: int | None = None,
) -> Conversion:
    """Build our MAE for a reference state dict and load every tensor that has a counterpart."""
    state = _strip(state)
    found = detect_layout(state)
    if layout != "auto" and layout != found:
        raise CheckpointError(f"{source}: --layout {layout} but the keys look like a {found} checkpoint")
    layout = found  # type: ignore[assignment]
    if layout == "ours":
        raise CheckpointError(
            f"{source}: a warmstart-eo state dict; pass its run directory (model.json beside)"
        )
    if layout == "prithvi":
        state = _prithvi_v1_names(state)
    config = infer_config(
        state, layout, bands=bands, frames=frames, img_size=img_size, heads=heads, decoder_heads=decoder_heads
    )
    if layout == "satmaepp":
        ours = satmae_groups(config.bands)
        sizes = [state[f"patch_embed.{g}.proj.weight"].shape[1] for g in range(_count(state, "patch_embed"))]
        if [len(g) for g in ours[: len(sizes)]] != sizes:
            raise CheckpointError(
                f"{source}: band groups of sizes {sizes} do not match SatMAE++'s groups over --bands "
                f"{config.bands} ({[len(g) for g in ours]})"
            )
    config.pos_order, notes = check_positions(state, layout, config)  # type: ignore[assignment]
    try:
        model = build_mae(config)
    except ConfigError as exc:
        raise CheckpointError(f"{source}: cannot build the matching model ({exc})") from exc
    mapped = map_keys(state, layout, config)
    own = model.state_dict()
    for key, value in mapped.items():
        if key in own and own[key].shape != value.shape:
            raise CheckpointError(
                f"{source}: {key} has shape {tuple(value.shape)} in the checkpoint, {tuple(own[key].shape)} here"
            )
    usable = {k: v for k, v in mapped.items() if k in own}
    model.load_state_dict(usable, strict=False)
    conv = Conversion(model=model, layout=layout, source=source, loaded=sorted(usable), notes=notes)
    conv.missing = sorted(k for k in own if k not in usable)
    sources = set(_reverse_names(usable, layout))
    conv.unused = sorted(k for k in state if k not in sources and not _DROPPED.match(k))
    conv.notes.append("cls_token dropped: features are mean-pooled patch tokens")
    if any(k.startswith(("temporal_embed", "location_embed")) for k in state):
        conv.notes.append("Prithvi-EO-2.0 time/location encoders not converted (ours has none)")
    if any(k.startswith(("proj_up", "up_block")) for k in state):
        conv.notes.append("SatMAE++ upsampling convolutions not converted (different block design); scales=0")
    if any(k.startswith("encoder.tokens.proj.") for k in conv.missing):
        conv.notes.append("band group(s) outside the checkpoint's keep their initial patch embedding")
    log.info("converted %s (%s): %d tensors, %d left at init", source, layout, len(usable), len(conv.missing))
    return conv


def _reverse_names(ours: dict[str, torch.Tensor], layout: str) -> list[str]:
    """Reference key of each of our loaded keys (for the 'unused' list)."""
    out = []
    for key in ours:
        if key.startswith("encoder.tokens.proj."):
            rest = key.removeprefix("encoder.tokens.proj.")
            out.append(
                f"patch_embed.{rest.split('.', 1)[0]}.proj.{rest.split('.', 1)[1]}"
                if layout == "satmaepp"
                else f"patch_embed.proj.{rest}"
            )
        elif key.startswith("encoder."):
            out.append(key.removeprefix("encoder."))
        elif key.startswith("decoder_pred.0.") and layout != "satmaepp":
            out.append("decoder_pred." + key.removeprefix("decoder_pred.0."))
        else:
            out.append(key)
    return out


# ---------------------------------------------------------------------------------------------------
# sources: a local path, a torchgeo weights enum, a hub id
# ---------------------------------------------------------------------------------------------------
def _checkpoint_in(folder: Path, filename: str | None) -> Path:
    if filename:
        path = folder / filename
        if not path.is_file():
            raise CheckpointError(f"{path}: no such file (--filename)")
        return path
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES)
    if len(files) != 1:
        names = ", ".join(p.name for p in files[:6]) or "none"
        raise CheckpointError(f"{folder}: {len(files)} checkpoint files ({names}); pass --filename")
    return files[0]


def hub_checkpoint(repo_id: str, filename: str | None = None) -> Path:
    """Download one checkpoint file of a Hugging Face hub repository (``--filename`` or the only one)."""
    try:
        from huggingface_hub import hf_hub_download, list_repo_files

        if filename is None:
            files = [f for f in list_repo_files(repo_id) if f.endswith(CHECKPOINT_SUFFIXES)]
            if len(files) != 1:
                raise CheckpointError(
                    f"{repo_id}: {len(files)} checkpoint files ({', '.join(files[:6])}); pass --filename"
                )
            filename = files[0]
        return Path(hf_hub_download(repo_id, filename))
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - network / auth / missing repo: one line for the user
        raise CheckpointError(
            f"{repo_id}: no such local path, and the hub download failed ({type(exc).__name__}); "
            "download the checkpoint and pass its path"
        ) from exc


def torchgeo_weights(name: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """State dict and metadata of a torchgeo weights enum, e.g. ``ViTSmall16_Weights.SENTINEL2_ALL_MAE``."""
    from torchgeo.models import get_weight

    try:
        weights = get_weight(name)
    except ValueError as exc:
        raise CheckpointError(
            f"{name}: not a torchgeo weights enum (see torchgeo.models.list_models)"
        ) from exc
    if not str(weights.meta.get("model", "")).startswith("vit"):
        raise CheckpointError(f"{name}: a {weights.meta.get('model')} checkpoint; only ViT weights convert")
    try:
        state = weights.get_state_dict(progress=False, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - download / hash failures
        raise CheckpointError(
            f"{name}: could not fetch {weights.url} ({type(exc).__name__}); download it and pass the file path"
        ) from exc
    return dict(state), dict(weights.meta)


def convert(
    source: str,
    layout: Layout = "auto",
    *,
    filename: str | None = None,
    bands: list[str] | None = None,
    frames: int | None = None,
    img_size: int | None = None,
    heads: int | None = None,
    decoder_heads: int | None = None,
) -> Conversion:
    """Our MAE from a local file / folder, a torchgeo weights enum name, or a hub id (``owner/name``)."""
    kw: dict[str, Any] = dict(frames=frames, img_size=img_size, heads=heads, decoder_heads=decoder_heads)
    path = Path(source)
    ours = ("model.json", "config.json")
    if path.is_file() and path.name == "model.safetensors" and any((path.parent / f).is_file() for f in ours):
        path = path.parent
    if path.is_dir() and any((path / f).is_file() for f in ours):
        model = load_model(path)
        return Conversion(model=model, layout="ours", source=source, loaded=sorted(model.state_dict()))
    if path.exists():
        path = _checkpoint_in(path, filename) if path.is_dir() else path
        return convert_state_dict(read_state_dict(path), layout, source=str(path), bands=bands, **kw)
    if re.fullmatch(r"\w+_Weights\.\w+", source):
        state, meta = torchgeo_weights(source)
        return convert_state_dict(state, "timm", source=source, bands=bands or meta.get("bands"), **kw)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", source) and not source.startswith((".", "/")):
        return convert_state_dict(
            read_state_dict(hub_checkpoint(source, filename)), layout, source=source, bands=bands, **kw
        )
    raise CheckpointError(
        f"{source}: not a file or folder, a torchgeo weights name (ViTSmall16_Weights.SENTINEL2_ALL_MAE) "
        "or a hub id (ibm-nasa-geospatial/Prithvi-EO-1.0-100M)"
    )
