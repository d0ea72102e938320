"""``light_fit``: the engine's step in-process, for the many tiny fits of a bench and for app loops.

A bench that fits dozens of small models (probes, seeds × label fractions, per-task heads) pays for a
Lightning Fabric, a run directory and a checkpoint writer per model in :class:`~warmstart.engine.Engine`;
``light_fit`` keeps what makes a step correct — the core's optimizer and schedule factories, gradient
clipping, ``optimizer.step(closure)`` for two-pass optimizers (SAM), the same NaN/inf and loss-explosion
guard (:mod:`warmstart.engine.guard`), a seed, device placement — and leaves out Fabric, distribution,
accumulation, checkpoints and metrics files. Use :class:`Engine` for anything a user launches as a run.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from warmstart.engine.guard import TrainingGuard
from warmstart.errors import ConfigError, DataError
from warmstart.optim import OptimizerConfig, ScheduleConfig, build_optimizer, build_schedule

log = logging.getLogger(__name__)

_USER_NVML_CHECK = os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK")
"""The variable as the user left it, read before the engine imports Lightning (which sets it)."""

LossFn = Callable[[Any], "torch.Tensor | tuple[torch.Tensor, Mapping[str, Any]]"]


@contextlib.contextmanager
def torch_cuda_check() -> Iterator[None]:
    """Inside the block, ``torch.cuda.is_available()`` is torch's own cached check again.

    Importing Lightning sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` for the whole process (to keep forked
    workers CUDA-free), after which every ``torch.optim`` step re-loads NVML through ctypes to ask whether
    CUDA exists: ~0.1 ms a step on a machine without a GPU, more than the rest of the engine's step. A
    single-process loop forks nothing that needs CUDA, so it drops the variable while it trains (unless
    the user set it before Lightning was imported) and puts it back afterwards.
    """
    name = "PYTORCH_NVML_BASED_CUDA_CHECK"
    value = os.environ.get(name)
    if value is None or _USER_NVML_CHECK is not None:
        yield
        return
    del os.environ[name]
    try:
        yield
    finally:
        os.environ[name] = value


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) batch of tensors, dicts, lists and tuples to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return type(batch)({k: to_device(v, device) for k, v in batch.items()})  # type: ignore[call-arg]
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a namedtuple
        return type(batch)(*(to_device(v, device) for v in batch))
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def _batches(data: Iterable[Any]) -> Iterator[Any]:
    """Cycle a re-iterable input; a one-shot iterator that runs dry is the caller's mistake."""
    while True:
        iterator = iter(data)
        empty = True
        for batch in iterator:
            empty = False
            yield batch
        if empty or iterator is data:
            return


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"``: CUDA when available, else CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def light_fit(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Iterable[Any],
    *,
    steps: int,
    lr: float = 1e-3,
    optimizer: OptimizerConfig | None = None,
    schedule: ScheduleConfig | None = None,
    params: Iterable[Any] | None = None,
    grad_clip_norm: float | None = 1.0,
    seed: int | None = 0,
    device: str | torch.device | None = None,
    nonfinite: str = "stop",
    max_skipped_steps: int = 10,
    explode_factor: float | None = 1e3,
) -> list[float]:
    """Train ``model`` for ``steps`` optimizer steps in this process; returns each step's loss.

    Args:
        model: the module to train (moved to ``device``; left in train mode).
        loss_fn: ``loss_fn(batch)`` returns the scalar loss, or ``(loss, metrics)`` as a Task's ``loss``.
        batches: an iterable of ready batches (a DataLoader, a list, a generator); a re-iterable one
            is cycled, a one-shot iterator must yield at least ``steps`` batches.
        steps: optimizer steps (the schedule spans them).
        lr: peak learning rate (overrides ``optimizer.lr``).
        optimizer: the core's optimizer config (default AdamW, no weight decay).
        schedule: the core's schedule config (default constant, no warmup).
        params: what to optimise (tensors or param groups; default every trainable parameter).
        grad_clip_norm: clip the global gradient norm; None disables.
        seed: seeds torch's global generator before the first step (None leaves it alone).
        device: where to train; None picks CUDA when available.
        nonfinite: on a NaN/inf or exploded loss: ``stop`` (NonFiniteError naming the step) or ``skip``.
        max_skipped_steps: with ``skip``, stop after this many consecutive skipped steps.
        explode_factor: a loss above its running median by this factor of the median is an explosion;
            None disables the check.
    """
    if steps < 1:
        raise ConfigError(f"light_fit: steps={steps} must be >= 1")
    if not (math.isfinite(lr) and lr >= 0):
        raise ConfigError(f"light_fit: lr={lr} must be a finite number >= 0")
    if nonfinite not in ("stop", "skip"):
        raise ConfigError(f"light_fit: nonfinite={nonfinite!r}: use stop or skip")
    target = resolve_device(device)
    if seed is not None:
        torch.manual_seed(seed)
    model.to(target)
    model.train()
    opt_cfg = OptimizerConfig(**{**vars(optimizer or OptimizerConfig()), "lr": lr})
    groups = list(params) if params is not None else [p for p in model.parameters() if p.requires_grad]
    opt = build_optimizer(opt_cfg, groups)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        opt, build_schedule(schedule or ScheduleConfig("constant"), steps)
    )
    clipped = [p for group in opt.param_groups for p in group["params"]]
    guard = TrainingGuard(nonfinite, max_skipped_steps, explode_factor)
    needs_closure = bool(getattr(opt, "requires_closure", False))

    def forward_backward(batch: Any) -> torch.Tensor:
        out = loss_fn(batch)
        loss = out[0] if isinstance(out, tuple) else out
        loss.backward()
        return loss.detach()

    def clip() -> float | None:
        if grad_clip_norm is None:
            return None
        return float(torch.nn.utils.clip_grad_norm_(clipped, grad_clip_norm))

    stream = _batches(batches)

    def one_step(step: int) -> float:
        try:
            batch = to_device(next(stream), target)
        except StopIteration:
            raise DataError(
                f"light_fit: the batches ran out at step {step} of {steps}; pass a re-iterable "
                f"(a list or a DataLoader) or more batches"
            ) from None
        opt.zero_grad(set_to_none=True)
        loss = float(forward_backward(batch))
        grad_norm = clip() if math.isfinite(loss) else None
        if guard.check(step, guard.diagnose(loss, grad_norm)):
            guard.accept(loss)
            if needs_closure:

                def closure(batch: Any = batch) -> torch.Tensor:
                    opt.zero_grad(set_to_none=True)
                    second = forward_backward(batch)
                    clip()
                    return second

                opt.step(closure)  # type: ignore[arg-type]  # torch types it as returning a float
            else:
                opt.step()
        else:
            log.warning("light_fit step %d: loss %s, batch skipped", step, loss)
            opt.zero_grad(set_to_none=True)
        scheduler.step()
        return loss

    with torch_cuda_check():
        return [one_step(step) for step in range(1, steps + 1)]
