"""What every app check shares: the check record, CLI calls in-process, engine-run capture, thresholds.

An app check drives its app through the app's own CLI (``warmstart_<app>.cli.app.main(argv)``, the same
parser and wiring a user gets) and a few top-level builders, never private helpers, so a refactor inside
an app does not break it; the dry-run (``gpu_check.py --dry-run``) parses every recipe and builds every
model on the meta device, so a moved API or a broken recipe fails in CI rather than on a lent GPU.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[3]
COMPLETED: list[dict[str, Any]] = []
"""Figures of every engine run finished so far in this process: kept in the report when a later stage
fails or the budget runs out."""


@dataclass
class Recipe:
    """A recipe file the check uses and the command it belongs to (parsed in the dry-run)."""

    app: str
    command: str
    path: str | None
    """Repository-relative YAML path (None: the command's options alone, as the check passes them)."""
    required: list[Any] = field(default_factory=list)
    """Placeholder values of the command's required arguments, e.g. ``["--data", "x"]``."""


@dataclass
class Limit:
    """One pass/fail threshold: ``metric op value`` (op is ``>=`` or ``<=``)."""

    metric: str
    op: str
    value: float
    why: str = ""

    def judge(self, metrics: dict[str, Any]) -> dict[str, Any]:
        got = metrics.get(self.metric)
        ok = isinstance(got, int | float) and math.isfinite(got)
        if ok:
            ok = got >= self.value if self.op == ">=" else got <= self.value
        return {
            "metric": self.metric,
            "op": self.op,
            "threshold": self.value,
            "value": got,
            "passed": bool(ok),
        }


@dataclass
class Context:
    """Where a check runs: ``smoke`` shrinks every size to CPU-test scale (wiring only, no figures)."""

    out: Path
    smoke: bool
    device: str

    def size(self, gpu: Any, smoke: Any) -> Any:
        return smoke if self.smoke else gpu


@dataclass
class Check:
    """One app's GPU check."""

    app: str
    plan: list[str]
    """What the check runs, one line per stage (printed by the dry-run)."""
    budget_s: int
    """Wall-clock seconds allowed for this app (the driver kills it after)."""
    recipes: list[Recipe]
    models: Callable[[], dict[str, Callable[[], nn.Module]]]
    """Builders of every model the check trains (called under ``torch.device('meta')`` in the dry-run)."""
    run: Callable[[Context], dict[str, Any]]
    """Runs the check, returns its metrics (figures, parity errors)."""
    limits: list[Limit]
    apis: list[str] = field(default_factory=list)
    """``module:attribute`` names the run uses; the dry-run resolves each one."""
    prepare: Callable[[], dict[str, Any]] | None = None
    """One-time set-up outside the timed budget (gsplat's CUDA compile), run by ``--prepare`` and before a
    GPU run; its seconds are reported apart."""


def flags(options: dict[str, Any]) -> list[str]:
    """``{"engine.train.max_steps": 300}`` → ``["--engine.train.max_steps", "300"]`` (bools as true/false)."""
    out: list[str] = []
    for key, value in options.items():
        out += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    return out


def engine_flags(steps: int, batch: int, **more: Any) -> list[str]:
    """The recipe's engine with ``steps`` steps of ``batch``, 10 % warmup, no checkpoints, quiet logs."""
    options = {
        "engine.train.max_steps": steps,
        "engine.train.micro_batch_size": batch,
        "engine.schedule.warmup_steps": max(1, steps // 10),
        "engine.checkpoint.every": 0,
        "engine.checkpoint.save_final": False,
        "engine.logging.progress": "none",
        "engine.logging.tensorboard": False,
    }
    return flags(options | more)


def resolve(name: str) -> Any:
    """``'pkg.mod:attr.sub'`` → the object (raises ImportError/AttributeError naming it)."""
    module, _, attr = name.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split(".") if attr else []:
        obj = getattr(obj, part)
    return obj


def app_cli(app: str) -> Any:
    """The app's ``App`` object (``warmstart_<app>.cli.app``)."""
    return resolve(f"warmstart_{app}.cli:app")


def parse_command(app: str, argv: list[str]) -> dict[str, Any]:
    """Parse ``argv`` with the app's own CLI parser and instantiate its dataclasses (no command runs)."""
    cli = app_cli(app)
    parser = cli.parser()
    cfg = parser.parse_args([str(a) for a in argv])
    init = parser.instantiate(cfg)[cfg.command]
    return {k: v for k, v in vars(init).items() if k not in ("config", "__path__")}


def parse_recipe(recipe: Recipe) -> dict[str, Any]:
    """Parse the recipe (and the options the check adds) with the app's parser; the instantiated configs."""
    if recipe.path is None:
        return parse_command(recipe.app, [recipe.command, *recipe.required])
    path = REPO / recipe.path
    if not path.is_file():
        raise FileNotFoundError(f"{recipe.path}: recipe not found")
    return parse_command(recipe.app, [recipe.command, "--config", str(path), *recipe.required])


def cli(app: str, argv: list[str]) -> None:
    """Run one CLI command in this process; raise when it exits non-zero."""
    code = app_cli(app).main([str(a) for a in argv])
    if code != 0:
        raise RuntimeError(f"warmstart-{app} {argv[0]} exited with {code}")


@contextlib.contextmanager
def engine_runs() -> Iterator[list[Any]]:
    """Collect the :class:`RunSummary` of every ``Engine.fit`` inside the block (throughput, final loss)."""
    from warmstart.engine import Engine

    summaries: list[Any] = []
    original = Engine.fit

    def fit(self: Any, *args: Any, **kwargs: Any) -> Any:
        summary = original(self, *args, **kwargs)
        summaries.append(summary)
        COMPLETED.append(summary_metrics(f"run{len(COMPLETED)}", summary))
        return summary

    Engine.fit = fit  # type: ignore[method-assign]
    try:
        yield summaries
    finally:
        Engine.fit = original  # type: ignore[method-assign]


@contextlib.contextmanager
def light_fit_runs(module: str) -> Iterator[list[list[float]]]:
    """Collect the per-step losses of every ``light_fit`` that ``module`` calls inside the block (it is
    patched where ``module`` imported it)."""
    import importlib

    target = importlib.import_module(module)
    runs: list[list[float]] = []
    original = target.light_fit

    def light_fit(*args: Any, **kwargs: Any) -> list[float]:
        losses = original(*args, **kwargs)
        runs.append([float(x) for x in losses])
        return losses

    target.light_fit = light_fit
    try:
        yield runs
    finally:
        target.light_fit = original


def trained(prefix: str, app: str, argv: list[Any]) -> dict[str, Any]:
    """Run one training command (:func:`cli`): :func:`summary_metrics` of its last engine run under
    ``prefix``, plus ``<prefix>_all_steps`` over all its runs (a two-stage command makes two)."""
    with engine_runs() as runs:
        cli(app, argv)
    if not runs:
        raise RuntimeError(f"warmstart-{app} {argv[0]} finished without an engine run")
    return summary_metrics(prefix, runs[-1]) | {
        f"{prefix}_all_steps": sum(s.steps - s.start_step for s in runs)
    }


def run_limits(
    prefix: str, steps: int, samples_per_s: float, why: str, loss: str = "bf16 loss"
) -> list[Limit]:
    """The thresholds of one training run: every step ran, the loss stayed finite, a samples/s floor."""
    return [
        Limit(f"{prefix}_steps", ">=", steps, "every requested step ran"),
        Limit(f"{prefix}_loss_finite", ">=", 1, f"{loss} stayed finite"),
        Limit(f"{prefix}_samples_per_s", ">=", samples_per_s, why),
    ]


def summary_metrics(prefix: str, summary: Any) -> dict[str, Any]:
    """Steps, steps/s, samples/s, tokens/s and the final loss of one engine run."""
    seconds = max(float(summary.seconds), 1e-9)
    steps = int(summary.steps) - int(summary.start_step)
    out = {
        f"{prefix}_steps": steps,
        f"{prefix}_steps_per_s": steps / seconds,
        f"{prefix}_samples_per_s": float(summary.samples_per_s),
        f"{prefix}_seconds": seconds,
    }
    if summary.tokens_per_s:
        out[f"{prefix}_tokens_per_s"] = float(summary.tokens_per_s)
    for key, value in summary.final_metrics.items():
        if isinstance(value, int | float) and key != "loss":
            out[f"{prefix}_{key.replace('/', '_')}"] = float(value)
    loss = summary.final_metrics.get("loss", summary.final_metrics.get("train/loss"))
    if loss is not None:
        out[f"{prefix}_final_loss"] = float(loss)
        out[f"{prefix}_loss_finite"] = float(math.isfinite(float(loss)))
    return out


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


@contextlib.contextmanager
def timed(metrics: dict[str, Any], key: str) -> Iterator[None]:
    """Wall seconds of the block (CUDA synchronised) into ``metrics[key]``."""
    synchronize()
    start = time.perf_counter()
    yield
    synchronize()
    metrics[key] = time.perf_counter() - start


def reset_peak_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
