"""Inverse-dynamics pretraining as a *representation*: the pixel encoder of an inverse-dynamics model,
pretrained on multitask play data, initialises a multitask imitation policy; compared at an equal BC budget
with encoders pretrained by forward dynamics and by temporal contrast, and with a scratch encoder.

Seed: *Inverse Dynamics Pretraining Learns Good Representations for Multitask Imitation* (Brandfonbrener et
al., arXiv 2305.16985): predicting a_t from (o_t, o_{t+1}) with a shared encoder is the pretraining objective
that beats scratch for few-demonstration multitask imitation. Here, in miniature on MiniGrid pixels: the
pretraining corpus is noisy-expert play on a set of source tasks with the *executed* actions; the encoder
``phi`` is the BC policy's own :class:`~warmstart_rl.models.PixelEncoder`. Objectives:

- inverse dynamics: ``MLP([phi(o_t), phi(o_{t+1})]) -> a_t`` (cross-entropy);
- forward dynamics: ``Linear([phi(o_t), onehot(a_t)]) -> o_{t+1}`` pixels (squared error);
- contrastive: InfoNCE between ``phi(o_t)`` and ``phi(o_{t+1})`` (the core's ``info_nce``, in-batch negatives).

Then one policy is behaviour-cloned on a few demonstrations of *other* target tasks (jointly: multitask),
every weight trained, the same steps for every arm, and scored by held-out action accuracy against the
expert and by greedy return. Left out: the paper's larger environments (MetaWorld, Franka kitchen) and its
latent-action and VAE baselines.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from warmstart.engine import light_fit
from warmstart.errors import ConfigError
from warmstart.eval import BenchReport, write_bench_report
from warmstart.objectives import info_nce
from warmstart_rl.data import EnvConfig, episode_returns, make_env, minigrid_expert_action, to_chw
from warmstart_rl.models import EncoderConfig, PixelEncoder, PixelPolicy, PolicyConfig

log = logging.getLogger(__name__)

OBJECTIVES = ("scratch", "inverse dynamics", "forward dynamics", "contrastive")


@dataclass
class ReprConfig:
    """The representation bench (``bench --kind idm-repr``): ``--representation.*``."""

    source_tasks: list[str] = field(
        default_factory=lambda: [
            "MiniGrid-Empty-Random-5x5-v0",
            "MiniGrid-Empty-6x6-v0",
            "MiniGrid-Empty-Random-6x6-v0",
        ]
    )
    """MiniGrid ids whose play data pretrains the encoders (executed actions, noisy expert)."""
    target_tasks: list[str] = field(
        default_factory=lambda: ["MiniGrid-Empty-8x8-v0", "MiniGrid-SimpleCrossingS9N1-v0"]
    )
    """MiniGrid ids imitated from a few demonstrations each (one multitask policy)."""
    size: int = 20
    """Frame side in pixels."""
    play_episodes: int = 40
    """Play episodes per source task."""
    noise: float = 0.3
    """Random-action share of the play data (its actions are the executed ones)."""
    demos: int = 4
    """Demonstration episodes per target task (few-shot imitation)."""
    heldout_episodes: int = 10
    """Held-out episodes per target task for the action-accuracy figure."""
    max_episode_steps: int = 60
    """Episode cut."""
    pretrain_steps: int = 400
    """Pretraining steps per objective."""
    bc_steps: int = 300
    """BC steps (the same for every arm)."""
    batch_size: int = 64
    """Samples per step."""
    lr: float = 1e-3
    """Adam learning rate (pretraining and BC)."""
    eval_episodes: int = 5
    """Greedy episodes per target task for the return figure (0: skip)."""
    seeds: int = 3
    """Seeds (the data are the same; networks and minibatches differ)."""


@dataclass
class Play:
    obs: torch.Tensor  # (N, 3, H, W)
    action: torch.Tensor  # (N,) executed
    next_obs: torch.Tensor  # (N, 3, H, W)
    expert: torch.Tensor  # (N,) the noise-free expert's action


def record(env_id: str, config: ReprConfig, episodes: int, noise: float, seed: int) -> Play:
    """Noisy-expert rollouts: (o_t, executed a_t, o_{t+1}) and the expert's label of o_t."""
    env = make_env(EnvConfig(env_id, size=config.size, actions=3, max_episode_steps=config.max_episode_steps))
    rng = np.random.default_rng(seed)
    obs_l, act_l, nxt_l, exp_l = [], [], [], []
    try:
        for ep in range(episodes):
            obs, _ = env.reset(seed=seed * 10_007 + ep)
            done = False
            while not done:
                expert = minigrid_expert_action(env)
                action = int(rng.integers(3)) if rng.random() < noise else expert
                nxt, _, terminated, truncated, _ = env.step(action)
                obs_l.append(obs)
                act_l.append(action)
                nxt_l.append(nxt)
                exp_l.append(expert)
                obs, done = nxt, terminated or truncated
    finally:
        env.close()
    return Play(
        torch.from_numpy(to_chw(np.stack(obs_l))),
        torch.tensor(act_l),
        torch.from_numpy(to_chw(np.stack(nxt_l))),
        torch.tensor(exp_l),
    )


