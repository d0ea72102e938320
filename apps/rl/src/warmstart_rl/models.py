"""Pixel networks for VPT: a small convolutional encoder, the non-causal inverse-dynamics model, the causal
policy, and the stable-baselines3 features extractor that takes the policy's weights.

Seed: *Video PreTraining (VPT)* (Baker et al., arXiv 2206.11795). VPT's IDM is a 3D convolution over 128
frames followed by a ResNet and transformer; ours fuses a short window of frames (past *and* future)
along channels into one small CNN, which is enough for gymnasium-sized frames. The policy is causal (it
sees a stack of the last k frames, ``PolicyConfig.frame_stack``: ALE 4, MiniGrid 1) and is built so that
its two parts map one-to-one onto SB3's ``ActorCriticPolicy``: ``encoder`` becomes
``features_extractor.encoder`` and ``head`` becomes ``action_net`` (with ``net_arch=dict(pi=[], vf=[...])``),
so a BC checkpoint loads into PPO unchanged. Written by hand (a few layers): no library offers this pairing.

Every model of the app is saved in the core's one format (:mod:`warmstart.hub`: ``config.json`` +
``model.safetensors`` + a model card) and reloads with one call (``InverseDynamicsModel.from_pretrained``,
``PixelPolicy.from_pretrained`` or :func:`load_model`); folders of the app's first layout (a ``config.json``
with a top-level ``kind``) still load through :func:`load_model`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from warmstart.errors import CheckpointError
from warmstart.hub import HubMixin, ModelCard

VPT_PAPER = "Video PreTraining (VPT), Baker et al., arXiv 2206.11795"


@dataclass
class EncoderConfig:
    channels: list[int] = field(default_factory=lambda: [16, 32, 32])
    """Output channels of the 3x3 conv layers (the 2nd and later stride 2)."""
    features_dim: int = 64
    """Width of the feature vector the heads read."""
    first_stride: int = 1
    """Stride of the first conv layer (2 for 64-84 px frames: 4x less compute at full-size inputs)."""
    frame_diff: bool = False
    """With a stack of k frames, also feed the k - 1 differences of consecutive frames (computed inside the
    network, so the SB3 extractor computes them too): a tiny moving object (Breakout's ball) stands out."""


class PixelEncoder(nn.Module):
    """(B, C_in, H, W) float in [0, 1] -> (B, features_dim); ``frames`` k > 1: C_in holds k stacked frames
    (oldest first), and with ``config.frame_diff`` their k - 1 differences are appended before the convs."""

    def __init__(self, in_channels: int, image_size: int, config: EncoderConfig, frames: int = 1) -> None:
        super().__init__()
        self.frames = frames if config.frame_diff and frames > 1 else 1
        layers: list[nn.Module] = []
        fused = prev = in_channels + (in_channels // frames) * (self.frames - 1)
        for i, width in enumerate(config.channels):
            stride = config.first_stride if i == 0 else 2
            layers += [nn.Conv2d(prev, width, 3, stride=stride, padding=1), nn.ReLU()]
            prev = width
        self.conv = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            flat = self.conv(torch.zeros(1, fused, image_size, image_size)).shape[1]
        self.proj = nn.Sequential(nn.Linear(flat, config.features_dim), nn.ReLU())
        self.features_dim = config.features_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.frames > 1:
            f = x.reshape(x.shape[0], self.frames, -1, *x.shape[-2:])  # (B, k, C, H, W)
            x = torch.cat([x, (f[:, 1:] - f[:, :-1]).flatten(1, 2)], 1)  # (B, (2k - 1) C, H, W)
        return self.proj(self.conv(x))  # (B, D)


@dataclass
class IDMConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    """Encoder over the fused frame window."""
    context: int = 1
    """Frames of context on each side of the transition: the window is o_{t-k} .. o_{t+1+k}."""
    hidden: int = 64
    """Width of the action head's hidden layer."""
    diff: bool = True
    """Also stack the differences of consecutive frames of the window (the motion an action causes)."""


class _RLModel(HubMixin):
    """``hub_config()`` = {model, n_actions, frame_shape}: what rebuilds any of the app's pixel networks."""

    config: Any
    n_actions: int
    frame_shape: list[int]

    def hub_config(self) -> dict[str, Any]:
        return {"model": asdict(self.config), "n_actions": self.n_actions, "frame_shape": self.frame_shape}


class InverseDynamicsModel(nn.Module, _RLModel):
    """Non-causal IDM: p(a_t | o_{t-k}, ..., o_t, o_{t+1}, ..., o_{t+1+k}).

    Input (B, W, C, H, W_img) with W = 2k + 2 frames, fused along channels (with ``diff``, plus the W - 1
    frame differences) -> logits (B, A).
    """

    warmstart_kind = "rl.idm"

    def __init__(self, n_actions: int, image_size: int, channels: int, config: IDMConfig) -> None:
        super().__init__()
        self.config, self.n_actions, self.frame_shape = config, n_actions, [image_size, image_size, channels]
        self.window = 2 * config.context + 2
        fused = channels * (2 * self.window - 1 if config.diff else self.window)
        self.encoder = PixelEncoder(fused, image_size, config.encoder)
        self.head = nn.Sequential(
            nn.Linear(config.encoder.features_dim, config.hidden),
            nn.ReLU(),
            nn.Linear(config.hidden, n_actions),
        )

    @classmethod
    def from_hub_config(cls, config: dict[str, Any]) -> InverseDynamicsModel:
        shape = config["frame_shape"]
        return cls(config["n_actions"], shape[0], shape[2], idm_config(config["model"]))

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        b = windows.shape[0]  # windows (B, W, C, H, W_img)
        if self.config.diff:
            windows = torch.cat([windows, windows[:, 1:] - windows[:, :-1]], 1)  # (B, 2W - 1, C, H, W_img)
        return self.head(self.encoder(windows.reshape(b, -1, *windows.shape[-2:])))  # (B, A)


@dataclass
class PolicyConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    """Encoder of the policy's frame stack (shared by actor and critic in PPO)."""
    value_hidden: list[int] = field(default_factory=lambda: [64])
    """SB3 value-head layers added at fine-tuning (not pretrained)."""
    frame_stack: int | None = None
    """The policy sees the last k frames o_{t-k+1} .. o_t fused along channels (causal, as VPT's policy);
    null: the env family's default (:func:`warmstart_rl.data.default_frame_stack`: ALE 4, others 1)."""


class PixelPolicy(nn.Module, _RLModel):
    """Causal policy pi(a_t | o_{t-k+1}, .., o_t): (B, k * C, H, W) -> logits (B, A), k = ``frame_stack``
    (1: the current frame only). ``encoder`` + linear ``head``; ``frame_shape`` is one frame's (H, W, C).

    Also the app's other frame -> vector networks: RoboFuME's Q-network and success classifier."""

    warmstart_kind = "rl.policy"

    def __init__(self, n_actions: int, image_size: int, channels: int, config: PolicyConfig) -> None:
        super().__init__()
        self.config, self.n_actions, self.frame_shape = config, n_actions, [image_size, image_size, channels]
        self.frame_stack = int(config.frame_stack or 1)
        self.encoder = PixelEncoder(channels * self.frame_stack, image_size, config.encoder, self.frame_stack)
        self.head = nn.Linear(config.encoder.features_dim, n_actions)

    @classmethod
    def from_hub_config(cls, config: dict[str, Any]) -> PixelPolicy:
        shape = config["frame_shape"]
        return cls(config["n_actions"], shape[0], shape[2], policy_config(config["model"]))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(obs))  # (B, A)


# -- weights on disk: the core's hub format (+ a reader of the app's first layout) ------------------
def idm_config(raw: dict, legacy: bool = False) -> IDMConfig:
    """An :class:`IDMConfig` from its dict; ``legacy``: a first-layout folder (no frame differences)."""
    raw = dict(raw)
    if legacy:
        raw.setdefault("diff", False)
    return IDMConfig(**{**raw, "encoder": EncoderConfig(**raw["encoder"])})


def policy_config(raw: dict) -> PolicyConfig:
    return PolicyConfig(**{**raw, "encoder": EncoderConfig(**raw["encoder"])})


_KINDS = {
    "idm": "rl.idm",
    "policy": "rl.policy",
    "success-classifier": "rl.success-classifier",
    "q-network": "rl.q-network",
}


def save_model(
    model: nn.Module, directory: Path, kind: str, spec: dict, card: ModelCard | None = None
) -> Path:
    """Write ``model`` with :func:`warmstart.hub.save_model` (kind ``rl.<kind>``); ``spec`` is
    :func:`model_spec`'s dict plus optional ``metrics``, which go to the model card too."""
    from warmstart.hub import save_model as hub_save

    config = {k: spec[k] for k in ("model", "n_actions", "frame_shape")}
    extra = {k: v for k, v in spec.items() if k not in config}
    card = card or ModelCard(
        title=f"{kind} for {spec.get('env', {}).get('env_id', 'a pixel environment')}",
        paper=VPT_PAPER,
        metrics={k: v for k, v in spec.get("metrics", {}).items() if isinstance(v, int | float)},
        tags=["reinforcement-learning", kind],
    )
    return hub_save(
        model, directory, kind=_KINDS.get(kind, f"rl.{kind}"), config=config, card=card, extra=extra
    )


def _build(kind: str):
    if kind == "idm":
        return InverseDynamicsModel.from_hub_config
    return PixelPolicy.from_hub_config


def load_model(directory: Path, kind: str) -> tuple[nn.Module, dict]:
    """Rebuild a model saved by :func:`save_model` (or by the app's first layout); ``kind`` is 'idm',
    'policy', 'success-classifier' or 'q-network'. Returns (model, spec) with spec = {model, n_actions,
    frame_shape, env, metrics, ...}; a truncated or altered weights file is a one-line CheckpointError."""
    from warmstart.hub import load_model as hub_load

    directory = Path(directory)
    config_path, weights = directory / "config.json", directory / "model.safetensors"
    if not config_path.is_file() or not weights.is_file():
        raise CheckpointError(
            f"{directory}: expected config.json and model.safetensors (a {kind} checkpoint)"
        )
    try:
        raw = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{config_path} is not valid JSON ({exc}); save the model again") from None
    if "warmstart_kind" in raw:
        model, meta = hub_load(directory, _build(kind), kind=_KINDS.get(kind, f"rl.{kind}"))
        spec = dict(meta["config"]) | {k: v for k, v in meta.items() if k not in ("config", "files")}
        return model, spec
    return _load_legacy(directory, raw, kind)


def _load_legacy(directory: Path, spec: dict, kind: str) -> tuple[nn.Module, dict]:
    """The first layout: config.json = {kind, model, n_actions, frame_shape, env, metrics}, no digests."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config_path, weights = directory / "config.json", directory / "model.safetensors"
    if spec.get("kind") != kind:
        raise CheckpointError(
            f"{config_path}: a {spec.get('kind')!r} checkpoint, but a {kind!r} one is needed"
        )
    shape = spec["frame_shape"]
    if kind == "idm":
        model: nn.Module = InverseDynamicsModel(
            spec["n_actions"], shape[0], shape[2], idm_config(spec["model"], legacy=True)
        )
    else:
        model = PixelPolicy(spec["n_actions"], shape[0], shape[2], policy_config(spec["model"]))
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(
            f"{weights} cannot be read ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}: "
            f"truncated or corrupt); train or copy the model again"
        ) from None
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{weights} does not fit the model its config.json describes ({str(exc).splitlines()[0]})"
        ) from None
    return model, spec


def model_spec(config: IDMConfig | PolicyConfig, n_actions: int, frame_shape: list[int], env: dict) -> dict:
    return {"model": asdict(config), "n_actions": n_actions, "frame_shape": list(frame_shape), "env": env}
