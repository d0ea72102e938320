"""ContextWM's pretraining: an action-free world model learnt by latent video prediction on frames-only
videos of *any* environments (resized to the target's frame size), as the seed pretrains on in-the-wild
videos of other domains before fine-tuning on the target.

Seed: *Pre-training Contextualized World Models with In-the-wild Videos for Reinforcement Learning*
(Wu et al., arXiv 2305.18499), section 4.1, APV-style (arXiv 2203.13880) action-free pretraining. The
videos come from ``collect`` corpora (their actions are never read) or any folder of ``.npz`` episodes
with a ``frames`` array, or plain video files (.mp4, .webm, .gif, ...) decoded with PyAV
(:func:`warmstart_rl.data.load_videos`). Left out: the seed's video datasets
(Something-Something-v2, Human3.6M, YouTube driving).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from warmstart.engine import Engine, EngineConfig
from warmstart.errors import DataError
from warmstart_rl.data import Corpus, to_chw
from warmstart_rl.worldmodel import WorldModel, WorldModelConfig, save_world_model


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
    """Mean per-frame squared reconstruction error on ``n`` held-out clips (posterior, action-free; in eval
    mode: the decoder sees its whole context frame)."""
    rng = np.random.default_rng(seed)
    items = [clips[int(i)] for i in rng.choice(len(clips), size=min(n, len(clips)), replace=False)]
    batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
    device, training = next(model.parameters()).device, model.training
    model.eval()
    try:
        _, metrics, _ = model.loss(
            {k: v.to(device) for k, v in batch.items()}, False, torch.Generator().manual_seed(seed)
        )
    finally:
        model.train(training)
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
    data: Corpus | list[np.ndarray],
    config: PretrainConfig,
    engine: EngineConfig,
    run_dir: Path | None,
    image_size: int | None = None,
    sources: list[dict[str, Any]] | None = None,
) -> tuple[WorldModel, dict[str, float]]:
    """Action-free pretraining on every episode's frames; saves ``<run_dir>/worldmodel/``.

    ``data``: a corpus (same-environment videos; its env is recorded) or a list of (T, H, W, 3) uint8
    videos from any environments, already at ``image_size`` (:func:`warmstart_rl.data.load_videos`).
    The model is action-free (``n_actions = 0``): fine-tuning attaches the target's action input.
    """
    if isinstance(data, Corpus):
        episodes = [e.frames for e in data.episodes]
        image_size = int(data.meta["frame_shape"][0])
        env: dict | None = data.meta["env"]
        sources = sources or [{"folder": str(data.root), "env_id": env["env_id"], "episodes": len(episodes)}]
    else:
        episodes, env = list(data), None
        if image_size is None:
            image_size = int(episodes[0].shape[1])
    bad = [v.shape for v in episodes if v.shape[1:] != (image_size, image_size, 3)]
    if bad:
        raise DataError(
            f"videos of shape {bad[0]}: resize every video to ({image_size}, {image_size}, 3) first"
        )
    n_held = int(round(len(episodes) * config.heldout_fraction)) if len(episodes) > 1 else 0
    train = ClipDataset(episodes[: len(episodes) - n_held], config.clip_length)
    held_frames = sum(len(f) for f in episodes[len(episodes) - n_held :])
    held = (
        ClipDataset(episodes[len(episodes) - n_held :], config.clip_length)
        if n_held and held_frames >= config.clip_length
        else None
    )
    torch.manual_seed(engine.train.seed)
    model = WorldModel(0, image_size, config.model)
    before = heldout_recon(model, held) if held is not None else float("nan")
    engine = copy.deepcopy(engine)
    engine.train.micro_batch_size = min(engine.train.micro_batch_size, len(train))
    summary = Engine(engine, run_dir).fit(_PretrainTask(model, held, engine.train.seed), train)
    model = model.cpu().eval()
    metrics = {
        "wm/frames": float(len(train.frames)),
        "wm/videos": float(len(episodes)),
        "wm/heldout_recon_init": before,
        "wm/heldout_recon": heldout_recon(model, held) if held is not None else float("nan"),
        "wm/seconds": summary.seconds,
    }
    if run_dir is not None:
        save_world_model(model, Path(run_dir) / "worldmodel", env, metrics, sources=sources or [])
    return model, metrics
