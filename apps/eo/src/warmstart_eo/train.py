"""The EO pipelines: pretrain (MAE / Prithvi / SatMAE++, or soft-contrastive), fine-tune (classification,
segmentation) and the frozen-feature probe, each a function over a GeoTIFF folder.

Seed papers: the MAE family (see :mod:`warmstart_eo.models`); "Multi-Label Guided Soft Contrastive
Learning for Efficient Earth Observation Pretraining" (SoftCon, arXiv 2405.20462) for the soft-contrastive
objective — two augmented views, targets from the Jaccard overlap of the chips' land-cover multi-labels
(``warmstart.objectives.soft_contrastive_loss``); "Revisiting pre-trained remote sensing model benchmarks:
resizing and normalization matters" (arXiv 2305.13456) for the probe: inputs resized to the encoder's
pretraining size and normalised with the *pretraining* statistics, kNN with k = 5, and a per-band
statistics baseline beside every result. The engine (``warmstart.engine``) owns the loops; the linear
probe and kNN are ``warmstart.eval``'s. Left out: SoftCon's continual pretraining from DINOv2 weights,
data augmentation in fine-tuning, layer-wise learning-rate decay.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from warmstart.engine import Engine, EngineConfig
from warmstart.errors import ConfigError
from warmstart_eo.data import (
    CLASSES,
    BandStats,
    Chips,
    DataConfig,
    Preprocess,
    PreprocessConfig,
    compute_stats,
    load_dataset,
    split_indices,
)
from warmstart_eo.models import (
    Classifier,
    Encoder,
    MaskedAutoencoder,
    ModelConfig,
    Segmenter,
    build_mae,
    load_model,
    save_model,
)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------
# pretraining
# ---------------------------------------------------------------------------------------------------
def random_view(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A cheap EO augmentation of a batch (B, C, H, W): random flips, 90° rotation, brightness, noise."""
    b = x.shape[0]
    r = torch.rand(b, 4, generator=generator).to(x.device)  # (B, 4)
    x = torch.where(r[:, 0, None, None, None] < 0.5, x.flip(-1), x)
    x = torch.where(r[:, 1, None, None, None] < 0.5, x.flip(-2), x)
    x = torch.where(r[:, 2, None, None, None] < 0.5, x.transpose(-1, -2), x)
    scale = 1.0 + 0.1 * (r[:, 3, None, None, None] - 0.5)
    return x * scale + 0.05 * torch.randn(x.shape, generator=generator).to(x.device)


class SoftConModel(nn.Module):
    """Encoder (inside the MAE, so the saved weights keep one layout) + a projection head."""

    def __init__(self, mae: MaskedAutoencoder, out_dim: int = 64) -> None:
        super().__init__()
        self.mae = mae
        d = mae.encoder.dim
        self.projector = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, out_dim))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if a.shape[-1] != self.mae.config.img_size:
            size = (self.mae.config.img_size,) * 2
            a = F.interpolate(a, size=size, mode="bilinear", align_corners=False)
            b = F.interpolate(b, size=size, mode="bilinear", align_corners=False)
        return self.projector(self.mae.encoder.pooled(a)), self.projector(self.mae.encoder.pooled(b))


class PretrainTask:
    """``objective=mae``: the family's masked reconstruction; ``soft-contrastive``: SoftCon on two views."""

    def __init__(
        self, model: nn.Module, objective: Literal["mae", "soft-contrastive"], temperature: float = 0.1
    ):
        self.model = model
        self.objective = objective
        self.temperature = temperature

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        from warmstart.objectives import label_similarity, soft_contrastive_loss

        x = batch["image"]  # (B, T·C, S, S)
        if self.objective == "mae":
            out = self.model(x)
            metrics = {k: v.detach() for k, v in out.items() if k in ("mse",) or k.startswith("l1_")}
            return out["loss"], metrics | {"samples": x.shape[0]}
        za, zb = self.model(random_view(x), random_view(x))  # (B, P) each
        targets = label_similarity(batch["multilabel"])  # (B, B) Jaccard overlap of land-cover labels
        loss = soft_contrastive_loss(za, zb, targets, temperature=self.temperature)
        return loss, {"samples": x.shape[0]}


@dataclass
class PretrainResult:
    summary: Any
    model: MaskedAutoencoder
    stats: BandStats
    run_dir: Path | None


def prepare_model_config(model: ModelConfig, data: DataConfig) -> ModelConfig:
    """Fill bands/frames from the data config and check the family's needs."""
    model.bands = list(data.bands)
    model.frames = data.frames
    if model.family == "prithvi" and data.frames < 1:
        raise ConfigError("data.frames must be ≥ 1")
    return model


