"""The ContextWM bench (``bench --kind worldmodel``): the Dreamer-style agent from scratch, from a world model
pretrained on the target's own videos, from one pretrained on another environment's videos, and that one
with APV's video-based intrinsic bonus, equal env steps (Wu et al., arXiv 2305.18499). Headline: env steps
to reach a return threshold fixed before any arm runs (a fraction of the scripted expert's return), with
the final return and the mean return over the run (the learning curve's area) beside it; the arms of one
seed are paired (identical random prefill, checked by a hash of the replay)."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from warmstart.engine import cpu_threads, quick_config
from warmstart.errors import ConfigError
from warmstart.eval import BenchReport, bootstrap_ci, run_jobs, write_bench_report
from warmstart_rl.bench import return_curve
from warmstart_rl.data import EnvConfig, collect
from warmstart_rl.vpt import steps_to_threshold

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
    """Seeds per arm (the arms of one seed are paired: same prefill, same initialisation of what is new)."""
    total_steps: int = 1500
    """Environment steps of the Dreamer-style agent per run (equal for every arm)."""
    prefill: int = 300
    """Uniformly random first steps (identical in every arm)."""
    videos: int = 300
    """Frames-only episodes recorded for each pretraining source."""
    pretrain_steps: int = 1000
    """Action-free pretraining steps (each source is built once and cached by its config hash)."""
    source_seed: int = 0
    """Seed of the video recording and pretraining of both sources: one pretrained model per source, reused
    by every seed of the agent (as a user reuses one foundation model)."""
    context: bool = True
    """ContextWM's context encoder (false: the plain APV-style decoder)."""
    stack: bool = True
    """Fine-tune with an action-conditioned RSSM stacked on the pretrained action-free one (APV / ContextWM);
    false: a zero-initialised action input on the action-free RSSM."""
    intrinsic: float = 0.1
    """beta of APV's video-based intrinsic bonus in the 'other-env videos + APV bonus' arm (APV: 0.1 on DMC
    and CARLA, 1.0 on Meta-World); 0 leaves that arm out. The other arms never use the bonus."""
    encoder_only: bool = True
    """Add the transfer-diagnosis rows that keep only the pretrained encoder of each source (decoder, context
    encoder and action-free RSSM re-initialised: ``AgentConfig.reinit``); labelled rows, not the seed's
    fine-tuning, which keeps all three."""
    threshold_fraction: float = 0.7
    """The steps-to-threshold headline's threshold as a fraction of the scripted expert's mean return on the
    target (fixed before any arm runs)."""
    threshold: float | None = None
    """An explicit return threshold instead (needed for targets without a scripted expert)."""
    expert_episodes: int = 100
    """Episodes of the scripted expert (no noise) measured for the threshold."""
    workers: int = 2
    """The (arm, seed) agent runs and the two sources run in this many processes at once (one torch thread
    each): the cores of the machine (2 on a 2-core one; 1 runs everything in this process)."""
    noise: float = 0.3
    """Random-action share of the same-env videos' scripted expert."""
    random_episodes: int = 200
    """Episodes of the uniformly random policy measured as the reference row."""
    env: EnvConfig = field(default_factory=_short_episodes)
    """The target environment."""
    other_env: EnvConfig = field(default_factory=_other_env)
    """The source of the other-env videos (recorded with a random policy, resized to the target's size)."""


SOURCES = ("same-env", "other-env")


def _source_recipe(config: WorldModelBenchConfig, source: str) -> tuple[EnvConfig, dict[str, Any]]:
    env = config.env if source == "same-env" else config.other_env.resolved()
    policy, noise = ("scripted", config.noise) if source == "same-env" else ("random", 0.0)
    recipe = {
        "env": asdict(env),
        "videos": config.videos,
        "policy": policy,
        "noise": noise,
        "seed": config.source_seed,
    }
    return env, recipe


