"""The training guard shared by :class:`~warmstart.engine.Engine` and :func:`~warmstart.engine.light_fit`.

Two failures end a run early instead of late: a non-finite loss or gradient norm (NaN/inf), and a loss
that is still finite but has *exploded* — grown past ``explode_factor`` times its running median (what a
learning rate of 1e9 does: the loss climbs to 1e12, slips past a NaN check and crashes later, in
evaluation). The running median (over the last ``window`` accepted steps) is robust to the usual
spikes; the scale it is compared on never falls below 1 % of the early losses' median, so a loss that
converged towards zero and bumps back up is not mistaken for an explosion. Only a step judged healthy
enters the history, and the history is part of the checkpoint, so a resumed run decides exactly as an
uninterrupted one.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections import deque
from dataclasses import dataclass
from typing import Any

from warmstart.errors import NonFiniteError

MIN_HISTORY = 5
"""Accepted steps before the explosion check starts (a median of fewer says little)."""


@dataclass
class Verdict:
    """What the guard found at one step: ``ok``, or why not (``reason``)."""

    ok: bool
    reason: str = ""


class TrainingGuard:
    """Judge each optimizer step's loss and gradient norm; stop or skip as ``nonfinite`` says.

    ``check(step, loss, grad_norm)`` returns a :class:`Verdict`; with ``nonfinite="stop"`` a bad step
    raises :class:`~warmstart.errors.NonFiniteError` naming the step, the value and the fix. With
    ``"skip"`` the caller drops the step; more than ``max_skipped_steps`` in a row raise.
    """

    def __init__(
        self,
        nonfinite: str = "stop",
        max_skipped_steps: int = 10,
        explode_factor: float | None = 1e3,
        window: int = 100,
    ) -> None:
        self.nonfinite = nonfinite
        self.max_skipped_steps = max_skipped_steps
        self.explode_factor = explode_factor
        self.window = window
        self.history: deque[float] = deque()
        self._sorted: list[float] = []  # the history, sorted: the median without a sort per step
        self.initial: list[float] = []  # the first accepted losses: the floor of the comparison scale
        self._floor: float | None = None  # 1 % of the initial losses' median (cached)
        self.skipped = 0
        self.consecutive = 0

    def diagnose(self, loss: float, grad_norm: float | None) -> str:
        """Why this step is bad ('' when it is healthy); changes nothing."""
        if not math.isfinite(loss):
            return f"loss {loss}" + (f", grad norm {grad_norm}" if grad_norm is not None else "")
        if grad_norm is not None and not math.isfinite(grad_norm):
            return f"loss {loss:.4g}, grad norm {grad_norm}"
        if self.explode_factor is not None and len(self.history) >= MIN_HISTORY:
            median = self._median()
            if self._floor is None:  # recomputed only when ``initial`` changed
                self._floor = 0.01 * abs(statistics.median(self.initial))
            floor = self._floor
            scale = max(abs(median), floor, 1e-12)
            if loss > median + self.explode_factor * scale:
                return (
                    f"loss {loss:.4g} exploded past {self.explode_factor:g}x its running median {median:.4g} "
                    f"(train.explode_factor)"
                )
        return ""

    def check(self, step: int, reason: str) -> bool:
        """Record the verdict ``reason`` ('' = healthy) of ``step``; True when the step is to be applied."""
        if not reason:
            self.consecutive = 0
            return True
        if self.nonfinite == "stop":
            raise NonFiniteError(
                f"training diverged at step {step} ({reason}); lower optimizer.lr, enable "
                f"train.grad_clip_norm, or set train.nonfinite=skip"
            )
        self.skipped += 1
        self.consecutive += 1
        if self.consecutive > self.max_skipped_steps:
            raise NonFiniteError(
                f"{self.consecutive} consecutive diverged steps ending at step {step} ({reason}); "
                f"lower optimizer.lr or check the data"
            )
        return False

    def _median(self) -> float:
        values, n = self._sorted, len(self._sorted)
        return values[n // 2] if n % 2 else 0.5 * (values[n // 2 - 1] + values[n // 2])

    def accept(self, loss: float) -> None:
        """Add a healthy step's loss to the history."""
        self.history.append(loss)
        bisect.insort(self._sorted, loss)
        if len(self.history) > self.window:
            oldest = self.history.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, oldest)]
        if len(self.initial) < MIN_HISTORY:
            self.initial.append(loss)
            self._floor = None

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": list(self.history),
            "initial": list(self.initial),
            "skipped": self.skipped,
            "consecutive": self.consecutive,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history.clear()
        self._sorted.clear()
        for value in state.get("history", ()):
            self.accept(float(value))
        self.initial = [float(v) for v in state.get("initial", ())]
        self._floor = None
        self.skipped = int(state.get("skipped", 0))
        self.consecutive = int(state.get("consecutive", 0))
