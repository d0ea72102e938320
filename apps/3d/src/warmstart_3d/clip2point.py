"""CLIP2Point: multi-view depth maps of point clouds, image-depth pretraining, zero-/few-shot classification.

Seed paper: "CLIP2Point: Transfer CLIP to Point Cloud Classification with Image-Depth Pre-training"
(arXiv 2210.01055; code tyhuang0428/CLIP2Point), after "PointCLIP: Point Cloud Understanding by CLIP"
(arXiv 2112.02413). Point clouds become dense z-buffered depth maps (:mod:`warmstart_3d.depth_maps`) from
the paper's fixed view sets; the open_clip models are :mod:`warmstart_3d.clip_models`, zero-/few-shot
classification :mod:`warmstart_3d.fewshot`; this module holds the data and the pretraining. The depth encoder is a copy of an open_clip
image tower (any architecture) trained against the frozen image tower on rendered image/depth pairs of the
same view: intra-modality NT-Xent between two depth renders at ±10 % camera distance, cross-modality NT-Xent
between their mean and the image feature (as the reference, with lightly's loss: same-modality negatives
count), balanced by a learnable weight (L_img + L_depth/w² + log(w + 1)). Image-depth pairs come from many
views: every object is randomly rotated, so each pair is one random view. Left out: ShapeNet mesh renders
(shaded point renders of our procedural shapes stand in).
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from warmstart.errors import CheckpointError, ConfigError, DataError
from warmstart.objectives import nt_xent  # SimCLR's NT-Xent, as the reference's lightly loss
from warmstart_3d.clip_models import (  # noqa: F401 - the names this module always had
    OPENAI_MEAN,
    OPENAI_STD,
    PROMPT,
    TEMPLATES,
    ClipSpec,
    CLIPTask,
    LoadedCLIP,
    TinyCLIPConfig,
    caption_tokens,
    load_clip,
    save_clip,
    text_features,
)
from warmstart_3d.data import SHAPE_CLASSES, shape_instance
from warmstart_3d.depth_maps import (  # noqa: F401
    VIEW_SETS,
    DepthConfig,
    depth_images,
    depth_render_speed,
    depth_to_image,
    render_depth,
    render_shaded,
    view_angles,
    view_rotations,
)
from warmstart_3d.fewshot import (  # noqa: F401
    AdapterTask,
    DualPathAdapter,
    FewShotConfig,
    SelectorFewShot,
    ViewAdapter,
    ViewSelector,
    adapter_logits,
    few_shot_accuracy,
    few_shot_accuracy_learned_views,
    sample_shots,
    split_indices,
    view_features,
    zero_shot_accuracy,
)
from warmstart_3d.training import fit_tensors

log = logging.getLogger(__name__)


# -- procedural data ----------------------------------------------------------------------------------
def check_classes(classes: list[str] | None) -> list[str]:
    names = list(classes or SHAPE_CLASSES)
    unknown = [c for c in names if c not in SHAPE_CLASSES]
    if unknown:
        raise ConfigError(
            f"--classes: unknown shape class {', '.join(unknown)}; known: {', '.join(SHAPE_CLASSES)}"
        )
    return names


def shape_pairs(
    classes: list[str], per_class: int, n_points: int, size: int, generator: torch.Generator, densify: int = 1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random instances (randomly rotated: the view is random) of each class: clouds (M, n_points, 3), shaded
    RGB renders of the same view (M, 3, H, W) from twice the points, labels (M,)."""
    points, normals, colours, labels = [], [], [], []
    for _ in range(per_class):
        for label, name in enumerate(classes):
            p, nrm, col = shape_instance(name, 2 * n_points, generator)
            points.append(p)
            normals.append(nrm)
            colours.append(col)
            labels.append(label)
    p, nrm, col = torch.stack(points), torch.stack(normals), torch.stack(colours)
    images = torch.cat(
        [
            render_shaded(p[i : i + 64], nrm[i : i + 64], col[i : i + 64], size, densify)
            for i in range(0, len(p), 64)
        ]
    )
    return p[:, :n_points].contiguous(), images, torch.tensor(labels)


