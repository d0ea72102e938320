"""Metrics sinks (JSONL + TensorBoard), progress display and the run summary."""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


def truncate_jsonl(path: Path, step: int) -> int:
    """Drop the rows of ``metrics.jsonl`` logged after ``step`` (a resume repeats them); returns rows kept."""
    if not path.is_file():
        return 0
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill mid-write
            continue
        if not isinstance(row, dict) or int(row.get("step", 0)) <= step:
            kept.append(line)
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(f"{line}\n" for line in kept))
    os.replace(tmp, path)
    return len(kept)


def truncate_csv(path: Path, step: int) -> None:
    """The same for Lightning's CSV logger file (rows with a ``step`` column)."""
    if not path.is_file():
        return
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        rows = [r for r in reader if not r.get("step") or int(float(r["step"])) <= step]
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix.rstrip("."): tree} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value if isinstance(value, int | float | str | bool) else str(value)
    return out


def make_loggers(run_dir: Path, names: Sequence[str], resume_step: int | None) -> list[Any]:
    """Lightning logger objects for ``names`` (tensorboard, csv, wandb) writing into ``run_dir``."""
    loggers: list[Any] = []
    for name in dict.fromkeys(names):  # each once, in order
        if name == "tensorboard":
            from lightning_fabric.loggers.tensorboard import TensorBoardLogger

            # purge_step: TensorBoard drops the events a resume repeats
            purge = resume_step + 1 if resume_step is not None else None
            loggers.append(
                TensorBoardLogger(
                    run_dir, name="tensorboard", version="", default_hp_metric=False, purge_step=purge
                )
            )
        elif name == "csv":
            if resume_step is not None:
                truncate_csv(run_dir / "csv" / "metrics.csv", resume_step)
            loggers.append(_csv_logger(run_dir))
        elif name == "wandb":
            from lightning.pytorch.loggers import WandbLogger

            (run_dir / "wandb").mkdir(parents=True, exist_ok=True)
            loggers.append(
                WandbLogger(
                    name=run_dir.name,
                    save_dir=str(run_dir),
                    project=os.environ.get("WANDB_PROJECT", "warmstart"),
                    offline=os.environ.get("WANDB_MODE", "offline") != "online",
                    id=_wandb_id(run_dir),
                    resume="allow",
                )
            )
    return loggers


def log_pictures(
    run_dir: Path,
    *,
    images: dict[str, Any] | None = None,
    figures: dict[str, Any] | None = None,
    scalars: dict[str, Sequence[tuple[int, float]]] | None = None,
    step: int = 0,
) -> Path:
    """Pictures where people would rather look than read, in the run's TensorBoard (``<run>/tensorboard``,
    the engine's folder, so they sit beside its scalars): ``images`` are (H, W, 3) arrays or tensors in
    [0, 1], ``figures`` matplotlib figures (closed afterwards), ``scalars`` curves of (step, value).
    Returns the TensorBoard folder. The PNGs a report embeds are the caller's to write."""
    from torch.utils.tensorboard import SummaryWriter

    folder = Path(run_dir) / "tensorboard"
    with SummaryWriter(str(folder)) as writer:
        for tag, image in (images or {}).items():
            array = image.detach().cpu().numpy() if hasattr(image, "detach") else image
            writer.add_image(tag, array, global_step=step, dataformats="HWC")
        for tag, curve in (scalars or {}).items():
            for at, value in curve:
                writer.add_scalar(tag, float(value), int(at))
        for tag, figure in (figures or {}).items():
            writer.add_figure(tag, figure, global_step=step, close=True)
    return folder


def _csv_logger(run_dir: Path) -> Any:
    """Fabric's CSV logger (``run/csv/metrics.csv``), which also writes ``hparams.yaml`` (Fabric's own cannot
    log hyperparameters; Lightning's full package, which can, is not a dependency of the core)."""
    import yaml
    from lightning_fabric.loggers.csv_logs import CSVLogger

    class CSVWithHparams(CSVLogger):
        def log_hyperparams(self, params: Any) -> None:
            folder = Path(self.log_dir)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "hparams.yaml").write_text(yaml.safe_dump(dict(params), sort_keys=False))

    return CSVWithHparams(str(run_dir), name="csv", version="", flush_logs_every_n_steps=1)


def _wandb_id(run_dir: Path) -> str:
    """A stable wandb run id per run directory, so a resumed run continues the same wandb run."""
    file = run_dir / "wandb" / "run-id"
    if file.is_file():
        return file.read_text().strip()
    import uuid

    run_id = uuid.uuid4().hex[:12]
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(run_id)
    return run_id


class MetricsWriter:
    """Appends one JSON object per log step to ``metrics.jsonl`` and mirrors scalars to the trackers.

    ``loggers`` names Lightning loggers (:func:`make_loggers`); ``resume_step`` truncates what a resumed
    run would repeat (rows after the checkpoint's step); ``hparams`` (a nested dict, the resolved config)
    is logged once to every tracker.
    """

    def __init__(
        self,
        run_dir: Path | None,
        tensorboard: bool | Sequence[str] = True,
        *,
        resume_step: int | None = None,
        hparams: dict[str, Any] | None = None,
    ) -> None:
        self.run_dir = run_dir
        self._jsonl = None
        self.loggers: list[Any] = []
        if run_dir is None:
            return
        names = (["tensorboard"] if tensorboard else []) if isinstance(tensorboard, bool) else tensorboard
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            truncate_jsonl(run_dir / "metrics.jsonl", resume_step)
        self._jsonl = open(run_dir / "metrics.jsonl", "a", buffering=1)  # noqa: SIM115 - closed in close()
        self.loggers = make_loggers(run_dir, names, resume_step)
        if hparams and resume_step is None:
            flat = _flatten(hparams)
            for logger in self.loggers:
                logger.log_hyperparams(flat)

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if self._jsonl is not None:
            self._jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
        if self.loggers:
            scalars = {k: v for k, v in metrics.items() if isinstance(v, int | float) and math.isfinite(v)}
            for logger in self.loggers:
                logger.log_metrics(scalars, step)

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        for logger in self.loggers:
            logger.finalize("success")
        self.loggers = []


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
        self._bar: Any = None
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
