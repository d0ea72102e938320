"""The training loop on Lightning Fabric, read as torchtitan's trainer reads: named steps over components.

``Engine.fit`` is ``setup`` (Fabric, model, optimizer, schedule, data, guard, trackers) → ``restore``
(verified checkpoint, the config compared with the saved one, metrics truncated to the checkpoint) →
``train_step`` in a loop (forward/backward over the micro-batches, clipping, the NaN/inf and
loss-explosion guard, ``optimizer.step(closure)`` for two-pass optimisers such as SAM) with ``log``,
``evaluate`` and ``save`` at their cadences, and a checkpoint plus :class:`Interrupted` on SIGTERM/SIGINT.
The task owns the model and its loss (:class:`~warmstart.engine.task.Task`).

On one device in fp32 or bf16-mixed the step calls torch directly (the module, ``backward``,
``clip_grad_norm_``, ``optimizer.step``): the same arithmetic as Fabric's wrappers without their
per-call cost. Under DDP/FSDP (``torchrun``, ``srun``, ``fabric run``) every call goes through Fabric.
FSDP is FSDP2 (``torch.distributed.fsdp.fully_shard`` on each block of the model's ``ModuleList`` s and on
the root, through Fabric's ``ModelParallelStrategy``), on CUDA/NCCL and on CPU/gloo alike; its checkpoints
are sharded through ``torch.distributed.checkpoint`` (every rank writes its own shard; nothing is gathered).
Seed design: LitGPT's ``pretrain.py`` and torchtitan's ``Trainer``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from warmstart.engine import lock
from warmstart.engine.checkpoint import (
    SHARDS,
    AutoCheckpoint,
    is_sharded,
    load_checkpoint,
    load_sharded_state,
    older_checkpoints,
    read_meta,
    resolve_checkpoint,
    rng_state,
    save_checkpoint,
    save_sharded_checkpoint,
    set_rng_state,
    verify_checkpoint,
)
from warmstart.engine.config import EngineConfig
from warmstart.engine.data import BatchCursor, ResumableLoader, WorkerLoader, is_map_style
from warmstart.engine.guard import TrainingGuard
from warmstart.engine.light import to_device, torch_cuda_check
from warmstart.engine.metrics import MetricsWriter, Progress, RunSummary, Stopwatch
from warmstart.engine.signals import Interrupted, StopFlag, catch_stop_signals
from warmstart.engine.task import Task, task_param_groups
from warmstart.engine.validate import config_changes, validate_config
from warmstart.errors import CheckpointError, ConfigError
from warmstart.optim import build_optimizer, build_schedule

log = logging.getLogger(__name__)

FAST_PRECISIONS = ("32-true", "bf16-mixed")
_COUNTS = ("samples", "tokens")  # task metrics summed over micro-batches (the others are averaged)


def _under_srun() -> bool:
    """Launched by ``srun`` with several tasks (not an interactive allocation's shell)."""
    env = os.environ
    return int(env.get("SLURM_NTASKS", "1")) > 1 and env.get("SLURM_JOB_NAME") not in ("bash", "interactive")


def _resolved(config: EngineConfig) -> tuple[str, str, int | str, int, str]:
    """(accelerator, precision, devices, num_nodes, strategy) with every ``auto`` decided."""
    dist = config.distributed
    accelerator = dist.accelerator
    if accelerator == "auto":
        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    precision = dist.precision
    if precision == "auto":
        precision = "bf16-mixed" if accelerator == "cuda" else "32-true"
    devices: int | str = dist.devices
    num_nodes = dist.num_nodes
    env = os.environ
    if devices == "auto" and "LOCAL_WORLD_SIZE" not in env and _under_srun():
        # srun starts one task per device: SLURM's tasks per node and node count are the world
        devices = int(env.get("SLURM_NTASKS_PER_NODE", env["SLURM_NTASKS"]).split("(")[0])
        num_nodes = max(num_nodes, int(env.get("SLURM_NNODES", "1")))
    elif devices == "auto":
        # under torchrun the launcher fixes the world; otherwise one device
        devices = int(env.get("LOCAL_WORLD_SIZE", 1))
        world = int(env.get("WORLD_SIZE", devices))
        num_nodes = max(num_nodes, world // max(devices, 1))
    strategy = dist.strategy
    if strategy == "auto":
        strategy = "ddp" if devices != 1 or num_nodes > 1 else "auto"
    return accelerator, precision, devices, num_nodes, strategy


def make_fabric(config: EngineConfig) -> Any:
    """A launched Lightning Fabric for ``config.distributed`` (imported lazily: it costs seconds).

    ``distributed.timeout`` bounds every collective, so a dead or hung rank ends the job with an error.
    """
    from lightning_fabric import Fabric

    accelerator, precision, devices, num_nodes, strategy = _resolved(config)
    timeout = timedelta(seconds=config.distributed.timeout)
    strategy_obj: Any = strategy
    if strategy == "ddp":
        from lightning_fabric.strategies.ddp import DDPStrategy

        strategy_obj = DDPStrategy(timeout=timeout)
    elif strategy == "fsdp":
        from lightning_fabric.strategies.model_parallel import ModelParallelStrategy

        world = (devices if isinstance(devices, int) else 1) * num_nodes
        strategy_obj = ModelParallelStrategy(
            parallelize_fn=fsdp2_shard, data_parallel_size=world, tensor_parallel_size=1, timeout=timeout
        )
    fabric = Fabric(
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy_obj,
        precision=cast(Any, precision),  # a DistributedConfig.precision literal, as Fabric spells them
    )
    fabric.launch()
    return fabric


def fsdp2_shard(module: nn.Module, mesh: Any) -> nn.Module:
    """FSDP2 as torchtitan applies it: ``fully_shard`` each block of every ``ModuleList`` (a transformer's
    layers), then the root (embeddings, head and anything else), over the data-parallel mesh."""
    from torch.distributed.fsdp import fully_shard

    dp = mesh["data_parallel"]
    for child in list(module.modules()):
        if isinstance(child, nn.ModuleList):
            for block in child:
                if any(p.requires_grad for p in block.parameters()):
                    fully_shard(block, mesh=dp)
    fully_shard(module, mesh=dp)
    return module


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


@dataclass
class StepResult:
    """What one optimizer step did."""

    loss: float
    grad_norm: float | None
    metrics: dict[str, float]
    applied: bool


@dataclass
class Window:
    """Running sums between two log steps: the first window after a resume averages only its own steps."""

    sums: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    steps: int = 0
    samples: float = 0.0
    tokens: float = 0.0
    watch: Stopwatch = field(default_factory=Stopwatch)


@dataclass
class RunState:
    """The live components of one ``fit``; ``Engine``'s steps read and advance it."""

    fabric: Any
    task: Task
    raw_model: nn.Module
    module: nn.Module
    optimizer: torch.optim.Optimizer
    step_optimizer: Any
    scheduler: Any
    cursor: BatchCursor
    guard: TrainingGuard
    fast: bool
    autocast: Any
    params: list[torch.Tensor]
    fetch: Any = None
    """Puts a micro-batch on the device (None: it is there already, one CPU device)."""
    fp32: bool = False
    """One device in fp32: no autocast context to enter per micro-batch."""
    closure: bool = False
    """The optimizer takes a closure (SAM): a second forward/backward per step."""
    step: int = 0
    start_step: int = 0
    resumed_from: Path | None = None
    writer: MetricsWriter | None = None
    progress: Progress | None = None
    window: Window = field(default_factory=Window)
    total_samples: float = 0.0
    total_tokens: float = 0.0
    last_logged: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None
    world: int = 1
    """Processes in the job (read once from Fabric: its property chain costs microseconds per call)."""
    rank0: bool = True
    """Whether this process is global rank 0 (the one that writes)."""


class Engine:
    """Train a task: ``Engine(config, run_dir).fit(task, data, resume_from=...)``.

    ``run_dir`` receives ``metrics.jsonl``, the trackers' files and ``checkpoints/`` (rank 0 only, under
    the run's lock); ``None`` runs without writing anything. ``data`` is a map-style dataset, a stateful
    iterable, or any iterable of micro-batches (see :mod:`warmstart.engine.data`). ``collate_fn`` applies
    to map-style datasets. ``resume_from`` is a ``step-N`` directory, or a run / checkpoints directory
    (the newest checkpoint that verifies is taken, the others named in a warning).
    """

    def __init__(self, config: EngineConfig, run_dir: Path | None = None) -> None:
        self.config = config
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.fabric = None

    # -- the run ----------------------------------------------------------------------------------
    def fit(
        self,
        task: Task,
        data: Iterable[Any] | Any,
        *,
        collate_fn: Any = None,
        resume_from: Path | str | None = None,
    ) -> RunSummary:
        for warning in validate_config(self.config):
            log.warning("%s", warning)
        resume_dir = resolve_checkpoint(Path(resume_from)) if resume_from is not None else None
        st = self.setup(task, data, collate_fn)
        locked = self._lock(st)
        try:
            self.restore(st, resume_dir)
            return self.train(st)
        finally:
            task.model = st.raw_model
            if locked and self.run_dir is not None:
                lock.release(self.run_dir)

    def train(self, st: RunState) -> RunSummary:
        """The loop: ``train_step`` until ``max_steps`` (or ``stop_at``), logging, evaluating and saving."""
        tcfg = self.config.train
        stop = min(tcfg.max_steps, tcfg.stop_at) if tcfg.stop_at is not None else tcfg.max_steps
        st.writer = self._writer(st)
        st.progress = Progress(self.config.logging.progress, tcfg.max_steps, st.step, enabled=st.rank0)
        watch = Stopwatch()
        every, eval_every = self.config.checkpoint.every, tcfg.eval_every
        fast_check = torch_cuda_check() if st.fast else contextlib.nullcontext()
        try:
            with catch_stop_signals() as flag, fast_check:
                while st.step < stop:
                    result = self.train_step(st, flag)
                    self.log(st, result, stop)
                    if eval_every and st.step % eval_every == 0 and st.step != stop:
                        self.evaluate(st)
                    interrupted = self._agree(st, float(flag.signum))
                    if (
                        (every and st.step % every == 0)
                        or (st.step == stop and self.config.checkpoint.save_final)
                        or interrupted
                    ):
                        st.checkpoint = self.save(st)
                    if interrupted:
                        raise Interrupted(int(interrupted), st.step, st.checkpoint, self.run_dir)
        except BaseException:
            st.writer.close()  # what was logged stays readable
            raise
        finally:
            st.progress.close()
        final = dict(st.last_logged)
        final.update(self.evaluate(st))
        st.writer.close()
        seconds = watch.elapsed()
        st.fabric.barrier()
        return RunSummary(
            steps=st.step,
            start_step=st.start_step,
            seconds=seconds,
            samples_per_s=st.total_samples / max(seconds, 1e-9),
            tokens_per_s=(st.total_tokens / max(seconds, 1e-9)) if st.total_tokens else None,
            final_metrics={k: v for k, v in final.items() if k not in ("samples_per_s", "tokens_per_s")},
            run_dir=str(self.run_dir) if self.run_dir is not None else None,
            checkpoint=str(st.checkpoint) if st.checkpoint is not None else None,
            resumed_from=str(st.resumed_from) if st.resumed_from is not None else None,
            skipped_steps=st.guard.skipped,
            stopped_early=st.step < tcfg.max_steps,
        )

    # -- setup ------------------------------------------------------------------------------------
    def setup(self, task: Task, data: Any, collate_fn: Any = None) -> RunState:
        """Fabric, the (wrapped) model, optimizer, schedule, the data cursor and the guard."""
        cfg, tcfg = self.config, self.config.train
        fabric = self.fabric = make_fabric(cfg)
        fabric.seed_everything(tcfg.seed, verbose=False)
        raw_model = task.model
        precision = _resolved(cfg)[1]
        fast = fabric.world_size == 1 and precision in FAST_PRECISIONS and not self._is_fsdp(fabric)
        if fast:  # one device: torch calls directly, same arithmetic as Fabric's single-device wrappers
            module = raw_model.to(fabric.device)
            if precision == "bf16-mixed":
                autocast: Any = lambda: torch.autocast(fabric.device.type, dtype=torch.bfloat16)  # noqa: E731
            else:
                autocast = contextlib.nullcontext
        else:
            module = fabric.setup_module(raw_model)
            autocast = fabric.autocast
        if not fast:
            fetch: Any = fabric.to_device
        elif fabric.device.type == "cpu":
            fetch = None  # to_device would be a no-op call per tensor per micro-batch
        else:
            fetch = functools.partial(to_device, device=fabric.device)
        task.model = module
        optimizer = build_optimizer(cfg.optimizer, task_param_groups(task))
        step_optimizer = optimizer if fast else fabric.setup_optimizers(optimizer)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, build_schedule(cfg.schedule, tcfg.max_steps))
        guard = TrainingGuard(tcfg.nonfinite, tcfg.max_skipped_steps, tcfg.explode_factor)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        return RunState(
            fabric=fabric,
            task=task,
            raw_model=raw_model,
            module=module,
            optimizer=optimizer,
            step_optimizer=step_optimizer,
            scheduler=scheduler,
            cursor=self._cursor(data, collate_fn, fabric),
            guard=guard,
            fast=fast,
            autocast=autocast,
            params=params,
            fetch=fetch,
            fp32=fast and precision == "32-true",
            closure=bool(getattr(optimizer, "requires_closure", False)),
            world=int(fabric.world_size),
            rank0=bool(fabric.is_global_zero),
        )

    def _cursor(self, data: Any, collate_fn: Any, fabric: Any) -> BatchCursor:
        tcfg = self.config.train
        if is_map_style(data):
            common = dict(
                seed=tcfg.seed, rank=fabric.global_rank, world_size=fabric.world_size, collate_fn=collate_fn
            )
            if tcfg.num_workers > 0:
                data = WorkerLoader(
                    data,
                    tcfg.micro_batch_size,
                    num_workers=tcfg.num_workers,
                    pin_memory=fabric.device.type == "cuda",
                    **common,
                )
            else:
                data = ResumableLoader(data, tcfg.micro_batch_size, **common)
        return BatchCursor(data, fabric.global_rank, fabric.world_size)

    def _lock(self, st: RunState) -> bool:
        """Rank 0 takes the run directory's lock (re-entrant: the CLI may already hold it)."""
        if self.run_dir is None or not st.rank0:
            return False
        lock.acquire(self.run_dir)
        return True

    def _writer(self, st: RunState) -> MetricsWriter:
        if not st.rank0 or self.run_dir is None:
            return MetricsWriter(None)
        names = list(self.config.logging.loggers)
        if not self.config.logging.tensorboard:
            names = [n for n in names if n != "tensorboard"]
        resume_step = st.start_step if st.resumed_from is not None else None
        return MetricsWriter(self.run_dir, names, resume_step=resume_step, hparams=self._hparams())

    def _hparams(self) -> dict[str, Any]:
        """The resolved config for the trackers: the command's ``config.yaml`` when the CLI wrote one."""
        config_file = self.run_dir / "config.yaml" if self.run_dir is not None else None
        if config_file is not None and config_file.is_file():
            import yaml

            with contextlib.suppress(yaml.YAMLError):
                loaded = yaml.safe_load(config_file.read_text())
                if isinstance(loaded, dict):
                    return loaded
        return {"engine": asdict(self.config)}

    @staticmethod
    def _is_fsdp(fabric: Any) -> bool:
        return type(fabric.strategy).__name__ in ("ModelParallelStrategy", "FSDPStrategy")

    # -- restore ----------------------------------------------------------------------------------
    def restore(self, st: RunState, checkpoint: Path | None) -> None:
        """Load a verified checkpoint into every component; refuse a changed trajectory unless allowed."""
        if checkpoint is None:
            return
        saved = read_meta(checkpoint).get("config") or {}
        changes = config_changes(saved, self.config) if saved else []
        if changes and not self.config.allow_config_change:
            raise ConfigError(
                f"resuming {checkpoint} with a different config ({'; '.join(changes)}); pass the options "
                f"the run was started with, or --engine.allow_config_change true to continue anyway"
            )
        for change in changes:
            log.warning("resume changes %s", change)
        fabric = st.fabric
        if is_sharded(checkpoint):
            if not self._is_fsdp(fabric):
                raise CheckpointError(
                    f"checkpoint {checkpoint} is sharded (written under FSDP); resume it with "
                    f"--engine.distributed.strategy fsdp"
                )
            state = self._load_sharded(st, checkpoint)
        else:
            checkpoint, (model_state, optim_state, state) = self._load(checkpoint)
            if self._is_fsdp(fabric):  # a full checkpoint (DDP, one device) into a sharded model
                from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

                opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
                set_state_dict(
                    st.raw_model,
                    st.optimizer,
                    model_state_dict=model_state,
                    optim_state_dict=optim_state,
                    options=opts,
                )
            else:
                missing, unexpected = st.raw_model.load_state_dict(model_state, strict=False)
                if unexpected or [k for k in missing if k in st.raw_model.state_dict()]:
                    raise CheckpointError(
                        f"checkpoint {checkpoint} does not fit this model (missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]}); resume with the config the run was started with"
                    )
                st.optimizer.load_state_dict(optim_state)
        st.scheduler.load_state_dict(state["scheduler"])
        per_rank = state.get("data_ranks")  # a stream sharded by itself: each rank's own position
        own = per_rank[fabric.global_rank] if per_rank and len(per_rank) == st.world else state["data"]
        st.cursor.load_state_dict(own)
        if "guard" in state:
            st.guard.load_state_dict(state["guard"])
        rngs = state["rng"]
        set_rng_state(rngs[fabric.global_rank] if fabric.global_rank < len(rngs) else rngs[0])
        st.step = st.start_step = int(state["step"])
        st.resumed_from = checkpoint
        log.info("resumed from %s at step %d", checkpoint, st.step)

    @staticmethod
    def _load_sharded(st: RunState, checkpoint: Path) -> dict[str, Any]:
        """Every rank reads its shards of a DCP checkpoint into the live model and optimizer (resharding
        when the world size changed); returns the engine state."""
        from torch.distributed.checkpoint.api import CheckpointException
        from torch.distributed.checkpoint.filesystem import FileSystemReader
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
        from torch.distributed.checkpoint.state_dict_loader import load as dcp_load

        state = load_sharded_state(checkpoint)
        model_sd, optim_sd = get_state_dict(st.raw_model, st.optimizer)  # templates (optimizer state made)
        app_state: dict[str, Any] = {"model": model_sd, "optim": optim_sd}
        try:
            dcp_load(app_state, storage_reader=FileSystemReader(str(checkpoint / SHARDS)))
        except CheckpointException as exc:
            raise CheckpointError(
                f"checkpoint {checkpoint} does not fit this model ({str(exc).splitlines()[0][:300]}); resume "
                f"with the config the run was started with"
            ) from None
        set_state_dict(
            st.raw_model,
            st.optimizer,
            model_state_dict=app_state["model"],
            optim_state_dict=app_state["optim"],
        )
        return state

    @staticmethod
    def _load(checkpoint: Path) -> tuple[Path, tuple[Any, Any, Any]]:
        """Load ``checkpoint``; one the engine chose itself that is refused gives way to older ones."""
        try:
            return checkpoint, load_checkpoint(checkpoint)
        except CheckpointError as exc:
            if not isinstance(checkpoint, AutoCheckpoint):
                raise
            first = exc
        for older in older_checkpoints(checkpoint):
            if verify_checkpoint(older) is not None:
                continue
            try:
                states = load_checkpoint(older)
            except CheckpointError:
                continue
            log.warning("skipped checkpoint %s: %s", checkpoint, first)
            return older, states
        raise first

    # -- one optimizer step -----------------------------------------------------------------------
    def _forward_backward(
        self, st: RunState, micro: list[Any], collect: bool
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The mean loss over the micro-batches (detached) and their summed/averaged task metrics."""
        metrics: dict[str, float] = {}
        n = len(micro)
        losses = []
        task = st.task
        for i, batch in enumerate(micro):
            if st.fp32:
                loss, extra = task.loss(batch)
                (loss / n).backward() if n > 1 else loss.backward()
            elif st.fast:
                with st.autocast():
                    loss, extra = task.loss(batch)
                (loss / n).backward() if n > 1 else loss.backward()
            else:
                with st.fabric.no_backward_sync(st.module, enabled=i < n - 1):
                    with st.autocast():
                        loss, extra = task.loss(batch)
                    st.fabric.backward(loss / n)
            losses.append(loss.detach())
            if collect:
                for key, value in extra.items():
                    v = _to_float(value)
                    metrics[key] = metrics.get(key, 0.0) + (v if key in _COUNTS else v / n)
                if "samples" not in extra:
                    metrics["samples"] = metrics.get("samples", 0.0) + _batch_size(batch)
        total = losses[0].float() if n == 1 else torch.stack(losses).float().mean()
        return total, metrics

    def _clip(self, st: RunState) -> float | None:
        max_norm = self.config.train.grad_clip_norm
        if max_norm is None:
            return None
        if st.fast:
            return float(torch.nn.utils.clip_grad_norm_(st.params, max_norm))
        norm = st.fabric.clip_gradients(
            st.module, st.step_optimizer, max_norm=max_norm, error_if_nonfinite=False
        )
        if hasattr(norm, "full_tensor"):  # FSDP2: a DTensor over the shards
            norm = norm.full_tensor()
        return float(norm)

    def _agree(self, st: RunState, value: float) -> float:
        """The largest ``value`` over the ranks (a flag every rank must act on at the same step)."""
        if st.world == 1:
            return value
        return float(st.fabric.all_reduce(torch.tensor(value, device=st.fabric.device), reduce_op="max"))

    def train_step(self, st: RunState, flag: StopFlag | None = None) -> StepResult:
        """Forward/backward over ``grad_accum_steps`` micro-batches, clip, guard, step the optimizer."""
        cursor, fetch = st.cursor, st.fetch
        micro = [cursor.next() for _ in range(self.config.train.grad_accum_steps)]
        if fetch is not None:
            micro = [fetch(b) for b in micro]
        st.step_optimizer.zero_grad(set_to_none=True)
        loss_t, metrics = self._forward_backward(st, micro, collect=True)
        loss = float(loss_t)
        grad_norm = self._clip(st) if math.isfinite(loss) else None
        reason = st.guard.diagnose(loss, grad_norm)
        if st.world > 1 and self._agree(st, float(bool(reason))) and not reason:
            reason = "another rank diverged"
        applied = st.guard.check(st.step + 1, reason)
        if applied:
            st.guard.accept(loss)
            if st.closure:

                def closure(micro: list[Any] = micro) -> torch.Tensor:
                    st.step_optimizer.zero_grad(set_to_none=True)
                    second, _ = self._forward_backward(st, micro, collect=False)
                    self._clip(st)
                    return second

                st.step_optimizer.step(closure)
            else:
                st.step_optimizer.step()
        else:
            log.warning("step %d: %s, batch skipped", st.step + 1, reason)
            st.step_optimizer.zero_grad(set_to_none=True)
        metrics["lr"] = st.optimizer.param_groups[0]["lr"]
        st.scheduler.step()
        st.step += 1
        return StepResult(loss, grad_norm, metrics, applied)

    # -- metrics ----------------------------------------------------------------------------------
    def log(self, st: RunState, result: StepResult, stop: int) -> None:
        """Accumulate the step into the window; at a log step write its means and reset it."""
        metrics, w = result.metrics, st.window
        lr = metrics.pop("lr")
        samples = metrics.pop("samples", 0.0) * st.world
        tokens = metrics.pop("tokens", 0.0) * st.world
        w.samples += samples
        w.tokens += tokens
        st.total_samples += samples
        st.total_tokens += tokens
        if result.applied:
            w.steps += 1
            w.sums["loss"] += result.loss
            if result.grad_norm is not None:
                w.sums["grad_norm"] += result.grad_norm
            for key, value in metrics.items():
                w.sums[key] += value
        log_now = st.step % self.config.logging.log_every == 0 or st.step == stop
        row: dict[str, float] = {}
        if log_now:
            elapsed = max(w.watch.elapsed(), 1e-9)
            if w.steps:
                row = {k: v / w.steps for k, v in w.sums.items()}
            if st.world > 1 and "loss" in row:
                row["loss"] = float(st.fabric.all_reduce(torch.tensor(row["loss"]), reduce_op="mean"))
            row["lr"] = lr
            row["samples_per_s"] = w.samples / elapsed
            if w.tokens:
                row["tokens_per_s"] = w.tokens / elapsed
            if st.guard.skipped:
                row["skipped_steps"] = st.guard.skipped
            st.last_logged = row
            if st.rank0 and st.writer is not None:
                st.writer.write(st.step, row)
            st.window = Window()
        if st.progress is not None:
            st.progress.update(st.step, row, log_now)

    # -- evaluation -------------------------------------------------------------------------------
    def evaluate(self, st: RunState) -> dict[str, float]:
        """The task's ``evaluate()`` (when it has one) in eval mode without gradients, logged under eval/."""
        task = st.task
        if not hasattr(task, "evaluate"):
            return {}
        was_training = st.module.training
        st.module.eval()
        try:
            with torch.no_grad(), st.autocast():
                result = {f"eval/{k}": _to_float(v) for k, v in task.evaluate().items()}
        finally:
            st.module.train(was_training)
        if st.rank0 and result and st.writer is not None:
            st.writer.write(st.step, result)
        return result

    # -- checkpoints ------------------------------------------------------------------------------
    def save(self, st: RunState) -> Path | None:
        """Write ``checkpoints/step-N`` (rank 0, atomic, digests in meta.json; under FSDP every rank its
        shards through DCP); every rank waits for it."""
        if self.run_dir is None:
            return None
        rngs = [rng_state()]
        data_states = [st.cursor.state_dict()]
        if st.world > 1:  # every rank's generators; its stream's position too when the stream shards itself
            mine = (rngs[0], data_states[0] if st.cursor.stride == 1 else None)
            gathered: list[Any] = [None] * st.world
            torch.distributed.all_gather_object(gathered, mine)
            rngs = [g[0] for g in gathered]
            if st.cursor.stride == 1:
                data_states = [g[1] for g in gathered]
        root = self.run_dir / "checkpoints"
        path = root / f"step-{st.step}"
        state = {
            "step": st.step,
            "scheduler": st.scheduler.state_dict(),
            "data": data_states[0],
            "rng": rngs,
            "world_size": st.world,
            "guard": st.guard.state_dict(),
        }
        if st.world > 1 and st.cursor.stride == 1:
            state["data_ranks"] = data_states
        keep, config = self.config.checkpoint.keep_last, asdict(self.config)
        error: CheckpointError | None = None
        if self._is_fsdp(st.fabric):  # sharded: every rank writes its own part, nothing is gathered
            from torch.distributed.checkpoint.state_dict import get_state_dict

            model_sd, optim_sd = get_state_dict(st.raw_model, st.optimizer)
            try:
                path = save_sharded_checkpoint(
                    root,
                    st.step,
                    {"model": model_sd, "optim": optim_sd},
                    state,
                    writer=st.rank0,
                    barrier=st.fabric.barrier,
                    keep_last=keep,
                    config=config,
                )
            except CheckpointError as exc:
                error = exc
        elif st.rank0:
            try:
                path = save_checkpoint(
                    root,
                    st.step,
                    st.raw_model.state_dict(),
                    st.optimizer.state_dict(),
                    state,
                    keep_last=keep,
                    config=config,
                )
            except CheckpointError as exc:
                error = exc
        if st.world > 1 and self._agree(st, float(error is not None)):
            raise error or CheckpointError(f"rank 0 could not write checkpoint {path}; see its log")
        if error is not None:
            raise error
        st.fabric.barrier()
        return path
