"""Typed configuration of the training engine.

Every field carries an attribute docstring: jsonargparse turns them into ``--help`` text, so
``warmstart-<app> pretrain --help`` documents ``--engine.train.max_steps`` and friends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from warmstart.optim import OptimizerConfig, ScheduleConfig


@dataclass
class TrainConfig:
    """Steps, batch, accumulation, clipping, seeds and the NaN/inf guard."""

    max_steps: int = 100
    """Optimizer steps in the whole run (the schedule spans them)."""
    micro_batch_size: int = 8
    """Samples per forward pass on each device."""
    grad_accum_steps: int = 1
    """Micro-batches accumulated per optimizer step."""
    grad_clip_norm: float | None = 1.0
    """Clip the global gradient norm to this value; null disables clipping."""
    seed: int = 0
    """Seed of every random generator (python, numpy, torch) and of the data order."""
    nonfinite: Literal["stop", "skip"] = "stop"
    """On a NaN/inf loss or gradient: stop with an error naming the step, or skip that batch."""
    max_skipped_steps: int = 10
    """With nonfinite=skip: stop after this many consecutive skipped steps."""
    eval_every: int = 0
    """Call the task's evaluate() every N steps (0: only at the end)."""
    stop_at: int | None = None
    """Halt after this step although the schedule spans max_steps (for staged runs; resume continues)."""
    explode_factor: float | None = 1000.0
    """A finite loss above its running median by this many times the median counts as diverged (handled
    like a NaN, see nonfinite); null disables the check."""
    num_workers: int = 0
    """Data-loading worker processes for a map-style dataset (>0: torchdata's StatefulDataLoader, which
    resumes exactly with workers too)."""


@dataclass
class LoggingConfig:
    """Metrics files and progress display."""

    log_every: int = 10
    """Write metrics (JSONL, TensorBoard) and a progress line every N steps."""
    tensorboard: bool = True
    """Also write TensorBoard event files into the run directory (false drops tensorboard from loggers)."""
    loggers: list[Literal["tensorboard", "csv", "wandb"]] = field(default_factory=lambda: ["tensorboard"])
    """Trackers beside metrics.jsonl, through Lightning's logger classes: tensorboard (run/tensorboard),
    csv (run/csv/metrics.csv), wandb (offline unless WANDB_MODE says otherwise; files in run/wandb). The
    resolved config is logged to each as hyperparameters."""
    progress: Literal["auto", "rich", "plain", "none"] = "auto"
    """Progress display: a rich bar on a terminal, plain lines otherwise (auto), or forced."""


@dataclass
class CheckpointConfig:
    """Checkpoint cadence and retention."""

    every: int = 0
    """Save a checkpoint every N steps (0: only at the end)."""
    keep_last: int = 2
    """Keep the newest N checkpoints (0 keeps all)."""
    save_final: bool = True
    """Save a checkpoint when the run ends."""


@dataclass
class DistributedConfig:
    """Devices, Fabric strategy and precision."""

    accelerator: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    """Device type; auto picks CUDA when available."""
    devices: int | Literal["auto"] = "auto"
    """Devices per node; auto uses the launcher's (torchrun) world or one device."""
    num_nodes: int = 1
    """Nodes in the job (torchrun/SLURM set the rest)."""
    strategy: Literal["auto", "ddp", "fsdp"] = "auto"
    """Lightning Fabric strategy."""
    precision: Literal["auto", "32-true", "bf16-mixed", "bf16-true", "16-mixed"] = "auto"
    """auto: bf16-mixed on CUDA, fp32 elsewhere."""
    timeout: float = 300.0
    """Seconds a collective (all-reduce, barrier) may wait for the other ranks before the run stops with
    an error: a hung or killed rank then ends the job instead of blocking it forever."""


@dataclass
class EngineConfig:
    """Everything the training engine needs."""

    train: TrainConfig = field(default_factory=TrainConfig)
    """Steps, batch, accumulation, clipping, seeds."""
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    """Optimizer and its hyperparameters."""
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    """Learning-rate schedule."""
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    """Metrics and progress."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Checkpoint cadence and retention."""
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    """Devices, strategy and precision."""
    allow_config_change: bool = False
    """On resume, accept a batch size, learning rate, seed, schedule or max_steps that differ from the
    checkpoint's (each change is printed as a warning); without it such a resume is refused."""
