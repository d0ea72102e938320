"""``warmstart-eo``: Earth-observation pretraining (Prithvi, SatMAE++, MAE, SoftCon) on GeoTIFFs via torchgeo.

Thin layer: parse typed configs, call :mod:`warmstart_eo.train` / :mod:`warmstart_eo.bench`, print tables.
Heavy imports (torch, torchgeo) happen inside the commands so ``--help`` stays fast.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from warmstart.cli import App, DemoResult, RunContext
from warmstart.engine import EngineConfig
from warmstart_eo.bench import BenchConfig, ThroughputConfig
from warmstart_eo.data import DataConfig, PreprocessConfig, SynthConfig
from warmstart_eo.models import ModelConfig
from warmstart_eo.samplers import SamplerConfig

app = App("eo", "Earth observation: Prithvi / SatMAE++ / MAE pretraining on GeoTIFFs through torchgeo")


def _rows(metrics: dict[str, float]) -> list[tuple[str, str]]:
    return [(k, f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in metrics.items()]


@app.command(name="data-synth")
def data_synth(
    out: Path,
    synth: SynthConfig = SynthConfig(),
    layout: Literal[
        "folder", "eurosat", "eurosat100", "bigearthnet", "so2sat", "ssl4eo-s12", "seco", "hls"
    ] = "folder",
) -> None:
    """Write generated Sentinel-2-like data: GeoTIFF scenes (images/, labels/, scenes.json), or a tiny copy
    of a public dataset in its published layout (read back with --data <name> --root <out>).

    Args:
        out: destination folder.
        synth: scenes, size, frames, events, nodata, seed (layout folder).
        layout: folder (our scenes), a dataset's layout, or hls (per-band HLS S30 files + Fmask, read with
            --data <out>).
    """
    from warmstart.cli.show import print_table
    from warmstart_eo import layouts
    from warmstart_eo.data import synthesize
    from warmstart_eo.hls import write_hls

    if not 0.0 <= synth.spectral_overlap < 1.0:
        from warmstart.errors import ConfigError

        raise ConfigError(f"--synth.spectral_overlap {synth.spectral_overlap}: must lie in [0, 1)")
    if layout != "folder":
        writers = {
            "eurosat": lambda: layouts.write_eurosat(out, seed=synth.seed),
            "eurosat100": lambda: layouts.write_eurosat(out, variant="eurosat100", seed=synth.seed),
            "bigearthnet": lambda: layouts.write_bigearthnet(out, seed=synth.seed),
            "so2sat": lambda: layouts.write_so2sat(out, seed=synth.seed),
            "ssl4eo-s12": lambda: layouts.write_ssl4eo_s12(out, seed=synth.seed),
            "seco": lambda: layouts.write_seco(out, seed=synth.seed),
            "hls": lambda: write_hls(out, dates=synth.frames, seed=synth.seed),
        }
        writers[layout]()
        if layout == "hls":
            print_table(f"wrote a tiny HLS folder to {out}", ("read it with", ""), [("--data", str(out))])
            return
        print_table(
            f"wrote a tiny {layout} to {out}",
            ("read it with", ""),
            [("--data", layout), ("--root", str(out))],
        )
        return
    meta = synthesize(out, synth)
    print_table(
        f"wrote {synth.scenes} scenes to {out}",
        ("class", "pixels"),
        list(zip(meta["classes"], meta["pixels"], strict=False)),
    )


def _stats_target(data: Path, out: Path | None, root: Path | None) -> Path:
    """Where ``stats`` writes: --out (a .json file or a folder), else beside the data; checked up front."""
    from warmstart.errors import ConfigError
    from warmstart_eo.datasets import DATASETS

    named = str(data).lower().split(":")[0] in DATASETS
    if out is None:
        base = Path(root) if named and root is not None else Path(data)
        if not base.is_dir():
            raise ConfigError(f"stats: no folder {base} to write stats.json into; pass --out <file.json>")
        return base / "stats.json"
    target = Path(out)
    if target.suffix != ".json":
        if not target.parent.is_dir():
            raise ConfigError(f"--out {out}: folder {target.parent} does not exist; create it first")
        return target / "stats.json"
    if not target.parent.is_dir():
        raise ConfigError(f"--out {out}: folder {target.parent} does not exist; create it first")
    return target


@app.command
def stats(
    data: Path, out: Path | None = None, data_config: DataConfig = DataConfig(), root: Path | None = None
) -> None:
    """Per-band statistics (mean, std, min, max) of a GeoTIFF folder or a named dataset, as stats.json.

    Args:
        data: folder of GeoTIFFs (images/ + labels/), or a dataset name (eurosat, bigearthnet, …) with --root.
        out: output file or folder (default: <data>/stats.json, or <root>/stats.json for a named dataset).
        data_config: bands, frames, chip size, bad-file policy.
        root: folder of a dataset given by name.
    """
    from warmstart.cli.show import print_table
    from warmstart_eo.data import compute_stats, load_dataset

    target = _stats_target(data, out, root)
    chips = load_dataset(data, data_config, root)
    result = compute_stats(chips)
    target.parent.mkdir(exist_ok=True)
    result.save(target)
    rows = [
        (b, f"{m:.1f}", f"{s:.1f}") for b, m, s in zip(result.bands, result.mean, result.std, strict=True)
    ]
    print_table(
        f"{len(chips)} chips → {target} ({chips.skipped_files} files skipped)", ("band", "mean", "std"), rows
    )


@app.command
def pretrain(
    data: Path,
    model: ModelConfig = ModelConfig(),
    data_config: DataConfig = DataConfig(),
    engine: EngineConfig = EngineConfig(),
    objective: Literal["mae", "soft-contrastive"] = "mae",
    init: str | None = None,
    root: Path | None = None,
    resume: str | None = None,
    sampler: SamplerConfig = SamplerConfig(),
    out: Path | None = None,
    run: RunContext | None = None,
) -> None:
    """Pretrain an encoder (mae | prithvi | satmaepp) with MAE or soft-contrastive, from scratch or continuing
    an existing one (--init).

    Args:
        data: folder of GeoTIFFs (images/ + labels/), or a torchgeo dataset name (eurosat) with --root.
        model: family, size, patch, mask ratio, SatMAE++ scales.
        data_config: bands, frames (Prithvi > 1), chip size, bad-file policy.
        engine: steps, batch, optimizer, schedule, devices.
        objective: mae (the family's reconstruction) or soft-contrastive (SoftCon, label-overlap targets).
        init: continue from an existing encoder (a pretrain / weights run dir or a hub id): SoftCon's
            continual pretraining; the encoder is adapted to the data's bands.
        root: folder of a torchgeo dataset given by name.
        resume: 'latest', a run directory or a checkpoints/step-N directory.
        sampler: grid (torchgeo's GridGeoSampler, default) or random (RandomGeoSampler boxes drawn once from
            a seeded generator, so a resumed run sees the same chips; GeoTIFF folders only).
        out: run directory (default runs/eo/pretrain/<time>).
    """
    from warmstart.cli.show import print_summary
    from warmstart.errors import ConfigError
    from warmstart_eo.data import load_dataset
    from warmstart_eo.datasets import DATASETS
    from warmstart_eo.hls import is_hls_folder
    from warmstart_eo.samplers import random_chips
    from warmstart_eo.train import load_pretrained, run_pretrain

    if init is not None:
        data_config.frames = load_pretrained(init)[0].config.frames
    if sampler.kind == "random":
        if str(data).lower().split(":")[0] in DATASETS or is_hls_folder(Path(data)):
            raise ConfigError(
                f"--sampler.kind random: {data} is read per item; random boxes need a GeoTIFF folder (images/)"
            )
        if objective == "soft-contrastive":
            raise ConfigError(
                "--sampler.kind random draws unlabelled boxes; soft-contrastive needs multi-labels"
            )
        chips = random_chips(Path(data), data_config, sampler)
    else:
        chips = load_dataset(data, data_config, root)  # bad data fails before the run directory exists
    run_dir, checkpoint = run.open(resume=resume, out=out)
    result = run_pretrain(
        data,
        data_config,
        model,
        engine,
        objective=objective,
        run_dir=run_dir,
        resume_from=checkpoint,
        root=root,
        chips=chips,
        init=init,
    )
    if objective == "mae" and run.writer and len(chips) > 0:
        _log_reconstructions(run_dir, model.family, result, chips)
    print_summary(result.summary, f"eo pretrain ({model.family}, {objective}) → {run_dir}")
    from warmstart.cli.show import print_table

    data_rows = [("chips", str(len(chips))), ("bands", ",".join(chips.bands)), ("frames", str(chips.frames))]
    data_rows += [(k, str(v)) for k, v in chips.notes.items() if v not in ([], "", 0)]
    print_table("data", ("", ""), data_rows)


def _log_reconstructions(run_dir: Path, name: str, result: Any, chips: Any) -> None:
    """The trained MAE's reconstructions of 2 training chips: in the run's TensorBoard
    (``mae/reconstructions``) and as ``reconstructions.png``."""
    from warmstart.engine.metrics import log_pictures
    from warmstart_eo.bench import reconstruction_figure

    fig = reconstruction_figure([(name, result.model, result.stats)], chips)
    fig.savefig(Path(run_dir) / "reconstructions.png", dpi=80)
    log_pictures(Path(run_dir), figures={"mae/reconstructions": fig}, step=int(result.summary.steps))


def _health_rows(metrics: dict) -> list[tuple[str, str]]:
    rows = [
        (k, f"{v:.4g}" if isinstance(v, float) else str(v))
        for k, v in metrics.items()
        if k not in ("health", "notes")
    ]
    rows += [(k, str(v)) for k, v in metrics.get("notes", {}).items() if v not in ([], "", 0)]
    rows += [("health", line) for line in metrics.get("health", [])] or [("health", "ok")]
    return rows


def _frames_of(pretrained: str | None, data_config: DataConfig) -> None:
    """A pretrained encoder fixes the frames read from the data (bands are matched by name later)."""
    if pretrained is not None:
        from warmstart_eo.train import load_pretrained

        data_config.frames = load_pretrained(pretrained)[0].config.frames


@app.command
def finetune(
    data: Path,
    pretrained: str | None = None,
    task: Literal["auto", "classify", "multilabel", "segment"] = "auto",
    model: ModelConfig = ModelConfig(),
    data_config: DataConfig = DataConfig(),
    engine: EngineConfig = EngineConfig(),
    preprocess: PreprocessConfig = PreprocessConfig(),
    label_fraction: float = 1.0,
    freeze_encoder: bool = False,
    layer_decay: float = 1.0,
    root: Path | None = None,
    out: Path | None = None,
    run: RunContext | None = None,
) -> None:
    """Fine-tune scene classification, multi-label classification or segmentation (FPN head) from a
    pretrained encoder or from scratch; the model is saved in the run directory.

    Args:
        data: folder of GeoTIFFs with labels/, or a dataset name (eurosat, bigearthnet, so2sat, …) with --root.
        pretrained: run directory of `pretrain` / `weights` or a hub id; omit for scratch.
        task: auto (the data's first task: classify for EuroSAT / folders, multilabel for BigEarthNet),
            classify (scene label), multilabel (mAP / F1), segment (per-pixel labels, mIoU).
        model: the scratch encoder's config (ignored with --pretrained).
        data_config: bands, frames, chip size (with --pretrained: the bands both share, its frames).
        engine: steps, batch, optimizer, schedule, devices.
        preprocess: resize to the pretraining size and normalise with its statistics (the defaults).
        label_fraction: fraction of the training labels to use (label efficiency).
        freeze_encoder: train the head only.
        layer_decay: layer-wise lr decay (MAE / SatMAE fine-tuning: 0.65-0.75): block i of L trains at
            lr · decay^(L − i), the head at lr; 1 = one lr.
        root: folder of a dataset given by name.
        out: run directory (default runs/eo/finetune/<time>).
    """
    from warmstart.cli.show import print_table
    from warmstart.errors import ConfigError
    from warmstart_eo.data import load_dataset
    from warmstart_eo.train import require_labels, run_finetune

    if not 0.0 < label_fraction <= 1.0:
        raise ConfigError(f"--label_fraction {label_fraction}: must lie in (0, 1]")
    if not 0.0 < layer_decay <= 1.0:
        raise ConfigError(f"--layer_decay {layer_decay}: must lie in (0, 1]")
    _frames_of(pretrained, data_config)
    chips = load_dataset(data, data_config, root)
    kind = task if task != "auto" else (chips.tasks[0] if chips.tasks else "classify")
    require_labels(chips, kind, data)  # before the run directory exists
    run_dir, _ = run.open(out=out)
    metrics = run_finetune(
        chips,
        pretrained=pretrained,
        model_config=model,
        data_config=data_config,
        engine_config=engine,
        kind=kind,
        preprocess=preprocess,
        label_fraction=label_fraction,
        freeze_encoder=freeze_encoder,
        run_dir=run_dir,
        layer_decay=layer_decay,
    )  # type: ignore[arg-type]
    print_table(
        f"eo finetune ({kind}, {'pretrained' if pretrained else 'scratch'}) → {run_dir}",
        ("", ""),
        _health_rows(metrics),
    )


@app.command
def probe(
    data: Path,
    pretrained: str | None = None,
    model: ModelConfig = ModelConfig(),
    data_config: DataConfig = DataConfig(),
    preprocess: PreprocessConfig = PreprocessConfig(),
    k: int = 5,
    root: Path | None = None,
    seed: int = 0,
) -> None:
    """Linear probe and kNN on frozen features, with the per-band statistics baseline beside them.

    Args:
        data: folder of GeoTIFFs with labels/, or a dataset name with --root.
        pretrained: run directory of `pretrain` / `weights` or a hub id; omit for a random encoder.
        model: the random encoder's config (ignored with --pretrained).
        data_config: bands, frames, chip size.
        preprocess: resize / normalisation switches (defaults: the protocol).
        k: neighbours of the kNN classifier.
        root: folder of a dataset given by name.
        seed: probe seed.
    """
    from warmstart.cli.show import print_table
    from warmstart_eo.data import load_dataset
    from warmstart_eo.train import require_labels, run_probe

    _frames_of(pretrained, data_config)
    chips = load_dataset(data, data_config, root)
    require_labels(chips, "classify", data)
    metrics = run_probe(
        chips,
        pretrained=pretrained,
        model_config=model,
        data_config=data_config,
        preprocess=preprocess,
        k=k,
        seed=seed,
    )
    print_table(f"eo probe ({asdict(preprocess)})", ("", "accuracy"), _rows(metrics))


@app.command
def weights(
    source: str,
    out: Path | None = None,
    layout: Literal["auto", "ours", "timm", "prithvi", "satmaepp"] = "auto",
    filename: str | None = None,
    bands: list[str] | None = None,
    frames: int | None = None,
    img_size: int | None = None,
    heads: int | None = None,
    decoder_heads: int | None = None,
    stats: Path | None = None,
    run: RunContext | None = None,
) -> None:
    """Convert encoder weights (Prithvi / SatMAE++ checkpoint, torchgeo weights enum, ours) into a run dir.

    Args:
        source: a checkpoint file or folder, a torchgeo enum (ViTSmall16_Weights.SENTINEL2_ALL_MAE) or a
            hub id (ibm-nasa-geospatial/Prithvi-EO-1.0-100M).
        out: output run directory (model.safetensors, model.json, conversion.json; default runs/eo/weights/<time>).
        layout: key layout of the checkpoint (auto: detected from the key names).
        filename: file inside a hub repository or folder holding several checkpoints.
        bands: Sentinel-2 names of the input channels (defaults: Prithvi's 6 HLS bands, SatMAE++'s 10,
            13 for a 13-channel ViT, an enum's metadata).
        frames: Prithvi time steps (default: from the checkpoint's positions at 224 px).
        img_size: pretraining input size (default: from the checkpoint's positions).
        heads: encoder attention heads (default: the standard ViT table by width).
        decoder_heads: decoder attention heads (default: the same table).
        stats: a stats.json (`warmstart-eo stats`) to store beside the weights for finetune/probe.
    """
    import json
    import shutil

    from warmstart.cli.show import print_table
    from warmstart.errors import DataError
    from warmstart_eo.data import BandStats
    from warmstart_eo.models import count_parameters, save_model
    from warmstart_eo.weights import convert

    conv = convert(
        source,
        layout,
        filename=filename,
        bands=bands,
        frames=frames,
        img_size=img_size,
        heads=heads,
        decoder_heads=decoder_heads,
    )
    band_stats = BandStats.load(stats) if stats is not None else None
    if band_stats is not None and len(band_stats.mean) != conv.model.config.channels:
        raise DataError(
            f"{stats}: {len(band_stats.mean)} channels but the encoder takes {conv.model.config.channels} "
            f"({conv.model.config.frames} frames × bands {conv.model.config.bands}); use matching --bands/--frames"
        )
    run_dir, _ = run.open(out=out)
    save_model(conv.model, run_dir)
    (run_dir / "conversion.json").write_text(json.dumps(conv.report(), indent=2))
    if band_stats is not None:
        shutil.copyfile(stats if stats.is_file() else stats / "stats.json", run_dir / "stats.json")
    cfg = conv.model.config
    rows = [
        ("layout", conv.layout),
        (
            "model",
            f"{cfg.family} {cfg.dims[0]}-d × {cfg.dims[1]}, {cfg.dims[2]} heads, patch {cfg.patch_size}",
        ),
        ("input", f"{cfg.frames} × {len(cfg.bands)} bands @ {cfg.img_size} px, positions {cfg.pos_order}"),
        ("parameters", f"{count_parameters(conv.model.encoder):,} (encoder)"),
        ("tensors loaded", str(len(conv.loaded))),
        ("left at init", str(len(conv.missing))),
        ("unused", ", ".join(conv.unused[:4]) + (" …" if len(conv.unused) > 4 else "") or "none"),
        *(("note", n) for n in conv.notes),
        ("stats.json", "copied" if band_stats else "none: pass --stats, or --preprocess.normalize scale"),
    ]
    print_table(f"eo weights: {source} → {run_dir}", ("", ""), rows)


@app.command
def bench(
    kind: Literal["transfer", "grid", "throughput"] = "transfer",
    bench: BenchConfig = BenchConfig(),
    throughput: ThroughputConfig = ThroughputConfig(),
    data: Path | None = None,
    out: Path | None = None,
    run: RunContext | None = None,
) -> None:
    """Pretrained vs scratch on the same budget (+ the resize × normalisation grid), or MAE throughput.

    Args:
        kind: transfer (the bench report), grid (resize × normalisation for the first family's frozen
            source, kNN / linear probe) or throughput (images/s of our MAE vs torchgeo's MAE task).
        bench: seeds, steps, batch, label fractions, families, corpus and target sizes.
        throughput: timed steps, warm-up, batch, paired rounds, threads of --kind throughput.
        data: a labelled GeoTIFF folder to use as the target instead of generated scenes.
        out: run directory (default runs/eo/bench/<time>).
    """
    from warmstart.cli.show import print_table

    run_dir, _ = run.open(out=out)
    if kind == "throughput":
        import json

        from warmstart_eo.bench import throughput as measure

        result = measure(throughput)
        (run_dir / "throughput.json").write_text(json.dumps(result, indent=2))
        scalars = {k: v for k, v in result.items() if isinstance(v, float)}
        print_table(
            f"eo MAE pretraining throughput: ours (engine) vs torchgeo.tasks.MAE (Lightning Trainer) → {run_dir}",
            ("", ""),
            _rows(scalars),
        )
        rounds = [(str(i), f"{r:.3f}") for i, r in enumerate(result["per_round_ratio"])]
        print_table(
            f"ratio ours / torchgeo: median {result['ratio']:.3f}, range {result['ratio_min']:.3f}-"
            f"{result['ratio_max']:.3f} over paired rounds (order alternating)",
            ("round", "ratio"),
            rounds,
        )
        return
    from warmstart_eo.bench import run_bench, run_grid_bench

    if kind == "grid":
        grid = run_grid_bench(run_dir, bench, data)
        rows = [(name, f"{m['mean']:.3f}") for name, m in grid["methods"].items()]
        print_table(f"{grid['metric']} → {run_dir / 'grid' / 'report.md'}", ("protocol", "kNN"), rows)
        return
    summary = run_bench(run_dir, bench, data)
    rows = [
        (name, f"{m['mean']:.3f} ± {m['std']:.3f}", f"{m.get('delta', 0.0):+.3f}")
        for name, m in summary["main"]["methods"].items()
    ]
    print_table(
        f"{summary['main']['metric']} → {summary['report']}", ("method", "mean ± std", "Δ vs scratch"), rows
    )
    head = summary["headline"]
    need = [
        (m, "not reached" if f is None else f"{f:.0%}", f"{head['accuracy gap @1% vs scratch'][m]:+.3f}")
        for m, f in head["labels needed to match it"].items()
    ]
    print_table(
        f"labels needed to reach scratch's accuracy at 100 % ({head['scratch accuracy @100% labels']:.3f})",
        ("method", "labels needed", "gap at the smallest fraction"),
        need,
    )


@app.command(demo=True)
def demo(out: Path | None = None, steps: int = 30, run: RunContext | None = None) -> DemoResult:
    """Tour: generate GeoTIFFs, pretrain a tiny SatMAE++, fine-tune it and scratch on the same budget.

    Args:
        out: run directory (default runs/eo/demo/<time>).
        steps: pretraining and fine-tuning steps.
    """
    from warmstart.cli.show import print_table
    from warmstart.engine import quick_config
    from warmstart_eo.data import load_dataset, synthesize
    from warmstart_eo.train import run_finetune, run_pretrain

    run_dir, _ = run.open(out=out)
    root = run_dir / "data"
    synthesize(root, SynthConfig(scenes=4, size=64, frames=1, seed=7))
    data_cfg = DataConfig(chip_size=32, stride=16)
    chips = load_dataset(root, data_cfg)
    model = ModelConfig(family="satmaepp", scales=1)
    run_pretrain(
        root, data_cfg, model, quick_config(steps, 8, 2e-3), run_dir=run_dir / "pretrain", chips=chips
    )
    engine = quick_config(steps, 8, 2e-3)
    pre = run_finetune(
        chips,
        pretrained=run_dir / "pretrain",
        model_config=ModelConfig(),
        data_config=data_cfg,
        engine_config=engine,
    )
    scratch = run_finetune(
        chips,
        pretrained=None,
        model_config=ModelConfig(family="satmaepp"),
        data_config=data_cfg,
        engine_config=engine,
    )
    print_table(
        "eo demo: scene classification after the same fine-tuning budget",
        ("encoder", "accuracy"),
        [("SatMAE++ pretrained", f"{pre['accuracy']:.3f}"), ("scratch", f"{scratch['accuracy']:.3f}")],
    )
    return DemoResult(
        what=f"4 generated GeoTIFF scenes via torchgeo, tiny SatMAE++ pretrained {steps} steps, fine-tuned {steps}",
        metric="fine-tune accuracy (pretrained)",
        value=pre["accuracy"],
        details={"scratch_accuracy": scratch["accuracy"], "run_dir": str(run_dir)},
    )


def main() -> None:
    app.entry()


if __name__ == "__main__":
    main()
