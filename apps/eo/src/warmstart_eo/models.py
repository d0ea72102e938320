"""EO masked autoencoders and fine-tuning heads: plain MAE, Prithvi (3D space-time patches) and SatMAE++
(spectral band groups + multi-scale reconstruction), one ``ModelConfig`` → ``build_mae`` factory.

Seed papers: "Masked Autoencoders Are Scalable Vision Learners" (arXiv 2111.06377); "Foundation Models
for Generalist Geospatial Artificial Intelligence" (Prithvi, arXiv 2310.18660): ``Conv3d`` tubelet
embedding over (B, C, T, H, W), 3D sin-cos positions split 6/16 x, 6/16 y, 4/16 t, 75 % masking, MSE on
masked tokens with ``norm_pix_loss`` off by default; "Rethinking Transformers Pre-training for
Multi-Spectral Satellite Imagery" (SatMAE++, arXiv 2403.05419): one patch embedding per band group, 2D
sin-cos (D − D/4) concatenated with a 1D group encoding (D/4), independent masking over all group
tokens, decoder predictions upsampled by ConvTranspose → LayerNorm → LeakyReLU → residual conv → 3×3 conv
blocks and supervised at ×2, ×4 with L1; loss 0.6·MSE + 0.4·mean L1. ViT blocks are timm's ``Block``
(fused SDPA attention); patchify, the decoder's unshuffle and the masked MSE come from
``warmstart.objectives``. Written by hand: the tokenizers, positions and decoders (small, and no library
exposes them over (T·C, H, W) band-stacked input), and the training step's fast path (measured against
torchgeo's MAE task, see ``bench.throughput``): the plain patch embedding as one matmul whose patch
matrix also supplies the targets, the mask drawn as indices (the core's ``masking_indices``, the draw behind ``random_masking``), the
prediction head and loss on the removed tokens only, cached sin-cos tables. Left out: class tokens
(features are mean-pooled tokens), Prithvi-v2's time/location embeddings, SatMAE++'s 384 px crops (the
pyramid here starts from the chip size).
``ModelConfig.pos_order`` picks the half order of the 2D sin-cos ([row | col] ours, [col | row] MAE's
reference code, set when ``warmstart_eo.weights`` converts such a checkpoint). Bands are named:
:func:`adapt_encoder` narrows an encoder to the bands a dataset has (SatMAE++ drops empty groups and keeps
the others' group encoding). Models are saved in ``warmstart.hub``'s one format (``from_pretrained`` on
the MAE, the classifier and the segmenter); the older ``model.json`` layout still loads.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from warmstart.errors import CheckpointError, ConfigError
from warmstart.hub import HubMixin
from warmstart.objectives import mae_loss, masking_indices, patchify, restore_order

# size → (embed_dim, depth, heads, decoder_dim, decoder_depth, decoder_heads)
SIZES: dict[str, tuple[int, int, int, int, int, int]] = {
    "tiny": (64, 2, 4, 32, 1, 4),
    "small": (384, 12, 6, 256, 4, 8),
    "base": (768, 12, 12, 512, 8, 16),  # Prithvi-100M
    "large": (1024, 24, 16, 512, 8, 16),  # SatMAE++ ViT-L, Prithvi-v2 300M
}
# SatMAE++ groups (B2,B3,B4,B8), (B5,B6,B7,B8A), (B11,B12) by band name
SATMAE_GROUPS = (("B02", "B03", "B04", "B08"), ("B05", "B06", "B07", "B8A"), ("B11", "B12"))


@dataclass
class ModelConfig:
    family: Literal["mae", "prithvi", "satmaepp"] = "satmaepp"
    """mae: one 2D patch embedding over all bands; prithvi: 3D tubelets over time; satmaepp: band groups."""
    size: Literal["tiny", "small", "base", "large"] = "tiny"
    """Width/depth preset (base = Prithvi-100M, large = SatMAE++ ViT-L)."""
    img_size: int = 32
    """Encoder input size in pixels (the pretraining size the evaluation protocol resizes to)."""
    patch_size: int = 8
    """Spatial patch size."""
    tubelet: int = 1
    """Prithvi: time steps per token (1 = each frame tokenised, as Prithvi)."""
    mask_ratio: float = 0.75
    """Fraction of tokens removed."""
    norm_pix_loss: bool = False
    """Normalise each target patch by its mean/std (off by default, as in Prithvi)."""
    scales: int = 1
    """SatMAE++: upsampling levels supervised above the encoder size (0 = single scale)."""
    scale_weight: float = 0.4
    """SatMAE++: weight of the multi-scale L1 terms (the base MSE gets 1 − this)."""
    bands: list[str] = field(default_factory=list)
    """Input bands (filled from the data config)."""
    frames: int = 1
    """Input time steps (filled from the data config; > 1 for Prithvi)."""
    embed_dim: int | None = None
    """Override the preset width."""
    depth: int | None = None
    """Override the preset depth."""
    heads: int | None = None
    """Override the preset attention heads (a converted checkpoint sets it: heads are not in a state dict)."""
    decoder_dim: int | None = None
    """Override the preset decoder width."""
    decoder_depth: int | None = None
    """Override the preset decoder depth."""
    decoder_heads: int | None = None
    """Override the preset decoder heads."""
    group_ids: list[int] | None = None
    """SatMAE++: the group encoding index of each band group (default 0, 1, …); an encoder adapted to fewer
    bands keeps the ids of the groups it kept (:func:`adapt_encoder`)."""
    pos_order: Literal["yx", "xy"] = "yx"
    """2D sin-cos layout: yx = [row | column] halves (ours); xy = [column | row] (MAE / timm / SatMAE++
    reference code), set by ``warmstart-eo weights`` so converted encoders see the positions they learned."""

    @property
    def dims(self) -> tuple[int, int, int, int, int, int]:
        d, depth, heads, dd, ddepth, dheads = SIZES[self.size]
        return (
            self.embed_dim or d,
            self.depth or depth,
            self.heads or heads,
            self.decoder_dim or dd,
            self.decoder_depth or ddepth,
            self.decoder_heads or dheads,
        )

    @property
    def channels(self) -> int:
        return len(self.bands) * self.frames

    @property
    def input_size(self) -> int:
        """Size of the pretraining input (SatMAE++ reads a larger chip and downsamples it for the encoder)."""
        return self.img_size * (2**self.scales if self.family == "satmaepp" else 1)


# ---------------------------------------------------------------------------------------------------
# fixed sin-cos positions
# ---------------------------------------------------------------------------------------------------
def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """(L,) positions → (L, dim) [sin | cos] with frequencies 1/10000^(2i/dim)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    out = positions.double()[:, None] * omega[None]  # (L, dim/2)
    return torch.cat([out.sin(), out.cos()], dim=1).float()