def run_pretrain(
    data: str | Path,
    data_config: DataConfig,
    model_config: ModelConfig,
    engine_config: EngineConfig,
    *,
    objective: Literal["mae", "soft-contrastive"] = "mae",
    run_dir: Path | None = None,
    resume_from: Path | None = None,
    root: Path | None = None,
    chips: Chips | None = None,
) -> PretrainResult:
    """Pretrain on a GeoTIFF folder; writes ``stats.json``, ``model.safetensors`` and ``model.json``."""
    chips = chips if chips is not None else load_dataset(data, data_config, root)
    model_config = prepare_model_config(model_config, data_config)
    stats = compute_stats(chips)
    if run_dir is not None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        stats.save(Path(run_dir) / "stats.json")
    dataset = chips.with_transform(Preprocess(stats, PreprocessConfig(), model_config.input_size))
    torch.manual_seed(engine_config.train.seed)
    mae = build_mae(model_config)
    model: nn.Module = mae if objective == "mae" else SoftConModel(mae)
    summary = Engine(engine_config, run_dir).fit(
        PretrainTask(model, objective), dataset, resume_from=resume_from
    )
    if run_dir is not None:
        save_model(mae, Path(run_dir))
    return PretrainResult(summary, mae, stats, run_dir)


# ---------------------------------------------------------------------------------------------------
# fine-tuning
# ---------------------------------------------------------------------------------------------------
def miou(pred: torch.Tensor, target: torch.Tensor, classes: int) -> float:
    """Mean IoU over the classes present in prediction or target (pixels with target −1 ignored).

    torchmetrics' macro Jaccard index, which leaves out classes absent from both.
    """
    from torchmetrics.functional.classification import multiclass_jaccard_index

    score = multiclass_jaccard_index(pred, target, classes, average="macro", ignore_index=-1)
    return float(score)


class FinetuneTask:
    """Cross-entropy on scene labels (classify) or pixels (segment); ``evaluate`` on held-out chips."""

    def __init__(self, model: nn.Module, kind: Literal["classify", "segment"], test: Chips, batch: int = 64):
        self.model = model
        self.kind = kind
        self.test = test
        self.batch = batch

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        logits = self.model(batch["image"])
        if self.kind == "classify":
            loss = F.cross_entropy(logits, batch["label"], ignore_index=-1)
            acc = (logits.argmax(-1) == batch["label"]).float().mean()
        else:
            loss = F.cross_entropy(logits, batch["mask"], ignore_index=-1)
            valid = batch["mask"] >= 0
            acc = (logits.argmax(1) == batch["mask"])[valid].float().mean()
        return loss, {"acc": acc.detach(), "samples": logits.shape[0]}

    def evaluate(self) -> dict[str, float]:
        device = next(self.model.parameters()).device
        preds = []
        for start in range(0, len(self.test), self.batch):
            items = [self.test[i] for i in range(start, min(start + self.batch, len(self.test)))]
            x = torch.stack([it["image"] for it in items]).to(device)
            out = self.model(x)
            preds.append((out.argmax(-1) if self.kind == "classify" else out.argmax(1)).cpu())
        pred = torch.cat(preds)
        if self.kind == "classify":
            valid = self.test.labels >= 0
            return {"accuracy": float((pred == self.test.labels)[valid].float().mean())}
        valid = self.test.masks >= 0
        return {
            "pixel_accuracy": float((pred == self.test.masks)[valid].float().mean()),
            "miou": miou(pred, self.test.masks, len(CLASSES)),
        }


def encoder_from(
    pretrained: Path | None, model_config: ModelConfig, data_config: DataConfig
) -> tuple[Encoder, BandStats | None]:
    """The pretrained encoder and its statistics (data bands/frames follow it), or a fresh one (scratch)."""
    if pretrained is None:
        return build_mae(prepare_model_config(model_config, data_config)).encoder, None
    mae = load_model(Path(pretrained))
    stats = BandStats.load(Path(pretrained) / "stats.json")
    if list(data_config.bands) != mae.config.bands or data_config.frames != mae.config.frames:
        log.info("using the encoder's bands %s and frames %d", mae.config.bands, mae.config.frames)
        data_config.bands, data_config.frames = list(mae.config.bands), mae.config.frames
    return mae.encoder, stats


def split_chips(chips: Chips, test_fraction: float = 0.3, split_seed: int = 0) -> tuple[Chips, Chips]:
    """A fixed train / test split (the same test chips for every seed and method)."""
    n_test = max(1, int(round(test_fraction * len(chips))))
    test_idx, train_idx = split_indices(
        len(chips), (n_test / len(chips), 1 - n_test / len(chips)), split_seed
    )
    return chips.subset(train_idx), chips.subset(test_idx)


