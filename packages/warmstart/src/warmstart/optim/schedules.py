"""Learning-rate schedules as plain, composable functions of the step.

Every schedule returns a *multiplier* of the peak learning rate (the optimizer's ``lr``), so that the
engine can drive any of them through one ``torch.optim.lr_scheduler.LambdaLR``.

Seed papers:

- *Continual Pre-Training of Large Language Models: How to (re)warm your model?* (Gupta et al.,
  arXiv 2308.04014) and *Simple and Scalable Strategies to Continually Pre-train Large Language Models*
  (Ibrahim et al., arXiv 2403.08763): **re-warm + re-decay**. A model that ended its previous run at
  ``min_lr`` is warmed up again (here: linearly, from ``rewarm_start_ratio``, by default the previous
  run's final multiplier, so the learning rate is continuous across runs) and cosine-decayed again;
  ``cycles`` > 1 repeats that for a sequence of datasets inside one run ("repeated cosine").
- *Beyond Cosine Decay: On the effectiveness of Infinite Learning Rate Schedule for Continual
  Pre-training* (Singh et al., arXiv 2503.02844, after Ibrahim et al. §7): the **infinite** schedule,
  linear warmup to the peak -> cosine cooldown to a constant ``constant_ratio`` -> constant for as long as
  data arrives -> a final anneal to ``min_lr_ratio``. The anneal's shape is not pinned down in our notes;
  we default to the **exponential** decay ``c * (m / c) ** t`` that reviews of the paper describe, and
  offer linear / cosine / 1-sqrt as options (``decay_shape``).
- **WSD** (warmup-stable-decay; MiniCPM, arXiv 2404.06395, and Hägele et al., arXiv 2405.18392): warmup,
  a long stable phase at the peak, then a short decay (``decay_fraction`` of the run) to ``min_lr_ratio``;
  Hägele et al. found the ``1-sqrt`` decay shape best, which we use by default.

Everything here is written by hand (``torch`` ships schedulers but not as composable pure functions
of the step, and none of re-warm cycles, infinite or WSD).

Step convention (one rule for every phase): a phase of ``n`` steps evaluates its shape at
``t = (k + 1) / n`` for its local step ``k = 0 .. n - 1``. So the first training step never runs at a
zero learning rate, each phase reaches its end value exactly on its last step, and the next phase
starts from there; ``schedule(total_steps - 1)`` is the final value. Steps past the end hold the final
value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from warmstart.errors import ConfigError

Schedule = Callable[[int], float]
"""A learning-rate multiplier as a function of the (0-based) optimizer step."""

Shape = Callable[[float], float]
"""A phase's curve as a function of its progress ``t`` in [0, 1]."""

DecayShape = Literal["linear", "cosine", "exponential", "1-sqrt"]


# --- shapes: progress t in [0, 1] -> multiplier -------------------------------------------------------


def linear(start: float, end: float) -> Shape:
    """Straight line from ``start`` (t=0) to ``end`` (t=1)."""
    return lambda t: start + (end - start) * t


def cosine(start: float, end: float) -> Shape:
    """Half cosine from ``start`` (t=0) to ``end`` (t=1); flat at both ends."""
    return lambda t: end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * t))


def exponential(start: float, end: float) -> Shape:
    """Geometric interpolation ``start * (end / start) ** t``; both ends must be positive."""
    if start <= 0 or end <= 0:
        raise ConfigError(
            f"an exponential phase needs positive ends, got start={start} end={end}: "
            "set min_lr_ratio > 0 or pick another decay_shape (linear, cosine, 1-sqrt)"
        )
    ratio = end / start
    return lambda t: start * ratio**t


def one_minus_sqrt(start: float, end: float) -> Shape:
    """``end + (start - end) * (1 - sqrt(t))``: fast drop then slow (Hägele et al.'s WSD cooldown)."""
    return lambda t: end + (start - end) * (1.0 - math.sqrt(t))


def constant(value: float) -> Shape:
    """A flat phase."""
    return lambda t: value


def decay(shape: DecayShape, start: float, end: float) -> Shape:
    """The decay curve named ``shape`` from ``start`` to ``end``."""
    if shape == "linear":
        return linear(start, end)
    if shape == "cosine":
        return cosine(start, end)
    if shape == "exponential":
        return exponential(start, end)
    if shape == "1-sqrt":
        return one_minus_sqrt(start, end)
    raise ConfigError(f"decay_shape {shape!r} is unknown: use linear, cosine, exponential or 1-sqrt")


# --- composition -------------------------------------------------------------------------------------


