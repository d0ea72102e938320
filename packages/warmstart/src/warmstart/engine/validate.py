"""Check every engine field before anything is written, and compare a resume's config with the saved one.

A wrong value must end the run at once with one line naming the field, the value and the allowed range
(``engine.train.log_every=0: must be an integer >= 1``), not as a traceback at step 1 or a silent no-op.
Values that are legal but almost certainly a mistake (``optimizer.lr=0``) come back as warnings. On
resume, :func:`config_changes` lists what differs from the checkpoint in the fields that decide the
trajectory (batch, learning rate, seed, schedule, max_steps): the engine refuses such a resume unless
``allow_config_change`` is set, and then prints each change.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable
from dataclasses import asdict, fields, is_dataclass
from typing import Any, Literal, get_args, get_origin

from warmstart.engine.config import EngineConfig
from warmstart.errors import ConfigError

Rule = tuple[Callable[[Any], bool], str]


def _int(low: int) -> Rule:
    return (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low, f"an integer >= {low}")


def _positive(allow_none: bool = False) -> Rule:
    def ok(v: Any) -> bool:
        if v is None:
            return allow_none
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0

    return ok, "a finite number > 0" + (" or null" if allow_none else "")


def _unit(closed_top: bool = True) -> Rule:
    def ok(v: Any) -> bool:
        return isinstance(v, int | float) and 0 <= v <= 1 and (closed_top or v < 1)

    return ok, "a number in [0, 1]" if closed_top else "a number in [0, 1)"


def _nonneg_float() -> Rule:
    return (
        lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0,
        "a finite number >= 0",
    )


RULES: dict[str, Rule] = {
    "train.max_steps": _int(1),
    "train.micro_batch_size": _int(1),
    "train.grad_accum_steps": _int(1),
    "train.grad_clip_norm": _positive(allow_none=True),
    "train.seed": _int(0),
    "train.max_skipped_steps": _int(0),
    "train.eval_every": _int(0),
    "train.explode_factor": _positive(allow_none=True),
    "train.num_workers": _int(0),
    "logging.log_every": _int(1),
    "checkpoint.every": _int(0),
    "checkpoint.keep_last": _int(0),
    "distributed.num_nodes": _int(1),
    "distributed.timeout": _positive(),
    "optimizer.lr": _nonneg_float(),
    "optimizer.weight_decay": _nonneg_float(),
    "optimizer.momentum": _unit(closed_top=False),
    "optimizer.eps": _positive(),
    "optimizer.rho": _nonneg_float(),
    "schedule.warmup_steps": _int(0),
    "schedule.min_lr_ratio": _unit(),
    "schedule.cycles": _int(1),
    "schedule.cooldown_fraction": _unit(),
    "schedule.constant_ratio": _unit(),
    "schedule.decay_fraction": _unit(),
}

RESUME_FIELDS = (
    "train.max_steps",
    "train.micro_batch_size",
    "train.grad_accum_steps",
    "train.seed",
    "optimizer.name",
    "optimizer.lr",
    "schedule",
)
"""What decides a run's trajectory: a resume that changes one of these is not the run it continues."""


def _walk(obj: Any, prefix: str = "") -> typing.Iterator[tuple[str, Any, Any]]:
    """(dotted name, value, declared type) of every leaf field of a dataclass tree."""
    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        value = getattr(obj, f.name)
        name = f"{prefix}{f.name}"
        if is_dataclass(value):
            yield from _walk(value, name + ".")
        else:
            yield name, value, hints.get(f.name)


def _literal_choices(hint: Any) -> tuple[Any, ...] | None:
    """The allowed values of a ``Literal[...]`` (or ``Literal | X``) annotation, else None."""
    if get_origin(hint) is Literal:
        return get_args(hint)
    choices: list[Any] = []
    for arg in get_args(hint):
        if get_origin(arg) is Literal:
            choices.extend(get_args(arg))
        elif arg is type(None):
            choices.append(None)
        else:
            return None  # a Literal mixed with a free type (int | "auto"): checked by a rule if at all
    return tuple(choices) if choices else None


def validate_config(config: EngineConfig, prefix: str = "engine.") -> list[str]:
    """Raise :class:`ConfigError` on the first invalid field; return warnings about legal but odd values."""
    for name, value, hint in _walk(config):
        choices = _literal_choices(hint)
        if choices is not None and not isinstance(value, list) and value not in choices:
            raise ConfigError(f"{prefix}{name}={value!r}: must be one of {', '.join(map(repr, choices))}")
        rule = RULES.get(name)
        if rule is not None and not rule[0](value):
            raise ConfigError(f"{prefix}{name}={value!r}: must be {rule[1]}")
    train = config.train
    devices = config.distributed.devices
    if devices != "auto" and not (isinstance(devices, int) and devices >= 1):
        raise ConfigError(f"{prefix}distributed.devices={devices!r}: must be 'auto' or an integer >= 1")
    if train.stop_at is not None and not (isinstance(train.stop_at, int) and train.stop_at >= 1):
        raise ConfigError(f"{prefix}train.stop_at={train.stop_at!r}: must be null or an integer >= 1")
    if config.schedule.warmup_steps > train.max_steps:
        raise ConfigError(
            f"{prefix}schedule.warmup_steps={config.schedule.warmup_steps}: must lie in "
            f"[0, train.max_steps={train.max_steps}]"
        )
    beta = config.optimizer.betas
    if len(beta) != 2 or not all(isinstance(b, int | float) and 0 <= b < 1 for b in beta):
        raise ConfigError(f"{prefix}optimizer.betas={list(beta)!r}: must be two numbers in [0, 1)")
    bad = [name for name in config.logging.loggers if name not in ("tensorboard", "csv", "wandb")]
    if bad:
        raise ConfigError(f"{prefix}logging.loggers: {bad[0]!r} is unknown; use tensorboard, csv or wandb")
    if "wandb" in config.logging.loggers:
        import importlib.util

        missing = [m for m in ("wandb", "lightning") if importlib.util.find_spec(m) is None]
        if missing:
            raise ConfigError(
                f"{prefix}logging.loggers: wandb needs the {' and '.join(missing)} package(s); "
                f"pip install wandb lightning, or drop wandb from the loggers"
            )
    warnings = []
    if config.optimizer.lr == 0:
        warnings.append(
            f"{prefix}optimizer.lr=0: the weights will not change (was a learning rate intended?)"
        )
    if train.stop_at is not None and train.stop_at > train.max_steps:
        warnings.append(
            f"{prefix}train.stop_at={train.stop_at} lies past train.max_steps={train.max_steps}: it has no effect"
        )
    return warnings


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return out


def config_changes(saved: dict[str, Any], config: EngineConfig, prefix: str = "engine.") -> list[str]:
    """``"engine.optimizer.lr: 0.001 -> 0.002"`` for each trajectory field that differs from ``saved``."""
    before = _flat(saved)
    after = _flat(asdict(config))
    changes = []
    for name in sorted(after):
        if not any(name == f or name.startswith(f + ".") for f in RESUME_FIELDS):
            continue
        if name in before and before[name] != after[name]:
            changes.append(f"{prefix}{name}: {before[name]!r} -> {after[name]!r}")
    return changes
