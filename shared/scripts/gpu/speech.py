"""speech on a GPU: conformer speech-encoder pretraining with CTC + optimal transport, bf16, base size.

Seed: *Pre-training for Speech Translation: CTC Meets Optimal Transport* (Le et al., arXiv 2301.11716).
Synthesises a small spoken corpus offline (espeak-ng voices), trains the phoneme→word MT model (its encoder
is the frozen OT teacher) for a few steps, then runs ``warmstart-speech pretrain --objective ctc+ot`` with
``gpu-base.yaml`` (512-d, 12 conformer layers from fairseq2's builder) for 200 steps at batch 32. Left out:
ST fine-tuning and BLEU (the encoder's step is the cost that matters).
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

RECIPE = "apps/speech/src/warmstart_speech/recipes/gpu-base.yaml"
STEPS, BATCH, MT_STEPS = 200, 32, 30
TINY = flags(
    {
        "model.model_dim": 32,
        "model.speech_layers": 1,
        "model.text_layers": 1,
        "model.decoder_layers": 1,
        "model.heads": 2,
        "model.ffn_dim": 64,
        "model.subsampler_dim": 32,
    }
)


def run(ctx: Context) -> dict[str, Any]:
    corpus, mt = ctx.out / "corpus", ctx.out / "mt"
    metrics: dict[str, Any] = {}
    synth = flags({"synth.n_train": ctx.size(128, 24), "synth.n_test": ctx.size(16, 8)})
    with timed(metrics, "synth_seconds"):
        cli("speech", ["data-synth", "--out", corpus, *synth])
    size = TINY if ctx.smoke else []
    batch = ctx.size(BATCH, 4)
    train = corpus / "train.tsv"
    common = ["--data", train, "--config", RECIPE, *size]
    mt_engine, engine = engine_flags(ctx.size(MT_STEPS, 2), batch), engine_flags(ctx.size(STEPS, 3), batch)
    metrics |= trained("mt", "speech", ["mt-train", *common, *mt_engine, "--out", mt])
    pretrain = [
        "pretrain",
        "--objective",
        "ctc+ot",
        "--mt",
        mt,
        *common,
        *engine,
        "--out",
        ctx.out / "pretrain",
    ]
    return metrics | trained("ctc_ot", "speech", pretrain)


def models() -> dict[str, Any]:
    from gpu.common import parse_recipe
    from warmstart_speech.models import SpeechEncoder, build_mt

    parsed = parse_recipe(Recipe("speech", "pretrain", RECIPE, ["--data", "train.tsv"]))
    config = parsed["model"]
    return {
        "conformer speech encoder (base)": lambda: SpeechEncoder(config, 64),
        "mt teacher (base)": lambda: build_mt(config, 64, 1000),
    }


CHECK = Check(
    app="speech",
    plan=[
        "data-synth: 128 + 16 utterances through espeak-ng (offline), 80-bin fbank",
        f"mt-train --config gpu-base.yaml: {MT_STEPS} steps (the OT teacher)",
        f"pretrain --objective ctc+ot --config gpu-base.yaml: 512-d 12-layer conformer, {STEPS} steps x {BATCH}"
        " (bf16)",
    ],
    budget_s=70,
    recipes=[
        Recipe("speech", "mt-train", RECIPE, ["--data", "t.tsv", *engine_flags(MT_STEPS, BATCH)]),
        Recipe("speech", "pretrain", RECIPE, ["--data", "t.tsv", "--mt", "m", *engine_flags(STEPS, BATCH)]),
    ],
    models=models,
    run=run,
    limits=[
        *run_limits(
            "ctc_ot",
            STEPS,
            100,
            "floor: utterances/s of a 12-layer 512-d conformer, bf16",
            "bf16 CTC + Sinkhorn loss",
        ),
    ],
    apis=[
        "warmstart_speech.cli:app",
        "warmstart_speech.models:SpeechEncoder",
        "warmstart_speech.models:build_mt",
        "warmstart.engine:Engine.fit",
    ],
)
