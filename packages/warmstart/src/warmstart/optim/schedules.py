"""Learning-rate schedules as plain functions of the step.

Every schedule returns a *multiplier* of the peak learning rate (the optimizer's ``lr``), so that the
engine can drive any of them through one ``torch.optim.lr_scheduler.LambdaLR``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Schedule = Callable[[int], float]


@dataclass
class ScheduleConfig:
    name: Literal["constant", "cosine", "rewarm", "infinite", "wsd"] = "cosine"
    """Shape: constant, linear warmup + cosine, re-warm + re-decay, infinite, or warmup-stable-decay."""
    warmup_steps: int = 0
    """Linear warmup steps from 0 to the peak learning rate."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of the peak."""


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """Linear warmup to 1, then cosine decay to ``min_ratio`` at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_schedule(config: ScheduleConfig, total_steps: int) -> Schedule:
    """Turn a :class:`ScheduleConfig` into a multiplier function of the step."""
    if config.name == "constant":
        w = config.warmup_steps
        return lambda step: min(1.0, (step + 1) / w) if w > 0 else 1.0
    if config.name == "cosine":
        return lambda step: warmup_cosine(
            step, warmup_steps=config.warmup_steps, total_steps=total_steps, min_ratio=config.min_lr_ratio
        )
    raise NotImplementedError(f"schedule {config.name!r} is not implemented yet")
