"""``bench points``: scratch vs Point-MAE (centres only) vs Gaussian-MAE (all attributes), equal budgets.

Seed paper: "ShapeSplat … and Their Self-Supervised Pretraining" (arXiv 2408.10906), whose table compares
Gaussian-MAE with Point-MAE and training from scratch. Here on a generated ShapeSplat-style dataset (8
procedural classes): the two MAEs pretrain once (cached by config hash) on a large unlabelled draw, then every
arm fine-tunes a fresh head for the same steps at 1/4/16 labels per class; a linear probe on each arm's frozen
features says what the representation carries before fine-tuning. The all-attribute arms (scratch and
Gaussian-MAE) use ShapeSplat's Gaussian feature grouping and splats pooling layer (``shapesplat``), each
pretrained arm has a scratch peer of the same architecture and input. Every fit runs in process on the core's
``light_fit``.
Part (a), CLIP2Point (arXiv 2210.01055) vs PointCLIP-style zero-/few-shot and vs a scratch depth encoder,
is :func:`run_clip2point_bench`; part segmentation (Point-MAE's head, ShapeNetPart metrics) on the multi-part
procedural objects (lamp, table, chair, mug), scratch vs Point-MAE vs Gaussian-MAE, is
:func:`run_partseg_bench`; ``part`` picks which runs.
"""

from __future__ import annotations

import copy
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from warmstart_3d.gmae import GaussianMAE, GMAEConfig, splat_features, splat_features_parts
from warmstart_3d.shapes import COMPOSITE_CLASSES, PART_NAMES, SHAPE_CLASSES
from warmstart_3d.splat_dataset import object_splat, object_splat_parts

log = logging.getLogger(__name__)

ALL_ATTRIBUTES = ["xyz", "opacity", "scale", "rotation", "colour"]
# arm → (attributes the backbone sees, MAE-pretrained?); each pretrained arm has a scratch peer on the
# same input, so that what pretraining buys is not confounded with what the extra attributes carry
PEERS = {"Gaussian-MAE": "scratch", "Point-MAE": "scratch (xyz only)"}
"""Each pretrained arm's scratch peer (same input and architecture): the comparison the headline makes."""
ARMS: dict[str, tuple[list[str], bool]] = {
    "scratch": (ALL_ATTRIBUTES, False),
    "scratch (xyz only)": (["xyz"], False),
    "Point-MAE": (["xyz"], True),
    "Gaussian-MAE": (ALL_ATTRIBUTES, True),
}


@dataclass
class Clip2PointBenchConfig:
    source_steps: int = 400
    """Steps of the tiny source CLIP on rendered (image, caption) pairs (per seed)."""
    source_per_class: int = 96
    """Rendered pairs per class for the source CLIP."""
    pretrain_steps: int = 150
    """Image-depth pretraining steps of both depth encoders (CLIP-initialised and scratch)."""
    pretrain_per_class: int = 64
    """Unlabelled (cloud, image) pairs per class for image-depth pretraining."""
    batch_size: int = 32
    """Pretraining batch size."""
    n_points: int = 1024
    """Points per cloud."""
    shots: list[int] = field(default_factory=lambda: [1, 4, 16])
    """Labelled clouds per class for the few-shot adapters."""
    pool_per_class: int = 16
    """Labelled pool per class the shots are drawn from."""
    test_per_class: int = 12
    """Held-out clouds per class."""
    adapter_steps: int = 100
    """Adapter training steps per shot count."""
    zero_shot_weight: float = 0.0
    """Zero-shot residual added to the adapters' logits (0: the paper's adapters; see FewShotConfig)."""


@dataclass
class PartSegBenchConfig:
    classes: list[str] = field(default_factory=lambda: list(COMPOSITE_CLASSES))
    """Classes (each with its own parts; data.PART_NAMES)."""
    train_per_class: int = 8
    """Labelled training objects per class."""
    test_per_class: int = 4
    """Held-out objects per class."""
    unlabelled_per_class: int = 12
    """Extra unlabelled objects per class for MAE pretraining (plus the training objects)."""
    n_points: int = 128
    """Gaussians per object."""
    pretrain_steps: int = 80
    """MAE pretraining steps."""
    finetune_steps: int = 60
    """Segmentation fine-tuning steps of every arm."""
    batch_size: int = 8
    """Batch size."""
    lr: float = 1e-3
    """Fine-tuning learning rate (AdamW, cosine)."""
    model: GMAEConfig = field(default_factory=lambda: GMAEConfig(n_groups=16, group_size=16, dim=48, depth=2))
    """Backbone (smaller than the classification bench's: every point is classified)."""


