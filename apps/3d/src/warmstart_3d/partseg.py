"""Part segmentation on a (Gaussian-)MAE backbone, ShapeNetPart-style metrics.

Seed papers: "Masked Autoencoders for Point Cloud Self-supervised Learning" (Point-MAE, arXiv 2203.06604;
its ``segmentation/models/pt.py``) and "ShapeSplat … and Their Self-Supervised Pretraining" (Gaussian-MAE,
arXiv 2408.10906), which fine-tunes the same head on splats. The head follows Point-MAE: the outputs of three
encoder blocks (Point-MAE: blocks 4, 8, 12 of 12; here evenly spaced over ``depth``), each layer-normed, are
concatenated per group; their max and mean over the groups plus an embedding of the object's class form a
global feature; group features are propagated to every point by inverse-distance weighting of the 3 nearest
group centres (PointNet++'s ``three_interpolate``), concatenated with the point's own attributes, passed
through a per-point MLP, joined with the global feature and classified by a per-point MLP (dropout 0.5).
Widths scale with the token width (Point-MAE: 1024/512/256 for a 384-wide encoder). Labels are global part
indices (each class owns a contiguous range, as ShapeNetPart's 50 parts over 16 categories); training is
cross-entropy over all parts; prediction is restricted to the parts of the object's class.

Metrics (ShapeNetPart convention, as in Point-MAE's ``main.py`` / PointNet++'s test script): per shape, the
IoU of every part of its class (a part absent from both prediction and label counts as IoU 1), averaged;
instance mIoU = mean over shapes, class mIoU = mean over classes of their shapes' mean; plus overall point
accuracy. Written by hand: the interpolation and the head (a few lines; no pointnet2 extension).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from warmstart.errors import DataError
from warmstart.hub import HubMixin
from warmstart_3d.gmae import GaussianMAE, GMAEConfig

log = logging.getLogger(__name__)


def interpolate(points: torch.Tensor, centres: torch.Tensor, feats: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Inverse-distance interpolation of group features to points: (B, N, 3), (B, G, 3), (B, G, C) → (B, N, C).

    Weights 1/(d² + 1e-8) over the ``k`` nearest centres, normalised (PointNet++'s feature propagation); a
    point on a centre gets that centre's feature (up to 1e-8 relative).
    """
    k = min(k, centres.shape[1])
    d2 = torch.cdist(points, centres).pow(2)  # (B, N, G)
    dist, idx = d2.topk(k, dim=-1, largest=False)  # (B, N, k)
    w = 1.0 / (dist + 1e-8)
    w = w / w.sum(-1, keepdim=True)
    b, n, _ = idx.shape
    picked = torch.gather(
        feats.unsqueeze(1).expand(b, n, -1, -1), 2, idx.unsqueeze(-1).expand(-1, -1, -1, feats.shape[-1])
    )
    return (picked * w.unsqueeze(-1)).sum(2)  # (B, N, C)


def fetch_layers(depth: int) -> list[int]:
    """0-based encoder blocks whose outputs feed the head: Point-MAE's [3, 7, 11] for 12 blocks."""
    return sorted({max(0, round((i + 1) * depth / 3) - 1) for i in range(3)})


class _PointBN(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, C)
        return self.bn(x.flatten(0, 1)).view_as(x)


