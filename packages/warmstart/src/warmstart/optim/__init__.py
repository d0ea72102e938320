"""Schedules and optimisers for continual pretraining (re-warm, infinite/WSD, SAM, SGD-SaI)."""

from warmstart.optim.factory import OptimizerConfig, build_optimizer
from warmstart.optim.plot import plot_schedules
from warmstart.optim.sam import SAM
from warmstart.optim.schedules import (
    Schedule,
    ScheduleConfig,
    build_schedule,
    constant,
    cosine,
    decay,
    exponential,
    infinite,
    linear,
    one_minus_sqrt,
    piecewise,
    repeat,
    rewarm_cosine,
    warmup_cosine,
    warmup_then,
    wsd,
)
from warmstart.optim.sgd_sai import SGDSaI

__all__ = [
    "SAM",
    "OptimizerConfig",
    "SGDSaI",
    "Schedule",
    "ScheduleConfig",
    "build_optimizer",
    "build_schedule",
    "constant",
    "cosine",
    "decay",
    "exponential",
    "infinite",
    "linear",
    "one_minus_sqrt",
    "piecewise",
    "plot_schedules",
    "repeat",
    "rewarm_cosine",
    "warmup_cosine",
    "warmup_then",
    "wsd",
]