def _concat(parts: list[Play]) -> Play:
    return Play(*(torch.cat([getattr(p, k) for p in parts]) for k in ("obs", "action", "next_obs", "expert")))


class Pretrainer(nn.Module):
    """The encoder plus the head of one pretraining objective; ``loss(idx)`` on the play data."""

    def __init__(self, objective: str, size: int, encoder: EncoderConfig) -> None:
        super().__init__()
        self.objective = objective
        self.encoder = PixelEncoder(3, size, encoder)
        d = encoder.features_dim
        if objective == "inverse dynamics":
            self.head = nn.Sequential(nn.Linear(2 * d, d), nn.ReLU(), nn.Linear(d, 3))
        elif objective == "forward dynamics":
            self.head = nn.Linear(d + 3, 3 * size * size)
        elif objective == "contrastive":
            self.head = nn.Linear(d, d)  # projection
        else:
            raise ConfigError(f"objective {objective!r}: use one of {', '.join(OBJECTIVES[1:])}")

    def loss(self, play: Play, idx: torch.Tensor) -> torch.Tensor:
        o, a, n = play.obs[idx], play.action[idx], play.next_obs[idx]
        if self.objective == "inverse dynamics":
            return F.cross_entropy(self.head(torch.cat([self.encoder(o), self.encoder(n)], -1)), a)
        if self.objective == "forward dynamics":
            pred = self.head(torch.cat([self.encoder(o), F.one_hot(a, 3).float()], -1))  # (B, 3 H W)
            return (pred - n.flatten(1)).pow(2).sum(-1).mean()
        return info_nce(
            self.head(self.encoder(o)), self.head(self.encoder(n)), temperature=0.1, symmetric=True
        )


def _minibatches(n: int, steps: int, batch: int, generator: torch.Generator):
    return (torch.randint(n, (min(batch, n),), generator=generator) for _ in range(steps))


def pretrain_encoder(objective: str, play: Play, config: ReprConfig, seed: int) -> PixelEncoder:
    torch.manual_seed(seed)
    model = Pretrainer(objective, config.size, EncoderConfig())
    gen = torch.Generator().manual_seed(seed)
    light_fit(
        model,
        lambda idx: model.loss(play, idx),
        _minibatches(len(play.action), config.pretrain_steps, config.batch_size, gen),
        steps=config.pretrain_steps,
        lr=config.lr,
        grad_clip_norm=None,
        seed=None,
        device="cpu",
    )
    return model.encoder.eval()


def behaviour_clone(encoder: PixelEncoder | None, demos: Play, config: ReprConfig, seed: int) -> PixelPolicy:
    """One multitask policy from the demos (expert labels); the encoder initialised from ``encoder``."""
    torch.manual_seed(seed)
    policy = PixelPolicy(3, config.size, 3, PolicyConfig())
    if encoder is not None:
        policy.encoder.load_state_dict(encoder.state_dict())
    gen = torch.Generator().manual_seed(10_000 + seed)
    light_fit(
        policy,
        lambda idx: F.cross_entropy(policy(demos.obs[idx]), demos.expert[idx]),
        _minibatches(len(demos.expert), config.bc_steps, config.batch_size, gen),
        steps=config.bc_steps,
        lr=config.lr,
        grad_clip_norm=None,
        seed=None,
        device="cpu",
    )
    return policy.eval()


