"""CLIP2Point's zero- and few-shot classification: view features, the Dual-Path Adapter, checked splits.

Seed paper: "CLIP2Point" (arXiv 2210.01055; code tyhuang0428/CLIP2Point): zero-shot sums per-view cosine
logits against text prompts from the CLIP text tower; few-shot trains the Dual-Path Adapter (both encoders
frozen, a view-fusion adapter after each, outputs averaged); the learned view selector (an option in the
reference, off in its results; after MVTN) is :class:`ViewSelector`. PointCLIP-style baselines (arXiv
2112.02413) use the CLIP image tower alone (single path). Few-shot splits are explicit and checked: every
class must hold ``shots + test_per_class`` clouds, else one line naming the class. Deviations: the
adapters' cosine logits are multiplied by ``logit_scale`` (the reference trains on raw cosines, too slow for a
short CPU budget); ``zero_shot_weight`` adds the zero-shot logits (a CLIP-Adapter-style residual, not in
the paper). Adapters train through the core's ``light_fit``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from warmstart.errors import ConfigError, DataError
from warmstart_3d.clip_models import LoadedCLIP
from warmstart_3d.depth_maps import DepthConfig, depth_images, depth_to_image, render_depth, view_angles
from warmstart_3d.training import fit_tensors


@torch.no_grad()
def view_features(
    encoder: nn.Module,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    points: torch.Tensor,
    views: str,
    depth: DepthConfig,
    size: int,
    batch: int = 64,
) -> torch.Tensor:
    """Raw encoder features (B, V, D) of each cloud's depth maps from a view set."""
    encoder = encoder.eval()
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    out = []
    for i in range(0, len(points), batch):
        imgs = depth_images(points[i : i + batch], views, depth, size)  # (b, V, 3, H, W)
        out.append(encoder((imgs.flatten(0, 1) - m) / s).view(imgs.shape[0], imgs.shape[1], -1))
    return torch.cat(out)


def zero_shot_accuracy(features: torch.Tensor, text: torch.Tensor, labels: torch.Tensor) -> float:
    """Per-view cosine logits summed over views (the reference's zero-shot rule)."""
    logits = torch.einsum("bvd,cd->bc", F.normalize(features, dim=-1), text)
    return float((logits.argmax(-1) == labels).float().mean())


class ViewAdapter(nn.Module):
    """The reference's simplified inter-view adapter: per-view fusion weights → flatten → MLP."""

    def __init__(self, views: int, dim: int, fusion_init: float = 0.5, dropout: float = 0.075) -> None:
        super().__init__()
        self.fusion = nn.Parameter(torch.full((views,), fusion_init))
        self.norm = nn.BatchNorm1d(dim)
        self.mlp = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(views * dim, dim),
            nn.BatchNorm1d(dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(dim, dim),
        )

    def forward(self, feats: torch.Tensor) -> torch.Tensor:  # (B, V, D) → (B, D)
        b, v, d = feats.shape
        x = self.norm(feats.reshape(b * v, d)).view(b, v, d) * self.fusion.view(1, -1, 1)
        return self.mlp(x.flatten(1))


class DualPathAdapter(nn.Module):
    """One :class:`ViewAdapter` per frozen encoder path (2 = CLIP2Point's DPA, 1 = PointCLIP-style), averaged."""

    def __init__(self, paths: int, views: int, dim: int) -> None:
        super().__init__()
        self.adapters = nn.ModuleList(ViewAdapter(views, dim) for _ in range(paths))

    def forward(self, *paths: torch.Tensor) -> torch.Tensor:  # each (B, V, D) → (B, D) normalised
        out = sum(adapter(x) for adapter, x in zip(self.adapters, paths, strict=True)) / len(paths)
        return F.normalize(out, dim=-1)


