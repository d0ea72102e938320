"""code on a GPU: pretraining a small code LM, batched sampling, and B-Coder's value-based RL steps, bf16.

Seed: *B-Coder: Value-Based Deep Reinforcement Learning for Program Synthesis* (Yu et al., arXiv
2310.03173), with the pass@k protocol of Chen et al. (arXiv 2107.03374). Pretrains a GPT-2 (256-d, 4
layers) on generated programs, samples 16 programs for each of 64 held-out tasks (programs/s), then
``warmstart-code bcoder --action train`` (sampled programs scored in the sandbox, value warm-up +
conservative TD) for 200 steps. Left out: SFT and the continual bench (the same LM step).
"""

from __future__ import annotations

import math
from typing import Any

from gpu.common import Check, Context, Limit, Recipe, cli, flags, light_fit_runs, timed, trained

RECIPE = "apps/code/src/warmstart_code/recipes/gpu.yaml"


PRETRAIN_STEPS, BCODER_STEPS, N_TASKS, K = 300, 200, 64, 16


def run(ctx: Context) -> dict[str, Any]:
    tasks, pre = ctx.out / "tasks.jsonl", ctx.out / "pretrain"
    metrics: dict[str, Any] = {}
    shape = {"model.n_embd": ctx.size(256, 32), "model.n_layer": ctx.size(4, 1), "model.n_head": 4}
    pretrain = {"n_tasks": ctx.size(3000, 100), "steps": ctx.size(PRETRAIN_STEPS, 25), "out": pre}
    metrics |= trained("pretrain", "code", ["pretrain", *flags(pretrain | shape)])
    n_tasks, k = ctx.size(N_TASKS, 4), ctx.size(K, 2)
    cli("code", ["tasks", *flags({"generate": n_tasks, "seed": 1, "out": tasks})])
    sample = {"tasks": tasks, "model": pre / "model", "sampling.k": k, "sampling.max_new_tokens": 48}
    with timed(metrics, "sample_seconds"):
        cli("code", ["sample", *flags(sample | {"out": ctx.out / "samples"})])
    metrics["programs_per_s"] = n_tasks * k / metrics["sample_seconds"]
    bcoder = {
        "action": "train",
        "tasks": tasks,
        "model": pre / "model",
        "train.steps": ctx.size(BCODER_STEPS, 3),
        "train.batch_size": ctx.size(32, 4),
        "samples_per_task": ctx.size(4, 2),
        "out": ctx.out / "bcoder",
    }
    # B-Coder trains in-process through the core's light_fit (two stages), not Engine.fit
    with light_fit_runs("warmstart_code.bcoder") as runs, timed(metrics, "bcoder_seconds"):
        cli("code", ["bcoder", *flags(bcoder)])
    losses = [loss for run_losses in runs for loss in run_losses]
    if not losses:
        raise RuntimeError("warmstart-code bcoder train ran no light_fit step")
    metrics["bcoder_all_steps"] = len(losses)
    metrics["bcoder_final_loss"] = losses[-1]
    metrics["bcoder_loss_finite"] = float(all(math.isfinite(x) for x in losses))
    return metrics


def models() -> dict[str, Any]:
    from warmstart_code.bcoder import QModel
    from warmstart_code.data import generate_tasks
    from warmstart_code.models import ModelConfig, build_tiny_lm, train_tokenizer

    tokenizer = train_tokenizer([t.prompt + t.canonical_solution for t in generate_tasks(40, 0)])
    config = ModelConfig(n_embd=256, n_layer=4, n_head=4)
    return {
        "code lm (256-d, 4 layers)": lambda: build_tiny_lm(tokenizer, config),
        "b-coder q-model": lambda: QModel(build_tiny_lm(tokenizer, config)),
    }


CHECK = Check(
    app="code",
    plan=[
        "pretrain: GPT-2 256-d x 4 layers on 3000 generated programs, 300 steps (bf16)",
        "sample: 16 programs for each of 64 held-out tasks (programs/s)",
        "bcoder --action train: 4 sampled programs per task scored in the sandbox, 200 steps x 32",
    ],
    budget_s=70,
    recipes=[
        Recipe("code", "bench", RECIPE),
        Recipe(
            "code", "pretrain", None, ["--n_tasks", 3000, "--steps", PRETRAIN_STEPS, "--model.n_embd", 256]
        ),
        Recipe(
            "code", "sample", None, ["--tasks", "t.jsonl", "--sampling.k", K, "--sampling.max_new_tokens", 48]
        ),
        Recipe(
            "code",
            "bcoder",
            None,
            [
                "--action",
                "train",
                "--tasks",
                "t.jsonl",
                "--train.steps",
                BCODER_STEPS,
                "--train.batch_size",
                32,
                "--samples_per_task",
                4,
            ],
        ),
    ],
    models=models,
    run=run,
    limits=[
        Limit("pretrain_loss_finite", ">=", 1, "bf16 loss stayed finite"),
        Limit("bcoder_all_steps", ">=", BCODER_STEPS, "every requested B-Coder step ran (both stages)"),
        Limit("bcoder_loss_finite", ">=", 1, "bf16 TD loss stayed finite"),
        Limit("pretrain_steps_per_s", ">=", 20, "floor: a 3M-parameter GPT-2 step on a GPU"),
        Limit(
            "programs_per_s",
            ">=",
            30,
            "floor: batched sampling with stop sequences (CLI start and model load included)",
        ),
    ],
    apis=[
        "warmstart_code.cli:app",
        "warmstart_code.bcoder:QModel",
        "warmstart_code.bcoder:light_fit",
        "warmstart_code.data:generate_tasks",
        "warmstart_code.models:build_tiny_lm",
        "warmstart_code.models:train_tokenizer",
        "warmstart.engine:Engine.fit",
    ],
)