def _pretrained_source(config: WorldModelBenchConfig, source: str, scratch: Path) -> str:
    """The action-free world model pretrained on ``source`` ('same-env' / 'other-env') videos, built once
    and cached (``warmstart.cache``, kind ``rl.worldmodel-source``) by its config, data recipe and code;
    returns its folder."""
    import shutil

    from warmstart import cache
    from warmstart_rl import data, wmpretrain, worldmodel
    from warmstart_rl.contextwm import PretrainConfig, WorldModelConfig, pretrain_world_model
    from warmstart_rl.data import load_videos

    env, recipe = _source_recipe(config, source)
    model_config = WorldModelConfig(context=config.context, stack=config.stack)
    size, seed = int(config.env.size or 0), config.source_seed

    def build(folder: Path) -> None:
        root = Path(scratch) / f"{source}-videos-seed{seed}"
        shutil.rmtree(root, ignore_errors=True)
        collect(root, env, config.videos, 0, str(recipe["policy"]), float(recipe["noise"]), seed)
        clips, info = load_videos([root], size)
        engine = quick_config(config.pretrain_steps, 16, 1e-3, seed, warmup=0)
        with cpu_threads():
            model, metrics = pretrain_world_model(
                clips, PretrainConfig(model_config), engine, None, size, info["sources"]
            )
        worldmodel.save_world_model(model, folder / "worldmodel", None, metrics, sources=info["sources"])
        shutil.rmtree(root, ignore_errors=True)

    folder = cache.cached(
        "rl.worldmodel-source",
        {"model": asdict(model_config), "pretrain_steps": config.pretrain_steps, "size": size},
        build,
        data=recipe,
        code=cache.code_version(data, wmpretrain, worldmodel),
        description=f"ContextWM action-free world model on {env.env_id} videos ({source}), seed {seed}",
    )
    return str(folder)


def wm_arms(config: WorldModelBenchConfig) -> tuple[str, ...]:
    """The agent arms: scratch, the two video sources, the bonus row when ``intrinsic`` > 0, and the
    encoder-only rows when ``encoder_only``."""
    arms: tuple[str, ...] = ("scratch", "contextwm same-env videos", "contextwm other-env videos")
    if config.intrinsic > 0:
        arms += ("contextwm other-env videos + APV bonus",)
    if config.encoder_only:
        arms += tuple(f"contextwm {source} videos, encoder only" for source in SOURCES)
    return arms


ENCODER_ONLY = ["rssm", "decoder"]
"""What the 'encoder only' rows re-initialise (``AgentConfig.reinit``)."""


def _arm_source(arm: str) -> str | None:
    return None if arm == "scratch" else arm.split()[1]


def expert_threshold(config: WorldModelBenchConfig) -> tuple[float, float]:
    """(threshold, expert return): ``threshold``, or ``threshold_fraction`` x the scripted expert's mean
    return on the target (no noise, ``expert_episodes`` seeded episodes)."""
    from warmstart_rl.data import episode_returns, make_env, make_policy

    if config.threshold is not None:
        return float(config.threshold), float("nan")
    env = make_env(config.env, seed=70_000)
    try:
        act = make_policy("scripted", env, config.env, 0.0, np.random.default_rng(0))
    except ConfigError:
        env.close()
        raise ConfigError(
            f"--worldmodel.threshold: {config.env.env_id} has no scripted expert to set the threshold from; "
            f"pass --worldmodel.threshold <return>"
        ) from None
    try:
        expert = float(np.mean(episode_returns(act, env, config.expert_episodes, 70_000)))
    finally:
        env.close()
    return config.threshold_fraction * expert, expert


def mean_return_after(curve: list[tuple[int, float]], start: int) -> float:
    """Mean return of the episodes that end after env step ``start``: the learning curve's area per
    episode over the learning phase (it rewards an earlier rise, unlike the final return)."""
    tail = [r for step, r in curve if step > start]
    return float(np.mean(tail)) if tail else float("nan")


def _worldmodel_arm(
    config: WorldModelBenchConfig, seed: int, arm: str, sources: dict[str, str], threshold: float
) -> dict[str, Any]:
    """One agent run of the world-model bench (one arm of one seed; the scratch job also measures the seed's
    random reference); plain numbers only (a worker process returns them). The arms of a seed are paired
    however the jobs are spread over workers: the prefill and the new parts' initialisation follow the seed."""
    import torch

    from warmstart_rl.contextwm import (
        AgentConfig,
        WorldModel,
        WorldModelConfig,
        load_world_model,
        train_agent,
    )
    from warmstart_rl.data import random_return

    model_config = WorldModelConfig(context=config.context, stack=config.stack)
    source = _arm_source(arm)
    beta = config.intrinsic if arm.endswith("APV bonus") else 0.0
    reinit = ENCODER_ONLY if arm.endswith("encoder only") else []
    agent = AgentConfig(total_steps=config.total_steps, prefill=config.prefill, intrinsic=beta, reinit=reinit)
    with cpu_threads():
        if source is None:
            torch.manual_seed(seed)
            world_model = WorldModel(0, int(config.env.size or 0), model_config)
        else:
            world_model = load_world_model(Path(sources[source]) / "worldmodel")[0]
        result = train_agent(config.env, agent, world_model, seed=seed)
        reached = steps_to_threshold(result["curve"], threshold)
        row = {
            "final": result["final_return"],
            "curves": return_curve(result["curve"], 250, config.total_steps),
            "to_threshold": float(reached if reached is not None else config.total_steps),
            "reached": reached is not None,
            "area": mean_return_after(result["curve"], config.prefill),
            "recon": result["metrics"].get("wm/recon", float("nan")),
            "seconds": result["seconds"],
            "digest": result["prefill_digest"],
        }
        if source is None:
            row["random"] = random_return(config.env, config.random_episodes, 50_000 + seed)
    log.info("seed %d %s: return %.3f, threshold at %s", seed, arm, result["final_return"], reached)
    return row


