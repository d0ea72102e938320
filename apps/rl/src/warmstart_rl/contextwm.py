"""ContextWM: action-free, context-separated world-model pretraining on videos, then action-conditioned
fine-tuning inside a compact Dreamer-style agent that learns its policy in imagination.

Seed: *Pre-training Contextualized World Models with In-the-wild Videos for Reinforcement Learning*
(Wu et al., arXiv 2305.18499), which builds on APV (*Reinforcement Learning with Action-Free
Pre-Training from Videos*, arXiv 2203.13880) and DreamerV1/V2 (arXiv 1912.01603, 2010.02193).
Implemented, in miniature and by hand (no maintained library ships a Dreamer usable as a module):

- a recurrent state-space model (GRU deterministic state + diagonal-Gaussian stochastic state, KL balancing
  and free nats) whose dynamics take *no actions* during pretraining on frames-only videos;
- ContextWM's **context encoder**: a separate CNN encodes one randomly chosen frame of each training clip
  and the image decoder reads its feature map through cross-attention, so the latent dynamics need only
  carry what changes over time (``WorldModelConfig.context = False`` gives the plain APV/Dreamer decoder);
- fine-tuning with actions: the pretrained model gains an action input to its recurrent cell, zero-initialised
  so fine-tuning starts exactly at the pretrained action-free dynamics, plus reward and continuation heads;
- an actor-critic trained on imagined rollouts from posterior states (REINFORCE with a learned baseline for
  the discrete actions as in DreamerV3, lambda-returns, a slow target critic, DreamerV3's return
  normalisation: advantages divided by max(1, EMA of the 5th-95th percentile range of the returns), an
  entropy bonus on the scale of those normalised returns).

Defaults that make the agent learn in CPU minutes (measured single-seed runs, README; the first version did
not beat a random policy): entropy 1e-2 with DreamerV3's 1 % unimix in the actor (3e-2 kept the policy
uniform, entropy ~1.0 of ln 3 = 1.10; 1e-3 with a faster actor, or 3e-3 without unimix and fewer updates,
collapsed it onto a bad deterministic policy before the reward head had seen enough goals), one model +
actor-critic update every 2 env steps (not 5), imagination horizon 15, and acting from a posterior
*sample*, as the imagined rollouts start from.

Left out: APV's separate stacked action-conditional module (replaced by the zero-initialised action input),
APV/ContextWM's video-based intrinsic bonus, the multi-scale cross-attention (one scale here), DreamerV3's
discrete latents and symlog/two-hot heads (rewards here lie in [0, 1]).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from warmstart.engine import Engine, EngineConfig
from warmstart.errors import CheckpointError, ConfigError, DataError
from warmstart_rl.data import Corpus, EnvConfig, make_env, to_chw

log = logging.getLogger(__name__)

KIND = "contextwm"


# -- the world model ------------------------------------------------------------------------------
@dataclass
class WorldModelConfig:
    channels: list[int] = field(default_factory=lambda: [16, 32])
    """Widths of the stride-2 4x4 conv layers of the observation and context encoders."""
    deter: int = 64
    """Deterministic (GRU) state size."""
    stoch: int = 16
    """Stochastic (Gaussian) state size."""
    hidden: int = 64
    """Width of the MLPs and of the embedding of a frame."""
    context: bool = True
    """ContextWM's context encoder + cross-attention decoder; false: the plain APV/Dreamer decoder."""
    attention_heads: int = 2
    """Heads of the decoder's cross-attention to the context frame."""
    free_nats: float = 1.0
    """KL below this many nats per step is not penalised."""
    kl_balance: float = 0.8
    """Weight of the prior-side KL term (DreamerV2's KL balancing)."""


