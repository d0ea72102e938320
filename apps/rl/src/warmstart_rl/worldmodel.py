"""ContextWM's world model: a recurrent state-space model whose image decoder reads a separately encoded
context frame, so the latent dynamics carry only what changes; action-free for video pretraining, with an
action-conditioned RSSM stacked on the action-free one for fine-tuning on a target environment (APV).

Seed: *Pre-training Contextualized World Models with In-the-wild Videos for Reinforcement Learning*
(Wu et al., arXiv 2305.18499), on APV (arXiv 2203.13880) and DreamerV2 (arXiv 2010.02193). Implemented by
hand, in miniature: a GRU + diagonal-Gaussian RSSM with KL balancing and free nats, ContextWM's context
encoder + cross-attention decoder (one scale; ``context = False`` gives the plain APV/Dreamer decoder),
reward and continuation heads, rewards learnt on DreamerV3's symlog scale (Atari rewards of 5-30 and
MiniGrid's [0, 1] alike). The split of the seed: the context encoder and the decoder carry the static
appearance, the action-free RSSM the change over time (pretrained from videos); fine-tuning keeps them and
stacks an action-conditioned RSSM whose posterior reads the action-free features (``stack``; the decoder,
reward and continuation heads then read the stacked features, as the reference fine-tuning code decodes
them). While training, the decoder's cross-attention sees a random quarter of the context tokens (the seed's
0.75 context mask ratio, ``context_mask``). ``stack = False`` instead attaches a zero-initialised action input
to the action-free RSSM. Left out: the multi-scale cross-attention, discrete latents.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from warmstart.errors import CheckpointError, ConfigError
from warmstart.hub import HubMixin, ModelCard

KIND = "rl.worldmodel"
LEGACY_KIND = "contextwm"
PAPER = "ContextWM, Wu et al., arXiv 2305.18499"


def symlog(x: torch.Tensor) -> torch.Tensor:
    """sign(x) log(1 + |x|) (DreamerV3): squashes large rewards and returns, identity-like near 0."""
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`symlog`."""
    return torch.sign(x) * torch.expm1(x.abs())


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
    context_mask: float = 0.75
    """ContextWM's context attention mask ratio: while training, this share of the context tokens is hidden
    at random from each frame's cross-attention (at least one is kept), so the decoder cannot copy the frame
    from its context and the latent dynamics must carry what changes; nothing is hidden at inference."""
    free_nats: float = 1.0
    """KL below this many nats per step is not penalised."""
    kl_balance: float = 0.8
    """Weight of the prior-side KL term (DreamerV2's KL balancing)."""
    reward_transform: str = "symlog"
    """'symlog': the reward head regresses symlog(r) and predicts symexp of its output; 'none': raw r."""
    stack: bool = True
    """Fine-tuning as APV / ContextWM: an action-conditioned RSSM is stacked on the pretrained action-free
    one (it reads the action-free posterior features and the actions; decoder, reward and continuation
    heads read its features, imagination rolls it out). False: a zero-initialised action input is attached
    to the action-free RSSM itself (fine-tuning starts exactly at the pretrained dynamics)."""


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
        self.mask_ratio = config.context_mask
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
            hidden = self.context_mask(context) if self.training and self.mask_ratio > 0 else None
            attended, _ = self.attention(
                self.norm(x), context, context, key_padding_mask=hidden, need_weights=False
            )
            x = x + attended  # (N, S, C)
        x = x.transpose(1, 2).reshape(n, self.width, self.spatial, self.spatial)
        x = self.up(x) + 0.5  # (N, 3, H', W')
        if x.shape[-1] != self.image_size:
            x = F.interpolate(
                x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
            )
        return x

    def context_mask(self, context: torch.Tensor) -> torch.Tensor:
        """(N, S, C) context tokens -> (N, S) bool, True where a token is hidden: round(mask_ratio x S) of
        them per frame, drawn at random, never all."""
        n, s = context.shape[:2]
        hide = min(round(self.mask_ratio * s), s - 1)
        ranks = torch.rand(n, s, device=context.device).argsort(-1).argsort(-1)  # a random permutation
        return ranks < hide


def zero_action_input(n_actions: int, hidden: int) -> nn.Linear | None:
    """The action input of the recurrent cell, zero-initialised (zero action == no action); None for 0."""
    if n_actions <= 0:
        return None
    layer = nn.Linear(n_actions, hidden, bias=False)
    nn.init.zeros_(layer.weight)
    return layer


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
        self.action_in = zero_action_input(n_actions, config.hidden)  # None: an action-free model
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
        if action is not None and self.action_in is not None:
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


