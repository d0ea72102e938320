"""The EO pipelines: pretrain (MAE / Prithvi / SatMAE++, or soft-contrastive), fine-tune (classification,
segmentation) and the frozen-feature probe, each a function over a GeoTIFF folder.

Seed papers: the MAE family (see :mod:`warmstart_eo.models`); "Multi-Label Guided Soft Contrastive
Learning for Efficient Earth Observation Pretraining" (SoftCon, arXiv 2405.20462) for the soft-contrastive
objective — two augmented views, targets from the Jaccard overlap of the chips' land-cover multi-labels
(``warmstart.objectives.soft_contrastive_loss``); "Revisiting pre-trained remote sensing model benchmarks:
resizing and normalization matters" (arXiv 2305.13456) for the probe: inputs resized to the encoder's
pretraining size and normalised with the *pretraining* statistics, kNN with k = 5, and a per-band
statistics baseline beside every result. SoftCon's point is continual pretraining of an existing encoder:
``run_pretrain(init=...)`` starts from a saved or converted one. The engine (``warmstart.engine``) owns the
loops; the linear probe and kNN are ``warmstart.eval``'s; multi-label mAP / F1 are torchmetrics'. Classes,
task and bands come from the data; a pretrained encoder is adapted to the bands it shares with the data
(:func:`~warmstart_eo.models.adapt_encoder`) with its statistics selected by band name. Left out: data
augmentation in fine-tuning, layer-wise learning-rate decay, DINOv2-specific weights for SoftCon.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from warmstart.engine import Engine, EngineConfig
from warmstart.errors import ConfigError, DataError
from warmstart_eo.bands import channel_names
from warmstart_eo.data import (
    BandStats,
    DataConfig,
    EOChips,
    Preprocess,
    PreprocessConfig,
    compute_stats,
    load_dataset,
    split_chips,
)
from warmstart_eo.models import (
    MAE_KIND,
    Classifier,
    Encoder,
    MaskedAutoencoder,
    ModelConfig,
    Segmenter,
    adapt_encoder,
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


def prepare_model_config(model: ModelConfig, data: EOChips | DataConfig) -> ModelConfig:
    """Fill bands/frames from the data (or from a data config: its bands, all 13 S2 bands when unset)."""
    from warmstart_eo.bands import S2_BANDS, parse_bands

    bands = data.bands if isinstance(data, EOChips) else parse_bands(data.bands) or list(S2_BANDS)
    if data.frames < 1:
        raise ConfigError("data.frames must be ≥ 1")
    model.bands = list(bands)
    model.frames = data.frames
    return model


def load_pretrained(source: Path | str) -> tuple[MaskedAutoencoder, BandStats | None]:
    """A pretrained MAE (hub format, old layout, or a hub id) and the band statistics saved with it."""
    from warmstart.hub import read_config, resolve

    mae = load_model(source, kind=MAE_KIND)
    stats = None
    folder = Path(source) if Path(source).is_dir() else resolve(source)
    if (folder / "stats.json").is_file():
        stats = BandStats.load(folder / "stats.json")
    elif (folder / "config.json").is_file():
        saved = read_config(folder).get("stats")
        stats = BandStats(**saved) if saved else None
    return mae, stats


def align_to_encoder(
    chips: EOChips, mae: MaskedAutoencoder, stats: BandStats | None
) -> tuple[EOChips, Encoder, BandStats | None, dict[str, Any]]:
    """The data's and the encoder's shared bands (the data's order): the encoder adapted to them, the data
    and the statistics selected by name. Reports what each side dropped."""
    enc_bands = list(mae.config.bands)
    if chips.frames != mae.config.frames:
        raise ConfigError(
            f"the encoder takes {mae.config.frames} frame(s) but the data gives {chips.frames}; set "
            f"data_config.frames={mae.config.frames}"
        )
    shared = [b for b in chips.bands if b in enc_bands]
    if not shared:
        raise DataError(
            f"the data's bands {','.join(chips.bands)} and the encoder's {','.join(enc_bands)} share none; "
            "pretrain on (or convert) an encoder for these bands"
        )
    notes = {
        "bands used": ",".join(shared),
        "data bands the encoder lacks (dropped)": [b for b in chips.bands if b not in enc_bands],
        "encoder bands the data lacks (dropped)": [b for b in enc_bands if b not in shared],
    }
    if notes["encoder bands the data lacks (dropped)"] or shared != enc_bands:
        log.info("encoder adapted to the data's bands %s", shared)
    encoder = adapt_encoder(mae.encoder, shared)
    chips = chips.select_bands(shared)
    if stats is not None:
        stats = stats.select(channel_names(shared, chips.frames))
    return chips, encoder, stats, notes


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
    chips: EOChips | None = None,
    init: Path | str | None = None,
) -> PretrainResult:
    """Pretrain on a GeoTIFF folder or a named dataset; writes the model (hub format) and ``stats.json``.

    ``init``: continue from an existing encoder (a pretrain run, a converted checkpoint, a hub id) —
    SoftCon's continual pretraining; the encoder is adapted to the data's bands, the decoder is kept
    when the bands match and rebuilt otherwise.
    """
    chips = chips if chips is not None else load_dataset(data, data_config, root)
    if objective == "soft-contrastive" and not bool(chips.multilabels.sum() > 0):
        raise DataError(
            f"--objective soft-contrastive needs multi-labels (land-cover classes per chip); {data} has none "
            "(use a labelled folder or bigearthnet)"
        )
    if init is not None:
        source, source_stats = load_pretrained(init)
        chips, encoder, _, _ = align_to_encoder(chips, source, source_stats)
        cfg = ModelConfig(**{**asdict(source.config), **asdict(encoder.config)})
        mae = source if encoder is source.encoder else build_mae(cfg)
        if mae is not source:
            mae.encoder = encoder
        model_config = mae.config
    else:
        model_config = prepare_model_config(model_config, chips)
        torch.manual_seed(engine_config.train.seed)
        mae = build_mae(model_config)
    stats = compute_stats(chips)
    if run_dir is not None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        stats.save(Path(run_dir) / "stats.json")
    dataset = chips.with_transform(Preprocess(stats, PreprocessConfig(), model_config.input_size))
    model: nn.Module = mae if objective == "mae" else SoftConModel(mae)
    summary = Engine(engine_config, run_dir).fit(
        PretrainTask(model, objective), dataset, resume_from=resume_from
    )
    if run_dir is not None:
        save_model(
            mae,
            Path(run_dir),
            extra={"stats": asdict(stats), "objective": objective, "init": str(init or "")},
        )
    return PretrainResult(summary, mae, stats, run_dir)


# ---------------------------------------------------------------------------------------------------
# fine-tuning
# ---------------------------------------------------------------------------------------------------
Kind = Literal["classify", "multilabel", "segment"]


def miou(pred: torch.Tensor, target: torch.Tensor, classes: int) -> float:
    """Mean IoU over the classes present in prediction or target (pixels with target −1 ignored).

    torchmetrics' macro Jaccard index, which leaves out classes absent from both.
    """
    from torchmetrics.functional.classification import multiclass_jaccard_index

    score = multiclass_jaccard_index(pred, target, classes, average="macro", ignore_index=-1)
    return float(score)


def multilabel_scores(logits: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """BigEarthNet's metrics through torchmetrics: macro / micro mAP and micro / macro F1 at 0.5."""
    from torchmetrics.functional.classification import multilabel_average_precision, multilabel_f1_score

    k, t = logits.shape[1], target.long()
    return {
        "map_macro": float(multilabel_average_precision(logits, t, k, average="macro")),
        "map_micro": float(multilabel_average_precision(logits, t, k, average="micro")),
        "f1_micro": float(multilabel_f1_score(logits.sigmoid(), t, k, average="micro")),
        "f1_macro": float(multilabel_f1_score(logits.sigmoid(), t, k, average="macro")),
    }


class FinetuneTask:
    """Cross-entropy on scene labels (classify) or pixels (segment), BCE on multi-labels; ``evaluate`` on
    held-out chips at their native label size."""

    def __init__(
        self,
        model: nn.Module,
        kind: Kind,
        test: EOChips,
        classes: int,
        batch: int = 64,
        lr: float = 1e-3,
        layer_decay: float = 1.0,
    ):
        self.model = model
        self.kind = kind
        self.test = test
        self.classes = classes
        self.batch = batch
        self.lr = lr
        self.layer_decay = layer_decay

    def param_groups(self) -> list[dict[str, Any]]:
        """Layer-wise lr decay (MAE / SatMAE fine-tuning, BEiT's recipe): block ``i`` of ``L`` trains at
        ``lr · decay^(L − i)``, the patch embedding at ``lr · decay^(L + 1)``, the head and the final norm at
        ``lr``; ``layer_decay = 1`` is one group at ``lr``."""
        return layer_decay_groups(self.model, self.lr, self.layer_decay)

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        logits = self.model(batch["image"])
        if self.kind == "classify":
            loss = F.cross_entropy(logits, batch["label"], ignore_index=-1)
            acc = (logits.argmax(-1) == batch["label"]).float().mean()
        elif self.kind == "multilabel":
            loss = F.binary_cross_entropy_with_logits(logits, batch["multilabel"])
            acc = ((logits > 0).float() == batch["multilabel"]).float().mean()
        else:
            loss = F.cross_entropy(logits, batch["mask"], ignore_index=-1)
            valid = batch["mask"] >= 0
            acc = (logits.argmax(1) == batch["mask"])[valid].float().mean()
        return loss, {"acc": acc.detach(), "samples": logits.shape[0]}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        device = next(self.model.parameters()).device
        outs, masks = [], []
        for start in range(0, len(self.test), self.batch):
            idx = range(start, min(start + self.batch, len(self.test)))
            x = torch.stack([self.test[i]["image"] for i in idx]).to(device)
            out = self.model(x).float()
            if self.kind == "segment":  # scored on the native label grid
                native = [self.test.raw(i)[1] for i in idx]
                size = native[0].shape[-2:]
                out = F.interpolate(out, size=size, mode="bilinear", align_corners=False).argmax(1)
                masks.append(torch.stack(native))
            outs.append(out.cpu())
        out = torch.cat(outs)
        if self.kind == "classify":
            valid = self.test.labels >= 0
            return {"accuracy": float((out.argmax(-1) == self.test.labels)[valid].float().mean())}
        if self.kind == "multilabel":
            return multilabel_scores(out, self.test.multilabels)
        target = torch.cat(masks)
        valid = target >= 0
        return {
            "pixel_accuracy": float((out == target)[valid].float().mean()),
            "miou": miou(out, target, self.classes),
        }


def layer_decay_groups(model: nn.Module, lr: float, decay: float) -> list[dict[str, Any]]:
    """Optimizer groups of a fine-tuned ``model`` (``model.encoder`` + a head) under layer-wise lr decay."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    encoder = getattr(model, "encoder", None)
    if decay == 1.0 or encoder is None:
        return [{"params": [p for _, p in trainable], "lr": lr}]
    if not 0.0 < decay <= 1.0:
        raise ConfigError(f"layer_decay={decay} must be in (0, 1]")
    depth = len(encoder.blocks)
    groups: dict[int, list[nn.Parameter]] = {}
    for name, param in trainable:
        if not name.startswith("encoder."):
            layer = depth + 1  # the head
        elif name.startswith("encoder.blocks."):
            layer = int(name.split(".")[2]) + 1
        elif name.startswith("encoder.norm."):
            layer = depth + 1
        else:
            layer = 0  # tokens: patch / tubelet / group embeddings
        groups.setdefault(layer, []).append(param)
    return [{"params": ps, "lr": lr * decay ** (depth + 1 - layer)} for layer, ps in sorted(groups.items())]


def require_labels(chips: EOChips, kind: str, data: Any = "the data") -> None:
    """One line when the data cannot serve the task: no labels at all, or not of this kind."""
    if not chips.has_labels:
        raise DataError(
            f"{data}: no labels (nothing under labels/ or an unlabelled corpus); {kind} needs a labels/ folder "
            "of per-pixel rasters or a labelled dataset — use `pretrain` for unlabelled data"
        )
    if kind not in chips.tasks:
        raise ConfigError(f"--task {kind}: {data} serves {', '.join(chips.tasks)}; pick one of those")


def label_subset(train: EOChips, fraction: float, seed: int, minimum: int) -> tuple[EOChips, int]:
    """A random ``fraction`` of the training labels (at least one chip) and the number of distinct chips.

    When fewer than ``minimum`` (one micro-batch) chips are kept, the subset is repeated whole until it
    fills a batch, so 1 % of the labels stays 1 % of the distinct labelled chips (each seen equally often).
    """
    k = min(len(train), max(1, int(round(fraction * len(train)))))
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(1000 + seed))[:k]
    if k < minimum:
        idx = idx.repeat(-(-minimum // k))  # (⌈minimum / k⌉ · k,)
    return train.subset(idx), k


def _labelled(chips: EOChips, kind: str) -> EOChips:
    """Chips that carry a label of this kind (a scene label ≥ 0, any multi-label, any labelled pixel)."""
    if kind == "classify":
        keep = chips.labels >= 0
    elif kind == "multilabel":
        keep = chips.multilabels.sum(1) > 0
    else:
        keep = (
            torch.ones(len(chips), dtype=torch.bool)
            if not hasattr(chips, "masks") or chips.masks is None
            else ((chips.masks >= 0).flatten(1).any(1))
        )
    return chips.subset(torch.nonzero(keep).flatten())


def health(kind: str, metrics: dict[str, float], test: EOChips) -> list[str]:
    """Lines for a head that did not learn: accuracy at or below the majority class, mAP at the prior."""
    out = []
    if kind == "classify" and "accuracy" in metrics and len(test):
        valid = test.labels[test.labels >= 0]
        majority = float(torch.bincount(valid).max()) / max(1, len(valid))
        if metrics["accuracy"] <= majority + 1e-9:
            out.append(
                f"accuracy {metrics['accuracy']:.3f} ≤ majority-class rate {majority:.3f}: the head did not learn"
            )
    if kind == "multilabel" and "map_micro" in metrics:
        prior = float(test.multilabels.mean())
        if metrics["map_micro"] <= prior + 1e-9:
            out.append(
                f"micro mAP {metrics['map_micro']:.3f} ≤ label prior {prior:.3f}: the head did not learn"
            )
    if kind == "segment" and "miou" in metrics and metrics["miou"] <= 1.0 / max(2, test.num_classes):
        out.append(f"mIoU {metrics['miou']:.3f} at chance: the head did not learn")
    return out


def run_finetune(
    chips: EOChips,
    *,
    pretrained: Path | str | None,
    model_config: ModelConfig,
    data_config: DataConfig,
    engine_config: EngineConfig,
    kind: Kind = "classify",
    preprocess: PreprocessConfig | None = None,
    label_fraction: float = 1.0,
    freeze_encoder: bool = False,
    run_dir: Path | None = None,
    split_seed: int = 0,
    light: bool = False,
    layer_decay: float = 1.0,
) -> dict[str, Any]:
    """Fine-tune a head (and the encoder) on a fixed train split; returns the held-out metrics.

    ``layer_decay`` < 1: layer-wise lr decay (:func:`layer_decay_groups`), as MAE / SatMAE fine-tune.

    With ``run_dir`` the fine-tuned model is saved there (hub format: ``load_model(run_dir, kind=...)``).
    ``light``: the engine's step in this process (``warmstart.engine.light_fit``), for a bench's many fits.
    """
    require_labels(chips, kind)
    torch.manual_seed(engine_config.train.seed)
    notes: dict[str, Any] = {}
    if pretrained is None:
        encoder, stats = build_mae(prepare_model_config(model_config, chips)).encoder, None
    else:
        mae, stats = load_pretrained(pretrained)
        chips, encoder, stats, notes = align_to_encoder(chips, mae, stats)
    preprocess = preprocess or PreprocessConfig()
    train, test = split_chips(chips, split_seed=split_seed)
    train, test = _labelled(train, kind), _labelled(test, kind)
    if not len(train) or not len(test):
        raise DataError(f"too few labelled chips for --task {kind} ({len(train)} train, {len(test)} test)")
    if stats is None:  # scratch (or weights saved without statistics): statistics of its own training data
        stats = compute_stats(train)
    transform = Preprocess(stats, preprocess, encoder.config.img_size)
    train, labelled = label_subset(
        train, label_fraction, engine_config.train.seed, engine_config.train.micro_batch_size
    )
    train, test = train.with_transform(transform), test.with_transform(transform)
    k = chips.num_classes
    model: nn.Module = (
        Segmenter(encoder, k) if kind == "segment" else Classifier(encoder, k, kind == "multilabel")
    )
    if freeze_encoder:
        encoder.requires_grad_(False)
    task = FinetuneTask(model, kind, test, k, lr=engine_config.optimizer.lr, layer_decay=layer_decay)
    if light:
        metrics = _light_fit(task, train, engine_config)
    else:
        summary = Engine(engine_config, run_dir).fit(task, train)
        metrics = {
            k.removeprefix("eval/"): float(v)
            for k, v in summary.final_metrics.items()
            if k.startswith("eval/")
        }
        metrics["train_loss"] = float(summary.final_metrics.get("loss", float("nan")))
        metrics["samples_per_s"] = float(summary.samples_per_s)
    metrics["train_chips"] = float(labelled)
    metrics["test_chips"] = float(len(test))
    lines = health(kind, metrics, test)
    if run_dir is not None:
        save_model(
            model,
            Path(run_dir),
            extra={
                "classes": chips.classes,
                "bands": chips.bands,
                "stats": asdict(stats),
                "metrics": metrics,
                "health": lines,
                "data": chips.notes | notes,
            },
        )
    metrics["health"] = lines  # type: ignore[assignment]
    metrics["notes"] = chips.notes | notes  # type: ignore[assignment]
    return metrics


def _light_fit(task: FinetuneTask, train: EOChips, config: EngineConfig) -> dict[str, Any]:
    """``light_fit`` with the engine config's optimizer, schedule, clipping and seed; then ``evaluate``."""
    import time

    from warmstart.engine.light import light_fit

    seed = config.train.seed
    loader = torch.utils.data.DataLoader(
        train,
        batch_size=config.train.micro_batch_size,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(seed),
    )
    t0 = time.perf_counter()
    losses = light_fit(
        task.model,
        task.loss,
        loader,
        params=task.param_groups(),
        steps=config.train.max_steps,
        lr=config.optimizer.lr,
        optimizer=config.optimizer,
        schedule=config.schedule,
        grad_clip_norm=config.train.grad_clip_norm,
        seed=seed,
        device="cpu" if not torch.cuda.is_available() else None,
    )
    elapsed = time.perf_counter() - t0
    task.model.eval()
    metrics: dict[str, Any] = task.evaluate()
    metrics["train_loss"] = losses[-1]
    metrics["samples_per_s"] = config.train.max_steps * config.train.micro_batch_size / max(elapsed, 1e-9)
    return metrics


# ---------------------------------------------------------------------------------------------------
# frozen-feature probe
# ---------------------------------------------------------------------------------------------------
@torch.no_grad()
def extract_features(encoder: Encoder, chips: EOChips, batch: int = 64) -> torch.Tensor:
    encoder.eval()
    out = []
    for start in range(0, len(chips), batch):
        x = torch.stack([chips[i]["image"] for i in range(start, min(start + batch, len(chips)))])
        out.append(encoder.pooled(x))
    return torch.cat(out)  # (N, D)


def stats_features(chips: EOChips) -> torch.Tensor:
    """Per-band mean and std of each (preprocessed) chip: the statistics baseline of Corley et al."""
    x = torch.stack([chips[i]["image"] for i in range(len(chips))]).flatten(2)  # (N, C, h·w)
    return torch.cat([x.mean(-1), x.std(-1)], dim=1)  # (N, 2C)


def run_probe(
    chips: EOChips,
    *,
    pretrained: Path | str | None,
    model_config: ModelConfig,
    data_config: DataConfig,
    preprocess: PreprocessConfig | None = None,
    k: int = 5,
    seed: int = 0,
    split_seed: int = 0,
) -> dict[str, float]:
    """Linear probe + kNN (k = 5) on frozen pooled features, and the same on per-band statistics."""
    from warmstart.eval import knn_accuracy, linear_probe

    require_labels(chips, "classify")
    torch.manual_seed(seed)
    if pretrained is None:
        encoder, stats = build_mae(prepare_model_config(model_config, chips)).encoder, None
    else:
        mae, stats = load_pretrained(pretrained)
        chips, encoder, stats, _ = align_to_encoder(chips, mae, stats)
    preprocess = preprocess or PreprocessConfig()
    train, test = split_chips(chips, split_seed=split_seed)
    train, test = _labelled(train, "classify"), _labelled(test, "classify")
    if not len(train) or not len(test):
        raise DataError(f"too few labelled chips to probe ({len(train)} train, {len(test)} test)")
    if stats is None:
        stats = compute_stats(train)
    transform = Preprocess(stats, preprocess, encoder.config.img_size)
    train, test = train.with_transform(transform), test.with_transform(transform)
    n_classes = chips.num_classes
    out: dict[str, float] = {}
    for name, fn in (("", lambda c: extract_features(encoder, c)), ("stats_", stats_features)):
        f_train, f_test = fn(train), fn(test)
        probe = linear_probe(f_train, train.labels, f_test, test.labels, num_classes=n_classes, seed=seed)
        out[f"{name}linear"] = probe.accuracy
        out[f"{name}knn"] = knn_accuracy(
            f_train, train.labels, f_test, test.labels, k=k, num_classes=n_classes
        )
    return out
