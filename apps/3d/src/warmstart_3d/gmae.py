"""Gaussian-MAE (and Point-MAE): masked autoencoding of grouped splat attributes, then classification.

Seed papers: "ShapeSplat: A Large-scale Dataset of Gaussian Splats and Their Self-Supervised Pretraining"
(arXiv 2408.10906; Gaussian-MAE, code qimaqi/ShapeSplat-Gaussian_MAE) on "Masked Autoencoders for Point Cloud
Self-supervised Learning" (Point-MAE, arXiv 2203.06604). Splats become tokens by farthest-point sampling of
centres, kNN groups and a mini-PointNet over the selected attributes (xyz relative to the centre, opacity,
scale, rotation, colour); a ratio of groups is masked (core ``random_masking``), a transformer encodes the
visible tokens, a light decoder predicts every masked group's members: Chamfer-L2 on xyz, and L1 (or L2) on
the other attributes matched through the Chamfer nearest neighbour. ``attributes=("xyz",)`` is Point-MAE.
Scales enter as ``10·exp(log-scale)`` to be O(1). Written by hand (FPS, kNN, Chamfer are a few lines; no
pointnet2/knn_cuda extensions). Part segmentation (Point-MAE's head: several encoder layers, feature
propagation, per-point MLP) is :mod:`warmstart_3d.partseg`.

ShapeSplat's two Gaussian-specific mechanisms (reference ``models/transformer.py``: ``Group``, ``fps_gs``,
``SoftEncoder``; ``models/neural_nn.py``: ``N3AggregationBase``):

- **Gaussian feature grouping** (``group_attributes``): FPS and kNN run in a normalised feature space
  (:func:`grouping_space`: the chosen attributes, each brought to O(1) per object as the reference's
  ``pc_norm_gs`` does) instead of xyz alone, so a group gathers Gaussians that are alike, not only near; the
  positional embedding then sees the centre's grouping features too. ``["xyz"]`` is Point-MAE's grouping.
- **Splats pooling layer** (``pooling="splats"``): each group takes 1.25·K candidates; the first MLP embeds
  them, their max is the query, and K soft nearest neighbours of the query in embedding space (softmax over
  negative distances, one learned temperature per slot) are aggregated before the second MLP and max-pool
  (:class:`SplatsPooling`). The reference initialises every slot's temperature alike, so the K slots are
  identical and stay so (the shared MLP and max-pool are symmetric); here the temperatures start spread
  (0.01 … 10 × the group's mean distance), from a near-hard nearest neighbour to a near-uniform mean.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from warmstart.errors import CheckpointError, ConfigError, DataError
from warmstart.hub import HubMixin
from warmstart.objectives import random_masking, restore_order

SPLATS_CANDIDATES = 1.25
"""Candidates per group of the splats pooling layer, as a multiple of ``group_size`` (the reference's 1.25)."""

ATTRIBUTE_SLICES = {
    "xyz": slice(0, 3),
    "opacity": slice(3, 4),
    "scale": slice(4, 7),
    "rotation": slice(7, 11),
    "colour": slice(11, 14),
}


@dataclass
class GMAEConfig:
    attributes: list[str] = field(default_factory=lambda: ["xyz", "opacity", "scale", "rotation", "colour"])
    """Attributes embedded and reconstructed; ["xyz"] is Point-MAE."""
    n_groups: int = 32
    """Group centres (FPS); the paper uses 64."""
    group_size: int = 16
    """Members per group (kNN); the paper uses 32."""
    dim: int = 96
    """Token width (paper: 384)."""
    depth: int = 3
    """Encoder blocks (paper: 12)."""
    heads: int = 4
    """Attention heads (paper: 6)."""
    decoder_depth: int = 1
    """Decoder blocks (paper: 4)."""
    mask_ratio: float = 0.6
    """Fraction of groups masked."""
    attribute_loss: str = "l1"
    """Loss on the non-xyz attributes: l1 or l2."""
    embed_width: int = 256
    """Width of the group encoder's first stage (Point-MAE: 256, then 512); smaller for CPU budgets."""
    group_attributes: list[str] = field(default_factory=lambda: ["xyz"])
    """Gaussian feature grouping: the attributes (normalised, :func:`grouping_space`) that FPS, kNN and the
    positional embedding use; ["xyz"] groups by position alone (Point-MAE)."""
    pooling: str = "max"
    """Group embedding: "max" (Point-MAE's mini-PointNet) or "splats" (ShapeSplat's splats pooling layer)."""


def farthest_point_sample(points: torch.Tensor, n: int) -> torch.Tensor:
    """(B, N, 3) → (B, n) indices, starting from point 0 (deterministic)."""
    b, count, _ = points.shape
    idx = torch.zeros(b, n, dtype=torch.long, device=points.device)
    dist = torch.full((b, count), float("inf"), device=points.device)
    far = torch.zeros(b, dtype=torch.long, device=points.device)
    rows = torch.arange(b, device=points.device)
    for i in range(n):
        idx[:, i] = far
        d = (points - points[rows, far].unsqueeze(1)).pow(2).sum(-1)
        dist = torch.minimum(dist, d)
        far = dist.argmax(-1)
    return idx


def grouping_space(features: torch.Tensor, attributes: list[str]) -> torch.Tensor:
    """(B, N, 14) Gaussian features → (B, N, F) the normalised feature space of Gaussian feature grouping.

    Per object, as ShapeSplat's ``pc_norm_gs``: xyz centred and divided by the largest radius, opacity
    (0..1) to -1..1, scales centred and divided by their largest norm, quaternions as they are (unit, w ≥ 0),
    colour (0..1, the DC term) as 2·clip(rgb - ½, ±½)/√3. Each attribute is then O(1) whatever the object's
    size, so none dominates the distances. Order follows ``ATTRIBUTE_SLICES``.
    """
    unknown = [a for a in attributes if a not in ATTRIBUTE_SLICES]
    if unknown or "xyz" not in attributes:
        raise ConfigError(
            f"--model.group_attributes: need xyz plus any of {', '.join(ATTRIBUTE_SLICES)}; got {attributes}"
        )
    parts = []
    for name in (a for a in ATTRIBUTE_SLICES if a in attributes):
        x = features[..., ATTRIBUTE_SLICES[name]]
        if name in ("xyz", "scale"):
            x = x - x.mean(dim=1, keepdim=True)
            x = x / x.norm(dim=-1).amax(dim=1).clamp_min(1e-8)[:, None, None]
        elif name == "opacity":
            x = 2 * x - 1
        elif name == "colour":
            x = 2 * (x - 0.5).clamp(-0.5, 0.5) / math.sqrt(3)
        parts.append(x)
    return torch.cat(parts, dim=-1)


def group_features(
    features: torch.Tensor, n_groups: int, group_size: int, space: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FPS centres and kNN groups in a grouping space.

    ``features`` (B, N, F) with xyz first; ``space`` (B, N, S) where FPS and kNN measure distances (default:
    xyz). Returns the centres' xyz (B, G, 3), their grouping features (B, G, S) and the groups (B, G, K, F),
    members ordered nearest first, xyz relative to the centre.
    """
    b, n, _ = features.shape
    if n < max(n_groups, group_size):
        raise DataError(
            f"cloud of {n} points is smaller than n_groups={n_groups} / group_size={group_size}; lower them"
        )
    space = features[..., :3] if space is None else space
    centre_idx = farthest_point_sample(space, n_groups)  # (B, G)
    centre_space = torch.gather(space, 1, centre_idx.unsqueeze(-1).expand(-1, -1, space.shape[-1]))
    centres = torch.gather(features[..., :3], 1, centre_idx.unsqueeze(-1).expand(-1, -1, 3))
    knn = torch.cdist(centre_space, space).topk(group_size, largest=False).indices  # (B, G, K), sorted
    groups = torch.gather(
        features.unsqueeze(1).expand(-1, n_groups, -1, -1),
        2,
        knn.unsqueeze(-1).expand(-1, -1, -1, features.shape[-1]),
    ).clone()
    groups[..., :3] = groups[..., :3] - centres.unsqueeze(2)
    return centres, centre_space, groups


def group(features: torch.Tensor, n_groups: int, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N, F) with xyz first → centres (B, G, 3) and groups (B, G, K, F), xyz relative to the centre."""
    centres, _, groups = group_features(features, n_groups, group_size)
    return centres, groups


def chamfer(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Chamfer-L2 of (M, K, 3) sets (mean of both directions) and, per predicted point, the nearest target index."""
    d = torch.cdist(pred, target).pow(2)  # (M, K, K)
    nearest = d.argmin(-1)
    return d.min(-1).values.mean() + d.min(-2).values.mean(), nearest


class MiniPointNet(nn.Module):
    """Point-MAE's group encoder: shared MLP, max-pool, concat the global feature, MLP, max-pool."""

    def __init__(self, in_dim: int, dim: int, width: int = 256) -> None:
        super().__init__()
        half, double = width // 2, 2 * width
        self.first = nn.Sequential(
            nn.Linear(in_dim, half), nn.LayerNorm(half), nn.GELU(), nn.Linear(half, width)
        )
        self.second = nn.Sequential(
            nn.Linear(double, double), nn.LayerNorm(double), nn.GELU(), nn.Linear(double, dim)
        )

    def forward(self, groups: torch.Tensor) -> torch.Tensor:  # (B, G, K, F) → (B, G, D)
        f = self.first(groups)  # (B, G, K, 256)
        f = torch.cat([f, f.max(dim=2, keepdim=True).values.expand_as(f)], dim=-1)
        return self.second(f).max(dim=2).values


class SplatsPooling(nn.Module):
    """ShapeSplat's splats pooling layer (its ``SoftEncoder`` with ``N3AggregationBase``): soft kNN in
    embedding space over a group's candidates, then Point-MAE's second stage.

    (B, G, O, F) candidates → first MLP (B, G, O, E); the query is their max over O; for each of ``k`` slots
    the weights are softmax(-‖e_o - q‖ / (t_k · mean_o ‖e_o - q‖)) over the candidates, with a learned
    temperature t_k per slot, and the slot is the weighted mean of the embeddings (B, G, k, E); the slots,
    each with their max, go through the second MLP and are max-pooled (B, G, D).
    """

    def __init__(self, in_dim: int, dim: int, k: int, width: int = 256) -> None:
        super().__init__()
        half, double = width // 2, 2 * width
        self.k = k
        self.first = nn.Sequential(
            nn.Linear(in_dim, half), nn.LayerNorm(half), nn.GELU(), nn.Linear(half, width)
        )
        self.log_temperature = nn.Parameter(torch.linspace(math.log(0.01), math.log(10.0), k))
        self.second = nn.Sequential(
            nn.Linear(double, double), nn.LayerNorm(double), nn.GELU(), nn.Linear(double, dim)
        )

    def weights(self, embedded: torch.Tensor) -> torch.Tensor:
        """(B, G, O, E) embeddings → (B, G, k, O) soft-neighbour weights of the k slots (rows sum to 1)."""
        query = embedded.max(dim=2, keepdim=True).values  # (B, G, 1, E)
        dist = (embedded - query).norm(dim=-1)  # (B, G, O)
        scale = dist.mean(dim=-1, keepdim=True).detach().clamp_min(1e-6)
        temperature = self.log_temperature.exp()[:, None]  # (k, 1)
        return torch.softmax(-(dist / scale).unsqueeze(2) / temperature, dim=-1)

    def forward(self, groups: torch.Tensor) -> torch.Tensor:  # (B, G, O, F) → (B, G, D)
        e = self.first(groups)  # (B, G, O, E)
        z = self.weights(e) @ e  # (B, G, k, E)
        z = torch.cat([z, z.max(dim=2, keepdim=True).values.expand_as(z)], dim=-1)
        return self.second(z).max(dim=2).values


def _blocks(dim: int, heads: int, depth: int) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(
        dim, heads, 4 * dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
    )
    return nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)


def select(features: torch.Tensor, attributes: list[str]) -> torch.Tensor:
    """(…, 14) Gaussian features → the chosen attributes, xyz always first."""
    unknown = [a for a in attributes if a not in ATTRIBUTE_SLICES]
    if unknown or "xyz" not in attributes:
        raise ConfigError(
            f"--model.attributes: need xyz plus any of {', '.join(ATTRIBUTE_SLICES)}; got {attributes}"
        )
    parts = [features[..., ATTRIBUTE_SLICES[a]] for a in ATTRIBUTE_SLICES if a in attributes]
    return torch.cat(parts, dim=-1)


class GaussianMAE(nn.Module, HubMixin):
    """Tokeniser + encoder (+ decoder for pretraining, + head for classification).

    Saved in the core's one model format (``save_pretrained`` / ``GaussianMAE.from_pretrained(path or hub id)``).
    """

    warmstart_kind = "3d.gmae"

    def hub_config(self) -> dict:
        return {"model": asdict(self.config), "n_classes": self.n_classes}

    @classmethod
    def from_hub_config(cls, config: dict) -> GaussianMAE:
        return cls(GMAEConfig(**config["model"]), int(config["n_classes"]))

    def __init__(self, config: GMAEConfig, n_classes: int = 0) -> None:
        super().__init__()
        self.config = config
        self.n_classes = n_classes
        self.in_dim = sum(ATTRIBUTE_SLICES[a].stop - ATTRIBUTE_SLICES[a].start for a in config.attributes)
        d = config.dim
        if config.pooling not in ("max", "splats"):
            raise ConfigError(f"--model.pooling: max or splats; got {config.pooling!r}")
        self.group_dim = sum(
            ATTRIBUTE_SLICES[a].stop - ATTRIBUTE_SLICES[a].start for a in config.group_attributes
        )
        grouping_space(torch.zeros(1, 1, 14), config.group_attributes)  # checks the names
        if config.pooling == "splats":
            self.embed: nn.Module = SplatsPooling(self.in_dim, d, config.group_size, config.embed_width)
        else:
            self.embed = MiniPointNet(self.in_dim, d, config.embed_width)
        self.pos = nn.Sequential(nn.Linear(self.group_dim, 128), nn.GELU(), nn.Linear(128, d))
        self.encoder = _blocks(d, config.heads, config.depth)
        self.norm = nn.LayerNorm(d)
        self.mask_token = nn.Parameter(torch.zeros(d))
        self.decoder = _blocks(d, config.heads, config.decoder_depth)
        self.reconstruct = nn.Linear(d, config.group_size * self.in_dim)
        self.head = (
            nn.Sequential(nn.Linear(2 * d, d), nn.GELU(), nn.Linear(d, n_classes)) if n_classes else None
        )

    def grouped(
        self, features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Selected attributes (B, N, F), centres' xyz (B, G, 3), their positional input (B, G, S: raw xyz,
        then the normalised other grouping attributes) and the groups (B, G, K or 1.25·K candidates, F)."""
        cfg = self.config
        x = select(features, cfg.attributes)
        size = cfg.group_size
        if cfg.pooling == "splats":
            size = min(features.shape[1], math.ceil(SPLATS_CANDIDATES * size))
        if list(cfg.group_attributes) == ["xyz"]:
            centres, groups = group(x, cfg.n_groups, size)
            return x, centres, centres, groups
        space = grouping_space(features, cfg.group_attributes)
        centres, centre_space, groups = group_features(x, cfg.n_groups, size, space)
        return x, centres, torch.cat([centres, centre_space[..., 3:]], dim=-1), groups

    def tokens(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Positional input (B, G, S), groups (B, G, K', F) and tokens (B, G, D)."""
        _, _, pos_in, groups = self.grouped(features)
        return pos_in, groups, self.embed(groups)

    def pretrain_loss(self, features: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        centres, groups, tokens = self.tokens(features)
        groups = groups[:, :, : self.config.group_size]  # the K nearest candidates are the target
        pos = self.pos(centres)  # (B, G, D)
        both = torch.cat([tokens, pos], dim=-1)
        kept, mask, ids_restore = random_masking(both, self.config.mask_ratio, generator=generator)
        d = tokens.shape[-1]
        encoded = self.norm(self.encoder(kept[..., :d] + kept[..., d:]))  # (B, G_keep, D)
        full = restore_order(encoded, ids_restore, self.mask_token) + pos  # (B, G, D)
        decoded = self.decoder(full)
        masked = mask.bool()
        pred = self.reconstruct(decoded[masked]).reshape(-1, self.config.group_size, self.in_dim)  # (M, K, F)
        target = groups[masked]  # (M, K, F)
        loss, nearest = chamfer(pred[..., :3], target[..., :3])
        if self.in_dim > 3:
            matched = torch.gather(target[..., 3:], 1, nearest.unsqueeze(-1).expand(-1, -1, self.in_dim - 3))
            diff = pred[..., 3:] - matched
            loss = loss + (diff.abs().mean() if self.config.attribute_loss == "l1" else diff.pow(2).mean())
        return loss

    def encode_layers(
        self, features: torch.Tensor, fetch: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Selected attributes (B, N, F), centres (B, G, 3) and the normed outputs (B, G, D) of the encoder
        blocks ``fetch`` (0-based), all tokens visible (Point-MAE's segmentation backbone)."""
        x, centres, pos_in, groups = self.grouped(features)
        h = self.embed(groups) + self.pos(pos_in)
        outs = []
        for i, layer in enumerate(self.encoder.layers):
            h = layer(h)
            if i in fetch:
                outs.append(self.norm(h))
        return x, centres, outs

    def features(self, features: torch.Tensor) -> torch.Tensor:
        centres, _, tokens = self.tokens(features)
        encoded = self.norm(self.encoder(tokens + self.pos(centres)))
        return torch.cat([encoded.max(dim=1).values, encoded.mean(dim=1)], dim=-1)  # (B, 2D)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.head is None:
            raise ConfigError("this model has no classification head (n_classes=0)")
        return self.head(self.features(features))


def _pick(count: int, n_points: int, generator: torch.Generator) -> torch.Tensor:
    pick = torch.randperm(count, generator=generator)[:n_points]
    if len(pick) < n_points:
        pick = torch.cat([pick, pick[torch.randint(len(pick), (n_points - len(pick),), generator=generator)]])
    return pick


def gaussian_features(g) -> torch.Tensor:
    """(N, 14) model features of one :class:`~warmstart_3d.splats.Gaussians`: scales ×10, quaternion sign fixed."""
    f = g.features()
    f[:, 4:7] = f[:, 4:7] * 10.0
    f[:, 7:11] = torch.where(f[:, 7:8] < 0, -f[:, 7:11], f[:, 7:11])  # q and -q are the same rotation
    return f


def splat_features(splats: list, n_points: int, generator: torch.Generator) -> torch.Tensor:
    """(B, n_points, 14) features of a list of Gaussians (random subset / repeat to ``n_points``)."""
    rows = []
    for g in splats:
        f = gaussian_features(g)
        rows.append(f[_pick(len(f), n_points, generator)])
    return torch.stack(rows)


def splat_features_parts(
    splats: list, parts: list[torch.Tensor], n_points: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`splat_features` (same random stream) plus the part labels (B, n_points) of the picked Gaussians."""
    rows, labels = [], []
    for g, y in zip(splats, parts, strict=True):
        f = gaussian_features(g)
        pick = _pick(len(f), n_points, generator)
        rows.append(f[pick])
        labels.append(y[pick])
    return torch.stack(rows), torch.stack(labels)


class PretrainTask:
    """Engine task: masked reconstruction on batches of (B, N, 14) features."""

    def __init__(self, model: GaussianMAE, seed: int = 0) -> None:
        self.model = model
        self.generator = torch.Generator().manual_seed(seed)

    def loss(self, batch):
        features = batch[0] if isinstance(batch, list | tuple) else batch
        loss = self.model.pretrain_loss(features, self.generator)
        return loss, {"samples": features.shape[0]}


class ClassifyTask:
    """Engine task: cross-entropy fine-tuning; ``evaluate`` gives held-out accuracy."""

    def __init__(self, model: GaussianMAE, test: tuple[torch.Tensor, torch.Tensor]) -> None:
        self.model = model
        self.test = test

    def loss(self, batch):
        features, labels = batch
        logits = self.model(features)
        acc = (logits.argmax(-1) == labels).float().mean()
        return F.cross_entropy(logits, labels), {"samples": features.shape[0], "acc": acc}

    def evaluate(self) -> dict[str, float]:
        features, labels = self.test
        device = next(self.model.parameters()).device
        logits = self.model(features.to(device))
        return {"accuracy": float((logits.argmax(-1).cpu() == labels).float().mean())}


def load_gmae(folder: str | Path) -> GaussianMAE:
    """A Gaussian-MAE from a saved folder (config.json + model.safetensors) or an older ``gmae`` run directory
    (``model.safetensors`` beside the run's ``config.yaml``, before models carried their config)."""
    folder = Path(folder)
    if (folder / "config.json").is_file() or not folder.exists():
        return GaussianMAE.from_pretrained(folder)
    weights, run_config = folder / "model.safetensors", folder / "config.yaml"
    if not (weights.is_file() and run_config.is_file()):
        raise CheckpointError(
            f"{folder}: neither config.json nor an old run's model.safetensors + config.yaml"
        )
    import yaml
    from safetensors.torch import load_file

    cfg = yaml.safe_load(run_config.read_text()) or {}
    state = load_file(str(weights))
    n_classes = int(state["head.2.weight"].shape[0]) if "head.2.weight" in state else 0
    model = GaussianMAE(GMAEConfig(**(cfg.get("model") or {})), n_classes)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{weights}: does not fit the model in {run_config} ({str(exc).splitlines()[0]})"
        ) from None
    return model.eval()


def quat_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product of (..., 4) wxyz quaternions: the rotation ``b`` followed by ``a``."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        -1,
    )


def augment(
    features: torch.Tensor,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.8, 1.25),
    shift: float = 0.1,
    rotate: bool = True,
) -> torch.Tensor:
    """Random similarity per object of (B, N, 14) Gaussian features, applied to every attribute it moves.

    A rotation about the up axis turns the centres *and* the quaternions (q' = q_R ⊗ q), an isotropic scale
    multiplies the centres *and* the Gaussians' scales, a shift moves the centres; opacity and colour stay.
    So the augmented splat is the same object, transformed (covariance s² R Σ Rᵀ). Point-MAE's
    scale-and-translate, made consistent for splats.
    """
    b = features.shape[0]
    out = features.clone()
    s = torch.empty(b, 1, 1).uniform_(*scale, generator=generator)
    if rotate:
        theta = torch.rand(b, generator=generator) * 2 * torch.pi
        c, z = torch.cos(theta), torch.sin(theta)
        zero, one = torch.zeros_like(c), torch.ones_like(c)
        rot = torch.stack([c, -z, zero, z, c, zero, zero, zero, one], -1).view(b, 1, 3, 3)
        out[..., :3] = (rot @ features[..., :3, None])[..., 0]
        q = torch.stack([torch.cos(theta / 2), zero, zero, torch.sin(theta / 2)], -1)  # (B, 4)
        quats = quat_multiply(q[:, None].expand(-1, features.shape[1], -1), features[..., 7:11])
        out[..., 7:11] = torch.where(quats[..., :1] < 0, -quats, quats)
    out[..., :3] = out[..., :3] * s + (torch.rand(b, 1, 3, generator=generator) * 2 - 1) * shift
    out[..., 4:7] = features[..., 4:7] * s
    return out