def label_subset(train: Chips, fraction: float, seed: int, minimum: int) -> tuple[Chips, int]:
    """A random ``fraction`` of the training labels (at least one chip) and the number of distinct chips.

    When fewer than ``minimum`` (one micro-batch) chips are kept, the subset is repeated whole until it
    fills a batch, so 1 % of the labels stays 1 % of the distinct labelled chips (each seen equally often).
    """
    k = min(len(train), max(1, int(round(fraction * len(train)))))
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(1000 + seed))[:k]
    if k < minimum:
        idx = idx.repeat(-(-minimum // k))  # (⌈minimum / k⌉ · k,)
    return train.subset(idx), k


def run_finetune(
    chips: Chips,
    *,
    pretrained: Path | None,
    model_config: ModelConfig,
    data_config: DataConfig,
    engine_config: EngineConfig,
    kind: Literal["classify", "segment"] = "classify",
    preprocess: PreprocessConfig | None = None,
    label_fraction: float = 1.0,
    freeze_encoder: bool = False,
    run_dir: Path | None = None,
) -> dict[str, float]:
    """Fine-tune a head (and the encoder) on a fixed train split; returns the held-out metrics."""
    torch.manual_seed(engine_config.train.seed)
    encoder, stats = encoder_from(pretrained, model_config, data_config)
    preprocess = preprocess or PreprocessConfig()
    train, test = split_chips(chips)
    if stats is None:  # scratch: statistics of its own training data
        stats = compute_stats(train)
    transform = Preprocess(stats, preprocess, encoder.config.img_size)
    train, labelled = label_subset(
        train, label_fraction, engine_config.train.seed, engine_config.train.micro_batch_size
    )
    train, test = train.with_transform(transform), test.with_transform(transform)
    model: nn.Module = (
        Classifier(encoder, len(CLASSES)) if kind == "classify" else Segmenter(encoder, len(CLASSES))
    )
    if freeze_encoder:
        encoder.requires_grad_(False)
    summary = Engine(engine_config, run_dir).fit(FinetuneTask(model, kind, test), train)
    metrics = {
        k.removeprefix("eval/"): float(v) for k, v in summary.final_metrics.items() if k.startswith("eval/")
    }
    metrics["train_loss"] = float(summary.final_metrics.get("loss", float("nan")))
    metrics["samples_per_s"] = float(summary.samples_per_s)
    metrics["train_chips"] = float(labelled)
    return metrics


# ---------------------------------------------------------------------------------------------------
# frozen-feature probe
# ---------------------------------------------------------------------------------------------------
@torch.no_grad()
def extract_features(encoder: Encoder, chips: Chips, batch: int = 64) -> torch.Tensor:
    encoder.eval()
    out = []
    for start in range(0, len(chips), batch):
        x = torch.stack([chips[i]["image"] for i in range(start, min(start + batch, len(chips)))])
        out.append(encoder.pooled(x))
    return torch.cat(out)  # (N, D)


def stats_features(chips: Chips) -> torch.Tensor:
    """Per-band mean and std of each (preprocessed) chip: the statistics baseline of Corley et al."""
    x = torch.stack([chips[i]["image"] for i in range(len(chips))]).flatten(2)  # (N, C, h·w)
    return torch.cat([x.mean(-1), x.std(-1)], dim=1)  # (N, 2C)


def run_probe(
    chips: Chips,
    *,
    pretrained: Path | None,
    model_config: ModelConfig,
    data_config: DataConfig,
    preprocess: PreprocessConfig | None = None,
    k: int = 5,
    seed: int = 0,
) -> dict[str, float]:
    """Linear probe + kNN (k = 5) on frozen pooled features, and the same on per-band statistics."""
    from warmstart.eval import knn_accuracy, linear_probe

    torch.manual_seed(seed)
    encoder, stats = encoder_from(pretrained, model_config, data_config)
    preprocess = preprocess or PreprocessConfig()
    train, test = split_chips(chips)
    train = train.subset(torch.nonzero(train.labels >= 0).flatten())
    test = test.subset(torch.nonzero(test.labels >= 0).flatten())
    if stats is None:
        stats = compute_stats(train)
    transform = Preprocess(stats, preprocess, encoder.config.img_size)
    train, test = train.with_transform(transform), test.with_transform(transform)
    out: dict[str, float] = {}
    for name, fn in (("", lambda c: extract_features(encoder, c)), ("stats_", stats_features)):
        f_train, f_test = fn(train), fn(test)
        probe = linear_probe(f_train, train.labels, f_test, test.labels, num_classes=len(CLASSES), seed=seed)
        out[f"{name}linear"] = probe.accuracy
        out[f"{name}knn"] = knn_accuracy(
            f_train, train.labels, f_test, test.labels, k=k, num_classes=len(CLASSES)
        )
    return out
