"""The ContextWM bench (``bench --kind worldmodel``): the Dreamer-style agent from scratch, from a world model
pretrained on the target's own videos and from one pretrained on another environment's videos, equal env
steps (Wu et al., arXiv 2305.18499)."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from warmstart.engine import cpu_threads, quick_config
from warmstart.eval import BenchReport, run_jobs, write_bench_report
from warmstart_rl.bench import return_curve
from warmstart_rl.data import EnvConfig, collect

log = logging.getLogger(__name__)


# -- ContextWM: the world-model table -------------------------------------------------------------
def _short_episodes() -> EnvConfig:
    """The world-model bench's environment: episodes cut at 20 steps, so that a random policy scores ~0.28
    and the expert ~0.96 (with MiniGrid's own 100-step limit random walks reach the goal too often: ~0.55)."""
    return EnvConfig(max_episode_steps=20)


def _other_env() -> EnvConfig:
    """The other-environment videos: MiniGrid DoorKey (a key, a door, a wall: other objects and layout)."""
    return EnvConfig("MiniGrid-DoorKey-5x5-v0", max_episode_steps=20)


@dataclass
class WorldModelBenchConfig:
    """The ContextWM bench (``bench --kind worldmodel``), declared once: the CLI takes it as ``--worldmodel.*``."""

    seeds: int = 3
    """Seeds per arm."""
    total_steps: int = 1500
    """Environment steps of the Dreamer-style agent per run (equal for every arm)."""
    prefill: int = 300
    """Uniformly random first steps (identical in every arm)."""
    videos: int = 100
    """Frames-only episodes recorded per seed for each pretraining source."""
    pretrain_steps: int = 300
    """Action-free pretraining steps."""
    context: bool = True
    """ContextWM's context encoder (false: the plain APV-style decoder)."""
    stack: bool = True
    """Fine-tune with an action-conditioned RSSM stacked on the pretrained action-free one (APV / ContextWM);
    false: a zero-initialised action input on the action-free RSSM."""
    intrinsic: float = 0.0
    """beta of APV's video-based intrinsic bonus in every arm (0: off)."""
    workers: int = 1
    """Seeds run in this many processes at once (one torch thread each): 2 on a 2-core machine."""
    noise: float = 0.3
    """Random-action share of the same-env videos' scripted expert."""
    random_episodes: int = 200
    """Episodes of the uniformly random policy measured as the reference row."""
    env: EnvConfig = field(default_factory=_short_episodes)
    """The target environment."""
    other_env: EnvConfig = field(default_factory=_other_env)
    """The source of the other-env videos (recorded with a random policy, resized to the target's size)."""


def _pretrained_source(config: WorldModelBenchConfig, source: str, seed: int, scratch: Path):
    """The action-free world model pretrained on ``source`` ('same-env' / 'other-env') videos, built once
    and cached (``warmstart.cache``, kind ``rl.worldmodel-source``) by its config, data recipe and code."""
    import shutil

    from warmstart import cache
    from warmstart_rl import data, wmpretrain, worldmodel
    from warmstart_rl.contextwm import (
        PretrainConfig,
        WorldModelConfig,
        load_world_model,
        pretrain_world_model,
    )
    from warmstart_rl.data import load_videos

    env = config.env if source == "same-env" else config.other_env.resolved()
    policy, noise = ("scripted", config.noise) if source == "same-env" else ("random", 0.0)
    recipe = {"env": asdict(env), "videos": config.videos, "policy": policy, "noise": noise, "seed": seed}
    model_config = WorldModelConfig(context=config.context, stack=config.stack)
    size = int(config.env.size or 0)

    def build(folder: Path) -> None:
        root = scratch / f"{source}-videos-seed{seed}"
        shutil.rmtree(root, ignore_errors=True)
        collect(root, env, config.videos, 0, policy, noise, seed)
        clips, info = load_videos([root], size)
        engine = quick_config(config.pretrain_steps, 16, 1e-3, seed, warmup=0)
        model, metrics = pretrain_world_model(
            clips, PretrainConfig(model_config), engine, None, size, info["sources"]
        )
        from warmstart_rl.worldmodel import save_world_model

        save_world_model(model, folder / "worldmodel", None, metrics, sources=info["sources"])
        shutil.rmtree(root, ignore_errors=True)

    folder = cache.cached(
        "rl.worldmodel-source",
        {"model": asdict(model_config), "pretrain_steps": config.pretrain_steps, "size": size},
        build,
        data=recipe,
        code=cache.code_version(data, wmpretrain, worldmodel),
        description=f"ContextWM action-free world model on {env.env_id} videos ({source}), seed {seed}",
    )
    return load_world_model(folder / "worldmodel")


WM_ARMS = ("scratch", "contextwm same-env videos", "contextwm other-env videos")


def _worldmodel_seed(config: WorldModelBenchConfig, seed: int, out: Path) -> dict[str, Any]:
    """One seed of the world-model bench (the cached sources, the random reference, the three agent runs);
    plain numbers only (a worker process returns them)."""
    import torch

    from warmstart_rl.contextwm import AgentConfig, WorldModel, WorldModelConfig, train_agent
    from warmstart_rl.data import random_return

    agent = AgentConfig(total_steps=config.total_steps, prefill=config.prefill, intrinsic=config.intrinsic)
    model_config = WorldModelConfig(context=config.context, stack=config.stack)
    row: dict[str, Any] = {k: {} for k in ("finals", "curves", "recon", "seconds", "pre_recon")}
    with cpu_threads():
        sources = {arm: _pretrained_source(config, arm.split()[1], seed, Path(out)) for arm in WM_ARMS[1:]}
        for arm, (_, spec) in sources.items():
            row["pre_recon"][arm] = spec["metrics"]["wm/heldout_recon"]
        row["finals"]["random policy"] = random_return(config.env, config.random_episodes, 50_000 + seed)
        for arm in WM_ARMS:
            if arm == "scratch":
                torch.manual_seed(seed)
                world_model = WorldModel(0, int(config.env.size or 0), model_config)
            else:
                world_model = sources[arm][0]
            result = train_agent(config.env, agent, world_model, seed=seed)
            row["finals"][arm] = result["final_return"]
            row["curves"][arm] = return_curve(result["curve"], 250, config.total_steps)
            row["recon"][arm] = result["metrics"].get("wm/recon", float("nan"))
            row["seconds"][arm] = result["seconds"]
            log.info("seed %d %s: return %.3f", seed, arm, result["final_return"])
    return row


def run_worldmodel_bench(config: WorldModelBenchConfig, out: Path) -> BenchReport:
    """The Dreamer-style agent from scratch, from a world model pretrained on the target's own videos, and
    from one pretrained on another environment's videos (ContextWM's in-the-wild setting), equal env steps.
    With ``config.workers`` > 1 the seeds run in that many processes (one torch thread each)."""
    config = replace(config, env=config.env.resolved())
    arms = WM_ARMS
    start = time.perf_counter()
    rows = run_jobs(_worldmodel_seed, [(config, s, out) for s in range(config.seeds)], config.workers)
    finals = {a: [r["finals"][a] for r in rows] for a in (*arms, "random policy")}
    curves = {a: [r["curves"][a] for r in rows] for a in arms}
    recon = {a: [r["recon"][a] for r in rows] for a in arms}
    seconds = {a: [r["seconds"][a] for r in rows] for a in arms}
    pre_recon = {a: [r["pre_recon"][a] for r in rows] for a in arms[1:]}
    description = (
        f"Target {config.env.env_id}, {config.env.size}x{config.env.size} RGB pixels, {config.env.actions} "
        f"actions. Per seed two action-free ContextWM sources (context encoder: {config.context}), each "
        f"pretrained for {config.pretrain_steps} steps on {config.videos} frames-only episodes: the target's own "
        f"videos (a scripted expert with {config.noise:.0%} random actions) and another environment's "
        f"({config.other_env.env_id}, random policy, resized to {config.env.size} px; another action space "
        f"needs no mapping: pretraining reads no actions). Sources are cached artifacts (warmstart.cache). "
        f"Then the same Dreamer-style agent ("
        + (
            "an action-conditioned RSSM stacked on the action-free one, as APV / ContextWM fine-tune"
            if config.stack
            else "target action input attached zero-initialised"
        )
        + f", actor-critic in imagination, intrinsic bonus beta {config.intrinsic:g}) runs "
        f"{config.total_steps} environment steps ({config.prefill} uniformly random first, "
        f"identical in every arm). Metric: mean return of the last 20 training episodes; 'random policy' is the "
        f"uniformly random policy's mean over {config.random_episodes} episodes. Wall time "
        f"{time.perf_counter() - start:.0f} s."
    )
    extra = {
        "world-model recon error (last update)": recon,
        "agent wall time (s)": seconds,
        "pretraining held-out recon error": pre_recon,
    }
    return write_bench_report(
        out,
        "rl: ContextWM pretrained on same-env / other-env videos vs scratch, equal env steps",
        finals,
        metric="episodic return (last 20 episodes)",
        higher_is_better=True,
        baseline="scratch",
        curves=curves,
        curve_metric="episodic return (mean of last 10)",
        extra_metrics=extra,
        description=description,
        config=asdict(config),
    )