def sincos_2d(dim: int, h: int, w: int, order: str = "yx") -> torch.Tensor:
    """(h·w, dim), row-major tokens: half the width encodes the row, half the column; ``order`` says which
    half comes first (``xy`` is the MAE reference code's ``get_2d_sincos_pos_embed``)."""
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    y, x = sincos_1d(dim // 2, rows.flatten()), sincos_1d(dim // 2, cols.flatten())
    return torch.cat([y, x] if order == "yx" else [x, y], dim=1)


def sincos_3d(dim: int, t: int, h: int, w: int) -> torch.Tensor:
    """(t·h·w, dim), t-major: Prithvi's split, 6/16 of the width for x and y each, 4/16 for time."""
    if dim % 16:
        raise ConfigError(f"model.embed_dim={dim}: Prithvi's 3D positions need a multiple of 16")
    d_xy, d_t = dim // 16 * 6, dim // 16 * 4
    tt, rows, cols = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    return torch.cat(
        [sincos_1d(d_xy, cols.flatten()), sincos_1d(d_xy, rows.flatten()), sincos_1d(d_t, tt.flatten())],
        dim=1,
    )


# ---------------------------------------------------------------------------------------------------
# tokenizers: (B, T·C, H, W) → tokens (B, N, D), positions (N, D), targets (B, N, P)
# ---------------------------------------------------------------------------------------------------
class PatchTokens(nn.Module):
    """Plain ViT patches over all channels (time steps stacked as channels).

    The ``Conv2d`` (kernel = stride = patch) is evaluated as one matmul over (c, p, q)-ordered patches — the
    same function and parameters (the conv weight flattened), ~1.5× faster than oneDNN's strided conv on
    CPU for 13-band 16-px patches (forward + weight gradient), which is what dominates a ViT-Tiny step.
    """

    pos_order = "yx"

    def __init__(self, channels: int, dim: int, patch: int) -> None:
        super().__init__()
        self.patch, self.channels = patch, channels
        self.proj = nn.Conv2d(channels, dim, patch, patch)

    def grid(self, h: int, w: int) -> tuple[int, ...]:
        return (h // self.patch, w // self.patch)

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) → (B, N, C·p·p), pixels in (c, p, q) order (the conv weight's flattening)."""
        b, c, h, w = x.shape
        p = self.patch
        patches = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)  # (B, h', w', C, p, p) view
        return patches.reshape(b, (h // p) * (w // p), c * p * p)  # the one copy

    def project(self, patches: torch.Tensor) -> torch.Tensor:
        weight = self.proj.weight.reshape(self.proj.out_channels, -1)  # (D, C·p·p), a view
        return F.linear(patches, weight, self.proj.bias)  # (B, N, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.patches(x))  # (B, N, D) = conv(x).flatten(2).transpose(1, 2)

    def positions(self, grid: tuple[int, ...], dim: int) -> torch.Tensor:
        return sincos_2d(dim, *grid, order=self.pos_order)

    def targets(self, x: torch.Tensor) -> torch.Tensor:
        return patchify(x, self.patch)  # (B, L, p·p·C)

    def targets_at(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """``targets(x)`` at token indices ``ids`` (B, M) only: (B, M, p·p·C), read straight from a view of
        ``x`` (one gather of the M patches instead of patchifying all of them and gathering again)."""
        b, c, h, w = x.shape
        p, gw = self.patch, w // self.patch
        view = x.reshape(b, c, h // p, p, gw, p).permute(0, 2, 4, 3, 5, 1)  # (B, h', w', p, p, C) view
        rows = torch.arange(b, device=x.device)[:, None]  # (B, 1)
        return view[rows, ids // gw, ids % gw].reshape(b, ids.shape[1], -1)  # (B, M, p·p·C)

    def target_sizes(self) -> list[int]:
        return [self.patch * self.patch * self.channels]

    def feature_map(self, tokens: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        b, _, d = tokens.shape
        return tokens.transpose(1, 2).reshape(b, d, *grid)  # (B, D, h, w)


class TubeletTokens(nn.Module):
    """Prithvi's 3D patch embedding: ``Conv3d`` over (B, C, T, H, W) with kernel (tubelet, p, p)."""

    def __init__(self, bands: int, frames: int, dim: int, patch: int, tubelet: int) -> None:
        super().__init__()
        if frames % tubelet:
            raise ConfigError(f"model.tubelet={tubelet} must divide the number of frames ({frames})")
        self.patch, self.tubelet, self.bands, self.frames = patch, tubelet, bands, frames
        self.proj = nn.Conv3d(bands, dim, (tubelet, patch, patch), (tubelet, patch, patch))

    def _cube(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        return x.reshape(b, self.frames, self.bands, h, w).transpose(1, 2)  # (B, C, T, H, W)

    def grid(self, h: int, w: int) -> tuple[int, ...]:
        return (self.frames // self.tubelet, h // self.patch, w // self.patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self._cube(x)).flatten(2).transpose(1, 2)  # (B, t·h·w, D)

    def positions(self, grid: tuple[int, ...], dim: int) -> torch.Tensor:
        return sincos_3d(dim, *grid)

    def targets(self, x: torch.Tensor) -> torch.Tensor:
        cube = self._cube(x)  # (B, C, T, H, W)
        b, c, t, h, w = cube.shape
        u, p = self.tubelet, self.patch
        cube = cube.reshape(b, c, t // u, u, h // p, p, w // p, p)
        cube = cube.permute(0, 2, 4, 6, 3, 5, 7, 1)  # (B, t', h', w', u, p, p, C)
        return cube.reshape(b, (t // u) * (h // p) * (w // p), u * p * p * c)

    def targets_at(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """``targets(x)`` at token indices ``ids`` (B, M): (B, M, u·p·p·C)."""
        full = self.targets(x)  # (B, N, P)
        return torch.gather(full, 1, ids[..., None].expand(-1, -1, full.shape[-1]))

    def target_sizes(self) -> list[int]:
        return [self.tubelet * self.patch * self.patch * self.bands]

    def feature_map(self, tokens: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        b, _, d = tokens.shape
        t, h, w = grid
        return tokens.reshape(b, t, h, w, d).mean(1).permute(0, 3, 1, 2)  # (B, D, h, w) time-averaged


class GroupTokens(nn.Module):
    """SatMAE++'s band groups: a patch embedding per group; position (D − D/4) ‖ group encoding (D/4)."""

    pos_order = "yx"

    def __init__(self, groups: list[list[int]], dim: int, patch: int, ids: list[int] | None = None) -> None:
        super().__init__()
        self.groups, self.patch = groups, patch
        self.ids = list(ids) if ids is not None else list(range(len(groups)))
        if len(self.ids) != len(groups):
            raise ConfigError(
                f"model.group_ids {self.ids} has {len(self.ids)} ids for {len(groups)} band groups"
            )
        self.proj = nn.ModuleList(nn.Conv2d(len(g), dim, patch, patch) for g in groups)

    def grid(self, h: int, w: int) -> tuple[int, ...]:
        return (len(self.groups), h // self.patch, w // self.patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = [
            proj(x[:, g]).flatten(2).transpose(1, 2) for proj, g in zip(self.proj, self.groups, strict=True)
        ]
        return torch.cat(tokens, dim=1)  # (B, G·h·w, D), group-major

    def positions(self, grid: tuple[int, ...], dim: int) -> torch.Tensor:
        g, h, w = grid
        d_group = dim // 4
        spatial = sincos_2d(dim - d_group, h, w, order=self.pos_order)  # (h·w, D − D/4)
        group = sincos_1d(d_group, torch.tensor(self.ids))  # (G, D/4) by group id
        return torch.cat([spatial.repeat(g, 1), group.repeat_interleave(h * w, dim=0)], dim=1)

    def targets(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [patchify(x[:, g], self.patch) for g in self.groups]  # G × (B, h·w, p·p·|g|)

    def target_sizes(self) -> list[int]:
        return [self.patch * self.patch * len(g) for g in self.groups]

    def feature_map(self, tokens: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        b, _, d = tokens.shape
        g, h, w = grid
        return tokens.reshape(b, g, h, w, d).mean(1).permute(0, 3, 1, 2)  # (B, D, h, w) group-averaged


def satmae_groups(bands: list[str]) -> list[list[int]]:
    """Indices of SatMAE++'s groups among ``bands``; bands outside them form one extra group."""
    return [g for _, g in satmae_named_groups(bands)]


def satmae_named_groups(bands: list[str]) -> list[tuple[int, list[int]]]:
    """(canonical group: 0-2 SatMAE++'s, 3 the rest, indices among ``bands``) for the groups present."""
    groups = [(k, [bands.index(b) for b in group if b in bands]) for k, group in enumerate(SATMAE_GROUPS)]
    groups = [(k, g) for k, g in groups if g]
    used = {i for _, g in groups for i in g}
    rest = [i for i in range(len(bands)) if i not in used]
    return groups + ([(len(SATMAE_GROUPS), rest)] if rest else [])


def _gather_tokens(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return torch.gather(x, 1, ids[..., None].expand(-1, -1, x.shape[-1]))  # (B, M, D)


# ---------------------------------------------------------------------------------------------------
# encoder + MAE
# ---------------------------------------------------------------------------------------------------
def _blocks(dim: int, depth: int, heads: int) -> nn.ModuleList:
    from timm.models.vision_transformer import Block

    return nn.ModuleList(Block(dim, heads, mlp_ratio=4.0, qkv_bias=True) for _ in range(depth))


class Encoder(nn.Module):
    """ViT encoder over one of the tokenizers; ``features`` (B, N, D), ``pooled`` (B, D), ``feature_map``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if not config.bands:
            raise ConfigError("model.bands is empty; it is filled from data.bands")
        dim, depth, heads, *_ = config.dims
        self.config = config
        if config.family == "mae":
            self.tokens: nn.Module = PatchTokens(config.channels, dim, config.patch_size)
        elif config.family == "prithvi":
            self.tokens = TubeletTokens(
                len(config.bands), config.frames, dim, config.patch_size, config.tubelet
            )
        else:
            groups = satmae_groups(config.bands)
            if config.frames > 1:  # repeat the groups per frame
                c = len(config.bands)
                groups = [[t * c + i for i in g] for t in range(config.frames) for g in groups]
            self.tokens = GroupTokens(groups, dim, config.patch_size, config.group_ids)
        self.tokens.pos_order = config.pos_order  # type: ignore[assignment]
        self.blocks = _blocks(dim, depth, heads)
        self.norm = nn.LayerNorm(dim)
        self.dim = dim
        self.apply(_init_weights)

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.config.channels:
            raise ConfigError(
                f"encoder expects (B, {self.config.channels}, H, W) = frames×bands {self.config.frames}×"
                f"{len(self.config.bands)}; got {tuple(x.shape)}"
            )
        p = self.config.patch_size
        if x.shape[-1] % p or x.shape[-2] % p:
            raise ConfigError(f"input {x.shape[-2]}×{x.shape[-1]} px is not divisible by patch_size={p}")

    def positions(self, grid: tuple[int, ...], dim: int, like: torch.Tensor) -> torch.Tensor:
        """The tokenizer's fixed sin-cos table (N, dim), built once per grid / width / layout / device."""
        key = (grid, dim, getattr(self.tokens, "pos_order", ""), like.device, like.dtype)
        cache: dict[Any, torch.Tensor] = self.__dict__.setdefault("_pos_cache", {})
        if key not in cache:
            cache[key] = self.tokens.positions(grid, dim).to(like.device, like.dtype)
        return cache[key]

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        tokens, grid, _ = self.embed_with_patches(x)
        return tokens, grid  # (B, N, D)

    def embed_with_patches(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[int, ...], torch.Tensor | None]:
        """``embed`` plus, for plain patches, the (B, N, C·p·p) patch matrix it projected (else None), so
        the MAE reads its targets from it instead of patchifying the image a second time."""
        self._check(x)
        grid = self.tokens.grid(*x.shape[-2:])
        patches = None
        if isinstance(self.tokens, PatchTokens):
            patches = self.tokens.patches(x)
            tokens = self.tokens.project(patches)  # (B, N, D)
        else:
            tokens = self.tokens(x)  # (B, N, D)
        return tokens + self.positions(grid, self.dim, tokens)[None], grid, patches

    def run(self, tokens: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        tokens, grid = self.embed(x)
        return self.run(tokens), grid  # (B, N, D)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)[0].mean(1)  # (B, D)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        tokens, grid = self.features(x)
        return self.tokens.feature_map(tokens, grid)  # (B, D, h, w)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d | nn.Conv3d):
        w = module.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))  # MAE: patch embedding as a linear layer


class UpsampleBlock(nn.Module):
    """SatMAE++ upsampling: ConvTranspose ×2 → LayerNorm → LeakyReLU → residual 3×3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(channels, channels, 2, 2)
        self.norm = nn.LayerNorm(channels)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.up(x)  # (B, F, 2H, 2W)
        x = F.leaky_relu(self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))
        return x + F.leaky_relu(self.conv(x))


class MaskedAutoencoder(nn.Module, HubMixin):
    """Encoder + MAE decoder; SatMAE++ adds the multi-scale upsampling branch.

    ``forward(x)`` with ``x`` (B, T·C, S, S), S = ``config.input_size``: returns a dict with ``loss``,
    ``mse`` (masked tokens at the encoder size), ``mask`` (B, N) with 1 = removed and, for SatMAE++ with
    scales, ``l1_x2``, ``l1_x4`` … and the per-group predictions ``pred``. The plain-patch and tubelet
    models decode every token but run the prediction head and the loss on the removed tokens only
    (``ids_masked``), the same loss for 3/4 of the head's and the loss's work.
    """

    warmstart_kind = "eo.mae"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        dim, _, _, ddim, ddepth, dheads = config.dims
        self.decoder_embed = nn.Linear(dim, ddim)
        self.mask_token = nn.Parameter(torch.zeros(ddim))
        self.decoder_blocks = _blocks(ddim, ddepth, dheads)
        self.decoder_norm = nn.LayerNorm(ddim)
        sizes = self.encoder.tokens.target_sizes()
        self.decoder_pred = nn.ModuleList(nn.Linear(ddim, s) for s in sizes)
        self.ddim = ddim
        if config.family == "satmaepp" and config.scales > 0:
            c, f = config.channels, max(32, config.channels * 2)
            self.up_in = nn.Conv2d(c, f, 1)
            self.up_blocks = nn.ModuleList(UpsampleBlock(f) for _ in range(config.scales))
            self.up_out = nn.ModuleList(nn.Conv2d(f, c, 3, padding=1) for _ in range(config.scales))
        for module in (self.decoder_embed, self.decoder_blocks, self.decoder_pred):
            module.apply(_init_weights)
        nn.init.normal_(self.mask_token, std=0.02)

    def _decode(self, latent: torch.Tensor, ids_restore: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        x = restore_order(self.decoder_embed(latent), ids_restore, self.mask_token)  # (B, N, Dd)
        x = x + self.encoder.positions(grid, self.ddim, x)[None]
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_norm(x)  # (B, N, Dd)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        cfg = self.config
        full = x
        if x.shape[-1] != cfg.img_size:
            x = F.interpolate(x, size=(cfg.img_size, cfg.img_size), mode="bilinear", align_corners=False)
        tokens, grid, patches = self.encoder.embed_with_patches(x)  # (B, N, D), (B, N, C·p·p) | None
        ids_keep, ids_masked, ids_restore, mask = masking_indices(
            tokens.shape[0], tokens.shape[1], cfg.mask_ratio, generator=generator, device=tokens.device
        )
        latent = self.encoder.run(_gather_tokens(tokens, ids_keep))  # (B, N_keep, D)
        decoded = self._decode(latent, ids_restore, grid)  # (B, N, Dd)
        out: dict[str, torch.Tensor] = {"mask": mask.to(tokens.dtype)}
        if isinstance(self.encoder.tokens, GroupTokens):  # band groups: tokens are group-major
            targets = self.encoder.tokens.targets(x)
            n = decoded.shape[1] // len(targets)
            preds = [head(decoded[:, i * n : (i + 1) * n]) for i, head in enumerate(self.decoder_pred)]
            masks = mask.view(mask.shape[0], len(targets), n)
            mse = sum(
                mae_loss(p, t, masks[:, i], norm_pix_loss=cfg.norm_pix_loss) * masks[:, i].sum()
                for i, (p, t) in enumerate(zip(preds, targets, strict=True))
            ) / mask.sum().clamp_min(1)
            out["pred"] = preds  # type: ignore[assignment]
        else:  # predict the removed tokens only: every sample removes the same number, so the mean over
            # (B, M, P) equals mae_loss's mean over masked patches of the per-patch MSE
            head, kept_decoded = self.decoder_pred[0], _gather_tokens(decoded, ids_masked)  # (B, M, Dd)
            if patches is not None:  # targets straight from the embedding's (c, p, q) patch matrix; the
                # head's rows are permuted (p, q, c) → (c, p, q) to match (MSE ignores the pixel order)
                p, c = cfg.patch_size, self.encoder.tokens.channels
                weight = head.weight.view(p, p, c, -1).permute(2, 0, 1, 3).reshape(head.out_features, -1)
                bias = head.bias.view(p, p, c).permute(2, 0, 1).reshape(-1)
                pred = F.linear(kept_decoded, weight, bias)  # (B, M, P) in (c, p, q) order
                target = _gather_tokens(patches, ids_masked).float()  # (B, M, P)
            else:
                pred = head(kept_decoded)  # (B, M, P)
                target = self.encoder.tokens.targets_at(x, ids_masked).float()  # (B, M, P)
            if cfg.norm_pix_loss:
                mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
                target = (target - mean) / (var + 1e-6) ** 0.5
            mse = F.mse_loss(pred.float(), target)
            out["ids_masked"] = ids_masked
        out["mse"] = mse
        loss = mse
        if cfg.family == "satmaepp" and cfg.scales > 0:
            image = self.reconstruct(preds, grid)  # (B, C, s, s)
            feat = self.up_in(image)
            l1s = []
            for k, (block, head) in enumerate(zip(self.up_blocks, self.up_out, strict=True), start=1):
                feat = block(feat)
                size = cfg.img_size * 2**k
                target = (
                    full if full.shape[-1] == size else F.interpolate(full, size=(size, size), mode="area")
                )
                l1 = F.l1_loss(head(feat).float(), target.float())
                out[f"l1_x{2**k}"] = l1
                l1s.append(l1)
            loss = (1 - cfg.scale_weight) * mse + cfg.scale_weight * torch.stack(l1s).mean()
        out["loss"] = loss
        return out

    def hub_config(self) -> dict[str, Any]:
        return asdict(self.config)

    @classmethod
    def from_hub_config(cls, config: dict[str, Any]) -> MaskedAutoencoder:
        return build_mae(ModelConfig(**config))

    def reconstruct(self, preds: list[torch.Tensor], grid: tuple[int, ...]) -> torch.Tensor:
        """SatMAE++: per-group patch predictions → the (B, C, s, s) image in the input's channel order."""
        _, h, w = grid
        p = self.config.patch_size
        groups = self.encoder.tokens.groups
        b = preds[0].shape[0]
        image = preds[0].new_zeros(b, self.config.channels, h * p, w * p)
        for pred, g in zip(preds, groups, strict=True):
            x = pred.reshape(b, h, w, p, p, len(g))
            image[:, g] = torch.einsum("nhwpqc->nchpwq", x).reshape(b, len(g), h * p, w * p)
        return image


@torch.no_grad()
def reconstruct_image(
    mae: MaskedAutoencoder, x: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What the MAE sees and rebuilds, for pictures: (input at the encoder size (B, T·C, s, s), the full
    reconstruction (B, T·C, s, s) in the input's channel order, the removed-pixel mask (B, s, s) of the last
    frame / first group, 1 = removed)."""
    from warmstart.objectives import unpatchify

    cfg = mae.config
    if x.shape[-1] != cfg.img_size:
        x = F.interpolate(x, size=(cfg.img_size, cfg.img_size), mode="bilinear", align_corners=False)
    tokens, grid, _ = mae.encoder.embed_with_patches(x)
    ids_keep, _, ids_restore, mask = masking_indices(
        tokens.shape[0], tokens.shape[1], cfg.mask_ratio, generator=generator, device=tokens.device
    )
    decoded = mae._decode(mae.encoder.run(_gather_tokens(tokens, ids_keep)), ids_restore, grid)
    tok, p, b = mae.encoder.tokens, cfg.patch_size, x.shape[0]
    if isinstance(tok, GroupTokens):
        n = decoded.shape[1] // len(tok.groups)
        preds = [head(decoded[:, i * n : (i + 1) * n]) for i, head in enumerate(mae.decoder_pred)]
        image, token_mask = mae.reconstruct(preds, grid), mask[:, :n]
        hw = grid[1:]
    elif isinstance(tok, PatchTokens):
        image = unpatchify(mae.decoder_pred[0](decoded), p, channels=tok.channels, grid=grid)
        token_mask, hw = mask, grid
    else:
        t, h, w = grid
        u, c = tok.tubelet, tok.bands
        pred = mae.decoder_pred[0](decoded).reshape(b, t, h, w, u, p, p, c)
        image = pred.permute(0, 1, 4, 7, 2, 5, 3, 6).reshape(b, t * u * c, h * p, w * p)
        token_mask, hw = mask.view(b, t, h * w)[:, -1], (h, w)
    pixels = token_mask.reshape(b, 1, *hw).float()
    pixels = F.interpolate(pixels, scale_factor=p, mode="nearest")[:, 0]  # (B, s, s)
    return x, image, pixels


def build_mae(config: ModelConfig) -> MaskedAutoencoder:
    """The factory: a :class:`MaskedAutoencoder` for ``config.family`` / ``config.size``."""
    dim = config.dims[0]
    if config.img_size % config.patch_size:
        raise ConfigError(
            f"model.img_size={config.img_size} is not divisible by model.patch_size={config.patch_size}"
        )
    if dim % 4:
        raise ConfigError(f"model.embed_dim={dim} must be a multiple of 4 (2D sin-cos positions)")
    if not 0.0 < config.mask_ratio < 1.0:
        raise ConfigError(f"model.mask_ratio={config.mask_ratio} must lie in (0, 1)")
    return MaskedAutoencoder(config)


# ---------------------------------------------------------------------------------------------------
# fine-tuning heads
# ---------------------------------------------------------------------------------------------------
CLASSIFIER_KIND = "eo.classifier"
SEGMENTER_KIND = "eo.segmenter"


class Classifier(nn.Module, HubMixin):
    """Scene classification (single- or multi-label): mean-pooled encoder tokens → LayerNorm → Linear."""

    warmstart_kind = CLASSIFIER_KIND

    def __init__(self, encoder: Encoder, classes: int, multilabel: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.classes, self.multilabel = classes, multilabel
        self.head = nn.Sequential(nn.LayerNorm(encoder.dim), nn.Linear(encoder.dim, classes))

    def hub_config(self) -> dict[str, Any]:
        return {
            "encoder": asdict(self.encoder.config),
            "classes": self.classes,
            "multilabel": self.multilabel,
        }

    @classmethod
    def from_hub_config(cls, config: dict[str, Any]) -> Classifier:
        return cls(
            Encoder(ModelConfig(**config["encoder"])), config["classes"], config.get("multilabel", False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder.pooled(x))  # (B, K)


class Segmenter(nn.Module, HubMixin):
    """Semantic segmentation: a simple feature pyramid from the single-scale ViT map (ViTDet-style ×4, ×2,
    ×1, ×½), FPN lateral + top-down fusion, all levels upsampled and fused (UPerNet-lite, no PPM)."""

    warmstart_kind = SEGMENTER_KIND

    def __init__(self, encoder: Encoder, classes: int, width: int = 64) -> None:
        super().__init__()
        d = encoder.dim
        self.encoder = encoder
        self.classes, self.width = classes, width
        self.pyramid = nn.ModuleList(
            [
                nn.Sequential(
                    nn.ConvTranspose2d(d, d // 2, 2, 2), nn.GELU(), nn.ConvTranspose2d(d // 2, d // 4, 2, 2)
                ),
                nn.ConvTranspose2d(d, d // 2, 2, 2),
                nn.Identity(),
                nn.MaxPool2d(2),
            ]
        )
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in (d // 4, d // 2, d, d))
        self.fuse = nn.Sequential(nn.Conv2d(4 * width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.classify = nn.Conv2d(width, classes, 1)

    def hub_config(self) -> dict[str, Any]:
        return {"encoder": asdict(self.encoder.config), "classes": self.classes, "width": self.width}

    @classmethod
    def from_hub_config(cls, config: dict[str, Any]) -> Segmenter:
        return cls(Encoder(ModelConfig(**config["encoder"])), config["classes"], config.get("width", 64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fmap = self.encoder.feature_map(x)  # (B, D, h, w)
        levels = [lat(level(fmap)) for level, lat in zip(self.pyramid, self.lateral, strict=True)]
        for i in range(len(levels) - 2, -1, -1):  # top-down
            levels[i] = levels[i] + F.interpolate(levels[i + 1], size=levels[i].shape[-2:], mode="nearest")
        size = levels[0].shape[-2:]
        fused = self.fuse(torch.cat([F.interpolate(lv, size=size, mode="bilinear") for lv in levels], dim=1))
        logits = self.classify(fused)  # (B, K, 4h, 4w)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)  # (B, K, H, W)


# ---------------------------------------------------------------------------------------------------
# bands by name: an encoder over a subset of its bands
# ---------------------------------------------------------------------------------------------------
def adapt_encoder(encoder: Encoder, bands: list[str]) -> Encoder:
    """The same encoder over ``bands`` (a subset of its own, any order): the band embedding follows the
    names. SatMAE++ drops the groups with no band left and keeps the group encoding of the rest (as the
    paper allows); a group that lost some bands and the plain / Prithvi patch embeddings keep the columns of
    the bands that remain. Everything past the embedding is shared unchanged."""
    old = encoder.config
    if list(bands) == list(old.bands):
        return encoder
    missing = [b for b in bands if b not in old.bands]
    if missing or not bands:
        raise ConfigError(
            f"the encoder was pretrained on {','.join(old.bands)}; it has no {missing or 'bands'}"
        )
    cfg = ModelConfig(**{**asdict(old), "bands": list(bands)})
    state = {k: v for k, v in encoder.state_dict().items() if not k.startswith("tokens.proj")}
    c_old, frames = len(old.bands), old.frames
    if old.family == "satmaepp":
        old_named, new_named = satmae_named_groups(old.bands), satmae_named_groups(list(bands))
        keys = [k for k, _ in old_named]
        old_ids = encoder.tokens.ids
        cfg.group_ids = [old_ids[t * len(keys) + keys.index(k)] for t in range(frames) for k, _ in new_named]
        new = Encoder(cfg)
        for t in range(frames):
            for n, (key, idx) in enumerate(new_named):
                j = keys.index(key)
                old_members = [old.bands[i] for i in old_named[j][1]]
                cols = [old_members.index(bands[i]) for i in idx]
                src, dst = encoder.tokens.proj[t * len(keys) + j], new.tokens.proj[t * len(new_named) + n]
                state[f"tokens.proj.{t * len(new_named) + n}.weight"] = src.weight[:, cols].detach().clone()
                state[f"tokens.proj.{t * len(new_named) + n}.bias"] = src.bias.detach().clone()
                assert dst.weight.shape == state[f"tokens.proj.{t * len(new_named) + n}.weight"].shape
    else:
        new = Encoder(cfg)
        per_frame = [old.bands.index(b) for b in bands]
        cols = (
            per_frame
            if old.family == "prithvi"
            else [t * c_old + i for t in range(frames) for i in per_frame]
        )
        state["tokens.proj.weight"] = encoder.tokens.proj.weight[:, cols].detach().clone()
        state["tokens.proj.bias"] = encoder.tokens.proj.bias.detach().clone()
    new.load_state_dict(state)
    return new


# ---------------------------------------------------------------------------------------------------
# model I/O: warmstart.hub's one format (config.json + model.safetensors + README.md); old runs still load
# ---------------------------------------------------------------------------------------------------
MAE_KIND = "eo.mae"
PAPERS = {
    "mae": "Masked Autoencoders Are Scalable Vision Learners (arXiv 2111.06377)",
    "prithvi": "Foundation Models for Generalist Geospatial Artificial Intelligence (Prithvi, arXiv 2310.18660)",
    "satmaepp": "Rethinking Transformers Pre-training for Multi-Spectral Satellite Imagery (SatMAE++, arXiv 2403.05419)",
}


def _card(config: ModelConfig, title: str, **kw: Any) -> Any:
    from warmstart.hub import ModelCard

    return ModelCard(
        title=title, paper=PAPERS[config.family], tags=["earth-observation", config.family], **kw
    )


def save_model(
    model: nn.Module, directory: Path, *, card: Any = None, extra: dict[str, Any] | None = None
) -> Path:
    """Write a :class:`MaskedAutoencoder`, :class:`Classifier` or :class:`Segmenter` in the hub format."""
    from warmstart.hub import save_model as hub_save

    cfg = model.hub_config()  # type: ignore[operator]
    enc = model.config if isinstance(model, MaskedAutoencoder) else model.encoder.config  # type: ignore[union-attr]
    card = card or _card(enc, f"warmstart-eo {model.warmstart_kind}: {enc.family} over {','.join(enc.bands)}")  # type: ignore[union-attr]
    return hub_save(model, directory, kind=model.warmstart_kind, config=cfg, card=card, extra=extra)  # type: ignore[union-attr]


def _load_old_layout(directory: Path) -> MaskedAutoencoder:
    """Run folders written before the hub format: ``model.safetensors`` + ``model.json`` (a ModelConfig)."""
    from safetensors.torch import load_file

    try:
        config = ModelConfig(**json.loads((directory / "model.json").read_text()))
        model = build_mae(config)
        model.load_state_dict(load_file(str(directory / "model.safetensors")))
    except (TypeError, RuntimeError, json.JSONDecodeError, OSError) as exc:
        raise CheckpointError(
            f"{directory}: weights do not match model.json ({str(exc).splitlines()[0]})"
        ) from exc
    return model


def load_model(directory: Path | str, kind: str | tuple[str, ...] = MAE_KIND) -> Any:
    """A saved eo model from a folder or a hub id: the hub format, or the old ``model.json`` layout."""
    from warmstart.hub import load_model as hub_load
    from warmstart.hub import resolve

    path = Path(directory)
    if path.is_dir() and not (path / "config.json").is_file() and (path / "model.json").is_file():
        if kind != MAE_KIND and MAE_KIND not in kind:
            raise CheckpointError(f"{path} holds an old-layout MAE, not a {kind} model")
        return _load_old_layout(path)
    if path.is_dir() and not (path / "config.json").is_file():
        raise CheckpointError(
            f"{path}: no config.json + model.safetensors; pass the run directory of `warmstart-eo pretrain`"
        )
    folder = resolve(directory)
    builders = {MAE_KIND: MaskedAutoencoder, CLASSIFIER_KIND: Classifier, SEGMENTER_KIND: Segmenter}
    from warmstart.hub import read_config

    meta = read_config(folder, kind)
    model, _ = hub_load(folder, builders[meta["warmstart_kind"]].from_hub_config, kind=kind)
    return model


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def describe(config: ModelConfig) -> dict[str, Any]:
    dim, depth, heads, *_ = config.dims
    return {"family": config.family, "size": config.size, "dim": dim, "depth": depth, "heads": heads}
