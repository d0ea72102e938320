"""The 3d app's in-process training recipe on the core's ``light_fit`` (many tiny fits in one bench).

Seed: torchtitan's habit of one short loop over components; here the loop is the core's
:func:`warmstart.engine.light_fit` (AdamW, the core schedule, gradient clipping, the NaN/inf and explosion
guard), fed seeded index batches over in-memory tensors. Gaussian-MAE, part segmentation, CLIP2Point's
adapters and its image-depth pretraining all train through :func:`fit_tensors`; a run a user launches
alone can take the full engine (``--engine true``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from warmstart.engine import light_fit
from warmstart.optim import OptimizerConfig, ScheduleConfig
from warmstart_3d.sampling import index_batches


def fit_tensors(
    task: Any,
    tensors: tuple[torch.Tensor, ...] | list[torch.Tensor],
    steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
    *,
    schedule: ScheduleConfig | None = None,
    grad_clip_norm: float | None = 1.0,
    loss: Callable[[list[torch.Tensor]], Any] | None = None,
    params: list[dict[str, Any]] | None = None,
) -> list[float]:
    """Train ``task.model`` on seeded batches of ``tensors`` for ``steps`` steps; the loss of every step.

    The recipe is the engine's default: AdamW with ``weight_decay``, the core's default schedule (warmup and
    cosine to 0.1·lr), gradient-norm clipping at 1. ``loss`` defaults to ``task.loss``; ``params``: optimizer
    param groups (each with its own ``lr``; default every parameter at ``lr``). The model is left in eval mode.
    """
    g = torch.Generator().manual_seed(seed)
    n = len(tensors[0])

    def batches() -> Iterator[list[torch.Tensor]]:
        for idx in index_batches(n, min(batch_size, n), steps, g):
            yield [t[idx] for t in tensors]

    model = task.model
    device = next(model.parameters()).device
    losses = light_fit(
        model,
        loss or task.loss,
        batches(),
        steps=steps,
        lr=lr,
        optimizer=OptimizerConfig(weight_decay=weight_decay),
        schedule=schedule or ScheduleConfig(),
        grad_clip_norm=grad_clip_norm,
        seed=None,
        device=device,
        params=params,
    )
    model.eval()
    return losses