def _paired(values: dict[str, list[float]], arm: str) -> tuple[float, float, float]:
    """Mean of the per-seed differences arm - scratch and its 95 % bootstrap interval (paired seeds)."""
    diff = np.asarray(values[arm]) - np.asarray(values["scratch"])
    lo, hi = bootstrap_ci(diff)
    return float(diff.mean()), lo, hi


def _efficiency_table(
    arms: tuple[str, ...],
    steps: dict[str, list[float]],
    reached: dict[str, list[bool]],
    area: dict[str, list[float]],
    finals: dict[str, list[float]],
    threshold: float,
    budget: int,
) -> tuple[str, dict[str, Any]]:
    """The sample-efficiency table (markdown) and its numbers, paired by seed."""
    lines = [
        "",
        f"## Sample efficiency (paired by seed; threshold {threshold:.3f})",
        "",
        f"Env steps until the mean of the last 10 episode returns first reaches {threshold:.3f} (a run that "
        f"never reaches it counts as the budget, {budget}: then the figure is a lower bound); mean return of "
        f"the episodes after the prefill (the learning curve's area). Δ: mean of the per-seed differences "
        f"arm − scratch [95 % bootstrap CI].",
        "",
        "| arm | steps to threshold | reached | Δ steps | mean return after prefill | Δ | Δ final return |",
        "|---|---|---|---|---|---|---|",
    ]
    paired: dict[str, Any] = {}
    for arm in arms:
        s, a = np.asarray(steps[arm]), np.asarray(area[arm])
        cells = [
            f"{s.mean():.0f} ± {s.std(ddof=1) if len(s) > 1 else 0:.0f}",
            f"{sum(reached[arm])}/{len(s)}",
        ]
        if arm == "scratch":
            cells += ["—", f"{a.mean():.3f} ± {a.std(ddof=1) if len(a) > 1 else 0:.3f}", "—", "—"]
        else:
            ds, dsl, dsh = _paired(steps, arm)
            da, dal, dah = _paired(area, arm)
            df, dfl, dfh = _paired(finals, arm)
            paired[arm] = {
                "steps_delta": ds,
                "steps_delta_ci": [dsl, dsh],
                "area_delta": da,
                "area_delta_ci": [dal, dah],
                "final_delta_paired": df,
                "final_delta_paired_ci": [dfl, dfh],
            }
            cells += [
                f"{ds:+.0f} [{dsl:+.0f}, {dsh:+.0f}]",
                f"{a.mean():.3f} ± {a.std(ddof=1) if len(a) > 1 else 0:.3f}",
                f"{da:+.3f} [{dal:+.3f}, {dah:+.3f}]",
                f"{df:+.3f} [{dfl:+.3f}, {dfh:+.3f}]",
            ]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n", paired


