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


@dataclass
class LoggingConfig:
    """Metrics files and progress display."""

    log_every: int = 10
    """Write metrics (JSONL, TensorBoard) and a progress line every N steps."""
    tensorboard: bool = True
    """Also write TensorBoard event files into the run directory."""
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
