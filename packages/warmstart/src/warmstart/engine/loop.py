"""The training loop on Lightning Fabric.

The engine owns devices, precision, gradient accumulation and clipping, the schedule, the NaN/inf guard,
checkpoints and resume, metrics and progress; a :class:`~warmstart.engine.task.Task` owns the model and its
loss. Two-pass optimisers (SAM) declare ``requires_closure = True`` and get ``optimizer.step(closure)``
after the first forward/backward, the closure recomputing loss and gradients on the same micro-batches.
Scale-out is Fabric's: ``strategy=ddp|fsdp`` under ``torchrun`` or ``fabric run``.
"""

from __future__ import annotations

import logging
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from warmstart.engine.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from warmstart.engine.config import EngineConfig
from warmstart.engine.data import BatchCursor, ResumableLoader, is_map_style
from warmstart.engine.metrics import MetricsWriter, Progress, RunSummary, Stopwatch
from warmstart.engine.task import Task, task_param_groups
from warmstart.errors import CheckpointError, NonFiniteError
from warmstart.optim import build_optimizer, build_schedule

log = logging.getLogger(__name__)


def make_fabric(config: EngineConfig):
    """A launched Lightning Fabric for ``config.distributed`` (imported lazily: it costs seconds)."""
    from lightning_fabric import Fabric

    dist = config.distributed
    accelerator = dist.accelerator
    if accelerator == "auto":
        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    precision = dist.precision
    if precision == "auto":
        precision = "bf16-mixed" if accelerator == "cuda" else "32-true"
    devices: int | str = dist.devices
    num_nodes = dist.num_nodes
    if devices == "auto":
        # under torchrun / SLURM the launcher fixes the world; otherwise one device
        devices = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
        world = int(os.environ.get("WORLD_SIZE", devices))
        num_nodes = max(num_nodes, world // max(devices, 1))
    strategy = dist.strategy
    if strategy == "auto":
        strategy = "ddp" if devices != 1 or num_nodes > 1 else "auto"
    fabric = Fabric(
        accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy, precision=precision
    )
    fabric.launch()
    return fabric


def _batch_size(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return batch.shape[0] if batch.dim() else 1
    if isinstance(batch, Mapping):
        for value in batch.values():
            return _batch_size(value)
    if isinstance(batch, list | tuple) and batch:
        return _batch_size(batch[0])
    return 1


def _to_float(value: Any) -> float:
    return float(value.detach().float().mean()) if isinstance(value, torch.Tensor) else float(value)


class Engine:
    """Train a task: ``Engine(config, run_dir).fit(task, data, resume_from=...)``.

    ``run_dir`` receives ``metrics.jsonl``, ``tensorboard/`` and ``checkpoints/`` (rank 0 only); ``None``
    runs without writing anything. ``data`` is a map-style dataset, a stateful iterable, or any iterable of
    micro-batches (see :mod:`warmstart.engine.data`). ``collate_fn`` applies to map-style datasets.
    """

    def __init__(self, config: EngineConfig, run_dir: Path | None = None) -> None:
        self.config = config
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.fabric = None

    # -- set-up -----------------------------------------------------------------------------------
    def _cursor(self, data: Any, collate_fn: Any, fabric: Any) -> BatchCursor:
        if is_map_style(data):
            data = ResumableLoader(
                data,
                self.config.train.micro_batch_size,
                seed=self.config.train.seed,
                rank=fabric.global_rank,
                world_size=fabric.world_size,
                collate_fn=collate_fn,
            )
        return BatchCursor(data)

    def _model_state(self, fabric: Any, module: nn.Module, raw: nn.Module) -> dict[str, torch.Tensor]:
        if self._is_fsdp(fabric):
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            return get_model_state_dict(
                module, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
            )
        return raw.state_dict()

    def _optim_state(self, fabric: Any, module: nn.Module, optimizer: Any) -> dict[str, Any]:
        if self._is_fsdp(fabric):
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

            return get_optimizer_state_dict(
                module, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
            )
        return optimizer.state_dict()

    @staticmethod
    def _is_fsdp(fabric: Any) -> bool:
        return type(fabric.strategy).__name__.startswith("FSDP")

    # -- the loop ---------------------------------------------------------------------------------
    def fit(
        self,
        task: Task,
        data: Iterable | Any,
        *,
        collate_fn: Any = None,
        resume_from: Path | str | None = None,
    ) -> RunSummary:
        cfg = self.config
        tcfg = cfg.train
        if tcfg.grad_accum_steps < 1 or tcfg.max_steps < 1 or tcfg.micro_batch_size < 1:
            raise ValueError("train.max_steps, train.micro_batch_size and train.grad_accum_steps must be ≥ 1")
        fabric = self.fabric = make_fabric(cfg)
        fabric.seed_everything(tcfg.seed, verbose=False)
        rank0 = fabric.is_global_zero

        resume_dir = Path(resume_from) if resume_from is not None else None
        if resume_dir is not None and not (resume_dir / "meta.json").is_file():
            found = latest_checkpoint(resume_dir / "checkpoints") or latest_checkpoint(resume_dir)
            if found is None:
                raise CheckpointError(f"no complete checkpoint under {resume_dir}; start without --resume")
            resume_dir = found
        loaded = load_checkpoint(resume_dir) if resume_dir is not None else None

        raw_model = task.model
        if loaded is not None and not self._is_fsdp(fabric):
            missing, unexpected = raw_model.load_state_dict(loaded[0], strict=False)
            if unexpected or [k for k in missing if k in raw_model.state_dict()]:
                raise CheckpointError(
                    f"checkpoint {resume_dir} does not fit this model (missing {missing[:3]}, "
                    f"unexpected {unexpected[:3]}); resume with the config the run was started with"
                )
        module = fabric.setup_module(raw_model)
        task.model = module
        optimizer = build_optimizer(cfg.optimizer, task_param_groups(task))
        fabric_optimizer = fabric.setup_optimizers(optimizer)
        schedule = build_schedule(cfg.schedule, tcfg.max_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        cursor = self._cursor(data, collate_fn, fabric)
        step = 0
        if loaded is not None:
            _, optim_state, state = loaded
            if self._is_fsdp(fabric):
                from torch.distributed.checkpoint.state_dict import (
                    StateDictOptions,
                    set_model_state_dict,
                    set_optimizer_state_dict,
                )

                opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
                set_model_state_dict(module, loaded[0], options=opts)
                set_optimizer_state_dict(module, optimizer, optim_state, options=opts)
            else:
                optimizer.load_state_dict(optim_state)
            scheduler.load_state_dict(state["scheduler"])
            cursor.load_state_dict(state["data"])
            rngs = state["rng"]
            set_rng_state(rngs[fabric.global_rank] if fabric.global_rank < len(rngs) else rngs[0])
            step = int(state["step"])
            log.info("resumed from %s at step %d", resume_dir, step)

        writer = MetricsWriter(self.run_dir if rank0 else None, cfg.logging.tensorboard)
        stop = min(tcfg.max_steps, tcfg.stop_at) if tcfg.stop_at is not None else tcfg.max_steps
        progress = Progress(cfg.logging.progress, tcfg.max_steps, step, enabled=rank0)
        start_step = step
        watch = Stopwatch()
        window: dict[str, float] = defaultdict(float)
        window_steps = 0
        window_samples = window_tokens = 0.0
        window_watch = Stopwatch()
        total_samples = total_tokens = 0.0
        skipped = consecutive_skips = 0
        last_logged: dict[str, float] = {}
        checkpoint_path: Path | None = None
        needs_closure = bool(getattr(optimizer, "requires_closure", False))
        world = fabric.world_size

        def forward_backward(micro_batches: list, collect: bool) -> tuple[torch.Tensor, dict[str, float]]:
            total = torch.zeros((), device=fabric.device)
            metrics: dict[str, float] = defaultdict(float)
            n = len(micro_batches)
            for i, batch in enumerate(micro_batches):
                with fabric.no_backward_sync(module, enabled=i < n - 1):
                    with fabric.autocast():
                        loss, extra = task.loss(batch)
                    fabric.backward(loss / n)
                total += loss.detach().float() / n
                if collect:
                    for key, value in extra.items():
                        metrics[key] += (
                            _to_float(value) if key in ("samples", "tokens") else _to_float(value) / n
                        )
                    if "samples" not in extra:
                        metrics["samples"] += _batch_size(batch)
            return total, metrics

        def clip() -> float | None:
            if tcfg.grad_clip_norm is None:
                return None
            norm = fabric.clip_gradients(
                module, fabric_optimizer, max_norm=tcfg.grad_clip_norm, error_if_nonfinite=False
            )
            return float(norm)

        try:
            while step < stop:
                micro = [fabric.to_device(cursor.next()) for _ in range(tcfg.grad_accum_steps)]
                fabric_optimizer.zero_grad(set_to_none=True)
                loss, metrics = forward_backward(micro, collect=True)
                loss_value = float(loss)
                grad_norm = clip() if math.isfinite(loss_value) else None
                bad = not math.isfinite(loss_value) or (
                    grad_norm is not None and not math.isfinite(grad_norm)
                )
                if world > 1:
                    bad = bool(
                        fabric.all_reduce(torch.tensor(float(bad), device=fabric.device), reduce_op="max")
                    )
                if bad:
                    what = f"loss {loss_value}" + (
                        f", grad norm {grad_norm}" if grad_norm is not None else ""
                    )
                    if tcfg.nonfinite == "stop":
                        raise NonFiniteError(
                            f"non-finite training at step {step + 1} ({what}); lower optimizer.lr, enable "
                            f"train.grad_clip_norm, or set train.nonfinite=skip"
                        )
                    skipped += 1
                    consecutive_skips += 1
                    log.warning("step %d: %s, batch skipped", step + 1, what)
                    if consecutive_skips > tcfg.max_skipped_steps:
                        raise NonFiniteError(
                            f"{consecutive_skips} consecutive non-finite steps ending at step {step + 1}; "
                            f"lower optimizer.lr or check the data"
                        )
                    fabric_optimizer.zero_grad(set_to_none=True)
                else:
                    consecutive_skips = 0
                    if needs_closure:

                        def closure(micro: list = micro) -> torch.Tensor:
                            fabric_optimizer.zero_grad(set_to_none=True)
                            second, _ = forward_backward(micro, collect=False)
                            clip()
                            return second

                        fabric_optimizer.step(closure)
                    else:
                        fabric_optimizer.step()
                lr = optimizer.param_groups[0]["lr"]
                scheduler.step()
                step += 1

                samples = metrics.pop("samples", 0.0) * world
                tokens = metrics.pop("tokens", 0.0) * world
                window_samples += samples
                window_tokens += tokens
                total_samples += samples
                total_tokens += tokens
                if not bad:
                    window_steps += 1
                    window["loss"] += loss_value
                    if grad_norm is not None:
                        window["grad_norm"] += grad_norm
                    for key, value in metrics.items():
                        window[key] += value
                log_now = step % cfg.logging.log_every == 0 or step == stop
                row: dict[str, float] = {}
                if log_now:
                    elapsed = max(window_watch.elapsed(), 1e-9)
                    if window_steps:
                        row = {k: v / window_steps for k, v in window.items()}
                    if world > 1 and "loss" in row:
                        row["loss"] = float(fabric.all_reduce(torch.tensor(row["loss"]), reduce_op="mean"))
                    row["lr"] = lr
                    row["samples_per_s"] = window_samples / elapsed
                    if window_tokens:
                        row["tokens_per_s"] = window_tokens / elapsed
                    if skipped:
                        row["skipped_steps"] = skipped
                    last_logged = row
                    if rank0:
                        writer.write(step, row)
                    window.clear()
                    window_steps = 0
                    window_samples = window_tokens = 0.0
                    window_watch = Stopwatch()
                progress.update(step, row, log_now)

                if tcfg.eval_every and step % tcfg.eval_every == 0 and step != stop:
                    self._evaluate(task, module, writer, step, rank0)
                every = cfg.checkpoint.every
                if (every and step % every == 0) or (step == stop and cfg.checkpoint.save_final):
                    checkpoint_path = self._save(
                        fabric, module, raw_model, optimizer, scheduler, cursor, step, start_step
                    )
        finally:
            progress.close()

        final = dict(last_logged)
        final.update(self._evaluate(task, module, writer, step, rank0))
        writer.close()
        task.model = raw_model
        seconds = watch.elapsed()
        fabric.barrier()
        return RunSummary(
            steps=step,
            start_step=start_step,
            seconds=seconds,
            samples_per_s=total_samples / max(seconds, 1e-9),
            tokens_per_s=(total_tokens / max(seconds, 1e-9)) if total_tokens else None,
            final_metrics={k: v for k, v in final.items() if k not in ("samples_per_s", "tokens_per_s")},
            run_dir=str(self.run_dir) if self.run_dir is not None else None,
            checkpoint=str(checkpoint_path) if checkpoint_path is not None else None,
            resumed_from=str(resume_dir) if resume_dir is not None else None,
            skipped_steps=skipped,
            stopped_early=step < tcfg.max_steps,
        )

    def _evaluate(self, task: Task, module: nn.Module, writer: MetricsWriter, step: int, rank0: bool) -> dict:
        if not hasattr(task, "evaluate"):
            return {}
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad(), self.fabric.autocast():
                result = {f"eval/{k}": _to_float(v) for k, v in task.evaluate().items()}
        finally:
            module.train(was_training)
        if rank0 and result:
            writer.write(step, result)
        return result

    def _save(
        self, fabric, module, raw_model, optimizer, scheduler, cursor, step: int, start_step: int
    ) -> Path | None:
        if self.run_dir is None:
            return None
        model_state = self._model_state(fabric, module, raw_model)
        optim_state = self._optim_state(fabric, module, optimizer)
        rngs = [rng_state()]
        if fabric.world_size > 1:
            gathered: list = [None] * fabric.world_size
            torch.distributed.all_gather_object(gathered, rngs[0])
            rngs = gathered
        path = None
        if fabric.is_global_zero:
            state = {
                "step": step,
                "scheduler": scheduler.state_dict(),
                "data": cursor.state_dict(),
                "rng": rngs,
                "world_size": fabric.world_size,
            }
            path = save_checkpoint(
                self.run_dir / "checkpoints",
                step,
                model_state,
                optim_state,
                state,
                keep_last=self.config.checkpoint.keep_last,
            )
        fabric.barrier()
        return path if path is not None else self.run_dir / "checkpoints" / f"step-{step}"
