"""ContextWM's agent: a Dreamer-style learner that fine-tunes the (pretrained) world model with actions on
the target environment and trains an actor-critic on imagined rollouts from its posterior states.

Seed: *Pre-training Contextualized World Models with In-the-wild Videos for Reinforcement Learning*
(Wu et al., arXiv 2305.18499) section 4.2, with DreamerV3's (arXiv 2301.04104) discrete-action actor
(REINFORCE with a learned baseline), lambda-returns, a slow target critic, return normalisation (advantages
divided by max(1, EMA of the 5th-95th percentile range)), 1 % unimix, and a critic on the symlog scale.

Defaults that make the agent learn in CPU minutes (measured single-seed runs, README; the first version did
not beat a random policy): entropy 1e-2 with the unimix (3e-2 kept the policy uniform; 1e-3 collapsed it
onto a bad deterministic policy before the reward head had seen enough goals), one model + actor-critic
update every 2 env steps, imagination horizon 15, acting from a posterior *sample*. APV's video-based
intrinsic bonus (a kNN entropy estimate over 5-step windows of the action-free representation, added to
the reward the reward head learns, as APV's code does) is an option (``intrinsic`` = beta, off by default).
Left out: the two-hot critic; the seed's learning rates (model 3e-4, actor/critic 8e-5: ours are 1e-3 /
3e-4 so that the agent learns within a CPU budget of 1,500 env steps).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from warmstart.errors import CheckpointError, ConfigError
from warmstart.hub import HubMixin, ModelCard
from warmstart_rl.data import EnvConfig, make_env, to_chw
from warmstart_rl.worldmodel import PAPER, WorldModel, _mlp, symexp, symlog

log = logging.getLogger(__name__)

AGENT_KIND = "rl.agent"


# -- the agent: imagination actor-critic + online loop --------------------------------------------
@dataclass
class AgentConfig:
    total_steps: int = 3000
    """Environment steps (the same for every arm of the bench)."""
    prefill: int = 300
    """Uniformly random steps before learning starts."""
    train_every: int = 2
    """Environment steps per update (world model + actor-critic)."""
    batch_size: int = 16
    """Clips per world-model update."""
    clip_length: int = 16
    """Frames per clip."""
    horizon: int = 15
    """Imagination horizon of the actor-critic."""
    gamma: float = 0.97
    """Discount."""
    lam: float = 0.95
    """lambda of the lambda-returns."""
    entropy: float = 1e-2
    """Entropy bonus of the actor (on the normalised-return scale)."""
    wm_lr: float = 1e-3
    """Adam learning rate of the world model."""
    ac_lr: float = 3e-4
    """Adam learning rate of actor and critic."""
    hidden: int = 64
    """Width of the actor and critic MLPs."""
    unimix: float = 0.01
    """Share of the uniform distribution mixed into the actor's (DreamerV3's unimix: never fully collapse)."""
    device: str = "cpu"
    """Where the world model and actor-critic train: 'cpu', 'cuda', 'cuda:1', or 'auto' (CUDA if present)."""
    intrinsic: float = 0.0
    """beta of APV's video-based intrinsic bonus (0: off; APV uses 1.0 on Meta-World, 0.1 on DMC/CARLA):
    the reward head learns r + beta * r_int, r_int the mean kNN distance of an embedding of 5-step windows of
    the (video-pretrained) action-free representation (:class:`IntrinsicBonus`)."""
    intrinsic_k: int = 16
    """k of the kNN entropy estimate."""
    intrinsic_queue: int = 4096
    """Embeddings kept in the queue the neighbours are searched in."""
    intrinsic_window: int = 5
    """Steps per embedded sequence."""
    reinit: list[str] = field(default_factory=list)
    """Parts of the (pretrained) world model re-initialised before fine-tuning, any of 'encoder', 'rssm' (the
    action-free RSSM), 'decoder' (the decoder with its context encoder); [] keeps them all, as ContextWM's
    fine-tuning loads encoder, decoder and action-free RSSM. The new parts are drawn from a generator of their
    own, so the other new parts (the stacked RSSM, the heads) start as in every other arm of the seed."""


class ActorCritic(nn.Module, HubMixin):
    """Actor pi(a | s) and critic v(s) (symlog scale) over world-model features s = [h, z]."""

    warmstart_kind = AGENT_KIND

    def __init__(self, feat_dim: int, n_actions: int, hidden: int, unimix: float = 0.0) -> None:
        super().__init__()
        self.feat_dim, self.n_actions, self.hidden = feat_dim, n_actions, hidden
        self.actor = _mlp(feat_dim, hidden, n_actions)
        self.critic = _mlp(feat_dim, hidden, 1)
        self.target = copy.deepcopy(self.critic).requires_grad_(False)
        self.unimix = unimix

    def hub_config(self) -> dict[str, Any]:
        return {
            "feat_dim": self.feat_dim,
            "n_actions": self.n_actions,
            "hidden": self.hidden,
            "unimix": self.unimix,
        }

    @classmethod
    def from_hub_config(cls, config: dict[str, Any]) -> ActorCritic:
        return cls(config["feat_dim"], config["n_actions"], config["hidden"], config["unimix"])

    def value(self, feat: torch.Tensor, target: bool = False) -> torch.Tensor:
        """v(s) on the return scale (the critic regresses symlog of the lambda-returns): (...)."""
        return symexp((self.target if target else self.critic)(feat).squeeze(-1))

    def policy(self, feat: torch.Tensor) -> torch.distributions.Categorical:
        """pi(a | s) = (1 - u) softmax(actor(s)) + u / A."""
        probs = torch.softmax(self.actor(feat), -1)
        if self.unimix > 0:
            probs = (1 - self.unimix) * probs + self.unimix / probs.shape[-1]
        return torch.distributions.Categorical(probs=probs)


def lambda_returns(
    rewards: torch.Tensor, discounts: torch.Tensor, values: torch.Tensor, lam: float
) -> torch.Tensor:
    """R_t = r_t + d_t ((1 - lam) v_{t+1} + lam R_{t+1}), R_H = v_H. rewards/discounts (H, N), values (H+1, N)."""
    out, last = [], values[-1]
    for t in reversed(range(rewards.shape[0])):
        last = rewards[t] + discounts[t] * ((1 - lam) * values[t + 1] + lam * last)
        out.append(last)
    return torch.stack(out[::-1])  # (H, N)


class IntrinsicBonus(nn.Module):
    """APV's video-based intrinsic bonus (arXiv 2203.13880, used by ContextWM), as APV's code computes it:
    on the replayed clips of each world-model update, the action-free posterior features are averaged over
    sliding windows of ``window`` steps and projected by a fixed random matrix (``dim``-d); a window's bonus
    is the mean distance to its ``k`` nearest neighbours in a queue of the last ``queue`` such embeddings
    (the clip's own included, itself excluded), divided by a running mean of the bonus (momentum 0.99). It
    is assigned to the window's first step and added, times beta, to the reward the world model's reward
    head learns, so imagined rollouts are rewarded for it through the ordinary reward head."""

    def __init__(self, feat_dim: int, config: AgentConfig, dim: int = 128, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.window, self.k, self.capacity = (
            config.intrinsic_window,
            config.intrinsic_k,
            config.intrinsic_queue,
        )
        self.register_buffer("projection", torch.randn(feat_dim, dim, generator=gen) / dim)
        self.register_buffer("queue", torch.zeros(0, dim))
        self.mean = 0.0

    @torch.no_grad()
    def rewards(self, af_feat: torch.Tensor) -> torch.Tensor:
        """af_feat (B, T, F) -> normalised kNN bonus (B, T - window + 1) of the windows starting at each
        step; the clip's embeddings then join the queue (oldest out)."""
        b, t_len, _ = af_feat.shape
        if t_len < self.window:
            return af_feat.new_zeros(b, 0)
        windows = af_feat.unfold(1, self.window, 1).mean(-1)  # (B, T - w + 1, F)
        y = windows.flatten(0, 1) @ self.projection  # (N, dim)
        pool = torch.cat([self.queue.to(y.device), y])
        k = min(self.k + 1, len(pool))  # + 1: an embedding is its own nearest neighbour (distance 0)
        nearest = torch.cdist(y, pool).topk(k, largest=False).values[:, 1:]  # (N, k)
        dist = nearest.mean(-1) if nearest.shape[1] else torch.zeros(len(y), device=y.device)
        self.mean = 0.99 * self.mean + 0.01 * float(dist.mean()) if self.mean else float(dist.mean())
        self.queue = pool[-self.capacity :].detach()
        return (dist / max(self.mean, 1e-8)).view(b, -1)


def imagine_update(
    world_model: WorldModel,
    agent: ActorCritic,
    optimizer: torch.optim.Optimizer,
    start_h: torch.Tensor,
    start_z: torch.Tensor,
    config: AgentConfig,
    scale: list[float],
) -> dict[str, float]:
    """Roll the actor out in the (frozen) world model from posterior states; update actor and critic.
    With APV's bonus on, the reward head's predictions already include beta x the bonus."""
    h, z = start_h.detach(), start_z.detach()  # (N, D), (N, S)
    feats, log_probs, entropies = [torch.cat([h, z], -1)], [], []
    dynamics = getattr(world_model, "dynamics", world_model.rssm)
    for _ in range(config.horizon):
        dist = agent.policy(feats[-1])
        action = dist.sample()
        log_probs.append(dist.log_prob(action))
        entropies.append(dist.entropy())
        with torch.no_grad():
            h, mean, std = dynamics.img_step(h, z, F.one_hot(action, world_model.n_actions).float())
            z = mean + std * torch.randn_like(std)
        feats.append(torch.cat([h, z], -1))
    feat = torch.stack(feats)  # (H+1, N, F)
    with torch.no_grad():
        rewards = world_model.predict_reward(feat[1:])  # (H, N), the environment's scale (+ beta r_int)
        discounts = config.gamma * torch.sigmoid(world_model.cont(feat[1:])).squeeze(-1)  # (H, N)
        values = agent.value(feat, target=True)  # (H+1, N)
        returns = lambda_returns(rewards, discounts, values, config.lam)  # (H, N)
        weights = torch.cumprod(torch.cat([torch.ones_like(discounts[:1]), discounts[:-1]]), 0)  # (H, N)
        # DreamerV3 return normalisation: divide by max(1, EMA of the 5th-95th percentile range)
        spread = torch.quantile(returns, 0.95) - torch.quantile(returns, 0.05)
        scale[0] = 0.99 * scale[0] + 0.01 * float(spread)
        advantage = (returns - values[:-1]) / max(1.0, scale[0])
    logp, entropy = torch.stack(log_probs), torch.stack(entropies)  # (H, N)
    actor_loss = -(weights * (logp * advantage + config.entropy * entropy)).mean()
    critic_out = agent.critic(feat[:-1].detach()).squeeze(-1)  # (H, N), symlog scale
    critic_loss = 0.5 * (weights * (critic_out - symlog(returns)).pow(2)).mean()
    optimizer.zero_grad()
    (actor_loss + critic_loss).backward()
    nn.utils.clip_grad_norm_(agent.parameters(), 100.0)
    optimizer.step()
    with torch.no_grad():
        for target, online in zip(agent.target.parameters(), agent.critic.parameters(), strict=True):
            target.lerp_(online, 0.02)
    return {
        "actor_loss": actor_loss.item(),
        "critic_loss": critic_loss.item(),
        "entropy": entropy.mean().item(),
    }


class Replay:
    """A flat stream of steps in preallocated arrays (grown by doubling): obs, a_{t-1} (-1 after a reset),
    r_t, is_first, cont; clips of consecutive steps sampled uniformly."""

    def __init__(
        self, n_actions: int, obs_shape: tuple[int, ...] | None = None, capacity: int = 1024
    ) -> None:
        self.n_actions, self.size, self.capacity = n_actions, 0, max(capacity, 1)
        self.obs_shape = obs_shape
        self.obs: np.ndarray | None = None  # (capacity, H, W, C) uint8
        self.rows = np.zeros((self.capacity, 4), np.float32)  # (action or -1, reward, is_first, cont)

    def add(self, obs: np.ndarray, action: int, reward: float, is_first: bool, terminal: bool) -> None:
        if self.obs is None:
            self.obs = np.zeros((self.capacity, *obs.shape), obs.dtype)
        if self.size == self.capacity:
            self.capacity *= 2
            self.obs = np.concatenate([self.obs, np.zeros_like(self.obs)])
            self.rows = np.concatenate([self.rows, np.zeros_like(self.rows)])
        self.obs[self.size] = obs
        self.rows[self.size] = (action, reward, float(is_first), 0.0 if terminal else 1.0)
        self.size += 1

    def __len__(self) -> int:
        return self.size

    def digest(self) -> str:
        """A short hash of everything stored so far (frames and rows)."""
        import hashlib

        data = (self.obs[: self.size].tobytes() if self.obs is not None else b"") + self.rows[
            : self.size
        ].tobytes()
        return hashlib.sha1(data).hexdigest()[:16]

    def sample(self, batch: int, length: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        assert self.obs is not None
        starts = rng.integers(0, self.size - length + 1, size=batch)
        idx = starts[:, None] + np.arange(length)[None]  # (B, T)
        rows = self.rows[idx]  # (B, T, 4)
        actions = rows[..., 0].astype(np.int64)
        one_hot = np.zeros((*actions.shape, self.n_actions), np.float32)
        valid = actions >= 0
        one_hot[valid, actions[valid]] = 1.0
        is_first = rows[..., 2].copy()
        is_first[:, 0] = 1.0
        obs = self.obs[idx]  # (B, T, H, W, C)
        return {
            "obs": torch.from_numpy(
                to_chw(obs.reshape(-1, *obs.shape[2:])).reshape(*idx.shape, 3, *obs.shape[2:4])
            ),
            "action": torch.from_numpy(one_hot),
            "reward": torch.from_numpy(rows[..., 1].copy()),
            "is_first": torch.from_numpy(is_first),
            "cont": torch.from_numpy(rows[..., 3].copy()),
        }


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; anything else as torch names it (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"--agent.device {name!r}: not a device name ({exc})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--agent.device {name}: CUDA is not available here; use cpu or auto")
    return device


def train_agent(
    env_config: EnvConfig,
    config: AgentConfig,
    world_model: WorldModel,
    seed: int = 0,
) -> dict[str, Any]:
    """Dreamer-style loop: act from the filtered latent state, store, learn the model, learn in imagination.

    ``world_model`` is fine-tuned in place (a pretrained one or a fresh one: the scratch baseline).
    Returns {curve: [(step, return)], final_return, seconds, steps_per_s, agent, metrics, prefill_digest};
    ``prefill_digest`` is a hash of the replay after the random prefill (equal across arms of one seed:
    the prefill's actions come from ``seed`` alone, so the arms are paired)."""
    if config.clip_length < 2 or config.total_steps <= config.prefill:
        raise ConfigError(
            f"--agent.total_steps {config.total_steps} must exceed --agent.prefill {config.prefill}, "
            f"clip_length >= 2"
        )
    device = resolve_device(config.device)
    env = make_env(env_config, seed=seed)
    n_actions = int(env.action_space.n)
    if env.observation_space.shape[0] != world_model.image_size:
        env.close()
        raise CheckpointError(
            f"the world model takes {world_model.image_size} px frames, {env_config.env_id} gives "
            f"{env.observation_space.shape[0]} px; pass --env.size {world_model.image_size} (or pretrain with "
            f"--size {env.observation_space.shape[0]})"
        )
    torch.manual_seed(seed)  # before the stacked RSSM is built: every arm of a seed starts it identically
    world_model.with_actions(n_actions)  # the target's action-conditioned part (any source actions)
    world_model.reinitialise(config.reinit, seed)
    world_model.to(device)
    rng = np.random.default_rng(seed)
    agent = ActorCritic(world_model.feat_dim, n_actions, config.hidden, config.unimix).to(device)
    wm_opt = torch.optim.Adam(world_model.parameters(), lr=config.wm_lr)
    ac_opt = torch.optim.Adam(
        list(agent.actor.parameters()) + list(agent.critic.parameters()), lr=config.ac_lr
    )
    bonus = (
        IntrinsicBonus(world_model.feat_dim, config, seed=seed).to(device) if config.intrinsic > 0 else None
    )
    intrinsic: list[float] = []

    def reward_bonus(af_feat: torch.Tensor) -> torch.Tensor:  # APV: r + beta * r_int for the reward head
        assert bonus is not None
        r_int = bonus.rewards(af_feat)  # (B, T - w + 1)
        intrinsic.append(float(r_int.mean()) if r_int.numel() else 0.0)
        return config.intrinsic * r_int

    replay, scale = Replay(n_actions, capacity=config.total_steps + 64), [0.0]
    curve: list[tuple[int, float]] = []
    metrics: dict[str, float] = {}
    obs, _ = env.reset(seed=seed)
    replay.add(obs, -1, 0.0, True, False)
    state = world_model.initial_state(1, device)
    prev_action: torch.Tensor | None = None
    episode_return, episode, prefill_digest = 0.0, 0, ""
    start = time.perf_counter()
    for step in range(1, config.total_steps + 1):
        with torch.no_grad():
            # a posterior sample, as the imagined rollouts start from
            state = world_model.filter_step(
                state, prev_action, torch.from_numpy(to_chw(obs[None])).to(device)
            )
            if step <= config.prefill:
                action = int(rng.integers(n_actions))
            else:
                action = int(agent.policy(torch.cat([state["h"], state["z"]], -1)).sample())
        obs, reward, terminated, truncated, _ = env.step(action)
        episode_return += float(reward)
        replay.add(obs, action, float(reward), False, terminated)
        prev_action = F.one_hot(torch.tensor([action], device=device), n_actions).float()
        if terminated or truncated:
            curve.append((step, episode_return))
            episode += 1
            obs, _ = env.reset(seed=seed * 100_003 + episode)
            replay.add(obs, -1, 0.0, True, False)
            state = world_model.initial_state(1, device)
            prev_action, episode_return = None, 0.0
        if step == config.prefill:  # what the random prefill recorded: equal in every arm of a seed
            prefill_digest = replay.digest()
        if step >= config.prefill and step % config.train_every == 0 and len(replay) > config.clip_length:
            batch = {
                k: v.to(device) for k, v in replay.sample(config.batch_size, config.clip_length, rng).items()
            }
            world_model.train()
            loss, wm_metrics, states = world_model.loss(
                batch, use_actions=True, reward_bonus=reward_bonus if bonus is not None else None
            )
            wm_opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(world_model.parameters(), 100.0)
            wm_opt.step()
            if intrinsic:
                wm_metrics["intrinsic"] = intrinsic[-1]
            ac_metrics = imagine_update(
                world_model,
                agent,
                ac_opt,
                states["h"].flatten(0, 1),
                states["z"].flatten(0, 1),
                config,
                scale,
            )
            metrics = {f"wm/{k}": v for k, v in wm_metrics.items()} | {
                f"ac/{k}": v for k, v in ac_metrics.items()
            }
    seconds = time.perf_counter() - start
    env.close()
    world_model.cpu()
    agent.cpu()
    tail = [r for _, r in curve[-20:]]
    return {
        "curve": curve,
        "final_return": float(np.mean(tail)) if tail else float("nan"),
        "seconds": seconds,
        "steps_per_s": config.total_steps / seconds,
        "agent": agent,
        "metrics": metrics,
        "prefill_digest": prefill_digest,
    }


def save_agent(agent: ActorCritic, directory: Path, env: dict, metrics: dict | None = None) -> Path:
    """The trained actor-critic in the hub format (``rl.agent``); it acts on the saved world model's
    features, so ``worldmodel-finetune`` writes both (``worldmodel/`` and ``agent/``)."""
    from warmstart.hub import save_model

    metrics = metrics or {}
    card = ModelCard(
        title=f"ContextWM actor-critic for {env.get('env_id')}",
        paper=PAPER,
        description="Acts on the features [h, z] of the world model saved beside it (../worldmodel).",
        metrics={k: v for k, v in metrics.items() if isinstance(v, int | float)},
        tags=["reinforcement-learning", "actor-critic"],
    )
    return save_model(
        agent,
        directory,
        kind=AGENT_KIND,
        config=agent.hub_config(),
        card=card,
        extra={"env": env, "metrics": metrics},
    )


def load_agent(path: Path) -> tuple[ActorCritic, dict]:
    """An actor-critic saved by :func:`save_agent` (a run dir or its agent/ folder)."""
    from warmstart.hub import load_model

    path = Path(path)
    if (path / "agent" / "config.json").is_file():
        path = path / "agent"
    model, meta = load_model(path, ActorCritic.from_hub_config, kind=AGENT_KIND)
    return model, meta  # type: ignore[return-value]