def run_worldmodel_bench(config: WorldModelBenchConfig, out: Path) -> BenchReport:
    """The Dreamer-style agent from scratch, from a world model pretrained on the target's own videos, from
    one pretrained on another environment's videos (ContextWM's in-the-wild setting), and that one with
    APV's intrinsic bonus; equal env steps. The two sources are built first (cached), then every (arm, seed)
    run is a job for ``config.workers`` processes (one torch thread each)."""
    config = replace(config, env=config.env.resolved())
    arms = wm_arms(config)
    start = time.perf_counter()
    threshold, expert = expert_threshold(config)
    folders = run_jobs(_pretrained_source, [(config, s, out) for s in SOURCES], min(config.workers, 2))
    sources = dict(zip(SOURCES, folders, strict=True))
    built = time.perf_counter() - start
    # one job per (arm, seed), the longer bonus / pretrained arms first, so that no worker idles at the end
    calls = [(config, s, a, sources, threshold) for a in reversed(arms) for s in range(config.seeds)]
    done = run_jobs(_worldmodel_arm, calls, config.workers)
    runs = {(a, s): r for (_, s, a, _, _), r in zip(calls, done, strict=True)}
    seeds = range(config.seeds)
    per = {k: {a: [runs[a, s][k] for s in seeds] for a in arms} for k in ("curves", "recon", "seconds")}
    finals = {a: [runs[a, s]["final"] for s in seeds] for a in arms}
    finals["random policy"] = [runs["scratch", s]["random"] for s in seeds]
    steps = {a: [runs[a, s]["to_threshold"] for s in seeds] for a in arms}
    reached = {a: [runs[a, s]["reached"] for s in seeds] for a in arms}
    area = {a: [runs[a, s]["area"] for s in seeds] for a in arms}
    paired_prefill = all(len({runs[a, s]["digest"] for a in arms}) == 1 for s in seeds)
    from warmstart_rl.contextwm import load_world_model

    specs = {s: load_world_model(Path(f) / "worldmodel")[1] for s, f in sources.items()}
    pre_recon = {s: specs[s]["metrics"]["wm/heldout_recon"] for s in SOURCES}
    pre_init = {s: specs[s]["metrics"]["wm/heldout_recon_init"] for s in SOURCES}
    wall = time.perf_counter() - start
    description = (
        f"Target {config.env.env_id}, {config.env.size}x{config.env.size} RGB pixels, {config.env.actions} "
        f"actions, episodes cut at {config.env.max_episode_steps} steps. Two action-free ContextWM sources "
        f"(context encoder: {config.context}), each pretrained once (seed {config.source_seed}, cached, shared "
        f"by every seed) for {config.pretrain_steps} steps on {config.videos} frames-only episodes: the "
        f"target's own videos (a scripted expert with {config.noise:.0%} random actions; held-out recon "
        f"{pre_init['same-env']:.2f} -> {pre_recon['same-env']:.2f}) and another environment's "
        f"({config.other_env.env_id}, random policy, resized to {config.env.size} px, no actions read; "
        f"{pre_init['other-env']:.2f} -> {pre_recon['other-env']:.2f}). Then the same Dreamer-style agent ("
        + (
            "an action-conditioned RSSM stacked on the action-free one, as APV / ContextWM fine-tune"
            if config.stack
            else "target action input attached zero-initialised"
        )
        + f", actor-critic in imagination, identical hyperparameters in every arm) runs "
        f"{config.total_steps} environment steps ({config.prefill} uniformly random first; replay after the "
        f"prefill identical across the arms of every seed: {paired_prefill}). "
        + (
            f"The '+ APV bonus' arm adds APV's video-based intrinsic bonus (beta {config.intrinsic:g}) to the "
            f"reward its world model learns. "
            if config.intrinsic > 0
            else ""
        )
        + (
            "The ', encoder only' rows keep only the source's encoder (decoder, context encoder and action-free "
            "RSSM drawn afresh: a diagnosis of what transfers, not the seed's fine-tuning, which keeps all). "
            if config.encoder_only
            else ""
        )
        + f"Metric: mean return of the last 20 training episodes; 'random policy' is the uniformly random "
        f"policy's mean over {config.random_episodes} episodes; threshold {threshold:.3f} = "
        + (
            f"{config.threshold_fraction:g} x the scripted expert's {expert:.3f}"
            if config.threshold is None
            else "given"
        )
        + f". Wall time {wall:.0f} s ({built:.0f} s of it building or loading the sources)."
    )
    table, paired = _efficiency_table(
        arms, steps, reached, area, {a: finals[a] for a in arms}, threshold, config.total_steps
    )
    extra = {
        f"env steps to return >= {threshold:.3f}": steps,
        "mean return after prefill": area,
        "world-model recon error (last update)": per["recon"],
        "agent wall time (s)": per["seconds"],
    }
    report = write_bench_report(
        out,
        "rl: ContextWM pretrained on same-env / other-env videos (+ APV bonus) vs scratch, equal env steps",
        finals,
        metric="episodic return (last 20 episodes)",
        higher_is_better=True,
        baseline="scratch",
        curves=per["curves"],
        curve_metric="episodic return (mean of last 10)",
        extra_metrics=extra,
        description=description,
        config=asdict(config)
        | {
            "threshold": threshold,
            "expert_return": expert,
            "paired_prefill": paired_prefill,
            "paired": paired,
            "steps_reached": reached,
            "pretraining_heldout_recon": pre_recon,
            "pretraining_heldout_recon_init": pre_init,
        },
    )
    with open(report.report_md, "a") as fh:
        fh.write(table)
    return report
