"""Metrics sinks (JSONL + TensorBoard), progress display and the run summary."""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


class MetricsWriter:
    """Appends one JSON object per log step to ``metrics.jsonl`` and mirrors scalars to TensorBoard."""

    def __init__(self, run_dir: Path | None, tensorboard: bool = True) -> None:
        self.run_dir = run_dir
        self._jsonl = None
        self._tb = None
        if run_dir is None:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(run_dir / "metrics.jsonl", "a", buffering=1)  # noqa: SIM115 - closed in close()
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if self._jsonl is not None:
            self._jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
        if self._tb is not None:
            for key, value in metrics.items():
                if isinstance(value, int | float) and math.isfinite(value):
                    self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


class Progress:
    """A rich progress bar on a terminal, plain periodic lines otherwise, or nothing."""

    def __init__(self, mode: str, total: int, start: int, enabled: bool = True) -> None:
        if not enabled or mode == "none":
            self.mode = "none"
        elif mode == "auto":
            self.mode = "rich" if sys.stderr.isatty() else "plain"
        else:
            self.mode = mode
        self.total = total
        self._bar = None
        if self.mode == "rich":
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task("train", total=total, completed=start, info="")

    def update(self, step: int, metrics: dict[str, float], log: bool) -> None:
        if self.mode == "rich":
            info = _format(metrics) if log else None
            if info is None:
                self._bar.update(self._task, completed=step)
            else:
                self._bar.update(self._task, completed=step, info=info)
        elif self.mode == "plain" and log:
            print(f"step {step}/{self.total} {_format(metrics)}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _format(metrics: dict[str, float]) -> str:
    parts = []
    for key in ("loss", "lr", "grad_norm", "samples_per_s", "tokens_per_s"):
        if key in metrics:
            value = metrics[key]
            parts.append(f"{key} {value:.3g}" if key != "loss" else f"loss {value:.4f}")
    return " ".join(parts)


@dataclass
class RunSummary:
    """What a run did; printed by the CLI at the end and returned to callers."""

    steps: int
    start_step: int
    seconds: float
    samples_per_s: float
    tokens_per_s: float | None
    final_metrics: dict[str, float]
    run_dir: str | None
    checkpoint: str | None
    resumed_from: str | None = None
    skipped_steps: int = 0
    stopped_early: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def rows(self) -> list[tuple[str, str]]:
        rows = [
            ("steps", f"{self.start_step} → {self.steps}"),
            ("time", f"{self.seconds:.1f} s"),
            ("samples/s", f"{self.samples_per_s:.1f}"),
        ]
        if self.tokens_per_s:
            rows.append(("tokens/s", f"{self.tokens_per_s:.0f}"))
        if self.skipped_steps:
            rows.append(("skipped (non-finite)", str(self.skipped_steps)))
        for key, value in sorted(self.final_metrics.items()):
            rows.append((key, f"{value:.4g}" if isinstance(value, float) else str(value)))
        if self.resumed_from:
            rows.append(("resumed from", self.resumed_from))
        if self.checkpoint:
            rows.append(("checkpoint", self.checkpoint))
        if self.run_dir:
            rows.append(("run directory", self.run_dir))
        return rows


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start
