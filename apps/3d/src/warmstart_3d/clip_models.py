"""open_clip models for CLIP2Point: tiny configs for CPU, loading by name / hub id / local folder, prompts.

Seed papers: "Learning Transferable Visual Models From Natural Language Supervision" (CLIP, arXiv 2103.00020)
through open_clip ("Reproducible scaling laws for contrastive language-image learning", arXiv 2212.07143),
and "CLIP2Point" (arXiv 2210.01055) for the prompt "image of a {class}". Builds any open_clip architecture
(weights from a local file, an open_clip tag, ``hf-hub:`` or ``local-dir:``), writes the ``local-dir`` layout
open_clip reads back, and gives CLIP's symmetric contrastive task for training a source CLIP. Left out:
downloading weights (a user's machine does that through open_clip).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from warmstart.errors import CheckpointError, ConfigError
from warmstart.objectives import info_nce

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
TEMPLATES = [
    "image of a {}",
    "a photo of a {}",
    "a rendering of a {}",
    "a 3d model of a {}",
    "a {} shape",
    "a striped {}",
    "a picture of the {}",
    "a small {}",
]
PROMPT = "image of a {}"


@dataclass
class TinyCLIPConfig:
    """A small open_clip CLIP (ViT image tower + transformer text tower) for CPU runs."""

    image_size: int = 32
    """Input image size."""
    patch_size: int = 8
    """ViT patch size."""
    width: int = 64
    """Image tower width."""
    layers: int = 3
    """Image tower blocks."""
    text_width: int = 64
    """Text tower width."""
    text_layers: int = 2
    """Text tower blocks."""
    embed_dim: int = 64
    """Joint embedding width."""
    context_length: int = 16
    """Text tokens."""

    def model_cfg(self) -> dict[str, Any]:
        return {
            "embed_dim": self.embed_dim,
            "vision_cfg": {
                "image_size": self.image_size,
                "layers": self.layers,
                "width": self.width,
                "head_width": 16,
                "patch_size": self.patch_size,
            },
            "text_cfg": {
                "context_length": self.context_length,
                "vocab_size": 49408,
                "width": self.text_width,
                "heads": max(1, self.text_width // 16),
                "layers": self.text_layers,
            },
        }


@dataclass
class ClipSpec:
    model: str = "tiny"
    """open_clip model: an architecture name (ViT-B-32, RN50, ...), 'hf-hub:org/repo', 'local-dir:/path' or a
    folder written by clip2point-source; 'tiny' first trains a small CLIP on rendered shapes."""
    pretrained: str | None = None
    """With an architecture name: a local checkpoint file or an open_clip tag (needs network)."""


@dataclass
class LoadedCLIP:
    model: nn.Module
    tokenizer: Any
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int
    source: str


def save_clip(model: nn.Module, model_cfg: dict[str, Any], folder: Path) -> Path:
    """Write an open_clip ``local-dir`` folder: ``open_clip_config.json`` + ``open_clip_model.safetensors``."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    size = model_cfg["vision_cfg"]["image_size"]
    config = {
        "model_cfg": model_cfg,
        "preprocess_cfg": {"size": size, "mean": OPENAI_MEAN, "std": OPENAI_STD},
    }
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(folder / "open_clip_model.safetensors"),
    )
    return folder


