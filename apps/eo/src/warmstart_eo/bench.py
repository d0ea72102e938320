"""The EO bench: what MAE-family pretraining on a large unlabelled corpus buys a small labelled target, and
what the resizing / normalisation protocol of Corley et al. (arXiv 2305.13456) changes for a frozen encoder.

Seed papers: MAE (arXiv 2111.06377), Prithvi (arXiv 2310.18660), SatMAE++ (arXiv 2403.05419). Two generated
corpora with the same land-cover physics (class textures, seasonal green-up, last-frame floods and burns; the
base classes' spectra pulled ``spectral_overlap`` toward their mean, so the label lives in the spatial and
seasonal structure an MAE learns, not in a chip's mean spectrum): a large **unlabelled** one that only the
pretrained sources see, and a small labelled target. Each source (MAE, SatMAE++ on one frame, Prithvi on
three) is pretrained once for at least 20× the fine-tuning budget and cached as an artifact
(``warmstart.cache``, keyed by its config, data recipe and code), as a user starts from a downloaded
foundation model. On the target, every source and two scratch peers (the plain ViT on the last frame;
Prithvi's architecture on three frames) fine-tune with the same steps, batch, peak lr and layer-wise lr decay
at 1 / 10 / 100 % of the training labels, over several seeds; then segmentation mIoU, frozen kNN (k = 5) and
the per-band statistics baseline. Headline: the fraction of labels each source needs to reach scratch's
accuracy at 100 %, and the accuracy gap at 1 % (bootstrap CIs through ``warmstart.eval.write_bench_report``).
MAE reconstructions of target chips go into the report as PNGs. :func:`throughput` compares our MAE step with
torchgeo's MAE task. Left out: sources pretrained per seed (one source, like one downloaded model; the seeds
vary the fine-tuning), data augmentation.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from warmstart.engine import quick_config
from warmstart.errors import ConfigError
from warmstart.eval import run_jobs
from warmstart_eo.data import DataConfig, EOChips, PreprocessConfig, SynthConfig, load_dataset, synthesize
from warmstart_eo.models import ModelConfig
from warmstart_eo.train import run_finetune, run_pretrain, run_probe

log = logging.getLogger(__name__)


@dataclass
class BenchConfig:
    seeds: int = 3
    """Fine-tuning seeds per method and label fraction."""
    finetune_steps: int = 40
    """Fine-tuning steps (the same for every method)."""
    pretrain_steps: int = 800
    """Pretraining steps of each source (at least 20× the fine-tuning steps at the same batch)."""
    batch: int = 16
    """Micro-batch size of every run."""
    lr: float = 3e-3
    """Peak learning rate of every fine-tuning run (warm-up + cosine)."""
    layer_decay: float = 0.75
    """Layer-wise lr decay of every fine-tuning run, scratch included (MAE / SatMAE fine-tune with it): block
    i of L trains at lr · decay^(L − i), the head at lr."""
    pretrain_lr: float = 1.5e-3
    """Peak learning rate of the sources' pretraining."""
    label_fractions: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0])
    """Fractions of the training labels for the label-efficiency curve (distinct labelled chips; a subset
    smaller than one batch is repeated to fill it)."""
    families: list[str] = field(default_factory=lambda: ["mae", "satmaepp", "prithvi"])
    """Pretrained sources to compare with scratch."""
    corpus_scenes: int = 48
    """Unlabelled pretraining scenes (96 px, 3 frames), generated with another seed than the target."""
    target_scenes: int = 48
    """Labelled target scenes (96 px, 3 frames): 70 / 30 train / test chips."""
    spectral_overlap: float = 0.9
    """How far the base classes' spectra are pulled toward their mean (both corpora): the class then lives
    in its texture and seasonal dynamics, which the MAE learns from the unlabelled corpus (0: the old,
    spectrally separable target)."""
    segmentation: bool = True
    """Also fine-tune the segmentation head at 100 % labels (mIoU)."""
    workers: int = 2
    """Processes (one thread each) that build the sources and run the fine-tunes (1: all in this one)."""
    grid: bool = False
    """Also run the resizing × normalisation grid (``--kind grid`` runs it alone) on the first family."""
    chip_size: int = 32
    """Chip size of pretraining and fine-tuning (the encoders' input size)."""
    probe_chip_size: int = 16
    """Chip size of the probe grid (smaller than the pretraining size, as EuroSAT's 64 px vs 224)."""