PARTS = {"encoder": ("encoder", "embed"), "rssm": ("rssm",), "decoder": ("decoder", "context_encoder")}
"""The world model's transferable parts (what ``AgentConfig.reinit`` names) -> their modules."""


class WorldModel(nn.Module, HubMixin):
    """Encoder, context encoder, RSSM, context-conditioned decoder, reward and continuation heads.

    ``n_actions = 0`` is the action-free model video pretraining trains (any source, any or no action
    space); :meth:`with_actions` attaches a target's action input before fine-tuning.
    """

    warmstart_kind = KIND

    def __init__(self, n_actions: int, image_size: int, config: WorldModelConfig) -> None:
        super().__init__()
        self.config, self.n_actions, self.image_size = config, n_actions, image_size
        self.encoder = ConvEncoder(config.channels)
        with torch.no_grad():
            fmap = self.encoder(torch.zeros(1, 3, image_size, image_size))
        spatial, flat = fmap.shape[-1], fmap[0].numel()
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(flat, config.hidden), nn.ELU())
        self.context_encoder = ConvEncoder(config.channels) if config.context else None
        self.feat_dim = config.deter + config.stoch
        self.rssm = RSSM(config.hidden, 0 if config.stack else n_actions, config)  # the action-free one
        self.ac_rssm = RSSM(self.feat_dim, n_actions, config) if config.stack and n_actions > 0 else None
        self.decoder = ContextDecoder(self.feat_dim, config, spatial, image_size)
        self.reward = _mlp(self.feat_dim, config.hidden, 1)
        self.cont = _mlp(self.feat_dim, config.hidden, 1)

    def hub_config(self) -> dict[str, Any]:
        return {"model": asdict(self.config), "n_actions": self.n_actions, "image_size": self.image_size}

    @classmethod
    def from_hub_config(cls, config: dict[str, Any]) -> WorldModel:
        # saved before the stacked model / the context mask existed: not stacked, no mask
        raw = {"stack": False, "context_mask": 0.0, **config["model"]}
        model = WorldModelConfig(**{**raw, "channels": list(raw["channels"])})
        return cls(config["n_actions"], config["image_size"], model)

    def with_actions(self, n_actions: int) -> WorldModel:
        """Make the model action-conditioned for a target with ``n_actions`` actions (any source action
        space, or none): with ``stack``, a fresh action-conditioned RSSM on top of the pretrained
        action-free one (APV / ContextWM); without, the action-free RSSM's action input, zero-initialised
        so the dynamics start as the pretrained ones. A no-op when it already fits."""
        if n_actions != self.n_actions:
            device = next(self.parameters()).device
            if self.config.stack:
                self.ac_rssm = RSSM(self.feat_dim, n_actions, self.config).to(device) if n_actions else None
            else:
                layer = zero_action_input(n_actions, self.config.hidden)
                self.rssm.action_in = layer.to(device) if layer is not None else None
                self.rssm.n_actions = n_actions
            self.n_actions = n_actions
        return self

    def reinitialise(self, parts: Sequence[str], seed: int) -> WorldModel:
        """Draw ``parts`` (names of :data:`PARTS`) afresh from a generator seeded by ``seed`` alone (the
        global torch RNG is left as it was), keeping every other weight."""
        unknown = sorted(set(parts) - set(PARTS))
        if unknown:
            raise ConfigError(f"--agent.reinit {unknown[0]!r}: use any of {', '.join(PARTS)}")
        if not parts:
            return self
        device = next(self.parameters()).device
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1_000_003 + seed)
            fresh = WorldModel(self.n_actions, self.image_size, self.config)
        for part in parts:
            for name in PARTS[part]:
                module = getattr(fresh, name)
                setattr(self, name, module.to(device) if module is not None else None)
        return self

    @property
    def dynamics(self) -> RSSM:
        """The action-conditioned dynamics imagination rolls out (the stacked RSSM, or the one RSSM)."""
        return self.ac_rssm if self.ac_rssm is not None else self.rssm

    def initial_state(self, batch: int, device: torch.device) -> dict[str, torch.Tensor]:
        h, z = self.rssm.initial(batch, device)
        return {"h": h, "z": z, "af_h": h.clone(), "af_z": z.clone()}

    @torch.no_grad()
    def filter_step(
        self, state: dict[str, torch.Tensor], action: torch.Tensor | None, obs: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """One step of filtering while acting: a_{t-1} one-hot (B, A) or None, o_t (B, 3, H, W) -> the
        posterior state (a sample); ``[h, z]`` are the features the actor reads."""
        embed = self.encode(obs)
        if self.ac_rssm is None:
            h, _, _ = self.rssm.img_step(state["h"], state["z"], action)
            mean, std = self.rssm.obs_step(h, embed)
            return {"h": h, "z": mean + std * torch.randn_like(std)}
        af_h, _, _ = self.rssm.img_step(state["af_h"], state["af_z"], None)
        mean, std = self.rssm.obs_step(af_h, embed)
        af_z = mean + std * torch.randn_like(std)
        h, _, _ = self.ac_rssm.img_step(state["h"], state["z"], action)
        mean, std = self.ac_rssm.obs_step(h, torch.cat([af_h, af_z], -1))
        return {"h": h, "z": mean + std * torch.randn_like(std), "af_h": af_h, "af_z": af_z}

    def predict_reward(self, feat: torch.Tensor) -> torch.Tensor:
        """Reward of latent features (..., F) -> (...), on the environment's scale."""
        out = self.reward(feat).squeeze(-1)
        return symexp(out) if self.config.reward_transform == "symlog" else out

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, E)."""
        return self.embed(self.encoder(obs))

    def context_tokens(self, frames: torch.Tensor) -> torch.Tensor | None:
        """Context frames (B, 3, H, W) -> tokens (B, S, C) for the decoder's cross-attention."""
        if self.context_encoder is None:
            return None
        return self.context_encoder(frames).flatten(2).transpose(1, 2)

    def loss(
        self,
        batch: dict[str, torch.Tensor],
        use_actions: bool,
        generator: torch.Generator | None = None,
        reward_bonus: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, float], dict[str, torch.Tensor]]:
        """ELBO of a clip (+ reward/continuation when ``use_actions``); returns loss, metrics, posterior states.

        batch: obs (B, T, 3, H, W) float, is_first (B, T); with actions also action (B, T, A) one-hot
        (a_{t-1}), reward (B, T) and cont (B, T). ``reward_bonus`` (APV's intrinsic bonus): detached
        action-free features (B, T, F) -> a term (B, T') added to the reward of the first T' steps, which
        alone the reward head then learns (APV's code does exactly this).
        """
        obs, is_first = batch["obs"], batch["is_first"].float()
        b, t_len = obs.shape[:2]
        embeds = self.encode(obs.flatten(0, 1)).view(b, t_len, -1)  # (B, T, E)
        actions = batch["action"].float() if use_actions else None
        stacked = use_actions and self.ac_rssm is not None
        states = self.rssm.observe(embeds, None if stacked else actions, is_first)
        af_feat = torch.cat([states["h"], states["z"]], -1)  # (B, T, F): the action-free features
        kl_parts = [states]
        if stacked:  # APV: the action-conditioned RSSM reads the action-free posterior features
            assert self.ac_rssm is not None
            states = self.ac_rssm.observe(af_feat, actions, is_first)
            kl_parts.append(states)
        feat = torch.cat([states["h"], states["z"]], -1)  # (B, T, F)
        # ContextWM: the context is one random frame of the clip, encoded separately
        pick = torch.randint(t_len, (b,), generator=generator, device="cpu").to(obs.device)
        tokens = self.context_tokens(obs[torch.arange(b, device=obs.device), pick])  # (B, S, C)
        if tokens is not None:
            tokens = tokens.repeat_interleave(t_len, 0)  # (B*T, S, C)
        recon = self.decoder(feat.flatten(0, 1), tokens)  # (B*T, 3, H, W)
        recon_loss = (recon - obs.flatten(0, 1)).pow(2).sum((1, 2, 3)).mean()
        c = self.config
        kl_loss, kl_prior = torch.zeros((), device=obs.device), torch.zeros((), device=obs.device)
        for part in kl_parts:  # the action-free RSSM's KL, and the stacked one's
            pm, ps, qm, qs = part["prior_mean"], part["prior_std"], part["post_mean"], part["post_std"]
            prior_side = _kl(qm.detach(), qs.detach(), pm, ps).mean()
            post_side = _kl(qm, qs, pm.detach(), ps.detach()).mean()
            kl_loss = kl_loss + c.kl_balance * prior_side.clamp(min=c.free_nats)
            kl_loss = kl_loss + (1 - c.kl_balance) * post_side.clamp(min=c.free_nats)
            kl_prior = kl_prior + prior_side
        loss = recon_loss + kl_loss
        metrics = {"recon": recon_loss.item(), "kl": kl_prior.item()}
        if use_actions:
            target, reward_feat = batch["reward"].float(), feat
            if reward_bonus is not None:
                bonus = reward_bonus(af_feat.detach())  # (B, T')
                target, reward_feat = target[:, : bonus.shape[1]] + bonus, feat[:, : bonus.shape[1]]
            if self.config.reward_transform == "symlog":
                target = symlog(target)
            reward_loss = (self.reward(reward_feat).squeeze(-1) - target).pow(2).mean()
            cont_loss = F.binary_cross_entropy_with_logits(self.cont(feat).squeeze(-1), batch["cont"])
            loss = loss + reward_loss + cont_loss
            metrics |= {"reward_loss": reward_loss.item(), "cont_bce": cont_loss.item()}
        return loss, metrics, {"h": states["h"], "z": states["z"], "af_feat": af_feat}


