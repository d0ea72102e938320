"""The ``gmae`` command's pipeline: Gaussian-MAE / Point-MAE pretraining, then classification or part segmentation.

Seed papers: "ShapeSplat … and Their Self-Supervised Pretraining" (Gaussian-MAE, arXiv 2408.10906) and
"Masked Autoencoders for Point Cloud Self-supervised Learning" (Point-MAE, arXiv 2203.06604). Reads a
splats-make / ShapeSplat folder (every Gaussian attribute) or any shape dataset root (centres only), splits
it, pretrains and fine-tunes on the core's ``light_fit``, saves the model in the core's format and writes
``results.json``. The CLI (:mod:`warmstart_3d.cli`) validates the options and calls :func:`run_gmae`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from warmstart.errors import ConfigError
from warmstart_3d.datasets import DatasetName, OnBadFile
from warmstart_3d.gmae import GaussianMAE, GMAEConfig, splat_features
from warmstart_3d.points_bench import finetune, pretrain
from warmstart_3d.splat_dataset import read_splat_dataset


def run_gmae(
    data: Path,
    model: GMAEConfig,
    n_points: int,
    pretrain_steps: int,
    finetune_steps: int,
    test_fraction: float,
    batch_size: int,
    seed: int,
    task: str,
    partseg_lr: float,
    dataset: DatasetName,
    on_bad_file: OnBadFile,
    open_run: Callable[[], Path],
) -> dict:
    """Load, split, pretrain, fine-tune, save; ``open_run()`` makes the run directory once the data is read."""
    from warmstart_3d.datasets import detect_layout, load_shape_set

    folder = Path(data)

    layout = detect_layout(folder) if dataset == "auto" else dataset
    plain = not (folder / "index.jsonl").is_file() and layout != "shapesplat"
    g = torch.Generator().manual_seed(seed)
    skipped = 0
    if plain:  # shapes without splat attributes: centres only (Point-MAE)
        if task == "partseg" or list(model.attributes) != ["xyz"]:
            raise ConfigError(
                f"{data}: plain point-cloud files have only xyz; use --model.attributes '[xyz]' (Point-MAE) and "
                "--task classify, or a splats-make dataset"
            )
        shapes = load_shape_set(
            folder,
            n_points=n_points,
            name=layout,
            on_bad_file=on_bad_file,
            seed=seed,
            min_points=max(model.n_groups, model.group_size),
        )
        points, labels, classes, skipped = shapes.points, shapes.labels, shapes.classes, len(shapes.skipped)
        features = torch.cat(
            [points, points.new_zeros(*points.shape[:2], 11)], dim=-1
        )  # (M, N, 14), xyz only
        run_dir = open_run()
    else:
        splats, labels, classes = read_splat_dataset(data)
        if task == "partseg":
            return run_gmae_partseg(
                data,
                splats,
                labels,
                classes,
                model,
                n_points,
                pretrain_steps,
                finetune_steps,
                test_fraction,
                batch_size,
                seed,
                partseg_lr,
                open_run(),
            )
        run_dir = open_run()
        features = splat_features(splats, n_points, g)
    order = torch.randperm(len(labels), generator=g)
    n_test = max(1, int(test_fraction * len(labels)))
    test, train = order[:n_test], order[n_test:]
    torch.manual_seed(seed)
    net = GaussianMAE(model, len(classes))
    losses = pretrain(net, features[train], pretrain_steps, batch_size, seed) if pretrain_steps else []
    acc = finetune(
        net, features[train], labels[train], (features[test], labels[test]), finetune_steps, batch_size, seed
    )
    from warmstart.hub import ModelCard

    net.model_card = ModelCard(
        title=f"Gaussian-MAE classifier ({', '.join(model.attributes)}; {len(classes)} classes)",
        paper="ShapeSplat / Gaussian-MAE (arXiv 2408.10906)",
        data=str(data),
        metrics={"test_accuracy": acc},
        training={"pretrain_steps": pretrain_steps, "finetune_steps": finetune_steps},
    )
    net.hub_extra = {"classes": classes}
    net.save_pretrained(run_dir / "model")
    results = {
        "test_accuracy": acc,
        "pretrain_loss_first": losses[0] if losses else None,
        "pretrain_loss_last": losses[-1] if losses else None,
        "n_train": len(train),
        "n_test": n_test,
        "skipped_files": skipped,
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    return results


def run_gmae_partseg(
    data: Path,
    splats: list,
    labels,
    classes: list[str],
    model: GMAEConfig,
    n_points: int,
    pretrain_steps: int,
    finetune_steps: int,
    test_fraction: float,
    batch_size: int,
    seed: int,
    lr: float,
    run_dir: Path,
) -> dict:
    import torch

    from warmstart_3d.gmae import GaussianMAE, splat_features_parts
    from warmstart_3d.partseg import PartLayout, PartSegModel, constant_baseline, finetune_partseg
    from warmstart_3d.points_bench import pretrain
    from warmstart_3d.splat_dataset import read_part_labels

    parts, names = read_part_labels(data, [len(s) for s in splats])
    layout = PartLayout.from_names(classes, names)
    g = torch.Generator().manual_seed(seed)
    features, local = splat_features_parts(splats, parts, n_points, g)
    targets = layout.to_global(local, labels)
    order = torch.randperm(len(labels), generator=g)
    n_test = max(1, int(test_fraction * len(labels)))
    test, train = order[:n_test], order[n_test:]
    torch.manual_seed(seed)
    backbone = GaussianMAE(model, 0)
    losses = pretrain(backbone, features[train], pretrain_steps, batch_size, seed) if pretrain_steps else []
    net = PartSegModel.from_backbone(backbone, len(classes), layout.n_parts)
    split = {k: (features[i], labels[i], targets[i]) for k, i in (("train", train), ("test", test))}
    metrics = finetune_partseg(
        net, split["train"], split["test"], layout, finetune_steps, batch_size, seed, lr
    )
    const = constant_baseline(split["train"], split["test"], layout)
    from warmstart.hub import ModelCard

    net.model_card = ModelCard(
        title=f"Gaussian-MAE part segmentation ({len(classes)} classes, {layout.n_parts} parts)",
        paper="Point-MAE (arXiv 2203.06604) head on Gaussian-MAE (ShapeSplat, arXiv 2408.10906)",
        data=str(data),
        metrics={k: v for k, v in metrics.items() if not k.startswith("loss")},
    )
    net.hub_extra = {"classes": classes, "part_names": names}
    net.save_pretrained(run_dir / "model")
    results = {
        "task": "partseg",
        **{f"test_{k}": v for k, v in metrics.items() if not k.startswith("loss")},
        **{f"constant_{k}": v for k, v in const.items()},
        "finetune_loss_first": metrics.get("loss_first"),
        "finetune_loss_last": metrics.get("loss_last"),
        "pretrain_loss_first": losses[0] if losses else None,
        "pretrain_loss_last": losses[-1] if losses else None,
        "n_parts": layout.n_parts,
        "n_train": len(train),
        "n_test": n_test,
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    return results