@dataclass
class PointsBenchConfig:
    part: Literal["all", "clip2point", "mae", "partseg"] = "all"
    """Which comparison: (a) CLIP2Point vs PointCLIP-style vs scratch, (b) Gaussian-MAE vs Point-MAE vs
    scratch (classification), (c) the same three for part segmentation, or all (then into clip2point/, mae/
    and partseg/ sub-folders)."""
    clip2point: Clip2PointBenchConfig = field(default_factory=Clip2PointBenchConfig)
    """Settings of part (a)."""
    partseg: PartSegBenchConfig = field(default_factory=PartSegBenchConfig)
    """Settings of part (c)."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """Seeds of the labelled sets, the heads and the fine-tuning batches (the MAE sources are pretrained once,
    as a foundation model is, and cached)."""
    train_per_class: int = 16
    """Labelled training objects per class (the largest point of the label-efficiency curve)."""
    test_per_class: int = 12
    """Held-out objects per class."""
    unlabelled_per_class: int = 64
    """Unlabelled objects per class for MAE pretraining (a separate draw, 4× the labelled pool)."""
    n_points: int = 128
    """Gaussians per object."""
    pretrain_steps: int = 800
    """MAE pretraining steps (at least 20× the fine-tuning budget; the report says the ratio)."""
    finetune_steps: int = 25
    """Fine-tuning steps of every arm at every label count."""
    finetune_lr: float = 5e-4
    """Fine-tuning learning rate of the backbone (AdamW, constant)."""
    head_lr_scale: float = 10.0
    """The new classification head's learning rate as a multiple of ``finetune_lr`` (every arm alike: a fresh
    head must catch up with a backbone in 25 steps; with 1.0 the pretrained arms lost most of their edge)."""
    batch_size: int = 32
    """Batch size."""
    labels_per_class: list[int] = field(default_factory=lambda: [1, 4, 16])
    """Labelled objects per class for the label-efficiency curve (each at most train_per_class)."""
    augment: bool = True
    """Pretrain with attribute-consistent augmentation (gmae.augment: rotation, scale, shift)."""
    shapesplat: bool = True
    """The all-attribute arms (scratch and Gaussian-MAE) use ShapeSplat's Gaussian feature grouping
    (``shapesplat_group_attributes``) and splats pooling layer; false: Point-MAE's xyz grouping and max-pool."""
    shapesplat_group_attributes: list[str] = field(default_factory=lambda: ["xyz", "scale", "rotation"])
    """Grouping space of the ShapeSplat arms (normalised per object; gmae.grouping_space)."""
    model: GMAEConfig = field(
        default_factory=lambda: GMAEConfig(n_groups=16, group_size=16, dim=64, depth=2, embed_width=64)
    )
    """Backbone of every arm (attributes, and for the ShapeSplat arms grouping and pooling, are set per arm)."""


def arm_model(config: PointsBenchConfig, attributes: list[str]) -> GMAEConfig:
    """The backbone of an arm: ``config.model`` with its attributes, and for all-attribute arms with
    ``shapesplat`` the feature grouping and splats pooling (scratch and MAE peers share the architecture)."""
    cfg = copy.deepcopy(config.model)
    cfg.attributes = list(attributes)
    if config.shapesplat and list(attributes) != ["xyz"]:
        cfg.group_attributes = list(config.shapesplat_group_attributes)
        cfg.pooling = "splats"
    return cfg


