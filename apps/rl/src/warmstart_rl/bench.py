"""The VPT bench: PPO from scratch vs PPO from the VPT behaviour-cloned policy (with and without the KL to
the pretrained policy) at equal environment steps over several seeds, and the env-steps/s overhead of our
fine-tuning path against plain stable-baselines3 PPO.

Seed: *Video PreTraining (VPT)* (Baker et al., arXiv 2206.11795), whose headline is that a BC foundation
policy makes RL fine-tuning reach what RL from scratch cannot within the same budget. Here, in miniature,
on MiniGrid pixels: per seed a corpus is recorded from a noisy scripted expert, an IDM is trained on its
labelled tenth, the rest is pseudo-labelled, a policy is cloned, and the three PPO arms run the same number
of environment steps. Reported as measured via :func:`warmstart.eval.write_bench_report`. The world-model and
RoboFuME tables live in :mod:`warmstart_rl.bench_worldmodel` and :mod:`warmstart_rl.bench_robofume`;
:func:`return_curve` is shared by every bench of the app.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from warmstart.engine import cpu_threads, quick_config
from warmstart.eval import BenchReport, run_jobs, write_bench_report
from warmstart_rl.data import EnvConfig, collect, default_frame_stack, load_corpus
from warmstart_rl.models import IDMConfig, PolicyConfig
from warmstart_rl.vpt import (
    BCConfig,
    IDMTrainConfig,
    PPOConfig,
    check_start,
    finetune_ppo,
    label_corpus,
    steps_to_threshold,
    train_bc,
    train_idm,
)

log = logging.getLogger(__name__)


@dataclass
class BenchConfig:
    """The VPT bench (``bench --kind vpt``), declared once: the CLI takes it as ``--setup.*``."""

    seeds: int = 3
    """Seeds per arm."""
    total_steps: int = 8192
    """PPO environment steps per run (equal for every arm)."""
    episodes: int = 200
    """Corpus episodes per seed (unlabelled videos + labelled)."""
    labelled: int = 20
    """Labelled episodes per seed."""
    idm_steps: int = 300
    """IDM optimizer steps per round."""
    idm_rounds: int = 3
    """IDM rounds at most (stops once the quality gate is cleared)."""
    bc_steps: int = 300
    """BC optimizer steps."""
    bc_lr: float = 1e-3
    """BC learning rate (cosine schedule, batch 64)."""
    bc_balance: bool = False
    """Inverse-frequency class weights in BC's loss (:attr:`warmstart_rl.vpt.BCConfig.class_balance`)."""
    threshold: float = 0.9
    """Return threshold for the steps-to-threshold ratio."""
    kl_coef: float = 0.1
    """KL coefficient of the BC-init + KL arm."""
    env: EnvConfig = field(default_factory=EnvConfig)
    """The environment (any gymnasium id with a scripted expert: MiniGrid-*, CartPole-*, ALE/Breakout-*)."""
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    """The BC / PPO policy network (first_stride 2 is used for frames of 48 px and more; frame_stack null:
    the env family's causal stack, ALE 4 frames, others 1 — the same for BC and every PPO arm)."""
    noise: float = 0.2
    """Share of random actions in the scripted expert's corpus."""
    n_envs: int = 4
    """PPO's parallel environments."""
    n_steps: int = 64
    """PPO's rollout length per environment."""
    idm: IDMConfig = field(default_factory=IDMConfig)
    """The IDM network (its encoder's first stride follows the frame size: 2 from 48 px)."""
    workers: int = 2
    """The bench's jobs (per seed: its source, then its PPO arms) run in this many processes at once (one torch
    thread each): the machine's cores (2 on a 2-core one; 1 runs everything in this process)."""


single_thread = cpu_threads  # the core's context manager, under the name this app's modules use


def _scaled(config: BenchConfig) -> tuple[IDMConfig, PolicyConfig]:
    """IDM and policy networks for the bench's frame size: a stride-2 first conv from 48 px up."""
    stride = 2 if (config.env.size or 0) >= 48 else 1
    policy = replace(config.policy, encoder=replace(config.policy.encoder, first_stride=stride))
    return replace(config.idm, encoder=replace(config.idm.encoder, first_stride=stride)), policy


