"""The VPT bench: PPO from scratch vs PPO from the VPT behaviour-cloned policy (with and without the KL to
the pretrained policy) at equal environment steps over several seeds, and the env-steps/s overhead of our
fine-tuning path against plain stable-baselines3 PPO.

Seed: *Video PreTraining (VPT)* (Baker et al., arXiv 2206.11795), whose headline is that a BC foundation
policy makes RL fine-tuning reach what RL from scratch cannot within the same budget. Here, in miniature,
on MiniGrid pixels: per seed a corpus is recorded from a noisy scripted expert, an IDM is trained on its
labelled tenth, the rest is pseudo-labelled, a policy is cloned, and the three PPO arms run the same number
of environment steps. Reported as measured via :func:`warmstart.eval.write_bench_report`. Two more tables
(``bench --kind worldmodel`` / ``--kind robofume``): a Dreamer-style agent from a video-pretrained ContextWM
world model vs from scratch (arXiv 2305.18499), and RoboFuME's offline Cal-QL + learned success reward vs the
same online learner from scratch (arXiv 2310.15145), equal environment steps each.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from warmstart.engine import EngineConfig, cpu_threads
from warmstart.eval import BenchReport, write_bench_report
from warmstart_rl.data import EnvConfig, collect, load_corpus
from warmstart_rl.models import PolicyConfig
from warmstart_rl.vpt import (
    BCConfig,
    IDMTrainConfig,
    PPOConfig,
    finetune_ppo,
    label_corpus,
    steps_to_threshold,
    train_bc,
    train_idm,
)

log = logging.getLogger(__name__)


@dataclass
class BenchConfig:
    seeds: int = 3
    total_steps: int = 8192
    episodes: int = 200
    labelled: int = 20
    idm_steps: int = 300
    bc_steps: int = 300
    threshold: float = 0.9
    kl_coef: float = 0.1
    env: EnvConfig = field(default_factory=EnvConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    noise: float = 0.2


single_thread = cpu_threads  # the core's context manager, under the name this app's modules use


def _engine(steps: int, seed: int) -> EngineConfig:
    cfg = EngineConfig()
    cfg.train.max_steps = steps
    cfg.train.micro_batch_size = 64
    cfg.train.seed = seed
    cfg.optimizer.lr = 1e-3
    cfg.logging.tensorboard = False
    cfg.logging.progress = "none"
    cfg.checkpoint.save_final = False
    return cfg


def pretrain_pipeline(config: BenchConfig, seed: int, root: Path) -> dict[str, Any]:
    """collect -> IDM -> pseudo-labels -> BC for one seed; returns {policy, idm, metrics}."""
    collect(root, config.env, config.episodes, config.labelled, "scripted", config.noise, seed)
    corpus = load_corpus(root)
    idm, idm_metrics = train_idm(corpus, IDMTrainConfig(), _engine(config.idm_steps, seed), None)
    label_metrics = label_corpus(corpus, idm)
    corpus = load_corpus(root)
    policy, bc_metrics = train_bc(
        corpus, BCConfig(model=config.policy), _engine(config.bc_steps, seed), None, seed
    )
    return {"policy": policy, "idm": idm, "metrics": idm_metrics | label_metrics | bc_metrics}


def return_curve(
    curve: list[tuple[int, float]], every: int, total: int, window: int = 10
) -> list[tuple[int, float]]:
    """Episode returns resampled on a grid: at each multiple of ``every``, the mean of the last ``window``."""
    out, i, recent = [], 0, []
    for step in range(every, total + 1, every):
        while i < len(curve) and curve[i][0] <= step:
            recent.append(curve[i][1])
            i += 1
        if recent:
            out.append((step, float(np.mean(recent[-window:]))))
    return out


ARMS = ("scratch", "vpt-bc", "vpt-bc+kl")


def run_bench(config: BenchConfig, out: Path) -> BenchReport:
    """All arms x seeds; writes report.md, plot.png, results.json (and the corpora) under ``out``."""
    config = replace(config, env=config.env.resolved())
    finals: dict[str, list[float]] = {a: [] for a in ARMS}
    curves: dict[str, list] = {a: [] for a in ARMS}
    to_threshold: dict[str, list[float]] = {a: [] for a in ARMS}
    speed: dict[str, list[float]] = {a: [] for a in ARMS}
    pre_metrics: dict[str, list[float]] = {
        "IDM held-out acc": [],
        "pseudo-label acc": [],
        "BC greedy return": [],
    }
    every = 4 * 64
    start = time.perf_counter()
    for seed in range(config.seeds):
        pre = pretrain_pipeline(config, seed, Path(out) / f"corpus-seed{seed}")
        m = pre["metrics"]
        pre_metrics["IDM held-out acc"].append(m["idm/heldout_acc"])
        pre_metrics["pseudo-label acc"].append(m["label/accuracy_vs_truth"])
        pre_metrics["BC greedy return"].append(m.get("bc/return", float("nan")))
        for arm in ARMS:
            init = None if arm == "scratch" else pre["policy"]
            kl = config.kl_coef if arm == "vpt-bc+kl" else 0.0
            ppo = PPOConfig(total_steps=config.total_steps, kl_coef=kl)
            every = ppo.n_envs * ppo.n_steps
            result = finetune_ppo(config.env, ppo, config.policy, init, seed=seed)
            finals[arm].append(result["final_return"])
            curves[arm].append(return_curve(result["curve"], every, config.total_steps))
            reached = steps_to_threshold(result["curve"], config.threshold)
            to_threshold[arm].append(float(reached if reached is not None else config.total_steps))
            speed[arm].append(result["steps_per_s"])
            log.info("seed %d %s: return %.3f, threshold at %s", seed, arm, result["final_return"], reached)
    ratio = {
        arm: float(np.mean(to_threshold["scratch"]) / max(np.mean(to_threshold[arm]), 1.0)) for arm in ARMS
    }
    description = (
        f"{config.env.env_id}, {config.env.size}x{config.env.size} RGB pixels, {config.env.actions} actions. "
        f"Per seed: {config.episodes} episodes of a scripted expert with {config.noise:.0%} random actions, "
        f"{config.labelled} of them labelled; IDM {config.idm_steps} steps, BC {config.bc_steps} steps on "
        f"labelled + pseudo-labelled frames. Then SB3 PPO for {config.total_steps} environment steps per arm "
        f"(same hyperparameters; vpt-bc+kl adds {config.kl_coef} x KL(pi_BC || pi), decayed 0.995 per epoch). "
        f"Metric: mean return of the last 20 training episodes. Steps to threshold: first step where the "
        f"mean of the last 10 episode returns is >= {config.threshold} (runs that never reach it count as the "
        f"full budget, so the ratio is a lower bound). Steps-to-threshold ratio scratch / arm: "
        + ", ".join(f"{a} {ratio[a]:.2f}" for a in ARMS)
        + f". Wall time {time.perf_counter() - start:.0f} s."
    )
    extra = {
        f"steps to return >= {config.threshold}": to_threshold,
        "env steps/s": speed,
        **{name: {"vpt-bc": vals} for name, vals in pre_metrics.items()},
    }
    bench_config = asdict(config) | {"steps_to_threshold_ratio": ratio}
    return write_bench_report(
        out,
        "rl: VPT (IDM -> pseudo-labels -> BC) init vs PPO from scratch, equal env steps",
        finals,
        metric="episodic return (last 20 episodes)",
        higher_is_better=True,
        baseline="scratch",
        curves=curves,
        curve_metric="episodic return (mean of last 10)",
        extra_metrics=extra,
        description=description,
        config=bench_config,
    )


def measure_throughput(steps: int = 4096, repeats: int = 2, env: EnvConfig | None = None) -> dict[str, float]:
    """Env steps/s of plain SB3 PPO vs our fine-tuning (BC init + KL), same network and settings.

    Returns {plain_sb3_ppo, finetune_bc_kl, ratio} where ratio = finetune / plain (>= 0.9 is the target).
    """
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    from warmstart_rl.data import make_env
    from warmstart_rl.models import PixelPolicy
    from warmstart_rl.vpt import policy_kwargs

    env = (env or EnvConfig()).resolved()
    policy_config = PolicyConfig()
    probe = make_env(env)
    torch.manual_seed(0)
    init = PixelPolicy(int(probe.action_space.n), env.size, 3, policy_config)
    probe.close()
    ppo = PPOConfig(total_steps=steps, kl_coef=0.1)
    best = {"plain_sb3_ppo": 0.0, "finetune_bc_kl": 0.0}
    for _ in range(repeats):
        venv = DummyVecEnv([lambda i=i: Monitor(make_env(env, seed=i)) for i in range(ppo.n_envs)])
        model = PPO(
            "CnnPolicy",
            venv,
            n_steps=ppo.n_steps,
            batch_size=ppo.batch_size,
            n_epochs=ppo.n_epochs,
            learning_rate=ppo.lr,
            ent_coef=ppo.ent_coef,
            gamma=ppo.gamma,
            policy_kwargs=policy_kwargs(policy_config),
            seed=0,
            device="cpu",
        )
        t0 = time.perf_counter()
        model.learn(total_timesteps=steps)
        best["plain_sb3_ppo"] = max(best["plain_sb3_ppo"], model.num_timesteps / (time.perf_counter() - t0))
        venv.close()
        ours = finetune_ppo(env, ppo, policy_config, init, seed=0)
        best["finetune_bc_kl"] = max(best["finetune_bc_kl"], ours["steps_per_s"])
    return best | {"ratio": best["finetune_bc_kl"] / best["plain_sb3_ppo"]}


# -- ContextWM: the world-model table -------------------------------------------------------------
def _short_episodes() -> EnvConfig:
    """The world-model bench's environment: episodes cut at 20 steps, so that a random policy scores ~0.28
    and the expert ~0.96 (with MiniGrid's own 100-step limit random walks reach the goal too often: ~0.55)."""
    return EnvConfig(max_episode_steps=20)


@dataclass
class WorldModelBenchConfig:
    seeds: int = 3
    total_steps: int = 1500
    prefill: int = 300
    videos: int = 100
    pretrain_steps: int = 300
    context: bool = True
    noise: float = 0.3
    random_episodes: int = 200
    env: EnvConfig = field(default_factory=_short_episodes)


def run_worldmodel_bench(config: WorldModelBenchConfig, out: Path) -> BenchReport:
    """Dreamer-style agent from a video-pretrained ContextWM vs the same agent from scratch, equal env steps."""
    config = replace(config, env=config.env.resolved())
    import copy

    import torch

    from warmstart_rl.contextwm import (
        AgentConfig,
        PretrainConfig,
        WorldModel,
        WorldModelConfig,
        pretrain_world_model,
        train_agent,
    )
    from warmstart_rl.data import random_return

    arms = ("scratch", "contextwm")
    finals: dict[str, list[float]] = {a: [] for a in (*arms, "random policy")}
    curves: dict[str, list] = {a: [] for a in arms}
    recon: dict[str, list[float]] = {a: [] for a in arms}
    seconds: dict[str, list[float]] = {a: [] for a in arms}
    pre_recon: list[float] = []
    agent = AgentConfig(total_steps=config.total_steps, prefill=config.prefill)
    model_config = WorldModelConfig(context=config.context)
    start = time.perf_counter()
    for seed in range(config.seeds):
        root = Path(out) / f"videos-seed{seed}"
        collect(root, config.env, config.videos, 0, "scripted", config.noise, seed)
        engine = _engine(config.pretrain_steps, seed)
        engine.train.micro_batch_size = 16
        pretrained, metrics = pretrain_world_model(
            load_corpus(root), PretrainConfig(model_config), engine, None
        )
        pre_recon.append(metrics["wm/heldout_recon"])
        finals["random policy"].append(random_return(config.env, config.random_episodes, 50_000 + seed))
        for arm in arms:
            if arm == "scratch":
                torch.manual_seed(seed)
                world_model = WorldModel(pretrained.n_actions, pretrained.image_size, model_config)
            else:
                world_model = copy.deepcopy(pretrained)
            result = train_agent(config.env, agent, world_model, seed=seed)
            finals[arm].append(result["final_return"])
            curves[arm].append(return_curve(result["curve"], 250, config.total_steps))
            recon[arm].append(result["metrics"].get("wm/recon", float("nan")))
            seconds[arm].append(result["seconds"])
            log.info("seed %d %s: return %.3f", seed, arm, result["final_return"])
    description = (
        f"{config.env.env_id}, {config.env.size}x{config.env.size} RGB pixels, {config.env.actions} actions. "
        f"Per seed: {config.videos} frames-only episodes of a scripted expert with {config.noise:.0%} random "
        f"actions are the videos; the ContextWM world model (context encoder: {config.context}) is pretrained "
        f"action-free on them for {config.pretrain_steps} steps. Then the same Dreamer-style agent (action-"
        f"conditioned world model + actor-critic in imagination) runs {config.total_steps} environment steps "
        f"({config.prefill} uniformly random first, identical in both arms) from the pretrained or from a "
        f"freshly initialised world model. Metric: mean return of the last 20 training episodes; 'random "
        f"policy' is the uniformly random policy's mean over {config.random_episodes} episodes (measured, the "
        f"floor any learning must clear; the expert scores about 0.96). Wall time "
        f"{time.perf_counter() - start:.0f} s."
    )
    extra = {
        "world-model recon error (last update)": recon,
        "agent wall time (s)": seconds,
        "pretraining held-out recon error": {"contextwm": pre_recon},
    }
    return write_bench_report(
        out,
        "rl: ContextWM video-pretrained world model vs scratch, equal env steps",
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


# -- RoboFuME: offline Cal-QL + learned reward vs online from scratch -----------------------------
@dataclass
class RoboFuMEBenchConfig:
    seeds: int = 3
    online_steps: int = 1500
    demos: int = 30
    engine_steps: int = 300
    eval_episodes: int = 10
    noise: float = 0.3
    env: EnvConfig = field(default_factory=EnvConfig)


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
            result = run_robofume(corpus, options, _engine(config.engine_steps, seed), config.env, None, seed)
            m = result["metrics"]
            finals[arm].append(m["return/online"])
            before_online[arm].append(m["return/offline"])
            train_return[arm].append(m["online/train_return"])
            curves[arm].append(return_curve(result["curve"], 250, config.online_steps))
            if arm == "robofume":
                classifier.append(m["classifier/balanced_acc"])
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
    }
    return write_bench_report(
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
