"""Schedules and optimisers for continual pretraining (re-warm, infinite/WSD, SAM, SGD-SaI)."""

from warmstart.optim.factory import OptimizerConfig, build_optimizer
from warmstart.optim.schedules import ScheduleConfig, build_schedule

__all__ = ["OptimizerConfig", "ScheduleConfig", "build_optimizer", "build_schedule"]
