"""eo on a GPU: SatMAE++ and Prithvi base-size (ViT-B) MAE pretraining steps in bf16 from their recipes.

Seeds: *Rethinking Transformers Pre-training for Multi-Spectral Satellite Imagery* (SatMAE++, Noman et al.,
arXiv 2403.05419) and *Foundation Models for Generalist Geospatial AI* (Prithvi, Jakubik et al., arXiv
2310.18660). Writes generated Sentinel-2-like GeoTIFFs, then runs ``warmstart-eo pretrain`` with
``satmaepp-base-gpu.yaml`` (10 bands, 384 px chips → 96 px encoder, two upsampling scales) and
``prithvi-100m-gpu.yaml`` (6 bands × 3 frames at 224 px), a few hundred steps each at batch 32 instead of
the recipes' 300/1000 steps. Left out: fine-tuning (the same encoder; cheaper per step).
"""

from __future__ import annotations

from typing import Any

from gpu.common import (
    Check,
    Context,
    Recipe,
    cli,
    engine_flags,
    flags,
    run_limits,
    timed,
    trained,
)

RECIPES = "apps/eo/src/warmstart_eo/recipes/"
SATMAE = RECIPES + "satmaepp-base-gpu.yaml"
PRITHVI = RECIPES + "prithvi-100m-gpu.yaml"


STEPS, BATCH = 150, 32


def pretrain_args(recipe: str, steps: int, batch: int, smoke: bool) -> list[Any]:
    """The recipe with fewer steps, a smaller batch, quiet logging; smoke: tiny width, small chips."""
    args: list[Any] = ["--config", recipe, *engine_flags(steps, batch)]
    if recipe == SATMAE:  # 384 px chips (the encoder sees 96 px); stride 16 cuts 25 chips from a 448 px scene
        args += (
            ["--model.size", "tiny", "--model.img_size", "16", "--data_config.chip_size", "64"]
            if smoke
            else []
        )
        return args + ["--data_config.stride", 16]
    args += (
        ["--model.size", "tiny", "--model.img_size", "32", "--data_config.chip_size", "32"] if smoke else []
    )
    return args + ["--data_config.stride", 16 if smoke else 56]


def run(ctx: Context) -> dict[str, Any]:
    data = ctx.out / "chips"
    metrics: dict[str, Any] = {}
    with timed(metrics, "synth_seconds"):
        synth = {
            "out": data,
            "synth.scenes": ctx.size(4, 2),
            "synth.size": ctx.size(448, 96),
            "synth.frames": 3,
        }
        cli("eo", ["data-synth", *flags(synth)])
    steps, batch = ctx.size(STEPS, 3), ctx.size(BATCH, 4)
    for name, recipe in (("satmaepp", SATMAE), ("prithvi", PRITHVI)):
        argv = [
            "pretrain",
            "--data",
            data,
            *pretrain_args(recipe, steps, batch, ctx.smoke),
            "--out",
            ctx.out / name,
        ]
        metrics |= trained(name, "eo", argv)
    return metrics


def models() -> dict[str, Any]:
    from gpu.common import parse_recipe
    from warmstart_eo.models import build_mae
    from warmstart_eo.train import prepare_model_config

    built = {}
    for name, path in (("satmaepp-base", SATMAE), ("prithvi-100m", PRITHVI)):
        parsed = parse_recipe(Recipe("eo", "pretrain", path, ["--data", "chips"]))
        config = prepare_model_config(parsed["model"], parsed["data_config"])
        built[name] = lambda config=config: build_mae(config)
    return built


CHECK = Check(
    app="eo",
    plan=[
        "data-synth: 4 generated Sentinel-2-like scenes, 448 px, 3 frames (GeoTIFF; 100 chips per family)",
        "pretrain --config satmaepp-base-gpu.yaml: ViT-B SatMAE++ MAE, 150 steps x 32 chips of 384 px (bf16)",
        "pretrain --config prithvi-100m-gpu.yaml: ViT-B Prithvi MAE, 150 steps x 32 chips of 3x224 px (bf16)",
    ],
    budget_s=90,
    recipes=[
        Recipe(
            "eo", "pretrain", SATMAE, ["--data", "chips", *pretrain_args(SATMAE, STEPS, BATCH, False)[2:]]
        ),
        Recipe(
            "eo", "pretrain", PRITHVI, ["--data", "chips", *pretrain_args(PRITHVI, STEPS, BATCH, False)[2:]]
        ),
    ],
    models=models,
    run=run,
    limits=[
        *run_limits("satmaepp", STEPS, 150, "floor: ViT-B on 144 visible-or-masked tokens, bf16"),
        *run_limits("prithvi", STEPS, 100, "floor: ViT-B on 3 x 196 tokens, bf16"),
    ],
    apis=[
        "warmstart_eo.cli:app",
        "warmstart_eo.models:build_mae",
        "warmstart_eo.train:prepare_model_config",
        "warmstart.engine:Engine.fit",
    ],
)