def piecewise(phases: Sequence[tuple[int, Shape]]) -> Schedule:
    """Chain phases ``(n_steps, shape)`` into one schedule of the global step.

    Phase ``i`` covers steps ``[s_i, s_i + n_i)``; inside it the value is ``shape((k + 1) / n_i)`` for the
    local step ``k``. Phases with ``n_i == 0`` are skipped. Before step 0 the first value holds, after the
    last phase its end value holds.
    """
    kept = [(int(n), shape) for n, shape in phases if int(n) > 0]
    if any(n < 0 for n, _ in phases):
        raise ConfigError(f"phase lengths must be >= 0, got {[n for n, _ in phases]}")
    if not kept:
        return lambda step: 1.0
    starts: list[int] = []
    s = 0
    for n, _ in kept:
        starts.append(s)
        s += n
    total = s
    final = kept[-1][1](1.0)

    def schedule(step: int) -> float:
        if step >= total:
            return final
        step = max(0, int(step))
        for (n, shape), start in zip(kept, starts, strict=True):
            if step < start + n:
                return shape((step - start + 1) / n)
        return final  # pragma: no cover - unreachable

    return schedule


def repeat(schedule: Schedule, period: int, cycles: int) -> Schedule:
    """Run ``schedule``'s first ``period`` steps ``cycles`` times back to back (then hold its end)."""
    if period <= 0 or cycles <= 0:
        raise ConfigError(f"repeat needs period > 0 and cycles > 0, got period={period} cycles={cycles}")

    def repeated(step: int) -> float:
        if step >= period * cycles:
            return schedule(period - 1)
        return schedule(max(0, step) % period)

    return repeated


# --- the named schedules ------------------------------------------------------------------------------


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """Linear warmup from 0 to 1 over ``warmup_steps``, then cosine decay to ``min_ratio`` at the last step."""
    return warmup_then(
        [(total_steps - warmup_steps, cosine(1.0, min_ratio))], warmup_steps=warmup_steps, start=0.0
    )(step)


def warmup_then(phases: Sequence[tuple[int, Shape]], *, warmup_steps: int, start: float = 0.0) -> Schedule:
    """Prefix ``phases`` with a linear warmup from ``start`` to the peak (1.0)."""
    if warmup_steps < 0:
        raise ConfigError(f"warmup_steps must be >= 0, got {warmup_steps}")
    return piecewise([(warmup_steps, linear(start, 1.0)), *phases])


def rewarm_cosine(
    *, warmup_steps: int, total_steps: int, start_ratio: float, min_ratio: float, cycles: int = 1
) -> Schedule:
    """Re-warm from ``start_ratio`` to the peak, re-decay with a cosine to ``min_ratio``; ``cycles`` times.

    ``total_steps`` is split into ``cycles`` equal cycles (the remainder goes to the last one's constant
    tail), each with ``warmup_steps`` of re-warm. With ``start_ratio == min_ratio`` the multiplier is
    continuous across cycles and with the end of a previous cosine run that ended at ``min_ratio``.
    """
    if cycles < 1:
        raise ConfigError(f"cycles must be >= 1, got {cycles}")
    period = total_steps // cycles
    if period <= warmup_steps:
        raise ConfigError(
            f"each of the {cycles} re-warm cycles has {period} steps, not more than warmup_steps="
            f"{warmup_steps}: lower warmup_steps or cycles, or train longer"
        )
    one = warmup_then(
        [(period - warmup_steps, cosine(1.0, min_ratio))], warmup_steps=warmup_steps, start=start_ratio
    )
    return repeat(one, period, cycles)


def infinite(
    *,
    warmup_steps: int,
    cooldown_steps: int,
    constant_ratio: float,
    anneal_start: int | None,
    anneal_steps: int,
    min_ratio: float,
    anneal_shape: DecayShape = "exponential",
) -> Schedule:
    """Infinite schedule: warmup -> cosine cooldown to ``constant_ratio`` -> constant -> final anneal.

    ``anneal_start=None`` keeps the constant phase forever (a truly open-ended run; anneal later by
    rebuilding the schedule with the step you stop at). Otherwise the anneal to ``min_ratio`` runs over
    ``[anneal_start, anneal_start + anneal_steps)``.
    """
    head: list[tuple[int, Shape]] = [
        (warmup_steps, linear(0.0, 1.0)),
        (cooldown_steps, cosine(1.0, constant_ratio)),
    ]
    if anneal_start is None:
        return piecewise([*head, (1, constant(constant_ratio))])
    constant_steps = anneal_start - warmup_steps - cooldown_steps
    if constant_steps < 0:
        raise ConfigError(
            f"the anneal starts at step {anneal_start}, before warmup + cooldown end "
            f"({warmup_steps} + {cooldown_steps}): shorten them or anneal later"
        )
    return piecewise(
        [
            *head,
            (constant_steps, constant(constant_ratio)),
            (anneal_steps, decay(anneal_shape, constant_ratio, min_ratio)),
        ]
    )


