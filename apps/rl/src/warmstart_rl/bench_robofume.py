"""The RoboFuME bench (``bench --kind robofume``): offline Cal-QL + a learned success reward, then online,
vs the same online learner from scratch, equal env steps (Yang et al., arXiv 2310.15145)."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from warmstart.engine import quick_config
from warmstart.eval import BenchReport, write_bench_report
from warmstart_rl.bench import return_curve
from warmstart_rl.data import EnvConfig, collect, load_corpus

log = logging.getLogger(__name__)


# -- RoboFuME: offline Cal-QL + learned reward vs online from scratch -----------------------------
@dataclass
class RoboFuMEBenchConfig:
    """The RoboFuME bench (``bench --kind robofume``), declared once: the CLI takes it as ``--robofume.*``."""

    seeds: int = 3
    """Seeds per arm."""
    online_steps: int = 1500
    """Online environment steps per run (equal for both arms)."""
    demos: int = 30
    """Demonstrations recorded per seed."""
    engine_steps: int = 300
    """Training steps of the classifier and of offline Cal-QL."""
    eval_episodes: int = 10
    """Greedy episodes scored with the true environment return."""
    noise: float = 0.3
    """Random-action share of the demonstrations' scripted expert."""
    env: EnvConfig = field(default_factory=EnvConfig)
    """The environment."""


def run_robofume_bench(config: RoboFuMEBenchConfig, out: Path) -> BenchReport:
    """RoboFuME (classifier reward + offline Cal-QL, then online) vs the same online learner from scratch."""
    config = replace(config, env=config.env.resolved())
    from warmstart_rl.robofume import RoboFuMEConfig, run_robofume

    arms = ("scratch", "robofume")
    finals: dict[str, list[float]] = {a: [] for a in arms}
    curves: dict[str, list] = {a: [] for a in arms}
    train_return: dict[str, list[float]] = {a: [] for a in arms}
    before_online: dict[str, list[float]] = {a: [] for a in arms}
    classifier: list[float] = []
    healthy: list[float] = []
    env_reward: list[float] = []
    start = time.perf_counter()
    for seed in range(config.seeds):
        root = Path(out) / f"demos-seed{seed}"
        collect(root, config.env, config.demos, config.demos, "scripted", config.noise, seed)
        corpus = load_corpus(root)
        for arm in arms:
            options = RoboFuMEConfig(
                online_steps=config.online_steps,
                pretrain=arm == "robofume",
                eval_episodes=config.eval_episodes,
            )
            result = run_robofume(
                corpus,
                options,
                quick_config(config.engine_steps, 64, 1e-3, seed, warmup=0),
                config.env,
                None,
                seed,
            )
            m = result["metrics"]
            finals[arm].append(m["return/online"])
            before_online[arm].append(m["return/offline"])
            train_return[arm].append(m["online/train_return"])
            curves[arm].append(return_curve(result["curve"], 250, config.online_steps))
            if arm == "robofume":
                classifier.append(m["classifier/balanced_acc"])
                healthy.append(float(result["health"]["healthy"]))
                env_reward.append(float(result["reward_source"] == "env"))
            log.info("seed %d %s: %s", seed, arm, m)
    description = (
        f"{config.env.env_id}, {config.env.size}x{config.env.size} RGB pixels. Per seed: {config.demos} "
        f"demonstrations of a scripted expert with {config.noise:.0%} random actions. A success classifier "
        f"(small CNN, {config.engine_steps} steps) learns goal images from them and is the only reward both "
        f"arms see. robofume: Cal-QL offline on the demonstrations ({config.engine_steps} steps), then "
        f"{config.online_steps} online environment steps of Cal-QL on a 50/50 offline/online mix; scratch: "
        f"the same online learner from a random Q-network without the demonstrations. Metric: true "
        f"environment return of the greedy policy over {config.eval_episodes} episodes after the online "
        f"budget (a uniformly random policy scores about 0.75, the expert about 0.96). Wall time "
        f"{time.perf_counter() - start:.0f} s."
    )
    extra = {
        "greedy return before online": before_online,
        "training-episode return (last 20)": train_return,
        "classifier balanced accuracy": {"robofume": classifier},
        "classifier healthy (1) / not (0)": {"robofume": healthy},
        "learned from env reward (fallback)": {"robofume": env_reward},
    }
    report = write_bench_report(
        out,
        "rl: RoboFuME (offline Cal-QL + learned reward) vs online RL from scratch, equal env steps",
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
    from warmstart_rl.plots import append_pictures, return_figure, save_figure

    figure = return_figure(curves, "RoboFuME: training-episode return (mean of last 10), per seed")
    png = save_figure(figure, Path(out) / "returns.png")
    append_pictures(report.report_md, {"training-episode returns of every arm and seed": png})
    return report
