"""The RoboFuME bench (``bench --kind robofume``): offline Cal-QL + a learned success reward, then online
fine-tuning with resets and reset-free, vs the same online learner from scratch, equal online env steps
(Yang et al., arXiv 2310.15145)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from warmstart.engine import cpu_threads, quick_config
from warmstart.eval import BenchReport, bootstrap_ci, run_jobs, write_bench_report
from warmstart_rl.bench import return_curve
from warmstart_rl.data import EnvConfig, collect, load_corpus, random_return

log = logging.getLogger(__name__)

ARMS = ("scratch", "robofume", "robofume reset-free")
"""Online Cal-QL from a random Q-network (resets); offline Cal-QL then online with resets; offline Cal-QL
then reset-free online (forward/backward, interventions counted). Same learned reward, same online steps."""


def _bench_env() -> EnvConfig:
    """The bench's task: MiniGrid's dynamic-obstacles room with random starts, where a few noisy
    demonstrations leave the offline policy well below the scripted expert (on ``Empty-Random-5x5`` two
    demonstrations already give the expert's greedy return, so an online phase has nothing to add)."""
    return EnvConfig("MiniGrid-Dynamic-Obstacles-Random-5x5-v0")


@dataclass
class RoboFuMEBenchConfig:
    """The RoboFuME bench (``bench --kind robofume``), declared once: the CLI takes it as ``--robofume.*``."""

    seeds: int = 3
    """Seeds per arm."""
    online_steps: int = 1500
    """Online environment steps per run (equal for every arm)."""
    demos: int = 10
    """Demonstrations recorded per seed."""
    engine_steps: int = 300
    """Training steps of the classifier and of offline Cal-QL."""
    eval_episodes: int = 20
    """Greedy episodes scored with the true environment return (before and after online)."""
    noise: float = 0.3
    """Random-action share of the demonstrations' scripted expert."""
    reset_free: bool = True
    """Include the reset-free arm (MiniGrid only)."""
    phase_steps: int = 50
    """Reset-free arm: steps a forward or backward phase may take before an intervention (a reset)."""
    threshold: float = 0.3
    """Return threshold for 'env steps to threshold' (mean of the last 10 training episodes)."""
    reference_episodes: int = 40
    """Episodes of the scripted expert (noise 0) and of a random policy, the return scale's two ends."""
    workers: int = 2
    """Worker processes for the seeds (one torch thread each; 1 = in this process)."""
    env: EnvConfig = field(default_factory=_bench_env)
    """The environment."""


def _robofume_seed(config: RoboFuMEBenchConfig, seed: int, out: Path) -> dict[str, Any]:
    """Every arm of one seed on that seed's demonstrations (a module-level function: it runs in a worker)."""
    from warmstart_rl.robofume import RoboFuMEConfig, run_robofume
    from warmstart_rl.vpt import steps_to_threshold

    arms = ARMS if config.reset_free else ARMS[:2]
    row: dict[str, Any] = {"arms": {}}
    with cpu_threads():
        root = Path(out) / f"demos-seed{seed}"
        collect(root, config.env, config.demos, config.demos, "scripted", config.noise, seed)
        corpus = load_corpus(root)
        for arm in arms:
            options = RoboFuMEConfig(
                online_steps=config.online_steps,
                pretrain=arm != "scratch",
                eval_episodes=config.eval_episodes,
                reset_free=arm.endswith("reset-free"),
                phase_steps=config.phase_steps,
            )
            start = time.process_time()
            result = run_robofume(
                corpus,
                options,
                quick_config(config.engine_steps, 64, 1e-3, seed, warmup=0),
                config.env,
                None,
                seed,
            )
            m = result["metrics"]
            curve = result["curve"]
            reached = steps_to_threshold(curve, config.threshold) if not options.reset_free else None
            row["arms"][arm] = {
                "metrics": m,
                "health": result["health"],
                "reward_source": result["reward_source"],
                "curve": return_curve(curve, 250, config.online_steps),
                "steps_to_threshold": float(reached) if reached is not None else float("nan"),
                "cpu_seconds": time.process_time() - start,
            }
            log.info("seed %d %s: %s", seed, arm, m)
    return row


def _paired(after: list[float], before: list[float]) -> dict[str, Any]:
    diff = np.asarray(after) - np.asarray(before)
    lo, hi = bootstrap_ci(diff)
    return {"per_seed": diff.tolist(), "mean": float(diff.mean()), "ci": [lo, hi]}


def run_robofume_bench(config: RoboFuMEBenchConfig, out: Path) -> BenchReport:
    """RoboFuME (classifier reward + offline Cal-QL, then online with resets or reset-free) vs the same
    online learner from scratch; greedy return before and after online, paired per seed."""
    config = replace(config, env=config.env.resolved())
    if config.reset_free and not config.env.env_id.startswith("MiniGrid"):
        from warmstart.errors import ConfigError

        raise ConfigError(
            f"--robofume.reset_free: {config.env.env_id} ends its episode at success; use a MiniGrid-* env "
            f"or pass --robofume.reset_free false"
        )
    arms = ARMS if config.reset_free else ARMS[:2]
    start = time.perf_counter()
    rows = run_jobs(_robofume_seed, [(config, s, out) for s in range(config.seeds)], config.workers)
    wall = time.perf_counter() - start
    env_ref = replace(config.env)
    expert_root = Path(out) / "expert"
    expert = collect(expert_root, env_ref, config.reference_episodes, 0, "scripted", 0.0, 90_000)[
        "mean_return"
    ]
    rand = random_return(env_ref, config.reference_episodes, 90_000)

    def per(arm: str, key: str) -> list[float]:
        return [float(r["arms"][arm]["metrics"].get(key, float("nan"))) for r in rows]

    def per_row(arm: str, key: str) -> list[float]:
        return [float(r["arms"][arm][key]) for r in rows]

    finals = {a: per(a, "return/online") for a in arms}
    before = {a: per(a, "return/offline") for a in arms}
    curves = {a: [r["arms"][a]["curve"] for r in rows] for a in arms}
    pre = [a for a in arms if a != "scratch"]
    paired = {f"{a}: after - before online": _paired(finals[a], before[a]) for a in pre} | {
        f"{a} - scratch (after online)": _paired(finals[a], finals["scratch"]) for a in pre
    }
    extra: dict[str, dict[str, list[float]]] = {
        "greedy return before online": before,
        "greedy after - before online (paired)": {
            a: paired[f"{a}: after - before online"]["per_seed"] for a in pre
        },
        "training-episode return (last 20)": {a: per(a, "online/train_return") for a in arms},
        f"env steps to training return {config.threshold} (nan: not reached)": {
            a: per_row(a, "steps_to_threshold") for a in arms if not a.endswith("reset-free")
        },
        "success classifier balanced accuracy": {a: per(a, "classifier/balanced_acc") for a in arms},
        "success classifier healthy (1) / not (0)": {
            a: [float(r["arms"][a]["health"]["success_classifier"]["healthy"]) for r in rows] for a in arms
        },
        "learned from env reward (fallback)": {
            a: [float(r["arms"][a]["reward_source"] == "env") for r in rows] for a in arms
        },
        "Cal-QL max_a Q(s,a) on offline data": {a: per(a, "calql/value") for a in pre},
        "Cal-QL V_mc on offline data": {a: per(a, "calql/v_mc") for a in pre},
        "Cal-QL share of states with max_a Q < V_mc - 0.05": {a: per(a, "calql/below_mc_share") for a in pre},
        "CPU seconds per run": {a: per_row(a, "cpu_seconds") for a in arms},
    }
    rf = "robofume reset-free"
    if config.reset_free:
        extra |= {
            "reset-free: interventions": {rf: per(rf, "reset_free/interventions")},
            "reset-free: forward successes": {rf: per(rf, "reset_free/forward_successes")},
            "reset-free: backward successes": {rf: per(rf, "reset_free/backward_successes")},
            "initial-state classifier balanced accuracy": {rf: per(rf, "initial_classifier/balanced_acc")},
            "initial-state classifier healthy (1) / not (0)": {rf: per(rf, "initial_classifier/healthy")},
            "reset-free kept (1) / fell back to resets (0)": {rf: per(rf, "reset_free/active")},
        }
    description = (
        f"{config.env.env_id}, {config.env.size}x{config.env.size} RGB pixels; return scale: scripted expert "
        f"(no noise) {expert:.3f}, uniformly random policy {rand:.3f} ({config.reference_episodes} episodes "
        f"each). Per seed: {config.demos} demonstrations of the scripted expert with {config.noise:.0%} random "
        f"actions. A success classifier (small CNN, {config.engine_steps} steps) learns goal images from them "
        f"and is the only reward every arm sees (an unhealthy one falls back to the env reward, counted below). "
        f"robofume: Cal-QL offline on the demonstrations ({config.engine_steps} steps), then "
        f"{config.online_steps} online env steps of Cal-QL on a 50/50 offline/online mix with resets"
        + (
            f"; robofume reset-free: the same offline stage, then {config.online_steps} online steps alternating "
            f"the forward policy and a backward one rewarded by an initial-state classifier, no resets except "
            f"an intervention after {config.phase_steps} steps without success (counted; an unhealthy "
            f"initial-state classifier falls back to resets, counted)"
            if config.reset_free
            else ""
        )
        + f"; scratch: the same online learner from a random Q-network without the demonstrations. Metric: true "
        f"env return of the greedy policy over {config.eval_episodes} episodes after the online budget (the "
        f"same episodes before it). Seeds in {config.workers} worker processes; {wall:.0f} s wall."
    )
    report = write_bench_report(
        out,
        "rl: RoboFuME (offline Cal-QL + learned reward, resets / reset-free) vs online RL from scratch, "
        "equal online env steps",
        finals,
        metric="greedy return after online fine-tuning",
        higher_is_better=True,
        baseline="scratch",
        curves=curves,
        curve_metric="training-episode return (mean of last 10)",
        extra_metrics=extra,
        description=description,
        config=asdict(config),
    )
    lines = ["", "## Paired per seed (95 % bootstrap CI of the mean difference)", ""]
    lines += ["| difference | per seed | mean [95 % CI] |", "|---|---|---|"]
    for name, p in paired.items():
        seeds = ", ".join(f"{v:+.3f}" for v in p["per_seed"])
        lines.append(f"| {name} | {seeds} | {p['mean']:+.3f} [{p['ci'][0]:+.3f}, {p['ci'][1]:+.3f}] |")
    lines += ["", f"Return scale: expert {expert:.3f}, random {rand:.3f}.", ""]
    with open(report.report_md, "a", encoding="utf-8") as fh:
        fh.write("\n".join(lines))
    summary = json.loads(report.results_json.read_text())
    summary["paired"] = paired
    summary["reference"] = {"expert": expert, "random": rand}
    summary["health"] = {a: [r["arms"][a]["health"] for r in rows] for a in arms}
    report.results_json.write_text(json.dumps(summary, indent=1))
    report.summary.update(paired=paired, reference={"expert": expert, "random": rand})
    from warmstart_rl.plots import append_pictures, return_figure, save_figure

    figure = return_figure(curves, "RoboFuME: training-episode return (mean of last 10), per seed")
    png = save_figure(figure, Path(out) / "returns.png")
    append_pictures(report.report_md, {"training-episode returns of every arm and seed": png})
    return report