class ConvEncoder(nn.Module):
    """(N, 3, H, W) in [0, 1] -> (N, C, s, s) feature map; 4x4 convolutions of stride 2."""

    def __init__(self, channels: list[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = 3
        for width in channels:
            layers += [nn.Conv2d(prev, width, 4, stride=2, padding=1), nn.ELU()]
            prev = width
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x - 0.5)


class ContextDecoder(nn.Module):
    """Latent features (N, F) [+ context tokens (N, S, C)] -> frame (N, 3, H, W).

    With context, the coarsest decoder map attends to the context encoder's tokens (ContextWM's
    cross-attention, one scale) before the transposed convolutions upsample it.
    """

    def __init__(self, feat_dim: int, config: WorldModelConfig, spatial: int, image_size: int) -> None:
        super().__init__()
        width = config.channels[-1]
        self.spatial, self.width, self.image_size = spatial, width, image_size
        self.fc = nn.Linear(feat_dim, width * spatial * spatial)
        self.attention = (
            nn.MultiheadAttention(width, config.attention_heads, batch_first=True) if config.context else None
        )
        self.norm = nn.LayerNorm(width) if config.context else None
        ups: list[nn.Module] = []
        for i in reversed(range(len(config.channels))):
            out = config.channels[i - 1] if i > 0 else 3
            ups.append(nn.ConvTranspose2d(config.channels[i], out, 4, stride=2, padding=1))
            if i > 0:
                ups.append(nn.ELU())
        self.up = nn.Sequential(*ups)

    def forward(self, feat: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        n = feat.shape[0]
        x = self.fc(feat).view(n, self.width, self.spatial * self.spatial).transpose(1, 2)  # (N, S, C)
        if self.attention is not None and context is not None:
            attended, _ = self.attention(self.norm(x), context, context, need_weights=False)
            x = x + attended  # (N, S, C)
        x = x.transpose(1, 2).reshape(n, self.width, self.spatial, self.spatial)
        x = self.up(x) + 0.5  # (N, 3, H', W')
        if x.shape[-1] != self.image_size:
            x = F.interpolate(
                x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
            )
        return x


def _mlp(inp: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(inp, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU(), nn.Linear(hidden, out)
    )


class RSSM(nn.Module):
    """Recurrent state-space model. h_t = GRU(h_{t-1}, f(z_{t-1}) + g(a_{t-1})); p(z_t|h_t); q(z_t|h_t, e_t).

    ``g`` (the action input) is zero-initialised: with no actions (video pretraining) or at the start of
    fine-tuning, the dynamics are the action-free ones.
    """

    def __init__(self, embed_dim: int, n_actions: int, config: WorldModelConfig) -> None:
        super().__init__()
        self.config, self.n_actions = config, n_actions
        self.state_in = nn.Sequential(nn.Linear(config.stoch, config.hidden), nn.ELU())
        self.action_in = nn.Linear(n_actions, config.hidden, bias=False)  # zero action == no action
        nn.init.zeros_(self.action_in.weight)
        self.cell = nn.GRUCell(config.hidden, config.deter)
        self.prior = nn.Sequential(
            nn.Linear(config.deter, config.hidden), nn.ELU(), nn.Linear(config.hidden, 2 * config.stoch)
        )
        self.posterior = nn.Sequential(
            nn.Linear(config.deter + embed_dim, config.hidden),
            nn.ELU(),
            nn.Linear(config.hidden, 2 * config.stoch),
        )

    @staticmethod
    def _gaussian(stats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, raw = stats.chunk(2, -1)
        return mean, F.softplus(raw) + 0.1

    def initial(self, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(batch, self.config.deter, device=device), torch.zeros(
            batch, self.config.stoch, device=device
        )

    def img_step(
        self, h: torch.Tensor, z: torch.Tensor, action: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One prior step: (B, D), (B, S), one-hot (B, A) or None -> h_t (B, D), prior mean/std (B, S)."""
        x = self.state_in(z)
        if action is not None:
            x = x + self.action_in(action)
        h = self.cell(x, h)
        mean, std = self._gaussian(self.prior(h))
        return h, mean, std

    def obs_step(self, h: torch.Tensor, embed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._gaussian(self.posterior(torch.cat([h, embed], -1)))

    def observe(
        self, embeds: torch.Tensor, actions: torch.Tensor | None, is_first: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Filter a clip: embeds (B, T, E), actions a_{t-1} one-hot (B, T, A) or None, is_first (B, T).

        The state is reset wherever ``is_first`` is set (clips may span episode boundaries).
        """
        b, t_len = embeds.shape[:2]
        h, z = self.initial(b, embeds.device)
        out: dict[str, list[torch.Tensor]] = {
            k: [] for k in ("h", "z", "prior_mean", "prior_std", "post_mean", "post_std")
        }
        for t in range(t_len):
            keep = (1.0 - is_first[:, t]).unsqueeze(-1)  # (B, 1)
            h, z = h * keep, z * keep
            action = actions[:, t] * keep if actions is not None else None
            h, prior_mean, prior_std = self.img_step(h, z, action)
            post_mean, post_std = self.obs_step(h, embeds[:, t])
            z = post_mean + post_std * torch.randn_like(post_std)
            for key, value in zip(out, (h, z, prior_mean, prior_std, post_mean, post_std), strict=True):
                out[key].append(value)
        return {k: torch.stack(v, 1) for k, v in out.items()}  # each (B, T, .)


def _kl(mean_a: torch.Tensor, std_a: torch.Tensor, mean_b: torch.Tensor, std_b: torch.Tensor) -> torch.Tensor:
    """KL(N(a) || N(b)) summed over the last dim."""
    var_a, var_b = std_a.pow(2), std_b.pow(2)
    return 0.5 * (var_a / var_b + (mean_b - mean_a).pow(2) / var_b - 1 + var_b.log() - var_a.log()).sum(-1)


class WorldModel(nn.Module):
    """Encoder, context encoder, RSSM, context-conditioned decoder, reward and continuation heads."""

    def __init__(self, n_actions: int, image_size: int, config: WorldModelConfig) -> None:
        super().__init__()
        self.config, self.n_actions, self.image_size = config, n_actions, image_size
        self.encoder = ConvEncoder(config.channels)
        with torch.no_grad():
            fmap = self.encoder(torch.zeros(1, 3, image_size, image_size))
        spatial, flat = fmap.shape[-1], fmap[0].numel()
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(flat, config.hidden), nn.ELU())
        self.context_encoder = ConvEncoder(config.channels) if config.context else None
        self.rssm = RSSM(config.hidden, n_actions, config)
        self.feat_dim = config.deter + config.stoch
        self.decoder = ContextDecoder(self.feat_dim, config, spatial, image_size)
        self.reward = _mlp(self.feat_dim, config.hidden, 1)
        self.cont = _mlp(self.feat_dim, config.hidden, 1)

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, E)."""
        return self.embed(self.encoder(obs))

    def context_tokens(self, frames: torch.Tensor) -> torch.Tensor | None:
        """Context frames (B, 3, H, W) -> tokens (B, S, C) for the decoder's cross-attention."""
        if self.context_encoder is None:
            return None
        return self.context_encoder(frames).flatten(2).transpose(1, 2)

    def loss(
        self, batch: dict[str, torch.Tensor], use_actions: bool, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float], dict[str, torch.Tensor]]:
        """ELBO of a clip (+ reward/continuation when ``use_actions``); returns loss, metrics, posterior states.

        batch: obs (B, T, 3, H, W) float, is_first (B, T); with actions also action (B, T, A) one-hot
        (a_{t-1}), reward (B, T) and cont (B, T).
        """
        obs, is_first = batch["obs"], batch["is_first"].float()
        b, t_len = obs.shape[:2]
        embeds = self.encode(obs.flatten(0, 1)).view(b, t_len, -1)  # (B, T, E)
        states = self.rssm.observe(embeds, batch["action"].float() if use_actions else None, is_first)
        feat = torch.cat([states["h"], states["z"]], -1)  # (B, T, F)
        # ContextWM: the context is one random frame of the clip, encoded separately
        pick = torch.randint(t_len, (b,), generator=generator, device="cpu").to(obs.device)
        tokens = self.context_tokens(obs[torch.arange(b, device=obs.device), pick])  # (B, S, C)
        if tokens is not None:
            tokens = tokens.repeat_interleave(t_len, 0)  # (B*T, S, C)
        recon = self.decoder(feat.flatten(0, 1), tokens)  # (B*T, 3, H, W)
        recon_loss = (recon - obs.flatten(0, 1)).pow(2).sum((1, 2, 3)).mean()
        c = self.config
        pm, ps, qm, qs = states["prior_mean"], states["prior_std"], states["post_mean"], states["post_std"]
        kl_prior = _kl(qm.detach(), qs.detach(), pm, ps).mean()
        kl_post = _kl(qm, qs, pm.detach(), ps.detach()).mean()
        kl_loss = c.kl_balance * kl_prior.clamp(min=c.free_nats) + (1 - c.kl_balance) * kl_post.clamp(
            min=c.free_nats
        )
        loss = recon_loss + kl_loss
        metrics = {"recon": recon_loss.item(), "kl": kl_prior.item()}
        if use_actions:
            reward_loss = (self.reward(feat).squeeze(-1) - batch["reward"]).pow(2).mean()
            cont_loss = F.binary_cross_entropy_with_logits(self.cont(feat).squeeze(-1), batch["cont"])
            loss = loss + reward_loss + cont_loss
            metrics |= {"reward_mse": reward_loss.item(), "cont_bce": cont_loss.item()}
        return loss, metrics, {"h": states["h"], "z": states["z"]}


# -- pretraining on videos (action-free) ----------------------------------------------------------
class ClipDataset(Dataset):
    """Clips of ``length`` consecutive frames from a stream of episodes: {obs (T, 3, H, W), is_first (T,)}.

    Frames only: the videos' actions (if any) are never read. Episodes are concatenated; ``is_first``
    marks where the model's state must be reset.
    """

    def __init__(self, frames: list[np.ndarray], length: int) -> None:
        self.frames = np.concatenate(frames)  # (N, H, W, 3) uint8
        starts = np.cumsum([0] + [len(f) for f in frames[:-1]])
        self.is_first = np.zeros(len(self.frames), np.float32)
        self.is_first[starts] = 1.0
        if len(self.frames) < length:
            raise DataError(f"the videos hold {len(self.frames)} frames, fewer than one clip of {length}")
        self.length = length

    def __len__(self) -> int:
        return len(self.frames) - self.length + 1

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        span = slice(item, item + self.length)
        is_first = self.is_first[span].copy()
        is_first[0] = 1.0  # a clip starts from a fresh state
        return {"obs": torch.from_numpy(to_chw(self.frames[span])), "is_first": torch.from_numpy(is_first)}


class _PretrainTask:
    def __init__(self, model: WorldModel, heldout: ClipDataset | None, seed: int) -> None:
        self.model, self.heldout = model, heldout
        self.generator = torch.Generator().manual_seed(seed)

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        loss, metrics, _ = _unwrap(self.model).loss(batch, use_actions=False, generator=self.generator)
        return loss, metrics | {"samples": batch["obs"].shape[0]}

    def evaluate(self) -> dict[str, float]:
        if self.heldout is None:
            return {}
        return {"recon": heldout_recon(_unwrap(self.model), self.heldout)}


def _unwrap(model: nn.Module) -> WorldModel:
    return getattr(model, "module", model)


@torch.no_grad()
def heldout_recon(model: WorldModel, clips: ClipDataset, n: int = 32, seed: int = 0) -> float:
    """Mean per-frame squared reconstruction error on ``n`` held-out clips (posterior, action-free)."""
    rng = np.random.default_rng(seed)
    items = [clips[int(i)] for i in rng.choice(len(clips), size=min(n, len(clips)), replace=False)]
    batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
    device = next(model.parameters()).device
    _, metrics, _ = model.loss(
        {k: v.to(device) for k, v in batch.items()}, False, torch.Generator().manual_seed(seed)
    )
    return metrics["recon"]


@dataclass
class PretrainConfig:
    model: WorldModelConfig = field(default_factory=WorldModelConfig)
    """World-model architecture (kept for fine-tuning)."""
    clip_length: int = 16
    """Frames per training clip."""
    heldout_fraction: float = 0.1
    """Share of the videos held out for the reconstruction figure."""


def pretrain_world_model(
    corpus: Corpus, config: PretrainConfig, engine: EngineConfig, run_dir: Path | None
) -> tuple[WorldModel, dict[str, float]]:
    """Action-free pretraining on every episode's frames; saves ``<run_dir>/worldmodel/``."""
    episodes = [e.frames for e in corpus.episodes]
    n_held = int(round(len(episodes) * config.heldout_fraction)) if len(episodes) > 1 else 0
    train = ClipDataset(episodes[: len(episodes) - n_held], config.clip_length)
    held_frames = sum(len(f) for f in episodes[len(episodes) - n_held :])
    held = (
        ClipDataset(episodes[len(episodes) - n_held :], config.clip_length)
        if n_held and held_frames >= config.clip_length
        else None
    )
    shape = corpus.meta["frame_shape"]
    torch.manual_seed(engine.train.seed)
    model = WorldModel(corpus.n_actions, shape[0], config.model)
    before = heldout_recon(model, held) if held is not None else float("nan")
    engine = copy.deepcopy(engine)
    engine.train.micro_batch_size = min(engine.train.micro_batch_size, len(train))
    summary = Engine(engine, run_dir).fit(_PretrainTask(model, held, engine.train.seed), train)
    model = model.cpu().eval()
    metrics = {
        "wm/frames": float(len(train.frames)),
        "wm/heldout_recon_init": before,
        "wm/heldout_recon": heldout_recon(model, held) if held is not None else float("nan"),
        "wm/seconds": summary.seconds,
    }
    if run_dir is not None:
        save_world_model(model, Path(run_dir) / "worldmodel", corpus.meta["env"], metrics)
    return model, metrics


def save_world_model(model: WorldModel, directory: Path, env: dict, metrics: dict | None = None) -> Path:
    from warmstart_rl.models import save_model

    spec = {
        "model": asdict(model.config),
        "n_actions": model.n_actions,
        "frame_shape": [model.image_size, model.image_size, 3],
        "env": env,
        "metrics": metrics or {},
    }
    return save_model(model, directory, KIND, spec)


def load_world_model(path: Path) -> tuple[WorldModel, dict]:
    """A world model saved by ``worldmodel-pretrain``/``-finetune`` (a run dir or its worldmodel/ folder)."""
    import json

    from safetensors.torch import load_file

    path = Path(path)
    if (path / "worldmodel" / "config.json").is_file():
        path = path / "worldmodel"
    config_path, weights = path / "config.json", path / "model.safetensors"
    if not config_path.is_file() or not weights.is_file():
        raise CheckpointError(
            f"{path}: expected config.json and model.safetensors (a world-model checkpoint)"
        )
    spec = json.loads(config_path.read_text())
    if spec.get("kind") != KIND:
        raise CheckpointError(
            f"{config_path}: a {spec.get('kind')!r} checkpoint, but a world model is needed"
        )
    model = WorldModel(spec["n_actions"], spec["frame_shape"][0], WorldModelConfig(**spec["model"]))
    model.load_state_dict(load_file(str(weights)))
    return model, spec


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


class ActorCritic(nn.Module):
    def __init__(self, feat_dim: int, n_actions: int, hidden: int, unimix: float = 0.0) -> None:
        super().__init__()
        self.actor = _mlp(feat_dim, hidden, n_actions)
        self.critic = _mlp(feat_dim, hidden, 1)
        self.target = copy.deepcopy(self.critic).requires_grad_(False)
        self.unimix = unimix

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


def imagine_update(
    world_model: WorldModel,
    agent: ActorCritic,
    optimizer: torch.optim.Optimizer,
    start_h: torch.Tensor,
    start_z: torch.Tensor,
    config: AgentConfig,
    scale: list[float],
) -> dict[str, float]:
    """Roll the actor out in the (frozen) world model from posterior states; update actor and critic."""
    h, z = start_h.detach(), start_z.detach()  # (N, D), (N, S)
    feats, log_probs, entropies = [torch.cat([h, z], -1)], [], []
    for _ in range(config.horizon):
        dist = agent.policy(feats[-1])
        action = dist.sample()
        log_probs.append(dist.log_prob(action))
        entropies.append(dist.entropy())
        with torch.no_grad():
            h, mean, std = world_model.rssm.img_step(h, z, F.one_hot(action, world_model.n_actions).float())
            z = mean + std * torch.randn_like(std)
        feats.append(torch.cat([h, z], -1))
    feat = torch.stack(feats)  # (H+1, N, F)
    with torch.no_grad():
        rewards = world_model.reward(feat[1:]).squeeze(-1)  # (H, N)
        discounts = config.gamma * torch.sigmoid(world_model.cont(feat[1:])).squeeze(-1)  # (H, N)
        values = agent.target(feat).squeeze(-1)  # (H+1, N)
        returns = lambda_returns(rewards, discounts, values, config.lam)  # (H, N)
        weights = torch.cumprod(torch.cat([torch.ones_like(discounts[:1]), discounts[:-1]]), 0)  # (H, N)
        # DreamerV3 return normalisation: divide by max(1, EMA of the 5th-95th percentile range)
        spread = torch.quantile(returns, 0.95) - torch.quantile(returns, 0.05)
        scale[0] = 0.99 * scale[0] + 0.01 * float(spread)
        advantage = (returns - values[:-1]) / max(1.0, scale[0])
    logp, entropy = torch.stack(log_probs), torch.stack(entropies)  # (H, N)
    actor_loss = -(weights * (logp * advantage + config.entropy * entropy)).mean()
    critic_loss = 0.5 * (weights * (agent.critic(feat[:-1].detach()).squeeze(-1) - returns).pow(2)).mean()
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
    """A flat stream of steps: obs, a_{t-1} (one-hot), r_t, is_first, cont; clips sampled uniformly."""

    def __init__(self, n_actions: int) -> None:
        self.n_actions = n_actions
        self.obs: list[np.ndarray] = []
        self.rows: list[tuple[int, float, float, float]] = []  # (action or -1, reward, is_first, cont)

    def add(self, obs: np.ndarray, action: int, reward: float, is_first: bool, terminal: bool) -> None:
        self.obs.append(obs)
        self.rows.append((action, reward, float(is_first), 0.0 if terminal else 1.0))

    def __len__(self) -> int:
        return len(self.obs)

    def sample(self, batch: int, length: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        starts = rng.integers(0, len(self.obs) - length + 1, size=batch)
        idx = starts[:, None] + np.arange(length)[None]  # (B, T)
        rows = np.asarray(self.rows, np.float32)[idx]  # (B, T, 4)
        actions = rows[..., 0].astype(np.int64)
        one_hot = np.zeros((*actions.shape, self.n_actions), np.float32)
        valid = actions >= 0
        one_hot[valid, actions[valid]] = 1.0
        is_first = rows[..., 2].copy()
        is_first[:, 0] = 1.0
        obs = np.stack([self.obs[i] for i in idx.reshape(-1)]).reshape(*idx.shape, *self.obs[0].shape)
        return {
            "obs": torch.from_numpy(
                to_chw(obs.reshape(-1, *obs.shape[2:])).reshape(*idx.shape, 3, *obs.shape[2:4])
            ),
            "action": torch.from_numpy(one_hot),
            "reward": torch.from_numpy(rows[..., 1]),
            "is_first": torch.from_numpy(is_first),
            "cont": torch.from_numpy(rows[..., 3]),
        }


def train_agent(
    env_config: EnvConfig,
    config: AgentConfig,
    world_model: WorldModel,
    seed: int = 0,
) -> dict[str, Any]:
    """Dreamer-style loop: act from the filtered latent state, store, learn the model, learn in imagination.

    ``world_model`` is fine-tuned in place (a pretrained one or a fresh one: the scratch baseline).
    Returns {curve: [(step, return)], final_return, seconds, steps_per_s, agent, metrics}.
    """
    if config.clip_length < 2 or config.total_steps <= config.prefill:
        raise ConfigError(
            f"--agent.total_steps {config.total_steps} must exceed --agent.prefill {config.prefill}, "
            f"clip_length >= 2"
        )
    env = make_env(env_config, seed=seed)
    n_actions = int(env.action_space.n)
    if n_actions != world_model.n_actions or env.observation_space.shape[0] != world_model.image_size:
        raise CheckpointError(
            f"the world model takes {world_model.image_size}px frames / {world_model.n_actions} actions; "
            f"{env_config.env_id} gives {env.observation_space.shape} / Discrete({n_actions}); "
            f"pretrain on videos of this environment"
        )
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    agent = ActorCritic(world_model.feat_dim, n_actions, config.hidden, config.unimix)
    wm_opt = torch.optim.Adam(world_model.parameters(), lr=config.wm_lr)
    ac_opt = torch.optim.Adam(
        list(agent.actor.parameters()) + list(agent.critic.parameters()), lr=config.ac_lr
    )
    replay, scale = Replay(n_actions), [0.0]
    curve: list[tuple[int, float]] = []
    metrics: dict[str, float] = {}
    obs, _ = env.reset(seed=seed)
    replay.add(obs, -1, 0.0, True, False)
    h, z = world_model.rssm.initial(1, torch.device("cpu"))
    prev_action: torch.Tensor | None = None
    episode_return, episode = 0.0, 0
    start = time.perf_counter()
    for step in range(1, config.total_steps + 1):
        with torch.no_grad():
            h, _, _ = world_model.rssm.img_step(h, z, prev_action)
            mean, std = world_model.rssm.obs_step(h, world_model.encode(torch.from_numpy(to_chw(obs[None]))))
            z = mean + std * torch.randn_like(std)  # a posterior sample, as the imagined rollouts start from
            if step <= config.prefill:
                action = int(rng.integers(n_actions))
            else:
                action = int(agent.policy(torch.cat([h, z], -1)).sample())
        obs, reward, terminated, truncated, _ = env.step(action)
        episode_return += float(reward)
        replay.add(obs, action, float(reward), False, terminated)
        prev_action = F.one_hot(torch.tensor([action]), n_actions).float()
        if terminated or truncated:
            curve.append((step, episode_return))
            episode += 1
            obs, _ = env.reset(seed=seed * 100_003 + episode)
            replay.add(obs, -1, 0.0, True, False)
            h, z = world_model.rssm.initial(1, torch.device("cpu"))
            prev_action, episode_return = None, 0.0
        if step >= config.prefill and step % config.train_every == 0 and len(replay) > config.clip_length:
            batch = replay.sample(config.batch_size, config.clip_length, rng)
            world_model.train()
            loss, wm_metrics, states = world_model.loss(batch, use_actions=True)
            wm_opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(world_model.parameters(), 100.0)
            wm_opt.step()
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
    tail = [r for _, r in curve[-20:]]
    return {
        "curve": curve,
        "final_return": float(np.mean(tail)) if tail else float("nan"),
        "seconds": seconds,
        "steps_per_s": config.total_steps / seconds,
        "agent": agent,
        "metrics": metrics,
    }
