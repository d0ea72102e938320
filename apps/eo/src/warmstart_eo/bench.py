"""The EO bench: what MAE-family pretraining buys on the same fine-tuning budget, and what the resizing /
normalisation protocol of Corley et al. (arXiv 2305.13456) changes for a frozen encoder.

For each seed: pretrain MAE, SatMAE++ (and Prithvi on the multi-temporal input) on the generated
GeoTIFFs, then fine-tune every encoder and a scratch encoder with the same steps, batch and data; report
fine-tune accuracy at 1 / 10 / 100 % of the labels, segmentation mIoU, linear-probe and kNN (k = 5)
accuracy with the per-band statistics baseline. Scratch has two rows: the plain ViT on the last frame
(the single-frame encoders' peer) and Prithvi's architecture on 3 frames (Prithvi's peer on the
time-series task). A second table probes one pretrained family (one encoder per seed) under resize on/off
× normalisation pretrain/scale/none. Reports go through ``warmstart.eval.write_bench_report``.
:func:`throughput` is the speed comparison with torchgeo's MAE task (Lightning ``Trainer``) in paired
rounds. Left out: confidence beyond the seeds' bootstrap.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from warmstart.engine import quick_config
from warmstart_eo.data import DataConfig, PreprocessConfig, SynthConfig, load_dataset, synthesize
from warmstart_eo.models import ModelConfig
from warmstart_eo.train import run_finetune, run_pretrain, run_probe

log = logging.getLogger(__name__)


@dataclass
class BenchConfig:
    seeds: int = 3
    """Seeds per method."""
    pretrain_steps: int = 150
    """Pretraining steps per encoder."""
    finetune_steps: int = 60
    """Fine-tuning steps (the same for every method)."""
    batch: int = 16
    """Micro-batch size of every run."""
    lr: float = 1e-3
    """Peak learning rate of every run."""
    label_fractions: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0])
    """Fractions of the training labels for the label-efficiency curve (distinct labelled chips; a subset
    smaller than one batch is repeated to fill it)."""
    families: list[str] = field(default_factory=lambda: ["mae", "satmaepp", "prithvi"])
    """Pretrained encoders to compare with scratch."""
    segmentation: bool = True
    """Also fine-tune the segmentation head (mIoU)."""
    grid: bool = True
    """Run the resizing × normalisation grid on the first pretrained family."""
    scenes: int = 12
    """Generated scenes (128 px, 3 frames)."""
    chip_size: int = 32
    """Chip size of the fine-tuning / probe data."""
    probe_chip_size: int = 16
    """Chip size of the probe grid (smaller than the pretraining size, as EuroSAT's 64 px vs 224)."""


SCRATCH_T = "scratch-t3"
"""The time-series scratch baseline: Prithvi's architecture on 3 frames, random init (Prithvi's peer)."""


def _model(family: str, size: int) -> ModelConfig:
    return ModelConfig(family=family, img_size=size, patch_size=8, scales=1 if family == "satmaepp" else 0)  # type: ignore[arg-type]


def _arch(method: str) -> tuple[str, int]:
    """(model family, frames) of a bench method: scratch = plain MAE ViT on 1 frame."""
    if method == "scratch":
        return "mae", 1
    if method == SCRATCH_T:
        return "prithvi", 3
    return method, 3 if method == "prithvi" else 1


def run_bench(out: Path, config: BenchConfig, data_root: Path | None = None) -> dict[str, Any]:
    """Run the bench; write ``report.md``, ``plot.png``, ``results.json`` (and ``grid/``) under ``out``."""
    from warmstart.eval import write_bench_report

    out = Path(out)
    root = data_root or out / "data"
    if not (root / "images").is_dir():
        synthesize(root, SynthConfig(scenes=config.scenes, size=128, frames=3, seed=1234))
    start = time.perf_counter()
    chip = config.chip_size
    datasets = {}
    for frames in (1, 3):
        datasets[frames] = load_dataset(root, DataConfig(chip_size=chip, stride=chip // 2, frames=frames))
    methods = ["scratch", *config.families]
    if "prithvi" in config.families:
        methods.insert(1, SCRATCH_T)
    ft: dict[str, dict[str, dict[int, float]]] = {}  # metric → method → seed → value
    wall: dict[str, dict[int, float]] = {m: {} for m in methods}
    labelled: dict[float, int] = {}

    def put(metric: str, method: str, seed: int, value: float) -> None:
        ft.setdefault(metric, {}).setdefault(method, {})[seed] = value

    for seed in range(config.seeds):
        pretrained: dict[str, Path | None] = {"scratch": None, SCRATCH_T: None}
        for family in config.families:
            frames = _arch(family)[1]
            data_cfg = DataConfig(chip_size=chip, stride=chip // 2, frames=frames)
            model_cfg = _model(family, chip)
            pre_dir = out / "pretrain" / f"{family}-seed{seed}"
            t0 = time.perf_counter()
            run_pretrain(
                root, data_cfg, model_cfg, quick_config(config.pretrain_steps, config.batch, config.lr, seed),
                run_dir=pre_dir, chips=datasets[frames],
            )  # fmt: skip
            wall[family][seed] = time.perf_counter() - t0
            pretrained[family] = pre_dir
            log.info("seed %d: pretrained %s in %.1f s", seed, family, wall[family][seed])
        for method in methods:
            family, frames = _arch(method)
            chips = datasets[frames]
            data_cfg = DataConfig(chip_size=chip, frames=frames)
            model_cfg = _model(family, chip)
            engine = quick_config(config.finetune_steps, config.batch, config.lr, seed)
            t0 = time.perf_counter()
            for fraction in config.label_fractions:
                m = run_finetune(
                    chips, pretrained=pretrained[method], model_config=model_cfg, data_config=data_cfg,
                    engine_config=engine, kind="classify", label_fraction=fraction,
                )  # fmt: skip
                put(f"fine-tune accuracy @{fraction:g} labels", method, seed, m["accuracy"])
                labelled[fraction] = int(m["train_chips"])
            if config.segmentation:
                m = run_finetune(
                    chips, pretrained=pretrained[method], model_config=model_cfg, data_config=data_cfg,
                    engine_config=engine, kind="segment",
                )  # fmt: skip
                put("segmentation mIoU", method, seed, m["miou"])
            p = run_probe(
                chips, pretrained=pretrained[method], model_config=model_cfg, data_config=data_cfg, seed=seed
            )
            put("linear probe", method, seed, p["linear"])
            put("kNN (k=5)", method, seed, p["knn"])
            put("stats baseline kNN", method, seed, p["stats_knn"])
            wall[method][seed] = wall[method].get(seed, 0.0) + time.perf_counter() - t0
            log.info("seed %d: %s done (%.1f s)", seed, method, time.perf_counter() - t0)
    headline = f"fine-tune accuracy @{max(config.label_fractions):g} labels"
    extra = {k: v for k, v in ft.items() if k != headline}
    extra["wall time incl. pretraining (s)"] = wall  # type: ignore[assignment]
    curves = {
        m: [[(int(round(f * 100)), ft[f"fine-tune accuracy @{f:g} labels"][m][s]) for f in config.label_fractions]
            for s in range(config.seeds)]
        for m in methods
    }  # fmt: skip
    description = (
        f"Generated Sentinel-2-like GeoTIFFs ({config.scenes} scenes × 128 px × 3 frames) read through torchgeo; "
        f"{chip}-px chips, fixed 70/30 split. Each encoder (tiny ViT, 64-d × 2) is pretrained "
        f"{config.pretrain_steps} steps, then every method fine-tunes {config.finetune_steps} steps at batch "
        f"{config.batch}, lr {config.lr} — the same budget for scratch. scratch: plain ViT on the last frame; "
        f"{SCRATCH_T}: Prithvi's architecture on 3 frames, random init (Prithvi's peer on the time-series "
        f"task: flood / burn exist only in the last frame). Labels: "
        + ", ".join(f"{f:g} → {n} distinct chips" for f, n in sorted(labelled.items()))
        + ". Probe: frozen mean-pooled tokens, normalised with the pretraining statistics (scratch: its own). "
        "Curves: accuracy vs % of labels."
    )
    report = write_bench_report(
        out, "eo: MAE / SatMAE++ / Prithvi pretraining vs scratch (same fine-tuning budget)",
        ft[headline], metric=headline, higher_is_better=True, baseline="scratch", curves=curves,
        curve_metric="fine-tune accuracy vs % labels", extra_metrics=extra, description=description,
        config=asdict(config),
    )  # fmt: skip
    summary: dict[str, Any] = {"main": report.summary, "seconds": time.perf_counter() - start}
    if config.grid and config.families:
        summary["grid"] = run_grid(out / "grid", root, config, out / "pretrain", config.families[0])
    summary["report"] = str(report.report_md)
    return summary


def run_grid(out: Path, root: Path, config: BenchConfig, pretrain_dir: Path, family: str) -> dict[str, Any]:
    """kNN / linear probe of one pretrained family on small chips: resize on/off × normalisation, one
    encoder per seed (``<pretrain_dir>/<family>-seed<s>``), so the spread is over pretraining seeds."""
    from warmstart.eval import write_bench_report

    frames = 3 if family == "prithvi" else 1
    chips = load_dataset(root, DataConfig(chip_size=config.probe_chip_size, frames=frames))
    results: dict[str, dict[int, float]] = {}
    linear: dict[str, dict[int, float]] = {}
    for normalize in ("pretrain", "scale", "none"):
        for resize in (True, False):
            name = f"{'resize' if resize else 'native'} + {normalize}"
            for seed in range(config.seeds):
                p = run_probe(
                    chips, pretrained=Path(pretrain_dir) / f"{family}-seed{seed}", model_config=ModelConfig(),
                    data_config=DataConfig(chip_size=config.probe_chip_size, frames=frames),
                    preprocess=PreprocessConfig(normalize=normalize, resize=resize), seed=seed,  # type: ignore[arg-type]
                )  # fmt: skip
                results.setdefault(name, {})[seed] = p["knn"]
                linear.setdefault(name, {})[seed] = p["linear"]
    report = write_bench_report(
        out, f"eo: resizing × normalisation for a frozen {family} encoder (kNN k=5)", results,
        metric="kNN accuracy", higher_is_better=True, baseline="resize + pretrain",
        extra_metrics={"linear probe": linear},
        description=(
            f"{config.probe_chip_size}-px chips; the encoder was pretrained on {config.chip_size}-px chips. "
            "resize: bilinear to the pretraining size; pretrain: z-score with the pretraining statistics; "
            "scale: reflectance (÷10⁴); none: raw digital numbers. One encoder per seed (the main table's "
            "pretraining runs), so the spread is over pretraining seeds."
        ),
    )  # fmt: skip
    return report.summary


@dataclass
class ThroughputConfig:
    steps: int = 8
    """Timed optimizer steps per framework and round (after the warm-up steps)."""
    warmup: int = 2
    """Steps before timing starts (lazy initialisation, allocator warm-up)."""
    batch: int = 8
    """Images per step."""
    rounds: int = 5
    """Paired rounds: both frameworks back to back, order alternating; the ratio is taken per round."""
    threads: int = 0
    """torch intra-op threads (0: leave torch's default)."""
    seed: int = 0
    """Seed of the random input images."""


class _Images(torch.utils.data.Dataset):
    """``n`` views of a small pool of random 13-band images (same tensors for both frameworks)."""

    def __init__(self, pool: torch.Tensor, n: int) -> None:
        self.pool, self.n = pool, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.pool[i % len(self.pool)]}


def _timed(fit: Any, steps: int) -> float:
    t0 = time.perf_counter()
    fit(steps)
    return time.perf_counter() - t0


def throughput(config: ThroughputConfig | None = None) -> dict[str, Any]:
    """Pretraining images/s of our MAE through the warmstart engine vs torchgeo's ``tasks.MAE`` driven by a
    real Lightning ``Trainer`` (so its ``self.log`` calls run as in production), same model size and data.

    The same work on both sides: a ViT-Tiny-shaped encoder (192-d, 12 blocks, 3 heads, patch 16) on 13-band
    224 px images (timm's ``vit_tiny_patch16_224`` inside torchgeo fixes the size), decoder 1 block × 128-d
    × 4 heads, 75 % masking, plain MSE on the removed patches (``norm_pix_loss`` off), AdamW (lr 1e-4,
    weight decay 0.05, betas 0.9/0.95 — torchgeo's), no gradient clipping (torchgeo's ``Trainer`` default;
    our engine's 1.0 is switched off to match), fp32 on CPU, no augmentation (torchgeo's
    ``transform=Identity``), batch ``config.batch``. torchgeo's encoder also carries a class token
    (197 vs 196 tokens). What differs is each side's own implementation: ours runs the patch embedding as
    one matmul, draws the mask as indices and gathers the removed targets from a view, predicts only the
    removed tokens, caches the sin-cos tables, and the engine steps a fused AdamW.

    Timing: each framework's fit is timed as ``t(fit(W + S)) − t(fit(W))`` after one untimed warm-up fit,
    so set-up costs (Fabric launch, Trainer construction) cancel and the difference is S steady-state steps
    including each loop's per-step work (logging, callbacks, data loading). ``config.rounds`` paired rounds
    run both frameworks back to back with the order alternating (this VM drifts by more than the effect);
    the reported ``ratio`` is the median of the per-round ratios ours / torchgeo, with their range.
    """
    import statistics

    import lightning.pytorch as pl
    from torchgeo.tasks import MAE

    from warmstart.engine import Engine
    from warmstart_eo.data import BANDS
    from warmstart_eo.models import build_mae
    from warmstart_eo.train import PretrainTask

    config = config or ThroughputConfig()
    if config.threads:
        torch.set_num_threads(config.threads)
    size, w, s, b = 224, config.warmup, config.steps, config.batch
    lr, weight_decay, betas = 1e-4, 0.05, (0.9, 0.95)
    pool = torch.randn(16, len(BANDS), size, size, generator=torch.Generator().manual_seed(config.seed))

    ours_cfg = ModelConfig(
        family="mae", img_size=size, patch_size=16, bands=list(BANDS), embed_dim=192, depth=12, heads=3,
        decoder_dim=128, decoder_depth=1, decoder_heads=4,
    )  # fmt: skip
    model = build_mae(ours_cfg)
    task = PretrainTask(model, "mae")

    def fit_ours(steps: int) -> None:
        engine = quick_config(steps, b, lr)
        engine.optimizer.weight_decay, engine.optimizer.betas = weight_decay, betas
        engine.train.grad_clip_norm = None
        Engine(engine, None).fit(task, _Images(pool, steps * b))

    theirs = MAE(model="vit_tiny_patch16_224", in_channels=len(BANDS), size=size, decoder_dim=128,
                 decoder_depth=1, decoder_num_heads=4, norm_pix_loss=False, transform=torch.nn.Identity(),
                 lr=lr, weight_decay=weight_decay)  # fmt: skip

    def fit_theirs(steps: int) -> None:
        trainer = pl.Trainer(
            accelerator="cpu", devices=1, max_epochs=1, max_steps=steps, limit_train_batches=steps,
            logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            num_sanity_val_steps=0, limit_val_batches=0,
        )  # fmt: skip
        loader = torch.utils.data.DataLoader(_Images(pool, steps * b), batch_size=b)
        trainer.fit(theirs, train_dataloaders=loader)

    fits = {"ours": fit_ours, "torchgeo": fit_theirs}
    for fit in fits.values():
        fit(w)  # untimed: imports, lazy initialisation
    rates: dict[str, list[float]] = {name: [] for name in fits}
    for r in range(config.rounds):
        order = list(fits) if r % 2 == 0 else list(reversed(fits))  # alternate to cancel drift
        for name in order:
            short, long = _timed(fits[name], w), _timed(fits[name], w + s)
            rates[name].append(s * b / max(long - short, 1e-9))
        log.info("round %d: ours %.2f, torchgeo %.2f images/s", r, rates["ours"][-1], rates["torchgeo"][-1])
    ratios = [a / t for a, t in zip(rates["ours"], rates["torchgeo"], strict=True)]
    result: dict[str, Any] = {
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "per_round_ratio": ratios,
        "ours_images_per_s": statistics.median(rates["ours"]),
        "torchgeo_images_per_s": statistics.median(rates["torchgeo"]),
        "per_round_images_per_s": rates,
        "ours_encoder_params": float(sum(p.numel() for p in model.encoder.parameters())),
        "torchgeo_encoder_params": float(sum(p.numel() for p in theirs.backbone.parameters())),
        "rounds": float(config.rounds),
        "steps": float(s),
        "batch": float(b),
        "size": float(size),
        "threads": float(torch.get_num_threads()),
    }
    log.info("throughput: ratio %.3f (per round %.3f-%.3f)", result["ratio"], min(ratios), max(ratios))
    return result