def adapter_logits(
    model: DualPathAdapter,
    paths: list[torch.Tensor] | tuple[torch.Tensor, ...],
    text: torch.Tensor,
    zero_shot_weight: float = 0.0,
) -> torch.Tensor:
    """Cosine logits (B, C) of the adapted feature, plus ``zero_shot_weight`` × the first path's zero-shot
    logits (per-view cosines averaged over the views; 0 = the paper's adapter alone)."""
    logits = model(*paths) @ text.T
    if zero_shot_weight:
        logits = (
            logits
            + zero_shot_weight
            * torch.einsum("bvd,cd->bc", F.normalize(paths[0], dim=-1), text)
            / paths[0].shape[1]
        )
    return logits


class AdapterTask:
    def __init__(
        self, model: DualPathAdapter, text: torch.Tensor, scale: float, zero_shot_weight: float = 0.0
    ) -> None:
        self.model, self.text, self.scale, self.zero_shot_weight = model, text, scale, zero_shot_weight

    def loss(self, batch: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        *paths, labels = batch
        logits = adapter_logits(self.model, paths, self.text, self.zero_shot_weight) * self.scale
        return F.cross_entropy(logits, labels), {"samples": labels.shape[0]}


@dataclass
class FewShotConfig:
    steps: int = 100
    """Adapter optimizer steps."""
    batch_size: int = 32
    """Batch size."""
    lr: float = 1e-3
    """Learning rate (the reference's AdamW 1e-3, weight decay 1e-4)."""
    logit_scale: float = 10.0
    """Multiplier of the cosine logits in training (the reference: 1)."""
    learn_views: bool = False
    """Train CLIP2Point's learned view selector with the adapters (renders every step; the paper's results
    use the fixed views)."""
    zero_shot_weight: float = 0.0
    """Add this × the zero-shot logits of the first (pretrained) path to the adapter's (0: the paper's DPA;
    a CLIP-Adapter-style residual that keeps the zero-shot knowledge when there are very few shots)."""


def few_shot_accuracy(
    train: list[torch.Tensor],
    train_labels: torch.Tensor,
    test: list[torch.Tensor],
    test_labels: torch.Tensor,
    text: torch.Tensor,
    config: FewShotConfig,
    seed: int,
) -> float:
    """Train a (dual-)path adapter on cached frozen view features (one (B, V, D) tensor per path), test it."""
    torch.manual_seed(seed)
    model = DualPathAdapter(len(train), train[0].shape[1], train[0].shape[2])
    task = AdapterTask(model, text, config.logit_scale, config.zero_shot_weight)
    fit_tensors(task, (*train, train_labels), config.steps, config.batch_size, config.lr, 1e-4, seed)
    with torch.no_grad():
        logits = adapter_logits(model.eval(), test, text, config.zero_shot_weight)
        return float((logits.argmax(-1) == test_labels).float().mean())


class ViewSelector(nn.Module):
    """CLIP2Point's learned view selector (``render/selector.py``, after MVTN): a PointNet shape feature and the
    fixed angles → MLP → tanh offsets, azimuth ± 180°/V and elevation ± 90° around the fixed view set.

    The last layer starts at zero, so training starts from the fixed views. Gradients reach the angles through
    the rendered depth values (the z-buffer is differentiable in depth, not in pixel position), a weaker signal
    than the reference's soft point rasterizer. A small PointNet (shared MLP, max-pool) stands in for the
    reference's PointNet/DGCNN extractor.
    """

    def __init__(self, views: str = "ten", dim: int = 64) -> None:
        super().__init__()
        elev, azim = view_angles(views)
        self.register_buffer("elevation", elev.float(), persistent=False)
        self.register_buffer("azimuth", azim.float(), persistent=False)
        v = len(elev)
        self.point = nn.Sequential(nn.Linear(3, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.mlp = nn.Sequential(nn.Linear(dim + 2 * v, dim), nn.ReLU(), nn.Linear(dim, 2 * v), nn.Tanh())
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def forward(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # (B, N, 3) → 2 × (B, V)
        b, v = points.shape[0], len(self.elevation)
        shape = self.point(points).max(1).values  # (B, dim)
        fixed = torch.cat([self.azimuth, self.elevation]).expand(b, 2 * v) / 180.0
        d_azim, d_elev = self.mlp(torch.cat([shape, fixed], -1)).chunk(2, dim=-1)
        return self.elevation + 90.0 * d_elev, self.azimuth + d_azim * 180.0 / v


class SelectorFewShot(nn.Module):
    """Frozen encoders + :class:`ViewSelector` + :class:`DualPathAdapter`, rendering inside the forward."""

    def __init__(
        self,
        encoders: list[nn.Module],
        mean: tuple[float, ...],
        std: tuple[float, ...],
        depth: DepthConfig,
        size: int,
        dim: int,
        views: str = "ten",
    ) -> None:
        super().__init__()
        self.encoders = nn.ModuleList(copy.deepcopy(e).float().requires_grad_(False).eval() for e in encoders)
        self.selector = ViewSelector(views)
        self.adapter = DualPathAdapter(len(encoders), len(self.selector.elevation), dim)
        self.depth, self.size = depth, size
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> SelectorFewShot:
        super().train(mode)
        self.encoders.eval()
        return self

    def view_features(self, points: torch.Tensor) -> list[torch.Tensor]:  # (B, N, 3) → per path (B, V, D)
        elev, azim = self.selector(points)
        d = self.depth
        raw = render_depth(points, elev, azim, d.distance, self.size, d.densify, d.smooth, d.point_radius)
        imgs = depth_to_image(raw)
        x = (imgs.flatten(0, 1) - self.mean) / self.std
        return [enc(x).view(points.shape[0], imgs.shape[1], -1) for enc in self.encoders]

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.adapter(*self.view_features(points))


class _SelectorTask:
    def __init__(
        self, model: SelectorFewShot, text: torch.Tensor, scale: float, zero_shot_weight: float
    ) -> None:
        self.model, self.text, self.scale, self.zero_shot_weight = model, text, scale, zero_shot_weight

    def loss(self, batch: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        points, labels = batch
        paths = self.model.view_features(points)
        logits = adapter_logits(self.model.adapter, paths, self.text, self.zero_shot_weight) * self.scale
        return F.cross_entropy(logits, labels), {"samples": labels.shape[0]}


def few_shot_accuracy_learned_views(
    encoders: list[nn.Module],
    clip: LoadedCLIP,
    depth: DepthConfig,
    train_points: torch.Tensor,
    train_labels: torch.Tensor,
    test_points: torch.Tensor,
    test_labels: torch.Tensor,
    text: torch.Tensor,
    config: FewShotConfig,
    seed: int,
) -> tuple[float, SelectorFewShot]:
    """Dual-Path Adapter with the learned view selector, trained end to end through the depth renderer (the
    encoders stay frozen); returns test accuracy and the trained model."""
    torch.manual_seed(seed)
    size = depth.size or clip.image_size
    with torch.no_grad():
        dim = int(encoders[0](torch.zeros(1, 3, size, size)).shape[-1])
    model = SelectorFewShot(encoders, clip.mean, clip.std, depth, size, dim)
    task = _SelectorTask(model, text, config.logit_scale, config.zero_shot_weight)
    fit_tensors(task, (train_points, train_labels), config.steps, config.batch_size, config.lr, 1e-4, seed)
    model.eval()
    with torch.no_grad():
        preds = []
        for i in range(0, len(test_points), 64):
            paths = model.view_features(test_points[i : i + 64])
            preds.append(adapter_logits(model.adapter, paths, text, config.zero_shot_weight).argmax(-1))
    return float((torch.cat(preds) == test_labels).float().mean()), model


def sample_shots(labels: torch.Tensor, shots: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of ``shots`` random examples of every class in ``labels`` (each class must hold that many)."""
    picks = []
    for c in labels.unique().tolist():
        members = torch.nonzero(labels == c).flatten()
        if len(members) < shots:
            raise DataError(f"class {c}: {len(members)} clouds, fewer than {shots} shots; lower --shots")
        picks.append(members[torch.randperm(len(members), generator=generator)[:shots]])
    return torch.cat(picks)


def split_indices(
    labels: torch.Tensor,
    test_per_class: int,
    generator: torch.Generator,
    shots: int = 0,
    names: list[str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train pool, test) indices with ``test_per_class`` test examples of every class, checked: each class
    needs ``shots + test_per_class`` clouds (one line naming the first that has fewer)."""
    counts = torch.bincount(labels, minlength=len(names) if names else 0)
    for c, count in enumerate(counts.tolist()):
        if count < shots + test_per_class:
            name = names[c] if names else str(c)
            raise DataError(
                f"class {name}: {count} clouds, fewer than --shots {shots} + --test_per_class {test_per_class}; "
                "lower either or add clouds"
            )
    test = sample_shots(labels, test_per_class, generator)
    mask = torch.ones(len(labels), dtype=torch.bool)
    mask[test] = False
    return torch.nonzero(mask).flatten(), test


def evaluate_clouds(
    checkpoint: Path | None,
    clip: Any,
    depth: DepthConfig,
    data: Path | None,
    classes: list[str] | None,
    prompt: str,
    shots: int,
    per_class: int,
    test_per_class: int,
    n_points: int,
    fewshot: FewShotConfig,
    seed: int,
    open_run: Callable[[], Path],
) -> dict:
    """The ``clip2point-eval`` pipeline: load clouds and CLIP, split (checked, before anything is written),
    zero-shot (6 views) or few-shot (10 views, Dual-Path Adapter) accuracy, ``results.json``."""
    import json

    from warmstart.eval import knn_accuracy
    from warmstart_3d.clip2point import (
        few_shot_accuracy,
        load_clip,
        load_depth_encoder,
        load_eval_set,
        sample_shots,
        split_indices,
        text_features,
        view_features,
        zero_shot_accuracy,
    )

    points, labels, names = load_eval_set(data, classes, per_class, n_points, seed)
    if shots > 0:  # the explicit, checked split, before anything is written
        if test_per_class < 1:
            raise ConfigError("--test_per_class must be >= 1 for few-shot evaluation")
        g = torch.Generator().manual_seed(seed)
        pool, test = split_indices(labels, test_per_class, g, shots, names)
        picked = pool[sample_shots(labels[pool], shots, g)]
    loaded = load_clip(clip)
    run_dir = open_run()
    text = text_features(loaded.model, loaded.tokenizer, names, prompt)
    encoders = [load_depth_encoder(checkpoint, loaded)] if checkpoint is not None else []
    encoders.append(loaded.model.visual)

    def feats(encoder: object, views: str) -> torch.Tensor:  # (B, V, D)
        return view_features(encoder, loaded.mean, loaded.std, points, views, depth, loaded.image_size)

    results: dict = {
        "method": "CLIP2Point" if checkpoint is not None else "PointCLIP-style",
        "shots": shots,
        "classes": names,
        "n_clouds": len(labels),
    }
    if shots == 0:
        six = feats(encoders[0], "six")
        results["accuracy"] = zero_shot_accuracy(six, text, labels)
    else:
        results |= {
            "n_train": len(picked),
            "n_test": len(test),
            "train_classes": len(labels[picked].unique()),
        }
        ten = [feats(enc, "ten") for enc in encoders]
        if fewshot.learn_views:
            from warmstart_3d.clip2point import few_shot_accuracy_learned_views

            results["accuracy"], selector = few_shot_accuracy_learned_views(
                encoders,
                loaded,
                depth,
                points[picked],
                labels[picked],
                points[test],
                labels[test],
                text,
                fewshot,
                seed,
            )
            with torch.no_grad():
                elev, azim = selector.selector(points[test])
            results["learned_view_shift_deg"] = float(
                (
                    (elev - selector.selector.elevation).abs().mean()
                    + (azim - selector.selector.azimuth).abs().mean()
                )
                / 2
            )
        results["accuracy_fixed_views" if fewshot.learn_views else "accuracy"] = few_shot_accuracy(
            [f[picked] for f in ten],
            labels[picked],
            [f[test] for f in ten],
            labels[test],
            text,
            fewshot,
            seed,
        )
        pooled = ten[0].mean(1)
        results["knn_accuracy"] = knn_accuracy(
            pooled[picked], labels[picked], pooled[test], labels[test], k=min(5, len(picked))
        )
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    return results
