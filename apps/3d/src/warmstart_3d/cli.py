"""``warmstart-3d``: Gaussian splatting (3DGS fit, InstantSplat, splat datasets) and point/splat pretraining.

Thin layer: parse the typed options, call the pipeline modules, print tables. Heavy imports stay inside the
commands so that ``warmstart-3d --help`` is fast.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from warmstart.cli import App, DemoResult, RunContext
from warmstart.engine import EngineConfig
from warmstart.errors import ConfigError
from warmstart_3d.bench import SplatBenchConfig
from warmstart_3d.clip2point import ClipSpec, DepthConfig, FewShotConfig, PretrainConfig, SourceConfig
from warmstart_3d.datasets import DatasetName, OnBadFile
from warmstart_3d.gmae import GMAEConfig
from warmstart_3d.instantsplat import InstantSplatConfig
from warmstart_3d.points_bench import PointsBenchConfig
from warmstart_3d.splatfit import SplatFitConfig

app = App("3d", "3D: Gaussian splatting (3DGS fit, InstantSplat), splat datasets, CLIP2Point, Gaussian-MAE")


@dataclass
class RenderBenchConfig:
    n_gaussians: int = 5000
    """Gaussians in the timed scene."""
    size: int = 128
    """Image width = height."""
    repeats: int = 3
    """Timed repetitions (after one warm-up)."""


def _check_fit(fit: SplatFitConfig, option: str) -> None:
    """Refuse fit settings the rasterizers cannot serve before any file is written."""
    if not 0 <= fit.sh_degree <= 3:
        raise ConfigError(f"--{option}.sh_degree {fit.sh_degree}: the rasterizers support degrees 0 to 3")
    if fit.steps < 1:
        raise ConfigError(f"--{option}.steps {fit.steps}: must be >= 1")


def _print(title: str, values: dict) -> None:
    from warmstart.cli.show import print_table

    rows = [(k, f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in values.items()]
    print_table(title, ("", ""), rows)


@app.command(name="scene-make")
def scene_make(
    out: Path,
    n_train: int = 3,
    n_test: int = 2,
    size: int = 64,
    seed: int = 0,
    n_objects: int = 3,
    gaussians_per_object: int = 1500,
    rot_noise_deg: float = 0.0,
    trans_noise: float = 0.0,
) -> None:
    """Render a procedural scene (textured shapes on a floor) into an image folder with COLMAP poses.

    Args:
        out: output folder (images/, depths/, sparse/0/, split.json, gt.ply; gt/sparse/0 with pose noise).
        n_train: training views.
        n_test: held-out views.
        size: image width = height.
        seed: scene seed.
        n_objects: shapes in the scene.
        gaussians_per_object: ground-truth Gaussians per shape (and for the floor).
        rot_noise_deg: perturb the stored poses by about this rotation (true poses go to gt/sparse/0).
        trans_noise: perturb the stored camera centres by about this distance.
    """
    from warmstart_3d.data import make_scene

    if size < 8 or n_train < 1:
        raise ConfigError("--size must be >= 8 and --n_train >= 1")
    folder = make_scene(
        out, n_train, n_test, size, size, seed, n_objects, gaussians_per_object, rot_noise_deg, trans_noise
    )
    _print("scene", {"folder": str(folder), "views": n_train + n_test, "size": size})


@app.command(name="splat-fit")
def splat_fit(
    data: Path,
    fit: SplatFitConfig = SplatFitConfig(),  # noqa: B008
    init: Literal["random", "depth"] = "random",
    n_points: int = 2000,
    out: Path | None = None,
    run: RunContext | None = None,
) -> dict:
    """Classic 3DGS fitting with known poses (densify/prune strategy), PSNR/SSIM on held-out views, PLY out.

    Args:
        data: scene folder with images/ and sparse/0/ (COLMAP text poses).
        fit: optimisation settings (steps, learning rates, densification).
        init: initial Gaussians: random in the view volume, or depth maps back-projected.
        n_points: initial Gaussians.
        out: run directory (default runs/3d/splat-fit/<time>).
    """
    from warmstart_3d.splatfit import fit_folder

    _check_fit(fit, "fit")
    results = fit_folder(data, fit, init, n_points, lambda: run.open(out=out)[0])
    _print("splat fit", results)
    return results


@app.command
def instantsplat(
    data: Path,
    isplat: InstantSplatConfig = InstantSplatConfig(),  # noqa: B008
    out: Path | None = None,
    run: RunContext | None = None,
) -> dict:
    """Pose-free sparse-view splatting: initialise, jointly optimise Gaussians and poses, align, evaluate.

    Args:
        data: scene folder: images/ (3-12 views) and nothing else for --isplat.init prior (the default); other
            inits read initial poses in sparse/0/ and depths/*.npy; true poses in gt/sparse/0 (or sparse/0
            under the prior) give the ATE.
        isplat: initialiser, joint-optimisation schedule, test-time alignment.
        out: run directory (default runs/3d/instantsplat/<time>).
    """
    from warmstart_3d.instantsplat import run_folder

    _check_fit(isplat.fit, "isplat.fit")
    results = run_folder(data, isplat, lambda: run.open(out=out)[0])
    _print("instantsplat", results)
    return results


@app.command(name="splats-make")
def splats_make(
    out: Path,
    per_class: int = 10,
    classes: list[str] | None = None,
    n_gaussians: int = 1024,
    fit_steps: int = 0,
    seed: int = 0,
    rotate: bool = True,
) -> None:
    """Build a ShapeSplat-style dataset: one 3DGS PLY per procedural object plus index.jsonl with labels.

    Args:
        out: output folder (splats/<class>_<i>.ply, splats/<class>_<i>.parts.npy part labels, index.jsonl,
            classes.json, parts.json).
        per_class: objects per class.
        classes: shape classes (default: the 8 basic shapes; the multi-part lamp, table, chair, mug are
            opt-in, for part segmentation).
        n_gaussians: Gaussians per object (ShapeSplat's Gaussian-MAE uses 1,024).
        fit_steps: rasterizer refinement steps per object after the surface-sampling initialiser (0: none).
        seed: dataset seed.
        rotate: random rotation per object (false: aligned, as ShapeNetPart for part segmentation).
    """
    from warmstart_3d.splat_dataset import make_splat_dataset

    index = make_splat_dataset(
        out,
        per_class=per_class,
        classes=classes,
        n_gaussians=n_gaussians,
        fit_steps=fit_steps,
        seed=seed,
        rotate=rotate,
    )
    _print("splat dataset", {"index": str(index), "objects": sum(1 for _ in index.open())})


@app.command
def gmae(
    data: Path,
    model: GMAEConfig = GMAEConfig(),  # noqa: B008
    n_points: int = 256,
    pretrain_steps: int = 100,
    finetune_steps: int = 60,
    test_fraction: float = 0.25,
    batch_size: int = 16,
    seed: int = 0,
    task: Literal["classify", "partseg"] = "classify",
    partseg_lr: float = 1e-3,
    dataset: DatasetName = "auto",
    on_bad_file: OnBadFile = "fail",
    out: Path | None = None,
    run: RunContext | None = None,
) -> dict:
    """Gaussian-MAE: pretrain on a splat dataset (splats-make output), fine-tune for classification or parts.

    Args:
        data: dataset folder with index.jsonl (+ splats/*.ply; part labels in splats/*.parts.npy + parts.json
            for --task partseg), or a dataset root of shapes (ModelNet40, ScanObjectNN, ShapeNetPart, class
            folders of mesh/point files; centres only, so --model.attributes '[xyz]').
        model: tokeniser/transformer/masking settings; --model.attributes [xyz] gives Point-MAE.
        n_points: Gaussians sampled per object.
        pretrain_steps: masked-reconstruction steps (0: train from scratch).
        finetune_steps: classification / segmentation steps.
        test_fraction: held-out fraction of the objects.
        batch_size: batch size.
        seed: seed of the split, init, masking and batches.
        task: classify (object class) or partseg (per-Gaussian part, Point-MAE's head; reports point
            accuracy, class mIoU and instance mIoU, and the best constant predictor's figures).
        partseg_lr: peak learning rate of the part-segmentation fine-tuning (AdamW, cosine).
        dataset: the layout of --data (auto: detected from its files).
        on_bad_file: a file that cannot be read or is degenerate: fail (one line naming it) or skip (counted
            in results.json).
        out: run directory (default runs/3d/gmae/<time>).
    """
    if not 0 < test_fraction < 1:
        raise ConfigError("--test_fraction must be in (0, 1)")
    if n_points < max(model.n_groups, model.group_size):
        raise ConfigError(
            f"--n_points {n_points} is fewer than --model.n_groups {model.n_groups} / --model.group_size "
            f"{model.group_size}; raise --n_points or lower the group settings"
        )
    from warmstart_3d.gmae_pipeline import run_gmae

    results = run_gmae(
        Path(data),
        model,
        n_points,
        pretrain_steps,
        finetune_steps,
        test_fraction,
        batch_size,
        seed,
        task,
        partseg_lr,
        dataset,
        on_bad_file,
        lambda: run.open(out=out)[0],
    )
    title = "gaussian-mae part segmentation" if task == "partseg" else "gaussian-mae"
    _print(title, results)
    return results


def _small_engine(steps: int, batch: int, lr: float) -> EngineConfig:
    cfg = EngineConfig()
    cfg.train.max_steps, cfg.train.micro_batch_size, cfg.optimizer.lr = steps, batch, lr
    cfg.optimizer.weight_decay = 0.05
    cfg.logging.tensorboard, cfg.checkpoint.save_final = False, False
    return cfg


@app.command(name="clip2point-source")
def clip2point_source(
    source: SourceConfig = SourceConfig(),  # noqa: B008
    engine: bool = True,
    out: Path | None = None,
    run: RunContext | None = None,
) -> dict:
    """Train a tiny open_clip CLIP on rendered (image, caption) pairs of procedural shapes (no weights here).

    Writes an open_clip local-dir folder (open_clip_config.json + open_clip_model.safetensors) that
    clip2point-pretrain / clip2point-eval read with --clip.model <folder>.

    Args:
        source: architecture, data and optimisation of the source CLIP.
        engine: train with the core engine (AdamW, cosine, clipping); false: the same recipe in a plain loop.
        out: run directory (default runs/3d/clip2point-source/<time>); the model goes to <out>/clip.
    """
    from warmstart_3d.clip2point import pretrain_source

    if source.steps < 1 or source.per_class < 1:
        raise ConfigError("--source.steps and --source.per_class must be >= 1")
    run_dir, _ = run.open(out=out)
    cfg = _small_engine(source.steps, source.batch_size, source.lr) if engine else None
    if cfg is not None:
        cfg.train.seed = source.seed
    results = pretrain_source(source, run_dir / "clip", cfg) | {"clip": str(run_dir / "clip")}
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    _print("clip2point source CLIP", results)
    return results


@app.command(name="clip2point-pretrain")
def clip2point_pretrain(
    clip: ClipSpec = ClipSpec(),  # noqa: B008
    depth: DepthConfig = DepthConfig(),  # noqa: B008
    pretrain: PretrainConfig = PretrainConfig(),  # noqa: B008
    source: SourceConfig = SourceConfig(),  # noqa: B008
    engine: bool = True,
    out: Path | None = None,
    run: RunContext | None = None,
) -> dict:
    """CLIP2Point image-depth pretraining: depth encoder from the CLIP image tower vs the frozen image tower.

    Args:
        clip: the open_clip model (architecture name + --clip.pretrained file/tag, hf-hub:org/repo,
            local-dir:/path or a clip2point-source folder); 'tiny' trains one first (--source.*).
        depth: depth rendering (size defaults to the model's image size).
        pretrain: pretraining data, steps, batch, learning rate, init (clip | scratch).
        source: settings of the tiny source CLIP when --clip.model tiny.
        engine: train with the core engine; false: the same recipe in a plain loop.
        out: run directory (default runs/3d/clip2point-pretrain/<time>): depth_encoder.safetensors,
            depth_encoder/ (config.json + model.safetensors + README.md), results.json.
    """
    from warmstart_3d.clip2point import run_pretrain

    if pretrain.steps < 1 or pretrain.per_class < 1:
        raise ConfigError("--pretrain.steps and --pretrain.per_class must be >= 1")
    run_dir, _ = run.open(out=out)
    results = run_pretrain(clip, depth, pretrain, source, run_dir, _small_engine if engine else None)
    _print("clip2point pretrain", results)
    return results


@app.command(name="clip2point-eval")
def clip2point_eval(
    checkpoint: Path | None = None,
    clip: ClipSpec = ClipSpec(),  # noqa: B008
    data: Path | None = None,
    classes: list[str] | None = None,
    prompt: str = "image of a {}",
    shots: int = 0,
    per_class: int = 16,
    test_per_class: int = 8,
    n_points: int = 1024,
    fewshot: FewShotConfig = FewShotConfig(),  # noqa: B008
    seed: int = 0,
    out: Path | None = None,
    run: RunContext | None = None,
) -> dict:
    """Zero-shot (--shots 0, 6 views) or few-shot (Dual-Path Adapter, 10 views) point-cloud classification.

    Without --checkpoint the CLIP image tower runs on the depth maps directly (PointCLIP-style; a
    single-path adapter for few-shot).

    Args:
        checkpoint: a clip2point-pretrain run directory (its depth_encoder/config.json names the CLIP model;
            older runs' clip2point.json is read too).
        clip: the open_clip model when there is no checkpoint (PointCLIP-style).
        data: a splats-make folder (index.jsonl) or a folder of class sub-folders of point files
            (PLY/XYZ/NPY/OFF); default: generated procedural shapes.
        classes: class names for the prompts, each a label of the data (default: all labels).
        prompt: prompt template with {} for the class name (the paper: "image of a {}").
        shots: labelled clouds per class for the adapter (0: zero-shot).
        per_class: generated clouds per class (without --data).
        test_per_class: held-out clouds per class for few-shot (zero-shot tests on all).
        n_points: points per cloud.
        fewshot: adapter training settings.
        seed: seed of the data, split and adapter.
        out: run directory (default runs/3d/clip2point-eval/<time>).
    """
    if shots < 0 or n_points < 2:
        raise ConfigError("--shots must be >= 0 and --n_points >= 2")
    if "{}" not in prompt:
        raise ConfigError(f"--prompt {prompt!r} needs a {{}} where the class name goes")
    depth = DepthConfig()
    if checkpoint is not None:
        from warmstart_3d.clip2point import read_depth_checkpoint

        clip, depth, _ = read_depth_checkpoint(checkpoint)
    from warmstart_3d.fewshot import evaluate_clouds

    results = evaluate_clouds(
        checkpoint,
        clip,
        depth,
        data,
        classes,
        prompt,
        shots,
        per_class,
        test_per_class,
        n_points,
        fewshot,
        seed,
        lambda: run.open(out=out)[0],
    )
    _print("clip2point eval", {k: v for k, v in results.items() if k != "classes"})
    return results


@app.command
def bench(
    kind: Literal["splat", "points", "render", "depth"] = "splat",
    splat: SplatBenchConfig = SplatBenchConfig(),  # noqa: B008
    points: PointsBenchConfig = PointsBenchConfig(),  # noqa: B008
    render: RenderBenchConfig = RenderBenchConfig(),  # noqa: B008
    out: Path | None = None,
    run: RunContext | None = None,
) -> dict:
    """Benchmarks: splat (InstantSplat arms), points (CLIP2Point / Gaussian-MAE), render / depth (speed).

    Args:
        kind: which benchmark.
        splat: settings of the splat bench.
        points: settings of the points bench: (a) CLIP2Point vs PointCLIP-style vs scratch depth encoder,
            (b) scratch vs Point-MAE vs Gaussian-MAE (--points.part all|clip2point|mae).
        render: settings of the render-speed benchmark (CPU reference; gsplat ratio on CUDA).
        out: run directory (default runs/3d/bench/<time>).
    """
    run_dir, _ = run.open(out=out)
    if kind == "splat":
        from warmstart_3d.bench import run_splat_bench

        result = run_splat_bench(splat, run_dir)
        print(result["report"].report_md.read_text())
        return {"report": str(result["report"].report_md)}
    if kind == "render":
        from warmstart_3d.render_bench import render_speed

        numbers = render_speed(render.n_gaussians, render.size, render.repeats)
        (run_dir / "results.json").write_text(json.dumps(numbers, indent=2))
        _print("render speed", numbers)
        return numbers
    if kind == "depth":
        from warmstart_3d.clip2point import depth_render_speed

        numbers = depth_render_speed()
        (run_dir / "results.json").write_text(json.dumps(numbers, indent=2))
        _print("depth rendering, 1,024 points x 6 views", numbers)
        return numbers
    from warmstart_3d.points_bench import run_points_bench

    reports = run_points_bench(points, run_dir)["reports"]
    for report in reports:
        print(report.report_md.read_text())
    return {"reports": [str(r.report_md) for r in reports]}


@app.command(demo=True)
def demo(out: Path | None = None, run: RunContext | None = None) -> DemoResult:
    """Tour: generate a 3-view scene with noisy poses, run InstantSplat on it (CPU, tiny), write a PLY.

    Args:
        out: run directory (default runs/3d/demo/<time>).
    """
    from warmstart_3d.data import load_scene, load_true_poses, make_scene
    from warmstart_3d.instantsplat import run_instantsplat
    from warmstart_3d.splats import write_ply

    run_dir, _ = run.open(out=out)
    start = time.perf_counter()
    folder = make_scene(
        run_dir / "scene", 3, 1, 32, 32, seed=0, n_per_object=400, rot_noise_deg=3.0, trans_noise=0.1
    )
    scene = load_scene(folder)
    cfg = InstantSplatConfig(init="depth", n_points=600, align_steps=20)
    cfg.fit.steps = 60
    gaussians, results = run_instantsplat(
        scene, scene.viewmats, cfg, true_viewmats=load_true_poses(folder, scene.names)
    )
    write_ply(run_dir / "splats.ply", gaussians)
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    _print("3d demo: InstantSplat on a generated 3-view scene", results)
    return DemoResult(
        what="InstantSplat (depth init, joint poses, 60 steps) on a generated 3-view 32px scene",
        metric="novel-view PSNR (dB)",
        value=float(results["psnr"]),
        details={
            "ate": results["ate"],
            "ate_initial": results["ate_initial"],
            "seconds": time.perf_counter() - start,
            "run_dir": str(run_dir),
        },
    )


def main() -> None:
    app.entry()


__all__ = ["app", "main"]


if __name__ == "__main__":
    main()
