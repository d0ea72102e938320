"""The training engine: a short loop on Lightning Fabric that owns devices, precision, accumulation,
clipping, schedules, the NaN/inf and loss-explosion guard, verified atomic checkpoints with exact resume,
preemption (SIGTERM/SIGINT), metrics, trackers and progress; ``light_fit`` is its in-process step for the
many tiny fits of a bench."""

from warmstart.engine.checkpoint import (
    complete_checkpoints,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from warmstart.engine.config import (
    CheckpointConfig,
    DistributedConfig,
    EngineConfig,
    LoggingConfig,
    TrainConfig,
)
from warmstart.engine.data import BatchCursor, ResumableLoader
from warmstart.engine.guard import TrainingGuard
from warmstart.engine.light import light_fit
from warmstart.engine.loop import Engine
from warmstart.engine.metrics import RunSummary
from warmstart.engine.presets import cpu_threads, quick_config, quiet
from warmstart.engine.task import Task

__all__ = [
    "BatchCursor",
    "CheckpointConfig",
    "DistributedConfig",
    "Engine",
    "EngineConfig",
    "LoggingConfig",
    "ResumableLoader",
    "RunSummary",
    "Task",
    "TrainConfig",
    "TrainingGuard",
    "complete_checkpoints",
    "cpu_threads",
    "latest_checkpoint",
    "light_fit",
    "load_checkpoint",
    "quick_config",
    "quiet",
    "save_checkpoint",
]