def pretrain_pipeline(config: BenchConfig, seed: int, root: Path) -> dict[str, Any]:
    """collect -> IDM (until its gate) -> pseudo-labels -> BC for one seed; returns {policy, idm, metrics}."""
    config = replace(config, env=config.env.resolved())
    idm_model, policy_model = _scaled(config)
    recorded = collect(root, config.env, config.episodes, config.labelled, "scripted", config.noise, seed)
    corpus = load_corpus(root)
    idm_config = IDMTrainConfig(idm_model, max_rounds=config.idm_rounds)
    idm, idm_metrics = train_idm(
        corpus, idm_config, quick_config(config.idm_steps, 64, 1e-3, seed, warmup=0), None
    )
    label_metrics = label_corpus(corpus, idm)
    corpus = load_corpus(root)
    policy, bc_metrics = train_bc(
        corpus,
        BCConfig(model=policy_model, class_balance=config.bc_balance),
        quick_config(config.bc_steps, 64, config.bc_lr, seed, warmup=0),
        None,
        seed,
    )
    expert = {
        "collect/expert_return": recorded["mean_return"],
        "collect/env_steps": float(recorded["env_steps"]),
    }
    return {"policy": policy, "idm": idm, "metrics": expert | idm_metrics | label_metrics | bc_metrics}


def cached_pretrain(config: BenchConfig, seed: int, scratch: Path) -> dict[str, Any]:
    """:func:`pretrain_pipeline` as a cached artifact (``warmstart.cache``, kind ``rl.vpt-source``): keyed by
    the pipeline's config, the seed and the code version; the corpus itself is not kept."""
    import shutil

    from warmstart import cache
    from warmstart_rl import data, models, vpt
    from warmstart_rl.models import save_model

    recipe = {
        k: v
        for k, v in asdict(config).items()
        if k not in ("seeds", "total_steps", "threshold", "kl_coef", "workers", "n_envs", "n_steps")
    }

    def build(folder: Path) -> None:
        shutil.rmtree(scratch, ignore_errors=True)  # a corpus left by an interrupted build
        pre = pretrain_pipeline(config, seed, scratch)
        spec = {"env": asdict(config.env.resolved()), "metrics": pre["metrics"]}
        idm, policy = pre["idm"], pre["policy"]
        save_model(idm, folder / "idm", "idm", idm.hub_config() | spec)
        save_model(policy, folder / "policy", "policy", policy.hub_config() | spec)
        shutil.rmtree(scratch, ignore_errors=True)

    folder = cache.cached(
        "rl.vpt-source",
        recipe | {"seed": seed},
        build,
        data={
            "env": asdict(config.env),
            "episodes": config.episodes,
            "labelled": config.labelled,
            "seed": seed,
        },
        code=cache.code_version(data, models, vpt),
        description=f"VPT IDM + BC policy, {config.env.env_id}, seed {seed}",
    )
    idm, spec = models.load_model(folder / "idm", "idm")
    policy, _ = models.load_model(folder / "policy", "policy")
    return {"policy": policy.eval(), "idm": idm.eval(), "metrics": spec["metrics"]}


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
PRE_METRICS = {
    "corpus (noisy expert) return": "collect/expert_return",
    "corpus env steps (videos + labelled)": "collect/env_steps",
    "IDM held-out acc": "idm/heldout_acc",
    "IDM chance (1/A)": "idm/uniform_chance",
    "IDM chance (majority)": "idm/majority_share",
    "IDM gate passed": "idm/gate_passed",
    "pseudo-label acc": "label/accuracy_vs_truth",
    "BC held-out acc": "bc/heldout_acc",
    "BC greedy return": "bc/return",
}


def _vpt_source(config: BenchConfig, seed: int, out: Path) -> dict[str, Any]:
    """The (cached) IDM + BC source of one seed, with the seed's random reference and the BC start check;
    plain numbers only (a worker process returns them)."""
    from warmstart_rl.data import random_return

    with cpu_threads():
        pre = cached_pretrain(config, seed, Path(out) / f"corpus-seed{seed}")
        m, n_actions = pre["metrics"], int(pre["policy"].n_actions)
        row: dict[str, Any] = {name: float(m.get(key, float("nan"))) for name, key in PRE_METRICS.items()}
        row["IDM chance (1/A)"] = 1.0 / n_actions
        row["IDM acc / uniform chance"] = float(m["idm/heldout_acc"]) * n_actions
        start_check = check_start(pre["policy"], config.env, PPOConfig(start_check_episodes=3), seed)
        row["BC start below random"] = float(start_check["below_random"])
        random = random_return(config.env, 10, 50_000 + seed)
    return {"pre": row, "random": random}


