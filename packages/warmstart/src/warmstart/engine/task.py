"""The task contract: the engine owns the loop, the task owns the maths."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class Task(Protocol):
    """What the engine trains.

    ``model`` is the module to optimise (the engine replaces it by its device/strategy-wrapped version
    before the first step, so ``loss`` must call ``self.model``). ``loss(batch)`` returns a scalar loss and
    a dict of metrics to log; the special keys ``samples`` and ``tokens`` (counts in this micro-batch) feed
    the throughput figures instead of being logged as means.

    Optional methods the engine uses when present:

    - ``evaluate() -> Mapping[str, float]``: held-out metrics, logged under ``eval/``.
    - ``param_groups() -> Iterable``: what to hand the optimizer (default: trainable parameters).
    """

    model: nn.Module

    def loss(self, batch: Any) -> tuple[torch.Tensor, Mapping[str, Any]]: ...


def task_param_groups(task: Task) -> Iterable[Any]:
    """The parameters (or groups) the optimizer gets: the task's choice, else all trainable ones."""
    if hasattr(task, "param_groups"):
        groups: Iterable[Any] = task.param_groups()
        return groups
    return [p for p in task.model.parameters() if p.requires_grad]
