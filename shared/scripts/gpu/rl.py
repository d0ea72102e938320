"""rl on a GPU: VPT's inverse-dynamics model and behaviour cloning on Atari Breakout at 84 px, bf16.

Seed: *Video PreTraining (VPT)* (Baker et al., arXiv 2206.11795). Records a random-play Breakout corpus
through ale-py (the real ROM), trains the IDM with the ``atari/idm-train`` recipe, pseudo-labels the
unlabelled videos, clones a policy with the ``atari/bc`` recipe (300 steps each instead of 20k) and rolls
it out twice. Left out: PPO fine-tuning (SB3's rollouts are CPU-bound at this size).
"""

from __future__ import annotations

from typing import Any

from gpu.common import Check, Context, Recipe, cli, engine_flags, run_limits, timed, trained

RECIPES = "apps/rl/src/warmstart_rl/recipes/atari/"
ENV = ["--env.env_id", "ALE/Breakout-v5", "--env.size", "84", "--env.actions", "null"]
BREAKOUT_ACTIONS = 4
STEPS, BATCH = 300, 256


def idm_args(steps: int, batch: int) -> list[Any]:
    # one round: the IDM's quality gate would otherwise retrain up to 3 times
    return ["--config", RECIPES + "idm-train.yaml", *engine_flags(steps, batch), "--idm.max_rounds", "1"]


def bc_args(steps: int, batch: int) -> list[Any]:
    return ["--config", RECIPES + "bc.yaml", *engine_flags(steps, batch), "--options.eval_episodes", "2"]


def run(ctx: Context) -> dict[str, Any]:
    corpus, idm, bc = ctx.out / "corpus", ctx.out / "idm", ctx.out / "bc"
    steps, batch = ctx.size(STEPS, 4), ctx.size(BATCH, 8)
    metrics: dict[str, Any] = {}
    with timed(metrics, "collect_seconds"):
        cli(
            "rl",
            [
                "collect",
                "--config",
                RECIPES + "collect.yaml",
                *ENV,
                "--episodes",
                ctx.size(24, 3),
                "--labelled",
                ctx.size(8, 2),
                "--env.max_episode_steps",
                ctx.size(1000, 60),
                "--out",
                corpus,
            ],
        )
    metrics |= trained("idm", "rl", ["idm-train", "--data", corpus, *idm_args(steps, batch), "--out", idm])
    # --force: the IDM's health gate is reported in its metrics, not a reason to stop the check here
    cli("rl", ["idm-label", "--data", corpus, "--model", idm, "--force", "true"])
    return metrics | trained("bc", "rl", ["bc", "--data", corpus, *bc_args(steps, batch), "--out", bc])


def models() -> dict[str, Any]:
    from warmstart_rl.models import IDMConfig, InverseDynamicsModel, PixelPolicy, PolicyConfig

    return {
        "idm (context 4, 84 px)": lambda: InverseDynamicsModel(BREAKOUT_ACTIONS, 84, 3, IDMConfig(context=4)),
        "bc policy (84 px)": lambda: PixelPolicy(BREAKOUT_ACTIONS, 84, 3, PolicyConfig()),
    }


CHECK = Check(
    app="rl",
    plan=[
        "collect 24 random-play ALE/Breakout-v5 episodes at 84x84 RGB (8 labelled)",
        f"idm-train --config atari/idm-train.yaml, {STEPS} steps x {BATCH} windows (bf16 via the engine)",
        "idm-label the unlabelled episodes",
        f"bc --config atari/bc.yaml, {STEPS} steps x {BATCH} frames, 2 greedy episodes",
    ],
    budget_s=50,
    recipes=[
        Recipe("rl", "collect", RECIPES + "collect.yaml", ENV),
        Recipe("rl", "idm-train", RECIPES + "idm-train.yaml", ["--data", "c", *idm_args(STEPS, BATCH)[2:]]),
        Recipe("rl", "bc", RECIPES + "bc.yaml", ["--data", "c", *bc_args(STEPS, BATCH)[2:]]),
    ],
    models=models,
    run=run,
    limits=[
        *run_limits("idm", STEPS, 2000, "floor: a 3-conv IDM on 84 px windows"),
        *run_limits("bc", STEPS, 4000, "floor: the policy sees one frame per sample"),
    ],
    apis=[
        "warmstart_rl.cli:app",
        "warmstart_rl.models:InverseDynamicsModel",
        "warmstart_rl.models:PixelPolicy",
        "warmstart.engine:Engine.fit",
    ],
)
