"""RoboFuME's reward model from a pretrained vision(-language) backbone: an open_clip image tower with a
binary success head, fine-tuned on success / failure frames.

Seed: *Robot Fine-Tuning Made Easy* (RoboFuME, Yang et al., arXiv 2310.15145), whose reward is a pretrained
VLM (MiniGPT-4) fine-tuned as a success classifier. Here the backbone is any open_clip architecture
(``ViT-B-32``, …) with weights from an open_clip pretrained tag, a local checkpoint file, or an
``hf-hub:org/name`` id (resolved by open_clip on a machine with network), or a custom architecture from a
JSON config (the tests use a tiny random one). Frames are resized to the tower's input size and normalised
with CLIP's statistics. Left out: the language side (the classifier reads images only), MiniGPT-4 itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from warmstart.errors import CheckpointError, ConfigError
from warmstart.hub import HubMixin

KIND = "rl.success-classifier-clip"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _tower(embed_dim: int, vision_cfg: dict[str, Any]) -> nn.Module:
    from open_clip.model import _build_vision_tower

    return _build_vision_tower(embed_dim, vision_cfg, quick_gelu=False)


class ClipSuccessClassifier(nn.Module, HubMixin):
    """(N, 3, H, W) frames in [0, 1] -> success logit (N, 1): open_clip image tower + a linear head."""

    warmstart_kind = KIND

    def __init__(self, spec: dict[str, Any], visual: nn.Module | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.visual = visual if visual is not None else _tower(spec["embed_dim"], spec["vision_cfg"])
        self.head = nn.Linear(spec["embed_dim"], 1)
        size = spec["vision_cfg"].get("image_size", 224)
        self.image_size = int(size if isinstance(size, int) else size[0])
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    def hub_config(self) -> dict[str, Any]:
        return dict(self.spec)

    @classmethod
    def from_hub_config(cls, config: dict[str, Any]) -> ClipSuccessClassifier:
        return cls(config)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(
            frames, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
        )
        return self.head(self.visual((x - self.mean) / self.std))  # (N, 1)


def build_clip_classifier(
    arch: str, weights: str | None = None, config_file: str | None = None
) -> ClipSuccessClassifier:
    """The success classifier on an open_clip backbone.

    ``arch``: an open_clip model name (``ViT-B-32``), ``hf-hub:org/name``, or any name with ``config_file``
    (a JSON ``{embed_dim, vision_cfg, text_cfg}``); ``weights``: an open_clip pretrained tag or a local
    checkpoint file (None: random initialisation)."""
    import open_clip

    if config_file is not None:
        path = Path(config_file)
        try:
            cfg = json.loads(path.read_text())
            embed_dim, vision_cfg = int(cfg["embed_dim"]), dict(cfg["vision_cfg"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"--options.backbone_config {path}: not an open_clip model config with embed_dim and vision_cfg "
                f"({type(exc).__name__})"
            ) from None
        model = open_clip.CLIP(embed_dim, vision_cfg, cfg.get("text_cfg", {}))
        if weights:
            if not Path(weights).is_file():
                raise ConfigError(f"--options.backbone_weights {weights}: no such checkpoint file")
            try:
                open_clip.load_checkpoint(model, weights, strict=False)
            except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is one line for the user
                raise CheckpointError(
                    f"--options.backbone_weights {weights}: not an open_clip checkpoint for this config "
                    f"({type(exc).__name__})"
                ) from None
    else:
        cfg = open_clip.get_model_config(arch) if not arch.startswith("hf-hub:") else None
        if cfg is None and not arch.startswith("hf-hub:"):
            raise ConfigError(
                f"--options.backbone {arch!r}: not an open_clip architecture (e.g. {open_clip.list_models()[:3]}); "
                f"or pass --options.backbone_config a JSON config"
            )
        try:
            model = open_clip.create_model(arch, pretrained=weights or None)
        except Exception as exc:  # noqa: BLE001 - a missing tag / file / hub repo: one line
            raise CheckpointError(
                f"--options.backbone {arch} --options.backbone_weights {weights}: cannot load "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})"
            ) from None
        if cfg is None:
            cfg = {
                "embed_dim": int(model.visual.output_dim),
                "vision_cfg": {"image_size": model.visual.image_size[0]},
            }
        embed_dim, vision_cfg = int(cfg["embed_dim"]), dict(cfg["vision_cfg"])
    spec = {"arch": arch, "embed_dim": embed_dim, "vision_cfg": vision_cfg, "weights": weights or ""}
    return ClipSuccessClassifier(spec, visual=model.visual)