def load_clip(spec: ClipSpec) -> LoadedCLIP:
    """Build an open_clip model from a name / hub id / local folder, with weights; clear errors otherwise."""
    import open_clip

    name = spec.model
    if name == "tiny":
        raise ConfigError(
            "--clip.model tiny has no weights to load; run clip2point-source first or pass a model"
        )
    if "://" not in name and ":" not in name and Path(name).is_dir():
        name = f"local-dir:{Path(name).resolve()}"
    schema = name.split(":", 1)[0] if name.startswith(("local-dir:", "hf-hub:")) else None
    if schema == "local-dir":
        folder = Path(name.split(":", 1)[1])
        if not (folder / "open_clip_config.json").is_file():
            raise CheckpointError(
                f"{folder}: no open_clip_config.json; pass a folder written by clip2point-source"
            )
        if (
            not any(folder.glob("*.safetensors"))
            and not any(folder.glob("*.bin"))
            and not any(folder.glob("*.pth"))
        ):
            raise CheckpointError(f"{folder}: no weights file (*.safetensors/*.bin/*.pth) next to the config")
    elif schema is None:
        if name not in open_clip.list_models():
            raise ConfigError(
                f"--clip.model: unknown open_clip architecture {name!r}; see open_clip.list_models()"
            )
        if spec.pretrained is None:
            raise CheckpointError(
                f"--clip.pretrained: {name} needs weights (a checkpoint file or an open_clip tag)"
            )
        looks_like_path = "/" in spec.pretrained or Path(spec.pretrained).suffix in (
            ".pt",
            ".pth",
            ".bin",
            ".safetensors",
        )
        if looks_like_path and not Path(spec.pretrained).is_file():
            raise CheckpointError(f"--clip.pretrained: no such checkpoint file {spec.pretrained}")
    try:
        model = open_clip.create_model(name, pretrained=spec.pretrained if schema is None else None)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = next(
            (ln.strip() for ln in first if "size mismatch" in ln or "Missing key" in ln),
            first[0] if first else "",
        )
        raise CheckpointError(
            f"{spec.pretrained or name}: checkpoint does not match the architecture ({detail[:160]}); "
            "pass the --clip.model it was trained with"
        ) from exc
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"{spec.pretrained or name}: could not load ({exc.__class__.__name__}: {str(exc).splitlines()[0][:120]}); "
            "offline, pass a local folder or checkpoint file"
        ) from exc
    model.eval()
    tokenizer = open_clip.get_tokenizer(name)
    pre = getattr(model.visual, "preprocess_cfg", None) or {}
    size = model.visual.image_size
    size = size[0] if isinstance(size, tuple | list) else int(size)
    return LoadedCLIP(
        model, tokenizer, tuple(pre.get("mean", OPENAI_MEAN)), tuple(pre.get("std", OPENAI_STD)), size, name
    )


class CLIPTask:
    """Engine task: CLIP's symmetric contrastive loss on (image, caption tokens), the model's own logit scale."""

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.model = model
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        self.first_loss: float | None = None
        """The first step's loss (the engine reports only the last window's)."""

    def loss(self, batch: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        images, tokens = batch  # (B, 3, H, W) in [0, 1], (B, L)
        x = (images - self.mean.to(images.device)) / self.std.to(images.device)
        img, txt, scale = self.model(x, tokens)  # normalised features, exp(logit_scale)
        loss = info_nce(img, txt, temperature=1.0 / scale.clamp(max=100.0), symmetric=True)
        if self.first_loss is None:
            self.first_loss = float(loss.detach())
        return loss, {"samples": images.shape[0], "logit_scale": float(scale.detach())}


def caption_tokens(
    labels: torch.Tensor, classes: list[str], context_length: int, generator: torch.Generator
) -> torch.Tensor:
    import open_clip

    templates = torch.randint(len(TEMPLATES), (len(labels),), generator=generator)
    texts = [TEMPLATES[int(t)].format(classes[int(y)]) for t, y in zip(templates, labels, strict=True)]
    return open_clip.tokenize(texts, context_length=context_length)


@torch.no_grad()
def text_features(
    model: nn.Module, tokenizer: Any, classes: list[str], template: str = PROMPT
) -> torch.Tensor:
    """(C, D) normalised text-tower features of ``template.format(class)``."""
    if "{}" not in template:
        raise ConfigError(f"--prompt {template!r} needs a {{}} where the class name goes")
    return F.normalize(
        model.encode_text(tokenizer([template.format(c.replace("_", " ")) for c in classes])), dim=-1
    )