def load_eval_set(
    data: Path | None,
    classes: list[str] | None,
    per_class: int,
    n_points: int,
    seed: int,
    split: Literal["train", "test", "all"] = "all",
    on_bad_file: Literal["fail", "skip"] = "fail",
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Clouds (M, n_points, 3) in the unit sphere, labels (M,), class names.

    ``data``: None (procedural shapes) or a dataset root in any layout :func:`warmstart_3d.datasets.
    load_shape_set` reads (ModelNet40, ScanObjectNN, ShapeNetPart, ShapeSplat, class folders of shape files;
    ``split`` where the layout has one). ``classes`` picks and orders the prompt classes; each must be a
    label of the data.
    """
    g = torch.Generator().manual_seed(seed)
    if data is None:
        names = check_classes(classes)
        clouds = [shape_instance(c, n_points, g)[0] for _ in range(per_class) for c in names]
        labels = [i for _ in range(per_class) for i in range(len(names))]
        return torch.stack(clouds), torch.tensor(labels), names
    from warmstart_3d.datasets import load_shape_set

    shapes = load_shape_set(data, n_points=n_points, split=split, on_bad_file=on_bad_file, seed=seed)
    present = shapes.classes
    names = list(classes) if classes else present
    unknown = [c for c in names if c not in present]
    if unknown:
        raise DataError(
            f"--classes: {', '.join(unknown)} not among the labels of {data} ({', '.join(present)})"
        )
    keep = [i for i, y in enumerate(shapes.labels.tolist()) if present[y] in names]
    labels = torch.tensor([names.index(present[int(shapes.labels[i])]) for i in keep])
    return shapes.points[keep], labels, names


@dataclass
class SourceConfig:
    tiny: TinyCLIPConfig = field(default_factory=TinyCLIPConfig)
    """Architecture of the source CLIP."""
    per_class: int = 96
    """Rendered (image, caption) pairs per class."""
    n_points: int = 1024
    """Points per object (the RGB render uses twice as many)."""
    steps: int = 300
    """Optimizer steps."""
    batch_size: int = 64
    """Batch size."""
    lr: float = 1e-3
    """Peak learning rate (AdamW, cosine)."""
    seed: int = 0
    """Seed of the data, init and batches."""
    classes: list[str] | None = None
    """Shape classes (default: all 8)."""


def pretrain_source(config: SourceConfig, folder: Path, engine: Any = None) -> dict[str, float]:
    """Train a tiny open_clip CLIP on rendered (image, caption) pairs of procedural shapes; save a local-dir.

    The source model knows the classes from RGB renders only — never from depth. ``engine``: an
    ``EngineConfig`` to train with the core engine, None for :func:`train_plain` with the same recipe.
    Returns zero-shot accuracy on held-out RGB renders and the first/last loss.
    """
    import open_clip

    classes = check_classes(config.classes)
    g = torch.Generator().manual_seed(config.seed)
    size = config.tiny.image_size
    _, images, labels = shape_pairs(classes, config.per_class, config.n_points, size, g)
    tokens = caption_tokens(labels, classes, config.tiny.context_length, g)
    torch.manual_seed(config.seed)
    cfg = config.tiny.model_cfg()
    model = open_clip.CLIP(**cfg)
    task = CLIPTask(model, OPENAI_MEAN, OPENAI_STD)
    start = time.perf_counter()
    if engine is not None:
        from torch.utils.data import TensorDataset

        from warmstart.engine import Engine

        summary = Engine(engine, None).fit(task, TensorDataset(images, tokens))
        model = task.model.module if hasattr(task.model, "module") else task.model
        losses = [task.first_loss, float(summary.final_metrics["loss"])]
    else:
        losses = fit_tensors(
            task, (images, tokens), config.steps, config.batch_size, config.lr, 0.05, config.seed
        )
    seconds = time.perf_counter() - start
    model = model.cpu().eval()
    save_clip(model, cfg, folder)
    # held-out RGB zero-shot: does the source know the classes from images?
    _, test_images, test_labels = shape_pairs(
        classes, 8, config.n_points, size, torch.Generator().manual_seed(config.seed + 991)
    )
    with torch.no_grad():
        text = text_features(
            model, lambda t: open_clip.tokenize(t, context_length=config.tiny.context_length), classes
        )
        feats = F.normalize(model.encode_image((test_images - task.mean) / task.std), dim=-1)
        acc = float(((feats @ text.T).argmax(-1) == test_labels).float().mean())
    return {
        "rgb_zero_shot_accuracy": acc,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "seconds": seconds,
    }


# -- CLIP2Point ---------------------------------------------------------------------------------------
def reinitialise(module: nn.Module, seed: int) -> nn.Module:
    """Random re-initialisation of any open_clip tower (the scratch baseline): ``reset_parameters`` where a
    layer has one, N(0, 1/fan) for the tower's own tensors (class/positional embeddings, projections)."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for m in module.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
            else:
                for p in m.parameters(recurse=False):
                    p.normal_(0.0, p.shape[-1] ** -0.5 if p.dim() else 1.0)
    return module


class CLIP2Point(nn.Module):
    """Depth encoder (a copy of the CLIP image tower) + frozen image tower + the learnable loss balance ``w``."""

    def __init__(
        self,
        visual: nn.Module,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        depth: DepthConfig,
        size: int,
        init: Literal["clip", "scratch"] = "clip",
        seed: int = 0,
        temperature: float = 0.07,
    ) -> None:
        super().__init__()
        self.depth_encoder = copy.deepcopy(visual).float()
        if init == "scratch":
            reinitialise(self.depth_encoder, seed)
        self.image_encoder = copy.deepcopy(visual).float().requires_grad_(False).eval()
        self.weight = nn.Parameter(torch.ones(()))
        self.depth, self.size, self.temperature = depth, size, temperature
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> CLIP2Point:
        super().train(mode)
        self.image_encoder.eval()
        return self

    def encode_depth(self, images: torch.Tensor) -> torch.Tensor:  # (M, 3, H, W) in [0, 1] → (M, D)
        return self.depth_encoder((images - self.mean) / self.std)

    def forward(
        self, points: torch.Tensor, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Image-depth pretraining loss of clouds (B, N, 3) and RGB renders (B, 3, H, W) of the same view."""
        b = points.shape[0]
        u = torch.rand(b, 2, generator=generator).to(points.device)
        dist = self.depth.distance * (1 + (u - 0.5) * 2 * self.depth.distance_jitter)  # (B, 2)
        zeros = torch.zeros(b, 2, device=points.device)
        d = self.depth
        raw = render_depth(points, zeros, zeros, dist, self.size, d.densify, d.smooth, d.point_radius)
        feats = self.encode_depth(depth_to_image(raw).flatten(0, 1)).view(b, 2, -1)  # (B, 2, D)
        with torch.no_grad():
            image_feat = self.image_encoder((images - self.mean) / self.std)  # (B, D)
        loss_depth = nt_xent(feats[:, 0], feats[:, 1], self.temperature)
        loss_image = nt_xent(feats.mean(1), image_feat, self.temperature)
        loss = loss_image + loss_depth / self.weight**2 + torch.log(self.weight + 1)
        return loss, {
            "samples": b,
            "loss_image": float(loss_image.detach()),
            "loss_depth": float(loss_depth.detach()),
            "w": float(self.weight.detach()),
        }


class ImageDepthTask:
    """Engine task for :class:`CLIP2Point` pretraining on (points, image) batches."""

    def __init__(self, model: CLIP2Point, seed: int = 0) -> None:
        self.model = model
        self.generator = torch.Generator().manual_seed(seed)
        self.first_loss: float | None = None

    def loss(self, batch: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        points, images = batch[0], batch[1]
        loss, metrics = self.model(points, images, self.generator)
        if self.first_loss is None:
            self.first_loss = float(loss.detach())
        return loss, metrics


@dataclass
class PretrainConfig:
    per_class: int = 64
    """Unlabelled (cloud, RGB render) pairs per class."""
    n_points: int = 1024
    """Points per cloud."""
    steps: int = 150
    """Optimizer steps."""
    batch_size: int = 32
    """Batch size."""
    lr: float = 3e-4
    """Peak learning rate (AdamW, cosine)."""
    init: Literal["clip", "scratch"] = "clip"
    """Depth encoder initialisation: the CLIP image tower (CLIP2Point) or random (the scratch baseline)."""
    seed: int = 0
    """Seed of the data (distinct from the source model's), init and batches."""
    classes: list[str] | None = None
    """Shape classes of the pretraining objects (no labels are used)."""


def pretrain_clip2point(
    clip: LoadedCLIP, depth: DepthConfig, config: PretrainConfig, engine: Any = None
) -> tuple[CLIP2Point, dict[str, float]]:
    """Image-depth pretraining of a depth encoder initialised from (or shaped like) ``clip``'s image tower."""
    classes = check_classes(config.classes)
    size = depth.size or clip.image_size
    if size != clip.image_size:
        raise ConfigError(
            f"--depth.size {size} differs from the CLIP image size {clip.image_size}; leave it unset"
        )
    g = torch.Generator().manual_seed(10_000 + config.seed)
    points, images, _ = shape_pairs(classes, config.per_class, config.n_points, size, g, depth.densify)
    model = CLIP2Point(clip.model.visual, clip.mean, clip.std, depth, size, config.init, config.seed)
    task = ImageDepthTask(model, config.seed)
    start = time.perf_counter()
    if engine is not None:
        from torch.utils.data import TensorDataset

        from warmstart.engine import Engine

        summary = Engine(engine, None).fit(task, TensorDataset(points, images))
        losses = [task.first_loss, float(summary.final_metrics["loss"])]
    else:
        losses = fit_tensors(
            task, (points, images), config.steps, config.batch_size, config.lr, 0.05, config.seed
        )
    model = model.cpu().eval()
    return model, {"loss_first": losses[0], "loss_last": losses[-1], "seconds": time.perf_counter() - start}


DEPTH_KIND = "3d.clip2point-depth"


def save_depth_encoder(
    model: CLIP2Point,
    clip: ClipSpec,
    depth: DepthConfig,
    folder: Path,
    extra: dict,
    metrics: dict | None = None,
) -> Path:
    """The depth encoder in the core's model format at ``folder/depth_encoder`` (config names the CLIP model and
    the depth rendering, so clip2point-eval rebuilds it from the folder alone)."""
    from warmstart.hub import ModelCard, save_model

    card = ModelCard(
        title=f"CLIP2Point depth encoder ({clip.model}, init {extra.get('init', 'clip')})",
        paper="CLIP2Point (arXiv 2210.01055)",
        metrics=dict(metrics or {}),
    )
    config = {"clip": asdict(clip), "depth": asdict(depth)}
    return save_model(
        model.depth_encoder, folder / "depth_encoder", kind=DEPTH_KIND, config=config, card=card, extra=extra
    )


def _depth_folder(checkpoint: Path) -> Path | None:
    for candidate in (checkpoint / "depth_encoder", checkpoint):
        if (candidate / "config.json").is_file():
            return candidate
    return None


def read_depth_checkpoint(checkpoint: str | Path) -> tuple[ClipSpec, DepthConfig, dict]:
    """(CLIP spec, depth config, the rest) of a clip2point-pretrain run directory or its ``depth_encoder``
    folder; an older run's ``clip2point.json`` + ``depth_encoder.safetensors`` reads the same."""
    from warmstart.hub import read_config

    checkpoint = Path(checkpoint)
    folder = _depth_folder(checkpoint)
    if folder is not None:
        meta = read_config(folder, DEPTH_KIND)
        config = meta["config"]
        rest = {k: v for k, v in meta.items() if k not in ("config", "files")}
    elif (checkpoint / "clip2point.json").is_file():  # the layout before the core's model format
        config = json.loads((checkpoint / "clip2point.json").read_text())
        rest = {k: v for k, v in config.items() if k not in ("clip", "depth")}
    else:
        raise CheckpointError(
            f"{checkpoint}: no depth_encoder/config.json; pass a clip2point-pretrain run directory"
        )
    return ClipSpec(**config["clip"]), DepthConfig(**config["depth"]), rest


def load_depth_encoder(folder: Path, clip: LoadedCLIP) -> nn.Module:
    """The pretrained depth encoder of a clip2point-pretrain run (shaped like ``clip``'s image tower)."""
    from warmstart.hub import load_model

    def build(_: dict) -> nn.Module:
        return copy.deepcopy(clip.model.visual).float()

    folder = Path(folder)
    saved = _depth_folder(folder)
    if saved is not None:
        try:
            encoder, _ = load_model(saved, build, kind=DEPTH_KIND)
        except CheckpointError as exc:
            if "does not fit" in str(exc):
                raise CheckpointError(
                    f"{saved}: does not match the image tower of {clip.source}; pass the --clip.model used in "
                    "pretraining"
                ) from None
            raise
        return encoder.eval()
    from safetensors.torch import load_file

    path = folder / "depth_encoder.safetensors"
    if not path.is_file():
        raise CheckpointError(
            f"{folder}: no depth_encoder.safetensors; pass a clip2point-pretrain run directory"
        )
    encoder = build({})
    try:
        encoder.load_state_dict(load_file(str(path)))
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: does not match the image tower of {clip.source}; pass the --clip.model used in pretraining"
        ) from exc
    return encoder.eval()


def run_pretrain(
    clip: ClipSpec,
    depth: DepthConfig,
    pretrain: PretrainConfig,
    source: SourceConfig,
    run_dir: Path,
    engine_config: Any = None,
) -> dict:
    """The ``clip2point-pretrain`` command: (a tiny source CLIP first when ``clip.model`` is ``tiny``), then
    image-depth pretraining; the depth encoder and results.json go into ``run_dir``. ``engine_config``:
    ``(steps, batch_size, lr) -> EngineConfig`` to train on the core engine, None for the plain loop."""
    results: dict = {}
    if clip.model == "tiny":
        cfg = engine_config(source.steps, source.batch_size, source.lr) if engine_config else None
        results |= {f"source_{k}": v for k, v in pretrain_source(source, run_dir / "clip", cfg).items()}
        clip = ClipSpec(model=str((run_dir / "clip").resolve()))
    loaded = load_clip(clip)
    cfg = engine_config(pretrain.steps, pretrain.batch_size, pretrain.lr) if engine_config else None
    if cfg is not None:
        cfg.train.seed = pretrain.seed
    model, info = pretrain_clip2point(loaded, depth, pretrain, cfg)
    results |= info
    path = save_depth_encoder(model, clip, depth, run_dir, {"init": pretrain.init}, info)
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    return results | {"depth_encoder": str(path)}