def linear_probe(
    model: GaussianMAE,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    n_classes: int,
    weight_decay: float = 1e-2,
) -> float:
    """Held-out accuracy of an L2-regularised logistic regression (L-BFGS) on the frozen, standardised
    features: what the backbone's representation carries before any fine-tuning (written by hand: a few
    lines; no scikit-learn in the lock)."""
    model.eval()
    with torch.no_grad():
        a, b = model.features(train[0]), model.features(test[0])
    mu, sd = a.mean(0), a.std(0, unbiased=False) + 1e-3
    a, b = (a - mu) / sd, (b - mu) / sd
    w = torch.zeros(a.shape[1], n_classes, requires_grad=True)
    bias = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, bias], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(a @ w + bias, train[1]) + weight_decay * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(((b @ w + bias).argmax(-1) == test[1]).float().mean())


def _dataset(per_class: int, n_points: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    splats, labels = [], []
    for _ in range(per_class):
        for label, name in enumerate(SHAPE_CLASSES):
            splats.append(object_splat(name, n_points, generator))
            labels.append(label)
    return splat_features(splats, n_points, generator), torch.tensor(labels)


def pretrain(
    model: GaussianMAE, features: torch.Tensor, steps: int, batch: int, seed: int, augmented: bool = False
) -> list[float]:
    """Masked-reconstruction pretraining on the core's ``light_fit`` (AdamW 1e-3, weight decay 0.05,
    constant rate); masks (and, with ``augmented``, :func:`~warmstart_3d.gmae.augment`) from a generator
    seeded with ``seed``."""
    from warmstart.optim import ScheduleConfig
    from warmstart_3d.gmae import augment
    from warmstart_3d.training import fit_tensors

    g = torch.Generator().manual_seed(seed)

    def loss(b: list[torch.Tensor]) -> torch.Tensor:
        return model.pretrain_loss(augment(b[0], g) if augmented else b[0], g)

    task = type("PretrainTask", (), {"model": model})()
    return fit_tensors(
        task,
        (features,),
        steps,
        batch,
        1e-3,
        0.05,
        seed,
        loss=loss,
        schedule=ScheduleConfig("constant"),
        grad_clip_norm=None,
    )


def finetune(
    model: GaussianMAE,
    x: torch.Tensor,
    y: torch.Tensor,
    test: tuple[torch.Tensor, torch.Tensor],
    steps: int,
    batch: int,
    seed: int,
    lr: float = 5e-4,
    head_lr_scale: float = 1.0,
) -> float:
    """Classification fine-tuning on ``light_fit`` (AdamW ``lr``, the head at ``head_lr_scale``·``lr``, weight
    decay 0.05, constant rate); held-out accuracy."""
    from warmstart.optim import ScheduleConfig
    from warmstart_3d.training import fit_tensors

    task = type("ClassifyTask", (), {"model": model})()
    groups = None
    if head_lr_scale != 1.0:
        head = [p for n, p in model.named_parameters() if n.startswith("head.")]
        rest = [p for n, p in model.named_parameters() if not n.startswith("head.")]
        groups = [{"params": rest, "lr": lr}, {"params": head, "lr": lr * head_lr_scale}]
    fit_tensors(
        task,
        (x, y),
        steps,
        batch,
        lr,
        0.05,
        seed,
        loss=lambda b: F.cross_entropy(model(b[0]), b[1]),
        schedule=ScheduleConfig("constant"),
        grad_clip_norm=None,
        params=groups,
    )
    model.eval()
    with torch.no_grad():
        return float((model(test[0]).argmax(-1) == test[1]).float().mean())


def run_points_bench(config: PointsBenchConfig, out_dir: Path) -> dict[str, Any]:
    """Run part (a) and/or (b); returns {"reports": [BenchReport, ...]}."""
    reports = []
    if config.part in ("all", "clip2point"):
        sub = out_dir / "clip2point" if config.part == "all" else out_dir
        reports.append(run_clip2point_bench(config.clip2point, config.seeds, sub)["report"])
    if config.part in ("all", "mae"):
        sub = out_dir / "mae" if config.part == "all" else out_dir
        reports.append(run_mae_bench(config, sub)["report"])
    if config.part in ("all", "partseg"):
        sub = out_dir / "partseg" if config.part == "all" else out_dir
        reports.append(run_partseg_bench(config.partseg, config.seeds, sub)["report"])
    return {"reports": reports}


C2P_ARMS = ("PointCLIP-style", "CLIP2Point (scratch depth encoder)", "CLIP2Point")


def run_clip2point_bench(config: Clip2PointBenchConfig, seeds: list[int], out_dir: Path) -> dict[str, Any]:
    """Part (a): per seed, train a tiny source CLIP on rendered shapes, then compare on held-out clouds:
    PointCLIP-style (CLIP image tower on depth maps; single-path adapter for few-shot), CLIP2Point (depth
    encoder from the image tower + image-depth pretraining; Dual-Path Adapter) and the same with a randomly
    initialised depth encoder (equal pretraining steps). Zero-shot (6 views) and k-shot (10 views) accuracy."""
    import tempfile

    from warmstart.eval import write_bench_report
    from warmstart_3d.clip2point import (
        ClipSpec,
        DepthConfig,
        FewShotConfig,
        PretrainConfig,
        SourceConfig,
        few_shot_accuracy,
        load_clip,
        load_eval_set,
        pretrain_clip2point,
        pretrain_source,
        sample_shots,
        split_indices,
        text_features,
        view_features,
        zero_shot_accuracy,
    )

    zero: dict[str, dict[int, float]] = {arm: {} for arm in C2P_ARMS}
    zero_ten: dict[str, dict[int, float]] = {arm: {} for arm in C2P_ARMS}
    shots: dict[str, dict[str, dict[int, float]]] = {
        f"{k}-shot": {arm: {} for arm in C2P_ARMS} for k in config.shots
    }
    curves: dict[str, dict[int, list[tuple[int, float]]]] = {arm: {} for arm in C2P_ARMS}
    secs: dict[str, dict[int, float]] = {arm: {} for arm in C2P_ARMS}
    source_acc: dict[int, float] = {}
    depth = DepthConfig()
    for seed in seeds:
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            source = SourceConfig(
                steps=config.source_steps,
                per_class=config.source_per_class,
                n_points=config.n_points,
                seed=seed,
            )
            info = pretrain_source(source, Path(tmp) / "source")
            source_acc[seed] = info["rgb_zero_shot_accuracy"]
            clip = load_clip(ClipSpec(model=str(Path(tmp) / "source")))
        source_secs = time.perf_counter() - start
        per = config.pool_per_class + config.test_per_class
        points, labels, names = load_eval_set(None, None, per, config.n_points, 50_000 + seed)
        g = torch.Generator().manual_seed(seed)
        pool, test = split_indices(labels, config.test_per_class, g)
        text = text_features(clip.model, clip.tokenizer, names)
        encoders = {"CLIP": clip.model.visual}
        for init, arm in (("scratch", "CLIP2Point (scratch depth encoder)"), ("clip", "CLIP2Point")):
            t0 = time.perf_counter()
            pre = PretrainConfig(
                per_class=config.pretrain_per_class,
                n_points=config.n_points,
                steps=config.pretrain_steps,
                batch_size=config.batch_size,
                init=init,
                seed=seed,
            )
            model, _ = pretrain_clip2point(clip, depth, pre)
            encoders[arm] = model.depth_encoder
            secs[arm][seed] = time.perf_counter() - t0
        feats = {
            name: {
                v: view_features(enc, clip.mean, clip.std, points, v, depth, clip.image_size)
                for v in ("six", "ten")
            }
            for name, enc in encoders.items()
        }
        paths = {
            "PointCLIP-style": ["CLIP"],
            "CLIP2Point (scratch depth encoder)": ["CLIP2Point (scratch depth encoder)", "CLIP"],
            "CLIP2Point": ["CLIP2Point", "CLIP"],
        }
        for arm in C2P_ARMS:
            zero[arm][seed] = zero_shot_accuracy(feats[paths[arm][0]]["six"][test], text, labels[test])
            zero_ten[arm][seed] = zero_shot_accuracy(feats[paths[arm][0]]["ten"][test], text, labels[test])
            curve = [(0, zero[arm][seed])]
            for k in config.shots:
                picked = pool[sample_shots(labels[pool], k, torch.Generator().manual_seed(seed * 100 + k))]
                acc = few_shot_accuracy(
                    [feats[p]["ten"][picked] for p in paths[arm]],
                    labels[picked],
                    [feats[p]["ten"][test] for p in paths[arm]],
                    labels[test],
                    text,
                    FewShotConfig(steps=config.adapter_steps, zero_shot_weight=config.zero_shot_weight),
                    seed,
                )
                shots[f"{k}-shot"][arm][seed] = acc
                curve.append((k, acc))
            curves[arm][seed] = curve
            secs[arm][seed] = secs[arm].get(seed, 0.0) + source_secs
        log.info("seed %d: zero-shot %s", seed, {a: zero[a][seed] for a in C2P_ARMS})
    mean_source = sum(source_acc.values()) / len(source_acc)
    report = write_bench_report(
        out_dir,
        "3d: CLIP2Point vs PointCLIP-style vs scratch depth encoder (procedural shapes)",
        zero,
        metric="zero-shot accuracy (6 views)",
        higher_is_better=True,
        baseline="PointCLIP-style",
        curves=curves,
        curve_metric="accuracy vs shots per class (0 = zero-shot)",
        extra_metrics={"zero-shot (10 views)": zero_ten, **shots, "wall time incl. source CLIP (s)": secs},
        description=(
            f"Per seed a tiny open_clip CLIP (ViT 32 px, width 64) is trained for {config.source_steps} steps on "
            f"rendered RGB images of 8 procedural shape classes with captions (held-out RGB zero-shot "
            f"{mean_source:.3f} on average: the source knows the classes from images only). Depth encoders get "
            f"{config.pretrain_steps} steps of image-depth pretraining on {config.pretrain_per_class}/class "
            f"unlabelled clouds; k-shot adapters train {config.adapter_steps} steps on frozen 10-view features "
            f"(zero-shot residual weight {config.zero_shot_weight}); "
            f"{config.test_per_class}/class held-out clouds of {config.n_points} points, random rotations."
        ),
        config={**asdict(config), "seeds": list(seeds), "source_rgb_zero_shot": source_acc},
    )
    return {"report": report, "zero_shot": zero, "zero_shot_ten": zero_ten, "shots": shots}


UNLABELLED_SEED = 7919
"""Seed of the unlabelled pretraining draw (disjoint from every labelled seed's objects)."""


def mae_source(config: PointsBenchConfig, attributes: list[str]) -> tuple[GaussianMAE, list[float], Path]:
    """The MAE source of an arm, pretrained once on the unlabelled set and cached by its config hash."""
    import json

    from warmstart.cache import cached, code_version
    from warmstart_3d import gmae, shapes, splat_dataset

    cfg = arm_model(config, attributes)
    recipe = {
        "generator": "splat_dataset.object_splat",
        "classes": SHAPE_CLASSES,
        "seed": UNLABELLED_SEED,
        "per_class": config.unlabelled_per_class,
        "n_points": config.n_points,
    }
    training = {
        "model": asdict(cfg),
        "steps": config.pretrain_steps,
        "batch_size": config.batch_size,
        "lr": 1e-3,
        "augment": config.augment,
    }

    def build(folder: Path) -> None:
        g = torch.Generator().manual_seed(UNLABELLED_SEED)
        unlabelled, _ = _dataset(config.unlabelled_per_class, config.n_points, g)
        torch.manual_seed(0)
        model = GaussianMAE(cfg, 0)
        losses = pretrain(model, unlabelled, config.pretrain_steps, config.batch_size, 0, config.augment)
        model.save_pretrained(folder / "model")
        (folder / "losses.json").write_text(json.dumps(losses))

    folder = cached(
        "3d.gmae-source",
        training,
        build,
        data=recipe,
        code=code_version(gmae, shapes, splat_dataset, sys.modules[__name__]),
        description=f"MAE source ({', '.join(attributes)}), {config.pretrain_steps} steps",
    )
    losses = json.loads((folder / "losses.json").read_text())
    return GaussianMAE.from_pretrained(folder / "model"), losses, folder


def run_mae_bench(config: PointsBenchConfig, out_dir: Path) -> dict[str, Any]:
    """Part (b): scratch vs Point-MAE vs Gaussian-MAE classification with a label-efficiency curve.

    The MAE sources pretrain once on a large unlabelled draw (cached); per seed, a labelled pool and a test
    set are drawn, and at each label count every arm fine-tunes a fresh head for the same steps; a linear
    probe on each arm's frozen features (before fine-tuning) says what the representation itself carries."""
    import numpy as np

    from warmstart.errors import ConfigError
    from warmstart.eval import bootstrap_ci, write_bench_report

    n_classes = len(SHAPE_CLASSES)
    counts = sorted(config.labels_per_class)
    if not counts or counts[0] < 1 or counts[-1] > config.train_per_class:
        raise ConfigError(f"--points.labels_per_class {counts}: each must be in 1..train_per_class")
    sources: dict[str, tuple[GaussianMAE, list[float]]] = {}
    source_secs: dict[str, float] = {}
    for arm, (attributes, pretrained) in ARMS.items():
        if pretrained:
            start = time.perf_counter()
            model, losses, _ = mae_source(config, attributes)
            sources[arm], source_secs[arm] = (model, losses), time.perf_counter() - start
    per_count: dict[int, dict[str, dict[int, float]]] = {k: {arm: {} for arm in ARMS} for k in counts}
    probe: dict[int, dict[str, dict[int, float]]] = {k: {arm: {} for arm in ARMS} for k in counts}
    curves: dict[str, dict[int, list[tuple[int, float]]]] = {arm: {} for arm in ARMS}
    secs: dict[str, dict[int, float]] = {arm: {} for arm in ARMS}
    for seed in config.seeds:
        g = torch.Generator().manual_seed(1000 + seed)
        train_x, train_y = _dataset(config.train_per_class, config.n_points, g)
        test = _dataset(config.test_per_class, config.n_points, g)
        order = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(seed))
        for arm, (attributes, pretrained) in ARMS.items():
            start = time.perf_counter()
            cfg = arm_model(config, attributes)
            curve = []
            for k in counts:
                keep = torch.cat([order[train_y[order] == c][:k] for c in range(n_classes)])
                torch.manual_seed(seed)
                model = GaussianMAE(cfg, n_classes)
                if pretrained:
                    model.load_state_dict(sources[arm][0].state_dict(), strict=False)  # all but the new head
                probe[k][arm][seed] = linear_probe(model, (train_x[keep], train_y[keep]), test, n_classes)
                value = finetune(
                    model,
                    train_x[keep],
                    train_y[keep],
                    test,
                    config.finetune_steps,
                    config.batch_size,
                    seed,
                    config.finetune_lr,
                    config.head_lr_scale,
                )
                per_count[k][arm][seed] = value
                curve.append((k, value))
            curves[arm][seed] = curve
            secs[arm][seed] = time.perf_counter() - start
            log.info("seed %d %s: %s", seed, arm, curve)
    ratio = config.pretrain_steps / max(1, config.finetune_steps)

    def ci_rows(table: dict[int, dict[str, dict[int, float]]]) -> str:
        rows = []
        for k in counts:
            cells = []
            for arm in ARMS:
                values = list(table[k][arm].values())
                lo, hi = bootstrap_ci(values)
                cells.append(f"{arm} {np.mean(values):.3f} [{lo:.3f}, {hi:.3f}]")
            rows.append(f"{k}/class: " + "; ".join(cells))
        return " | ".join(rows)

    def headline() -> str:
        parts = []
        for arm, peer in PEERS.items():
            cells = []
            for k in counts:
                diffs = [per_count[k][arm][s] - per_count[k][peer][s] for s in config.seeds]
                lo, hi = bootstrap_ci(diffs)
                cells.append(f"{np.mean(diffs):+.3f} [{lo:+.3f}, {hi:+.3f}] at {k}/class")
            parts.append(f"{arm} − {peer}: " + ", ".join(cells))
        return "Headline, pretrained − its scratch peer (paired by seed, 95 % bootstrap CI): " + "; ".join(
            parts
        )

    pre_losses = {arm: (v[1][0], v[1][-1]) for arm, v in sources.items()}
    learned = {arm: last < 0.9 * first for arm, (first, last) in pre_losses.items()}
    chance = 1.0 / n_classes
    # health: an arm whose mean accuracy at the largest label count is within 5 points of chance did not learn
    at_chance = [arm for arm in ARMS if np.mean(list(per_count[counts[-1]][arm].values())) < chance + 0.05]
    shapesplat = (
        f"the all-attribute arms (scratch and Gaussian-MAE) use ShapeSplat's feature grouping in "
        f"({', '.join(config.shapesplat_group_attributes)}) and its splats pooling layer, the xyz arms Point-MAE's "
        "xyz grouping and max-pool"
        if config.shapesplat
        else "every arm groups by xyz and max-pools (Point-MAE's tokeniser)"
    )
    report = write_bench_report(
        out_dir,
        "3d: Gaussian-MAE vs Point-MAE vs scratch, label efficiency (procedural ShapeSplat-style objects)",
        per_count[counts[0]],
        metric=f"test accuracy, {counts[0]} labelled object(s) per class",
        higher_is_better=True,
        baseline="scratch",
        curves=curves,
        curve_metric="test accuracy vs labelled objects per class",
        extra_metrics={
            **{f"accuracy, {k}/class": per_count[k] for k in counts[1:]},
            **{f"linear probe (frozen), {k}/class": probe[k] for k in counts},
            "fine-tuning wall time (s)": secs,
        },
        description=(
            headline() + ". "
            f"{n_classes} classes of randomly rotated, stretched, striped objects; {shapesplat}. MAE sources "
            f"pretrain once for {config.pretrain_steps} steps (batch {config.batch_size}, augmentation "
            f"{config.augment}) on {config.unlabelled_per_class}/class = {config.unlabelled_per_class * n_classes} "
            f"unlabelled objects, {ratio:.0f}× the fine-tuning budget of {config.finetune_steps} steps (AdamW "
            f"{config.finetune_lr:g}, head ×{config.head_lr_scale:g}) that every arm gets at each label count "
            f"({', '.join(map(str, counts))} per class, drawn from {config.train_per_class}/class labelled; "
            f"{config.test_per_class}/class test, {config.n_points} Gaussians per object). Sources are cached by "
            f"config hash (`warmstart cache list`); pretraining loss first → last: "
            + "; ".join(f"{a} {first:.3f} → {last:.3f}" for a, (first, last) in pre_losses.items())
            + (
                ". "
                if all(learned.values())
                else f". NOT LEARNED (loss fell < 10 %): "
                f"{', '.join(a for a, ok in learned.items() if not ok)}. "
            )
            + "Fine-tuned accuracy, mean [95 % bootstrap CI over seeds]: "
            + ci_rows(per_count)
            + ". Linear probe on the frozen features (logistic regression, before fine-tuning; scratch = "
            "random features): "
            + ci_rows(probe)
            + (
                f". AT CHANCE ({chance:.3f}) with {counts[-1]}/class labels, fine-tuning did not learn: "
                f"{', '.join(at_chance)}"
                if at_chance
                else ""
            )
        ),
        config={
            **asdict(config),
            "pretrain_to_finetune_ratio": ratio,
            "source_seconds": source_secs,
            "pretrain_losses": pre_losses,
            "pretraining_learned": learned,
            "chance": chance,
            "at_chance": at_chance,
        },
    )
    for arm in at_chance:
        log.warning(
            "%s: accuracy at chance (%.3f) with %d labels/class; it did not learn", arm, chance, counts[-1]
        )
    return {
        "report": report,
        "accuracy": per_count,
        "probe": probe,
        "curves": curves,
        "at_chance": at_chance,
    }