def wsd(
    *,
    warmup_steps: int,
    total_steps: int,
    decay_steps: int,
    min_ratio: float,
    decay_shape: DecayShape = "1-sqrt",
) -> Schedule:
    """Warmup-stable-decay: warmup, stable at the peak, then ``decay_steps`` of decay to ``min_ratio``."""
    stable = total_steps - warmup_steps - decay_steps
    if stable < 0:
        raise ConfigError(
            f"warmup_steps ({warmup_steps}) + decay steps ({decay_steps}) exceed total_steps ({total_steps})"
        )
    return warmup_then(
        [(stable, constant(1.0)), (decay_steps, decay(decay_shape, 1.0, min_ratio))],
        warmup_steps=warmup_steps,
    )


# --- config -------------------------------------------------------------------------------------------


@dataclass
class ScheduleConfig:
    name: Literal["constant", "cosine", "rewarm", "infinite", "wsd"] = "cosine"
    """Shape: constant, linear warmup + cosine, re-warm + re-decay, infinite, or warmup-stable-decay."""
    warmup_steps: int = 0
    """Linear warmup steps from 0 to the peak learning rate (for rewarm: from rewarm_start_ratio)."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of the peak."""
    rewarm_start_ratio: float | None = None
    """rewarm: multiplier the re-warm starts from; None = min_lr_ratio (where a previous cosine run ended)."""
    cycles: int = 1
    """rewarm: number of equal re-warm + re-decay cycles in the run (one per dataset of a sequence)."""
    cooldown_fraction: float = 0.1
    """infinite: cosine cooldown from the peak to constant_ratio, as a fraction of the run."""
    constant_ratio: float = 0.5
    """infinite: the constant phase's learning rate as a fraction of the peak."""
    decay_fraction: float = 0.2
    """wsd: final decay, infinite: final anneal, as a fraction of the run (0 for an open-ended infinite)."""
    decay_shape: DecayShape | None = None
    """Shape of the wsd decay / infinite anneal: linear, cosine, exponential, 1-sqrt. None: 1-sqrt for
    wsd, exponential for infinite."""


def build_schedule(config: ScheduleConfig, total_steps: int) -> Schedule:
    """Turn a :class:`ScheduleConfig` into a multiplier function of the step."""
    if total_steps < 1:
        raise ConfigError(f"total_steps must be >= 1, got {total_steps}")
    w = config.warmup_steps
    if w < 0 or w > total_steps:
        raise ConfigError(f"schedule.warmup_steps={w} must lie in [0, max_steps={total_steps}]")
    for field_name in ("min_lr_ratio", "constant_ratio", "cooldown_fraction", "decay_fraction"):
        value = getattr(config, field_name)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"schedule.{field_name}={value} must lie in [0, 1]")
    if config.name == "constant":
        return warmup_then([(total_steps - w, constant(1.0))], warmup_steps=w)
    if config.name == "cosine":
        return warmup_then([(total_steps - w, cosine(1.0, config.min_lr_ratio))], warmup_steps=w)
    if config.name == "rewarm":
        start = config.min_lr_ratio if config.rewarm_start_ratio is None else config.rewarm_start_ratio
        return rewarm_cosine(
            warmup_steps=w,
            total_steps=total_steps,
            start_ratio=start,
            min_ratio=config.min_lr_ratio,
            cycles=config.cycles,
        )
    if config.name == "infinite":
        cooldown = round(config.cooldown_fraction * total_steps)
        anneal = round(config.decay_fraction * total_steps)
        return infinite(
            warmup_steps=w,
            cooldown_steps=cooldown,
            constant_ratio=config.constant_ratio,
            anneal_start=None if anneal == 0 else total_steps - anneal,
            anneal_steps=anneal,
            min_ratio=config.min_lr_ratio,
            anneal_shape=config.decay_shape or "exponential",
        )
    if config.name == "wsd":
        return wsd(
            warmup_steps=w,
            total_steps=total_steps,
            decay_steps=round(config.decay_fraction * total_steps),
            min_ratio=config.min_lr_ratio,
            decay_shape=config.decay_shape or "1-sqrt",
        )
    raise ConfigError(
        f"schedule.name={config.name!r} is unknown: use constant, cosine, rewarm, infinite, wsd"
    )