class PartSegModel(nn.Module, HubMixin):
    """A :class:`GaussianMAE` backbone (all tokens visible) + Point-MAE's segmentation head (saved in the core's
    model format: ``PartSegModel.from_pretrained(path or hub id)``)."""

    warmstart_kind = "3d.partseg"

    def hub_config(self) -> dict:
        return {"model": asdict(self.backbone.config), "n_classes": self.n_classes, "n_parts": self.n_parts}

    @classmethod
    def from_hub_config(cls, config: dict) -> PartSegModel:
        return cls.from_config(
            GMAEConfig(**config["model"]), int(config["n_classes"]), int(config["n_parts"])
        )

    def __init__(self, backbone: GaussianMAE, n_classes: int, n_parts: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.backbone = backbone
        self.backbone.head = None
        self.n_classes, self.n_parts = n_classes, n_parts
        d = backbone.config.dim
        self.fetch = fetch_layers(backbone.config.depth)
        c = d * len(self.fetch)
        self.label = nn.Sequential(nn.Linear(n_classes, 64), nn.LayerNorm(64), nn.LeakyReLU(0.2))
        self.propagate = nn.Sequential(nn.Linear(c + backbone.in_dim, 4 * d), _PointBN(4 * d), nn.ReLU())
        self.classify = nn.Sequential(
            nn.Linear(4 * d + 2 * c + 64, 2 * d),
            _PointBN(2 * d),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(2 * d, d),
            _PointBN(d),
            nn.ReLU(),
            nn.Linear(d, n_parts),
        )

    @classmethod
    def from_config(cls, config: GMAEConfig, n_classes: int, n_parts: int) -> PartSegModel:
        return cls(GaussianMAE(config, 0), n_classes, n_parts)

    @classmethod
    def from_backbone(cls, backbone: GaussianMAE, n_classes: int, n_parts: int) -> PartSegModel:
        """Fine-tune a copy of a pretrained backbone (the decoder stays unused)."""
        return cls(copy.deepcopy(backbone), n_classes, n_parts)

    def forward(self, features: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """(B, N, 14) Gaussian features, (B,) class labels → part logits (B, N, n_parts)."""
        x, centres, layers = self.backbone.encode_layers(features, self.fetch)
        tokens = torch.cat(layers, dim=-1)  # (B, G, c)
        glob = torch.cat([tokens.max(1).values, tokens.mean(1)], dim=-1)  # (B, 2c)
        label = self.label(F.one_hot(classes, self.n_classes).float())  # (B, 64)
        per_point = interpolate(x[..., :3], centres, tokens)  # (B, N, c)
        per_point = self.propagate(torch.cat([per_point, x], dim=-1))  # (B, N, 4d)
        n = per_point.shape[1]
        both = torch.cat([per_point, torch.cat([glob, label], -1).unsqueeze(1).expand(-1, n, -1)], dim=-1)
        return self.classify(both)


@dataclass
class PartLayout:
    """Global part indices: class ``c`` owns parts ``offsets[c] .. offsets[c] + counts[c] - 1``."""

    classes: list[str]
    names: list[list[str]]

    @property
    def counts(self) -> list[int]:
        return [len(n) for n in self.names]

    @property
    def offsets(self) -> list[int]:
        out, total = [], 0
        for c in self.counts:
            out.append(total)
            total += c
        return out

    @property
    def n_parts(self) -> int:
        return sum(self.counts)

    @classmethod
    def from_names(cls, classes: list[str], part_names: dict[str, list[str]]) -> PartLayout:
        missing = [c for c in classes if not part_names.get(c)]
        if missing:
            raise DataError(f"parts.json: no part names for class {', '.join(missing)}")
        return cls(list(classes), [list(part_names[c]) for c in classes])

    def to_global(self, local: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """(B, N) per-class part labels + (B,) classes → (B, N) global part indices."""
        return local + torch.tensor(self.offsets, device=local.device)[classes].unsqueeze(-1)

    def mask(self, classes: torch.Tensor) -> torch.Tensor:
        """(B, n_parts) True for the parts of each object's class."""
        part_class = torch.repeat_interleave(torch.arange(len(self.classes)), torch.tensor(self.counts))
        return part_class.to(classes.device).unsqueeze(0) == classes.unsqueeze(-1)

    def predict(self, logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """(B, N, n_parts) → (B, N) global part index, restricted to the object's class."""
        return logits.masked_fill(~self.mask(classes).unsqueeze(1), float("-inf")).argmax(-1)


def part_metrics(
    pred: torch.Tensor, target: torch.Tensor, classes: torch.Tensor, layout: PartLayout
) -> dict[str, float]:
    """Overall point accuracy, instance mIoU and class mIoU of (M, N) global part predictions/labels.

    Vectorised over shapes and parts: per-shape intersections and unions (M, P) from one-hot counts, the
    parts outside a shape's class masked out, an empty union counting as IoU 1 (ShapeNetPart's rule).
    """
    n_parts = layout.n_parts
    p = F.one_hot(pred, n_parts).bool()  # (M, N, P)
    t = F.one_hot(target, n_parts).bool()
    inter, union = (p & t).sum(1).float(), (p | t).sum(1).float()  # (M, P)
    iou = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
    own = layout.mask(classes).float()  # (M, P) the parts of each shape's class
    shape_iou = (iou * own).sum(1) / own.sum(1)  # (M,)
    present = classes.unique()
    per_class = torch.stack([shape_iou[classes == c].mean() for c in present])
    return {
        "accuracy": float((pred == target).float().mean()),
        "instance_miou": float(shape_iou.mean()),
        "class_miou": float(per_class.mean()),
    }


def constant_baseline(
    train: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    layout: PartLayout,
) -> dict[str, float]:
    """Metrics of the best constant predictor: every point gets its class's most frequent training part."""
    _, train_classes, train_parts = train
    _, test_classes, test_parts = test
    majority = torch.tensor([layout.offsets[c] for c in range(len(layout.classes))])
    for c in train_classes.unique().tolist():
        majority[c] = torch.bincount(train_parts[train_classes == c].flatten()).argmax()
    pred = majority[test_classes].unsqueeze(-1).expand_as(test_parts)
    return part_metrics(pred, test_parts, test_classes, layout)


@torch.no_grad()
def evaluate(
    model: PartSegModel,
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    layout: PartLayout,
    batch: int = 32,
) -> dict[str, float]:
    """Metrics of ``model`` on (features (M, N, 14), classes (M,), global parts (M, N))."""
    features, classes, parts = data
    model.eval()
    preds = [
        layout.predict(model(features[i : i + batch], classes[i : i + batch]), classes[i : i + batch])
        for i in range(0, len(features), batch)
    ]
    return part_metrics(torch.cat(preds), parts, classes, layout)


def finetune_partseg(
    model: PartSegModel,
    train: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    layout: PartLayout,
    steps: int,
    batch: int,
    seed: int,
    lr: float = 1e-3,
) -> dict[str, float]:
    """AdamW + cosine fine-tuning on (features, classes, global part labels); test metrics at the end.

    Point-MAE fine-tunes everything with AdamW (lr 2e-4, 300 epochs); a short CPU budget needs a larger lr.
    """
    from warmstart.optim import ScheduleConfig
    from warmstart_3d.training import fit_tensors

    features, classes, parts = train

    def loss(batch: list[torch.Tensor]) -> torch.Tensor:
        x, c, y = batch
        return F.cross_entropy(model(x, c).flatten(0, 1), y.flatten())  # (b·N, P) logits

    task = type("PartSegTask", (), {"model": model})()
    losses = fit_tensors(
        task,
        (features, classes, parts),
        steps,
        batch,
        lr,
        0.05,
        seed,
        loss=loss,
        schedule=ScheduleConfig("cosine", min_lr_ratio=0.1),
        grad_clip_norm=10.0,
    )
    result = evaluate(model, test, layout)
    if losses:
        result |= {"loss_first": losses[0], "loss_last": losses[-1]}
    return result
