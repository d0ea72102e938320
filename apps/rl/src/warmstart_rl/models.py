"""Pixel networks for VPT: a small convolutional encoder, the non-causal inverse-dynamics model, the causal
policy, and the stable-baselines3 features extractor that takes the policy's weights.

Seed: *Video PreTraining (VPT)* (Baker et al., arXiv 2206.11795). VPT's IDM is a 3D convolution over 128
frames followed by a ResNet and transformer; ours fuses a short window of frames (past *and* future)
along channels into one small CNN, which is enough for gymnasium-sized frames. The policy is causal (it
sees the current frame only) and is built so that its two parts map one-to-one onto SB3's
``ActorCriticPolicy``: ``encoder`` becomes ``features_extractor.encoder`` and ``head`` becomes
``action_net`` (with ``net_arch=dict(pi=[], vf=[...])``), so a BC checkpoint loads into PPO unchanged.
Written by hand (a few layers): no library offers this pairing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from warmstart.errors import CheckpointError


@dataclass
class EncoderConfig:
    channels: list[int] = field(default_factory=lambda: [16, 32, 32])
    """Output channels of the 3x3 conv layers (the 2nd and later stride 2)."""
    features_dim: int = 64
    """Width of the feature vector the heads read."""


class PixelEncoder(nn.Module):
    """(B, C_in, H, W) float in [0, 1] -> (B, features_dim)."""

    def __init__(self, in_channels: int, image_size: int, config: EncoderConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_channels
        for i, width in enumerate(config.channels):
            layers += [nn.Conv2d(prev, width, 3, stride=1 if i == 0 else 2, padding=1), nn.ReLU()]
            prev = width
        self.conv = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            flat = self.conv(torch.zeros(1, in_channels, image_size, image_size)).shape[1]
        self.proj = nn.Sequential(nn.Linear(flat, config.features_dim), nn.ReLU())
        self.features_dim = config.features_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.conv(x))  # (B, D)


@dataclass
class IDMConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    """Encoder over the fused frame window."""
    context: int = 1
    """Frames of context on each side of the transition: the window is o_{t-k} .. o_{t+1+k}."""
    hidden: int = 64
    """Width of the action head's hidden layer."""


class InverseDynamicsModel(nn.Module):
    """Non-causal IDM: p(a_t | o_{t-k}, ..., o_t, o_{t+1}, ..., o_{t+1+k}).

    Input (B, W, C, H, W_img) with W = 2k + 2 frames, fused along channels -> logits (B, A).
    """

    def __init__(self, n_actions: int, image_size: int, channels: int, config: IDMConfig) -> None:
        super().__init__()
        self.window = 2 * config.context + 2
        self.encoder = PixelEncoder(channels * self.window, image_size, config.encoder)
        self.head = nn.Sequential(
            nn.Linear(config.encoder.features_dim, config.hidden),
            nn.ReLU(),
            nn.Linear(config.hidden, n_actions),
        )

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        b = windows.shape[0]
        return self.head(self.encoder(windows.reshape(b, -1, *windows.shape[-2:])))  # (B, A)


@dataclass
class PolicyConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    """Encoder of the current frame (shared by actor and critic in PPO)."""
    value_hidden: list[int] = field(default_factory=lambda: [64])
    """SB3 value-head layers added at fine-tuning (not pretrained)."""


class PixelPolicy(nn.Module):
    """Causal policy pi(a_t | o_t): (B, C, H, W) -> logits (B, A). ``encoder`` + linear ``head``."""

    def __init__(self, n_actions: int, image_size: int, channels: int, config: PolicyConfig) -> None:
        super().__init__()
        self.encoder = PixelEncoder(channels, image_size, config.encoder)
        self.head = nn.Linear(config.encoder.features_dim, n_actions)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(obs))  # (B, A)


# -- weights on disk: safetensors + a JSON config beside them -------------------------------------
def save_model(model: nn.Module, directory: Path, kind: str, spec: dict) -> Path:
    """Write ``model.safetensors`` and ``config.json`` ({kind, spec}) into ``directory``."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()},
        str(directory / "model.safetensors"),
    )
    (directory / "config.json").write_text(json.dumps({"kind": kind, **spec}, indent=1))
    return directory


def _encoder_config(raw: dict) -> EncoderConfig:
    return EncoderConfig(**raw)


def load_model(directory: Path, kind: str) -> tuple[nn.Module, dict]:
    """Rebuild a model saved by :func:`save_model`; ``kind`` is 'idm' or 'policy'."""
    from safetensors.torch import load_file

    directory = Path(directory)
    config_path, weights = directory / "config.json", directory / "model.safetensors"
    if not config_path.is_file() or not weights.is_file():
        raise CheckpointError(
            f"{directory}: expected config.json and model.safetensors (a {kind} checkpoint)"
        )
    spec = json.loads(config_path.read_text())
    if spec.get("kind") != kind:
        raise CheckpointError(
            f"{config_path}: a {spec.get('kind')!r} checkpoint, but a {kind!r} one is needed"
        )
    shape = spec["frame_shape"]
    if kind == "idm":
        cfg = IDMConfig(**{**spec["model"], "encoder": _encoder_config(spec["model"]["encoder"])})
        model: nn.Module = InverseDynamicsModel(spec["n_actions"], shape[0], shape[2], cfg)
    else:
        cfg = PolicyConfig(**{**spec["model"], "encoder": _encoder_config(spec["model"]["encoder"])})
        model = PixelPolicy(spec["n_actions"], shape[0], shape[2], cfg)
    model.load_state_dict(load_file(str(weights)))
    return model, spec


def model_spec(config: IDMConfig | PolicyConfig, n_actions: int, frame_shape: list[int], env: dict) -> dict:
    return {"model": asdict(config), "n_actions": n_actions, "frame_shape": list(frame_shape), "env": env}