def _vpt_arm(config: BenchConfig, seed: int, arm: str, out: Path) -> dict[str, Any]:
    """One PPO arm of one seed (the VPT arms start from the seed's cached source: built by
    :func:`_vpt_source` before them); plain numbers only."""
    with cpu_threads():
        init = None
        if arm != "scratch":
            init = cached_pretrain(config, seed, Path(out) / f"corpus-seed{seed}")["policy"]
        ppo = PPOConfig(
            total_steps=config.total_steps,
            kl_coef=config.kl_coef if arm == "vpt-bc+kl" else 0.0,
            n_envs=config.n_envs,
            n_steps=config.n_steps,
            start_check_episodes=0,  # checked once per seed by _vpt_source
        )
        result = finetune_ppo(config.env, ppo, _scaled(config)[1], init, seed=seed)
    reached = steps_to_threshold(result["curve"], config.threshold)
    log.info("seed %d %s: return %.3f, threshold at %s", seed, arm, result["final_return"], reached)
    return {
        "final": result["final_return"],
        "curve": return_curve(result["curve"], ppo.n_envs * ppo.n_steps, config.total_steps),
        "to_threshold": float(reached if reached is not None else config.total_steps),
        "speed": result["steps_per_s"],
    }


def _vpt_job(config: BenchConfig, seed: int, part: str, out: Path) -> dict[str, Any]:
    """A job of the bench's pool: 'source' (:func:`_vpt_source`) or a PPO arm (:func:`_vpt_arm`)."""
    return _vpt_source(config, seed, out) if part == "source" else _vpt_arm(config, seed, part, out)


def run_bench(config: BenchConfig, out: Path) -> BenchReport:
    """All arms x seeds; writes report.md, plot.png, results.json (and the corpora) under ``out``. With
    ``config.workers`` > 1 the jobs (sources and scratch arms first, then the VPT arms) run in that many
    processes (one torch thread each)."""
    config = replace(config, env=config.env.resolved())
    start = time.perf_counter()
    # two rounds of jobs: the sources and the scratch arms (which need no source), then the VPT arms (which
    # load their seed's source from the cache), longest first, so that no worker idles while another works
    seeds = range(config.seeds)
    first = [(config, s, "source", out) for s in seeds] + [(config, s, "scratch", out) for s in seeds]
    second = [(config, s, arm, out) for arm in ("vpt-bc+kl", "vpt-bc") for s in seeds]
    done = run_jobs(_vpt_job, first, config.workers) + run_jobs(_vpt_job, second, config.workers)
    runs = {(part, s): r for (_, s, part, _), r in zip(first + second, done, strict=True)}
    finals = {a: [runs[a, s]["final"] for s in seeds] for a in ARMS}
    finals["random policy"] = [runs["source", s]["random"] for s in seeds]
    curves = {a: [runs[a, s]["curve"] for s in seeds] for a in ARMS}
    to_threshold = {a: [runs[a, s]["to_threshold"] for s in seeds] for a in ARMS}
    speed = {a: [runs[a, s]["speed"] for s in seeds] for a in ARMS}
    pre_metrics = {name: [runs["source", s]["pre"][name] for s in seeds] for name in runs["source", 0]["pre"]}
    ratio = {
        arm: float(np.mean(to_threshold["scratch"]) / max(np.mean(to_threshold[arm]), 1.0)) for arm in ARMS
    }
    stack = default_frame_stack(config.env.env_id, config.policy.frame_stack)
    description = (
        f"{config.env.env_id}, {config.env.size}x{config.env.size} RGB pixels, the policy sees the last "
        f"{stack} frame(s) (a causal stack, the same in BC and PPO), "
        f"{config.env.actions or 'the full minimal set of'} actions, frame skip "
        f"{config.env.frame_skip or 'default'}, sticky actions {config.env.sticky_actions}. "
        f"Chance for the IDM is 1/A (uniform); the gate uses the larger of 1/A and the held-out majority share. "
        f"Per seed: {config.episodes} episodes of a scripted expert with {config.noise:.0%} random actions, "
        f"{config.labelled} of them labelled; IDM {config.idm_steps} steps, BC {config.bc_steps} steps on "
        f"labelled + pseudo-labelled frames (lr {config.bc_lr:g}{', class-balanced loss' if config.bc_balance else ''}). Then SB3 PPO for {config.total_steps} environment steps per arm "
        f"(same hyperparameters; vpt-bc+kl adds {config.kl_coef} x KL(pi_BC || pi), decayed 0.995 per epoch). "
        f"Equal env steps means PPO's steps; the corpus' own env steps (videos + the labelled part, the row "
        f"'corpus env steps') are listed apart, as VPT counts its videos free and its labels as the cost. "
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