# -- weights on disk ------------------------------------------------------------------------------
def save_world_model(
    model: WorldModel, directory: Path, env: dict | None, metrics: dict | None = None, **extra: Any
) -> Path:
    """Save in the core's hub format (``rl.worldmodel``); ``env`` is the environment it was fitted to
    (None for a video-pretrained, action-free model), ``extra`` e.g. the video sources."""
    from warmstart.hub import save_model

    metrics = metrics or {}
    card = ModelCard(
        title=f"ContextWM world model ({'action-free' if model.n_actions == 0 else f'{model.n_actions} actions'}, "
        f"{model.image_size} px)",
        paper=PAPER,
        metrics={k: v for k, v in metrics.items() if isinstance(v, int | float)},
        tags=["reinforcement-learning", "world-model"],
    )
    return save_model(
        model,
        directory,
        kind=KIND,
        config=model.hub_config(),
        card=card,
        extra={"env": env, "metrics": metrics, **extra},
    )


def load_world_model(path: Path) -> tuple[WorldModel, dict]:
    """A world model saved by ``worldmodel-pretrain``/``-finetune`` (a run dir or its worldmodel/ folder),
    in the hub format or the app's first layout. Returns (model, spec) with spec = {model, n_actions,
    frame_shape, env, metrics, ...}."""
    from warmstart.hub import load_model

    path = Path(path)
    if (path / "worldmodel" / "config.json").is_file():
        path = path / "worldmodel"
    config_path, weights = path / "config.json", path / "model.safetensors"
    if not config_path.is_file() or not weights.is_file():
        raise CheckpointError(
            f"{path}: expected config.json and model.safetensors (a world-model checkpoint)"
        )
    try:
        raw = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{config_path} is not valid JSON ({exc}); save the model again") from None
    if "warmstart_kind" in raw:
        model, meta = load_model(path, WorldModel.from_hub_config, kind=KIND)
        cfg = meta["config"]
        spec = {k: v for k, v in meta.items() if k not in ("config", "files")}
        return model, spec | {
            "model": cfg["model"],
            "n_actions": cfg["n_actions"],
            "frame_shape": [cfg["image_size"], cfg["image_size"], 3],
        }  # type: ignore[return-value]
    return _load_legacy(path, raw)


def _load_legacy(path: Path, spec: dict) -> tuple[WorldModel, dict]:
    """The first layout: config.json = {kind: contextwm, model, n_actions, frame_shape, env, metrics}."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if spec.get("kind") != LEGACY_KIND:
        raise CheckpointError(
            f"{path / 'config.json'}: a {spec.get('kind')!r} checkpoint, but a world model is needed"
        )
    config = WorldModelConfig(**{"reward_transform": "none", **spec["model"]})  # raw rewards then
    model = WorldModel(spec["n_actions"], spec["frame_shape"][0], config)
    try:
        model.load_state_dict(load_file(str(path / "model.safetensors")))
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise CheckpointError(
            f"{path / 'model.safetensors'} cannot be read ({type(exc).__name__}: truncated, corrupt or of "
            f"another architecture); pretrain the model again"
        ) from None
    return model, spec