def _part_dataset(
    classes: list[str], per_class: int, n_points: int, generator: torch.Generator, layout: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Aligned multi-part objects: features (M, n_points, 14), classes (M,), global part labels (M, n_points)."""
    splats, parts, labels = [], [], []
    for _ in range(per_class):
        for label, name in enumerate(classes):
            g, y = object_splat_parts(name, n_points, generator, rotate=False)
            splats.append(g)
            parts.append(y)
            labels.append(label)
    features, local = splat_features_parts(splats, parts, n_points, generator)
    classes_t = torch.tensor(labels)
    return features, classes_t, layout.to_global(local, classes_t)


def run_partseg_bench(config: PartSegBenchConfig, seeds: list[int], out_dir: Path) -> dict[str, Any]:
    """Part (c): part segmentation, scratch vs Point-MAE vs Gaussian-MAE at equal pretraining/fine-tuning
    budgets; instance mIoU (headline), class mIoU and point accuracy on held-out objects, against the best
    constant predictor (each class's most frequent part)."""
    from warmstart.eval import write_bench_report
    from warmstart_3d.partseg import PartLayout, PartSegModel, constant_baseline, finetune_partseg

    layout = PartLayout.from_names(config.classes, PART_NAMES)
    inst: dict[str, dict[int, float]] = {arm: {} for arm in ARMS}
    cls_miou: dict[str, dict[int, float]] = {arm: {} for arm in ARMS}
    acc: dict[str, dict[int, float]] = {arm: {} for arm in ARMS}
    secs: dict[str, dict[int, float]] = {arm: {} for arm in ARMS}
    const: dict[int, dict[str, float]] = {}
    for seed in seeds:
        g = torch.Generator().manual_seed(seed)
        train = _part_dataset(config.classes, config.train_per_class, config.n_points, g, layout)
        test = _part_dataset(config.classes, config.test_per_class, config.n_points, g, layout)
        unlabelled = train[0]
        if config.unlabelled_per_class > 0:
            extra = _part_dataset(config.classes, config.unlabelled_per_class, config.n_points, g, layout)[0]
            unlabelled = torch.cat([unlabelled, extra])
        const[seed] = constant_baseline(train, test, layout)
        for arm, (attributes, pretrained) in ARMS.items():
            start = time.perf_counter()
            torch.manual_seed(seed)
            cfg = copy.deepcopy(config.model)
            cfg.attributes = list(attributes)
            backbone = GaussianMAE(cfg, 0)
            if pretrained:
                pretrain(backbone, unlabelled, config.pretrain_steps, config.batch_size, seed)
            model = PartSegModel.from_backbone(backbone, len(config.classes), layout.n_parts)
            m = finetune_partseg(
                model, train, test, layout, config.finetune_steps, config.batch_size, seed, config.lr
            )
            inst[arm][seed], cls_miou[arm][seed], acc[arm][seed] = (
                m["instance_miou"],
                m["class_miou"],
                m["accuracy"],
            )
            secs[arm][seed] = time.perf_counter() - start
            log.info("seed %d %s: %s", seed, arm, m)
    mean_const = {
        k: sum(c[k] for c in const.values()) / len(const) for k in ("instance_miou", "class_miou", "accuracy")
    }
    report = write_bench_report(
        out_dir,
        "3d: part segmentation, Gaussian-MAE vs Point-MAE vs scratch (procedural multi-part objects)",
        inst,
        metric="instance mIoU",
        higher_is_better=True,
        baseline="scratch",
        extra_metrics={"class mIoU": cls_miou, "point accuracy": acc, "wall time (s)": secs},
        description=(
            f"{len(config.classes)} aligned classes ({', '.join(config.classes)}; {layout.n_parts} parts), "
            f"{config.train_per_class}/class labelled, {config.test_per_class}/class test, {config.n_points} "
            f"Gaussians per object; MAE pretraining {config.pretrain_steps} steps on "
            f"{config.train_per_class + config.unlabelled_per_class}/class unlabelled objects; Point-MAE's "
            f"segmentation head fine-tuned {config.finetune_steps} steps for every arm. Best constant predictor "
            f"(each class's most frequent part): instance mIoU {mean_const['instance_miou']:.3f}, class mIoU "
            f"{mean_const['class_miou']:.3f}, point accuracy {mean_const['accuracy']:.3f}."
        ),
        config={**asdict(config), "seeds": list(seeds), "constant_predictor": const},
    )
    return {
        "report": report,
        "instance_miou": inst,
        "class_miou": cls_miou,
        "accuracy": acc,
        "constant": const,
    }