SCRATCH_T = "scratch-t3"
"""The time-series scratch baseline: Prithvi's architecture on 3 frames, random init (Prithvi's peer)."""
SCENE_SIZE = 96


def _model(family: str, size: int) -> ModelConfig:
    return ModelConfig(family=family, img_size=size, patch_size=8, scales=1 if family == "satmaepp" else 0)  # type: ignore[arg-type]


def _arch(method: str) -> tuple[str, int]:
    """(model family, frames) of a bench method: scratch = plain MAE ViT on 1 frame."""
    if method == "scratch":
        return "mae", 1
    if method == SCRATCH_T:
        return "prithvi", 3
    return method, 3 if method == "prithvi" else 1


def _corpus_recipe(config: BenchConfig) -> dict[str, Any]:
    return asdict(
        SynthConfig(
            scenes=config.corpus_scenes,
            size=SCENE_SIZE,
            frames=3,
            seed=4321,
            spectral_overlap=config.spectral_overlap,
        )
    )


def _target_recipe(config: BenchConfig) -> SynthConfig:
    return SynthConfig(
        scenes=config.target_scenes,
        size=SCENE_SIZE,
        frames=3,
        seed=1234,
        spectral_overlap=config.spectral_overlap,
    )


def pretrained_source(
    family: str, config: BenchConfig, corpus_root: Path, chips: dict[int, EOChips] | None = None
) -> Path:
    """The family's source, pretrained once on the unlabelled corpus and cached by config + data + code
    (``chips``: the corpus already read; read here, only when the source must be built, if None)."""
    from warmstart import cache
    from warmstart_eo import data, models, train

    frames = _arch(family)[1]
    model_cfg = _model(family, config.chip_size)
    recipe = {
        "family": family,
        "model": asdict(model_cfg),
        "steps": config.pretrain_steps,
        "batch": config.batch,
        "lr": config.pretrain_lr,
        "chip": config.chip_size,
        "frames": frames,
    }

    def build(folder: Path) -> None:
        t0 = time.perf_counter()
        run_pretrain(
            corpus_root,
            DataConfig(chip_size=config.chip_size, frames=frames),
            model_cfg,
            quick_config(config.pretrain_steps, config.batch, config.pretrain_lr, 0),
            run_dir=folder,
            chips=(chips or read_corpus(corpus_root, config, config.chip_size // 2))[frames],
        )
        (folder / "pretrain_seconds.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
        for sub in ("checkpoints", "tensorboard"):
            import shutil

            shutil.rmtree(folder / sub, ignore_errors=True)

    return cache.cached(
        "eo.bench-source",
        recipe,
        build,
        data=_corpus_recipe(config),
        code=cache.code_version(data, models, train),
        description=f"eo bench {family} source",
    )


def last_frame(chips: EOChips) -> EOChips:
    """The single-frame view of multi-temporal in-memory chips (what ``frames=1`` would read), without
    reading the folder again."""
    from warmstart_eo.data import Chips

    if not isinstance(chips, Chips):
        raise TypeError("last_frame needs in-memory chips")
    c = len(chips.bands)
    return chips._replace(images=chips.images[:, -c:], frames=1)


def _labels_to_match(curve: dict[float, float], target: float) -> float | None:
    """The smallest label fraction whose mean accuracy reaches ``target`` (None: not within 100 %)."""
    for fraction in sorted(curve):
        if curve[fraction] >= target - 1e-9:
            return fraction
    return None


def read_corpus(root: Path, config: BenchConfig, stride: int | None = None) -> dict[int, EOChips]:
    """Three-frame chips of a folder and their last-frame view, keyed by frames."""
    chips3 = load_dataset(root, DataConfig(chip_size=config.chip_size, stride=stride, frames=3))
    return {3: chips3, 1: last_frame(chips3)}


def _source_job(family: str, config: BenchConfig, corpus_root: Path) -> tuple[str, Path]:
    """Worker: the family's cached source (built here if missing, the corpus read only then)."""
    from warmstart.engine import cpu_threads

    with cpu_threads(1):
        return family, pretrained_source(family, config, corpus_root)


_TARGETS: dict[str, dict[int, EOChips]] = {}
"""The target, read once per worker process."""


def _finetune_job(
    method: str, seed: int, config: BenchConfig, target_root: Path, source: Path | None
) -> tuple[str, int, dict[str, float], dict[float, int], float]:
    """Worker: one method × seed — fine-tunes at every label fraction, segmentation, probes."""
    from warmstart.engine import cpu_threads

    chip = config.chip_size
    with cpu_threads(1):
        if str(target_root) not in _TARGETS:
            _TARGETS[str(target_root)] = read_corpus(target_root, config)
        target = _TARGETS[str(target_root)]
        family, frames = _arch(method)
        chips, data_cfg, model_cfg = (
            target[frames],
            DataConfig(chip_size=chip, frames=frames),
            _model(family, chip),
        )
        engine = quick_config(config.finetune_steps, config.batch, config.lr, seed)
        t0 = time.perf_counter()
        values: dict[str, float] = {}
        labelled: dict[float, int] = {}
        common: dict[str, Any] = dict(
            pretrained=source,
            model_config=model_cfg,
            data_config=data_cfg,
            engine_config=engine,
            light=True,
            layer_decay=config.layer_decay,
        )
        for fraction in config.label_fractions:
            m = run_finetune(chips, kind="classify", label_fraction=fraction, **common)
            values[f"fine-tune accuracy @{fraction:g} labels"] = m["accuracy"]
            labelled[fraction] = int(m["train_chips"])
        if config.segmentation:
            values["segmentation mIoU"] = run_finetune(chips, kind="segment", **common)["miou"]
        p = run_probe(chips, pretrained=source, model_config=model_cfg, data_config=data_cfg, seed=seed)
        values |= {"kNN (k=5)": p["knn"], "linear probe": p["linear"], "stats baseline kNN": p["stats_knn"]}
    return method, seed, values, labelled, time.perf_counter() - t0


def prepare_data(out: Path, config: BenchConfig, data_root: Path | None = None) -> tuple[Path, Path]:
    """The unlabelled corpus and the labelled target folders (generated when missing)."""
    corpus_root, target_root = out / "corpus", data_root or out / "target"
    if not (corpus_root / "images").is_dir():
        synthesize(corpus_root, SynthConfig(**_corpus_recipe(config)))
        for label in (corpus_root / "labels").iterdir():  # the corpus is unlabelled
            label.unlink()
        (corpus_root / "labels").rmdir()
    if not (target_root / "images").is_dir():
        synthesize(target_root, _target_recipe(config))
    return corpus_root, target_root


def build_sources(config: BenchConfig, corpus_root: Path) -> tuple[dict[str, Path], dict[str, float]]:
    """Every family's cached source (missing ones built in parallel, the slowest first) and its build time."""
    order = sorted(config.families, key=lambda f: f != "satmaepp")  # SatMAE++ (4 band groups) is the slowest
    built = dict(run_jobs(_source_job, [(f, config, corpus_root) for f in order], config.workers))
    seconds = {f: float((built[f] / "pretrain_seconds.txt").read_text()) for f in config.families}
    return {f: built[f] for f in config.families}, seconds


def run_bench(out: Path, config: BenchConfig, data_root: Path | None = None) -> dict[str, Any]:
    """Run the bench; write ``report.md``, ``plot.png``, ``label_efficiency.png``, ``results.json``,
    ``reconstructions.png`` (and ``grid/``) under ``out``. ``data_root``: a labelled GeoTIFF folder to use
    as the target. Sources and fine-tunes run in ``config.workers`` processes of one thread each."""
    from warmstart.eval import write_bench_report

    if config.pretrain_steps < 20 * config.finetune_steps:
        raise ConfigError(
            f"bench.pretrain_steps={config.pretrain_steps}: the sources need at least 20× the fine-tuning "
            f"budget ({20 * config.finetune_steps} steps at the same batch)"
        )
    if not 0.0 <= config.spectral_overlap < 1.0:
        raise ConfigError(f"bench.spectral_overlap={config.spectral_overlap}: must lie in [0, 1)")
    out = Path(out)
    start = time.perf_counter()
    corpus_root, target_root = prepare_data(out, config, data_root)
    chip = config.chip_size
    methods = ["scratch", *config.families]
    if "prithvi" in config.families:
        methods.insert(1, SCRATCH_T)
    results: dict[str, dict[str, dict[int, float]]] = {}  # metric → method → seed → value
    wall: dict[str, dict[int, float]] = {m: {} for m in methods}
    labelled: dict[float, int] = {}
    sources: dict[str, Path | None] = {"scratch": None, SCRATCH_T: None}
    t0 = time.perf_counter()
    built, pretrain_seconds = build_sources(config, corpus_root)
    sources |= built
    log.info("sources ready in %.1f s (built in %s s)", time.perf_counter() - t0, pretrain_seconds)
    calls = [(m, seed, config, target_root, sources[m]) for seed in range(config.seeds) for m in methods]
    for method, seed, values, got, seconds in run_jobs(_finetune_job, calls, config.workers):
        for metric, value in values.items():
            results.setdefault(metric, {}).setdefault(method, {})[seed] = value
        labelled |= got
        wall[method][seed] = seconds
        log.info("seed %d: %s done (%.1f s)", seed, method, seconds)
    target = read_corpus(target_root, config)
    fractions = sorted(config.label_fractions)
    low = f"fine-tune accuracy @{fractions[0]:g} labels"
    means = {
        m: {
            f: sum(results[f"fine-tune accuracy @{f:g} labels"][m].values()) / config.seeds for f in fractions
        }
        for m in methods
    }
    scratch_full = means["scratch"][fractions[-1]]
    to_match = {m: _labels_to_match(means[m], scratch_full) for m in methods}
    extra = {k: v for k, v in results.items() if k != low}
    extra["fine-tune wall time (s)"] = wall  # type: ignore[assignment]
    curves = {
        m: [
            [(int(round(f * 100)), results[f"fine-tune accuracy @{f:g} labels"][m][s]) for f in fractions]
            for s in range(config.seeds)
        ]
        for m in methods
    }
    n_train = labelled[fractions[-1]]
    corpus_chips = config.corpus_scenes * ((SCENE_SIZE - chip) // (chip // 2) + 1) ** 2
    description = (
        f"Generated Sentinel-2-like GeoTIFFs read through torchgeo. Unlabelled corpus: {config.corpus_scenes} scenes "
        f"× {SCENE_SIZE} px × 3 frames ({corpus_chips} chips of {chip} px, stride {chip // 2}), seen only by "
        f"pretraining. Target: {config.target_scenes} other scenes ({len(target[1])} chips, fixed 70/30 split, "
        f"7 classes = majority land cover; flood / burn exist only in the last frame). Spectral overlap "
        f"{config.spectral_overlap:g}: the base classes' spectra are pulled that far toward their mean, so the "
        "class lives mostly in its texture (canopy grain, field rows, flat water, urban blocks, coarse soil, all "
        "at one contrast) and its seasonal dynamics (crops green up). Each source (tiny ViT "
        f"64-d × 2) is pretrained once for {config.pretrain_steps} steps at batch {config.batch} "
        f"({config.pretrain_steps // config.finetune_steps}× the fine-tuning budget) and cached; pretraining "
        "took "
        + ", ".join(f"{k} {v:.0f} s" for k, v in pretrain_seconds.items())
        + " when built. Every method "
        f"fine-tunes {config.finetune_steps} steps at batch {config.batch}, peak lr {config.lr:g} (warm-up + "
        f"cosine), layer-wise lr decay {config.layer_decay:g}, {config.seeds} seeds. "
        f"scratch: plain ViT on the last frame; {SCRATCH_T}: Prithvi's architecture on 3 frames, random init. "
        "Labels: "
        + ", ".join(f"{f:g} → {labelled[f]} distinct chips" for f in fractions)
        + ". Probe: frozen "
        "mean-pooled tokens, normalised with the pretraining statistics (scratch: its own)."
    )
    report = write_bench_report(
        out,
        "eo: MAE / SatMAE++ / Prithvi sources vs scratch on a small labelled target (same fine-tuning budget)",
        results[low],
        metric=low,
        higher_is_better=True,
        baseline="scratch",
        curves=curves,
        curve_metric="fine-tune accuracy vs % labels",
        extra_metrics=extra,
        description=description,
        config=asdict(config),
    )
    pictures = write_reconstructions(out / "reconstructions.png", sources, target)
    curve_png = write_label_curve(out / "label_efficiency.png", results, methods, fractions, labelled)
    headline = {
        "scratch accuracy @100% labels": scratch_full,
        "labels needed to match it": {m: to_match[m] for m in methods},
        "accuracy gap @1% vs scratch": {
            m: means[m][fractions[0]] - means["scratch"][fractions[0]] for m in methods
        },
        "train chips @100%": n_train,
    }
    _append_headline(report.report_md, headline, pictures, methods, curve_png)
    summary_json = json.loads(report.results_json.read_text())
    summary_json["headline"] = headline
    summary_json["pretrain_seconds"] = pretrain_seconds
    summary_json["sources"] = {k: str(v) for k, v in sources.items() if v is not None}
    report.results_json.write_text(json.dumps(summary_json, indent=2))
    summary: dict[str, Any] = {
        "main": report.summary,
        "headline": headline,
        "seconds": time.perf_counter() - start,
    }
    if config.grid and config.families:
        summary["grid"] = run_grid(out / "grid", target_root, config, sources, config.families[0])
    summary["report"] = str(report.report_md)
    return summary


def write_label_curve(
    path: Path,
    results: dict[str, dict[str, dict[int, float]]],
    methods: list[str],
    fractions: list[float],
    labelled: dict[float, int],
) -> Path:
    """Fine-tune accuracy vs % of labels (log scale), mean over seeds with its 95 % bootstrap CI per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from warmstart.eval.bootstrap import bootstrap_ci

    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [100 * f for f in fractions]
    for m in methods:
        means, lows, highs = [], [], []
        for f in fractions:
            values = list(results[f"fine-tune accuracy @{f:g} labels"][m].values())
            low, high = bootstrap_ci(values)
            means.append(sum(values) / len(values))
            lows.append(means[-1] - low)
            highs.append(high - means[-1])
        ax.errorbar(xs, means, yerr=[lows, highs], marker="o", capsize=3, label=m)
    ax.set_xscale("log")
    ax.set_xticks(xs, [f"{x:g} %\n({labelled[f]})" for x, f in zip(xs, fractions, strict=True)])
    ax.set_xlabel("labels (distinct training chips)")
    ax.set_ylabel("fine-tune accuracy (held-out chips)")
    ax.set_title("label efficiency: mean over seeds, 95 % bootstrap CI", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _append_headline(
    path: Path, headline: dict[str, Any], pictures: Path | None, methods: list[str], curve: Path | None = None
) -> None:
    lines = ["", "## Headline: labels needed to match scratch at 100 %", ""]
    lines.append(
        f"Scratch (plain ViT) at 100 % of the labels: accuracy {headline['scratch accuracy @100% labels']:.3f}."
    )
    lines.append("")
    lines.append("| method | labels needed to reach it | accuracy gap at the smallest fraction vs scratch |")
    lines.append("|---|---|---|")
    for m in methods:
        need = headline["labels needed to match it"][m]
        lines.append(
            f"| {m} | {'not reached within 100 %' if need is None else f'{need:.0%}'} | "
            f"{headline['accuracy gap @1% vs scratch'][m]:+.3f} |"
        )
    if curve is not None:
        lines += ["", "## Label efficiency", "", f"![label efficiency]({curve.name})"]
    if pictures is not None:
        lines += [
            "",
            "## MAE reconstructions (target chips, RGB = B04/B03/B02)",
            "",
            f"![reconstructions]({pictures.name})",
        ]
    with path.open("a") as f:
        f.write("\n".join(lines) + "\n")


def write_reconstructions(
    path: Path, sources: dict[str, Path | None], target: dict[int, EOChips]
) -> Path | None:
    """One row per source: input, the 75 %-masked input, the reconstruction, for 2 target chips (RGB)."""
    from warmstart_eo.train import load_pretrained

    rows = [(name, *load_pretrained(src)) for name, src in sources.items() if src is not None]
    if not rows:
        return None
    fig = reconstruction_figure(rows, target)
    fig.savefig(path, dpi=80)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def reconstruction_figure(rows: list[tuple[str, Any, Any]], chips: EOChips | dict[int, EOChips]) -> Any:
    """A matplotlib figure, one row per (name, MAE, band statistics): input, 75 %-masked input and
    reconstruction of 2 chips in RGB (B04/B03/B02). ``chips``: one set, or one per frame count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from warmstart_eo.data import Preprocess
    from warmstart_eo.models import reconstruct_image

    fig, axes = plt.subplots(len(rows), 6, figsize=(12, 2.2 * len(rows)), squeeze=False)
    for r, (name, mae, stats) in enumerate(rows):
        found = chips[mae.config.frames] if isinstance(chips, dict) else chips
        found = found.select_bands(mae.config.bands)
        found = found.with_transform(Preprocess(stats, PreprocessConfig(), mae.config.input_size))
        x = torch.stack([found[i]["image"] for i in (0, len(found) // 2)])
        mae.eval()
        with torch.no_grad():
            seen, recon, removed = reconstruct_image(mae, x, torch.Generator().manual_seed(0))
        c = len(mae.config.bands)
        present = [b for b in ("B04", "B03", "B02") if b in mae.config.bands]
        if len(present) < 3:  # no full RGB (S1 VV/VH, a band subset): the first band in grey
            present = [present[0] if present else mae.config.bands[0]] * 3
        rgb = [(mae.config.frames - 1) * c + mae.config.bands.index(b) for b in present]
        for j in range(2):
            a, b = seen[j, rgb], recon[j, rgb]
            lo, hi = a.amin(), a.amax()
            show = [a, a * (1 - removed[j]) + lo * removed[j], b]
            for k, (img, title) in enumerate(zip(show, ("input", "masked", "reconstruction"), strict=True)):
                ax = axes[r][3 * j + k]
                ax.imshow(((img - lo) / (hi - lo + 1e-6)).clamp(0, 1).permute(1, 2, 0).numpy())
                ax.set_title(f"{name}: {title}" if k == 0 else title, fontsize=8)
                ax.axis("off")
    fig.tight_layout()
    return fig


def run_grid_bench(out: Path, config: BenchConfig, data_root: Path | None = None) -> dict[str, Any]:
    """``--kind grid``: the resizing × normalisation grid alone, on the first family's cached source."""
    if not config.families:
        raise ConfigError("bench.families is empty: the grid probes the first family's source")
    out = Path(out)
    corpus_root, target_root = prepare_data(out, config, data_root)
    first = BenchConfig(**{**asdict(config), "families": config.families[:1]})
    sources, _ = build_sources(first, corpus_root)
    return run_grid(out / "grid", target_root, config, dict(sources), config.families[0])


def run_grid(
    out: Path, root: Path, config: BenchConfig, sources: dict[str, Path | None], family: str
) -> dict[str, Any]:
    """kNN / linear probe of one pretrained source on small chips: resize on/off × normalisation; the spread
    is over probe seeds (the linear probe's initialisation)."""
    from warmstart.eval import write_bench_report

    frames = 3 if family == "prithvi" else 1
    data_cfg = DataConfig(chip_size=config.probe_chip_size, frames=frames)
    chips = load_dataset(root, data_cfg)
    results: dict[str, dict[int, float]] = {}
    linear: dict[str, dict[int, float]] = {}
    for normalize in ("pretrain", "scale", "none"):
        for resize in (True, False):
            name = f"{'resize' if resize else 'native'} + {normalize}"
            for seed in range(config.seeds):
                p = run_probe(
                    chips,
                    pretrained=sources[family],
                    model_config=ModelConfig(),
                    data_config=data_cfg,
                    preprocess=PreprocessConfig(normalize=normalize, resize=resize),
                    seed=seed,  # type: ignore[arg-type]
                )
                results.setdefault(name, {})[seed] = p["knn"]
                linear.setdefault(name, {})[seed] = p["linear"]
    report = write_bench_report(
        out,
        f"eo: resizing × normalisation for a frozen {family} source (kNN k=5)",
        results,
        metric="kNN accuracy",
        higher_is_better=True,
        baseline="resize + pretrain",
        extra_metrics={"linear probe": linear},
        description=(
            f"{config.probe_chip_size}-px target chips; the source was pretrained on {config.chip_size}-px chips. "
            "resize: bilinear to the pretraining size; pretrain: z-score with the pretraining statistics; "
            "scale: reflectance (÷10⁴); none: raw digital numbers. One source; kNN is deterministic, so its "
            "spread is zero; the linear probe's spread is over its seeds."
        ),
    )
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
        family="mae",
        img_size=size,
        patch_size=16,
        bands=list(BANDS),
        embed_dim=192,
        depth=12,
        heads=3,
        decoder_dim=128,
        decoder_depth=1,
        decoder_heads=4,
    )
    model = build_mae(ours_cfg)
    task = PretrainTask(model, "mae")

    def fit_ours(steps: int) -> None:
        engine = quick_config(steps, b, lr)
        engine.optimizer.weight_decay, engine.optimizer.betas = weight_decay, betas
        engine.train.grad_clip_norm = None
        Engine(engine, None).fit(task, _Images(pool, steps * b))

    theirs = MAE(
        model="vit_tiny_patch16_224",
        in_channels=len(BANDS),
        size=size,
        decoder_dim=128,
        decoder_depth=1,
        decoder_num_heads=4,
        norm_pix_loss=False,
        transform=torch.nn.Identity(),
        lr=lr,
        weight_decay=weight_decay,
    )

    def fit_theirs(steps: int) -> None:
        trainer = pl.Trainer(
            accelerator="cpu",
            devices=1,
            max_epochs=1,
            max_steps=steps,
            limit_train_batches=steps,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
        )
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