@torch.no_grad()
def action_accuracy(policy: PixelPolicy, data: Play) -> float:
    return float((policy(data.obs).argmax(-1) == data.expert).float().mean())


def greedy_task_return(policy: PixelPolicy, env_id: str, config: ReprConfig, seed: int) -> float:
    env = make_env(EnvConfig(env_id, size=config.size, actions=3, max_episode_steps=config.max_episode_steps))

    @torch.no_grad()
    def act(obs: np.ndarray) -> int:
        return int(policy(torch.from_numpy(to_chw(obs[None]))).argmax(-1))

    try:
        return float(np.mean(episode_returns(act, env, config.eval_episodes, seed)))
    finally:
        env.close()


def run_repr_bench(config: ReprConfig, out: Path) -> BenchReport:
    """Every objective x seed: pretrain on the source tasks' play, BC on the target tasks' demos, score."""
    if not config.source_tasks or not config.target_tasks:
        raise ConfigError("--representation.source_tasks and target_tasks must each name at least one task")
    overlap = set(config.source_tasks) & set(config.target_tasks)
    if overlap:
        raise ConfigError(f"--representation: {sorted(overlap)} is both a source and a target task")
    start = time.perf_counter()
    play = _concat(
        [
            record(t, config, config.play_episodes, config.noise, 1 + i)
            for i, t in enumerate(config.source_tasks)
        ]
    )
    demos = _concat(
        [record(t, config, config.demos, 0.0, 100 + i) for i, t in enumerate(config.target_tasks)]
    )
    held = {
        t: record(t, config, config.heldout_episodes, 0.2, 200 + i) for i, t in enumerate(config.target_tasks)
    }
    accuracy: dict[str, list[float]] = {o: [] for o in OBJECTIVES}
    returns: dict[str, list[float]] = {o: [] for o in OBJECTIVES}
    for seed in range(config.seeds):
        for objective in OBJECTIVES:
            encoder = None if objective == "scratch" else pretrain_encoder(objective, play, config, seed)
            policy = behaviour_clone(encoder, demos, config, seed)
            accuracy[objective].append(float(np.mean([action_accuracy(policy, h) for h in held.values()])))
            if config.eval_episodes > 0:
                returns[objective].append(
                    float(
                        np.mean(
                            [
                                greedy_task_return(policy, t, config, 30_000 + seed)
                                for t in config.target_tasks
                            ]
                        )
                    )
                )
            log.info("seed %d %s: held-out acc %.3f", seed, objective, accuracy[objective][-1])
    description = (
        f"Pretraining play: {config.play_episodes} noisy-expert episodes ({config.noise:.0%} random actions, "
        f"executed actions recorded) on each of {', '.join(config.source_tasks)} ({len(play.action)} transitions); "
        f"each objective trains the policy's own CNN encoder for {config.pretrain_steps} steps. Then one multitask "
        f"policy is behaviour-cloned for {config.bc_steps} steps (every arm) on {config.demos} expert "
        f"demonstrations of each target task ({', '.join(config.target_tasks)}; {len(demos.expert)} frames), "
        f"every weight trained. Metric: held-out action accuracy against the expert on {config.heldout_episodes} "
        f"noisy episodes per target task, averaged over tasks; extra: greedy return. {config.size}px RGB, 3 "
        f"actions. Wall time {time.perf_counter() - start:.0f} s."
    )
    extra = {"greedy return (target tasks)": returns} if config.eval_episodes > 0 else {}
    return write_bench_report(
        out,
        "rl: inverse-dynamics pretraining as a representation for few-shot multitask imitation",
        accuracy,
        metric="held-out action accuracy (target tasks)",
        higher_is_better=True,
        baseline="scratch",
        extra_metrics=extra,
        description=description,
        config=asdict(config),
    )
