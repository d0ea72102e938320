"""Property tests of the learning-rate schedules: shapes, monotonicity per phase, continuity, end values."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from warmstart.errors import ConfigError
from warmstart.optim import ScheduleConfig, build_schedule
from warmstart.optim.schedules import (
    constant,
    cosine,
    exponential,
    infinite,
    linear,
    one_minus_sqrt,
    piecewise,
)

FAST = settings(max_examples=40, deadline=None)


def values(schedule, n: int) -> list[float]:
    return [schedule(s) for s in range(n)]


def nondecreasing(xs: list[float], tol: float = 1e-12) -> bool:
    return all(b >= a - tol for a, b in zip(xs, xs[1:], strict=False))


def nonincreasing(xs: list[float], tol: float = 1e-12) -> bool:
    return all(b <= a + tol for a, b in zip(xs, xs[1:], strict=False))


def max_jump(xs: list[float]) -> float:
    return max((abs(b - a) for a, b in zip(xs, xs[1:], strict=False)), default=0.0)


# --- composition ---------------------------------------------------------------------------------------

SHAPES = {"linear": (linear, 1.0), "cosine": (cosine, math.pi / 2)}  # Lipschitz constant per unit drop


@FAST
@given(
    st.lists(
        st.tuples(st.integers(1, 60), st.sampled_from(sorted(SHAPES)), st.floats(0.05, 1.0)),
        min_size=1,
        max_size=5,
    )
)
def test_piecewise_of_continuous_phases_has_small_steps(spec):
    """Chained phases whose ends meet: every step-to-step change is bounded by the steepest phase slope."""
    phases, bound, level = [], 0.0, 0.0
    for n, kind, target in spec:
        make, lip = SHAPES[kind]
        phases.append((n, make(level, target)))
        bound = max(bound, lip * abs(target - level) / n)
        level = target
    xs = values(piecewise(phases), sum(n for n, *_ in spec) + 3)
    assert max_jump(xs) <= bound + 1e-12
    # each phase reaches its end value on its last step
    s = 0
    for n, _, target in spec:
        s += n
        assert xs[s - 1] == pytest.approx(target)


def test_piecewise_detects_a_discontinuity():
    """The jump measure is not vacuous: phases that do not meet produce a jump of their gap."""
    xs = values(piecewise([(10, linear(0.0, 1.0)), (10, constant(0.3))]), 20)
    assert max_jump(xs) == pytest.approx(0.7)


def test_shapes_endpoints():
    for make in (linear, cosine, exponential, one_minus_sqrt):
        f = make(0.8, 0.2)
        assert f(0.0) == pytest.approx(0.8)
        assert f(1.0) == pytest.approx(0.2)
        assert nonincreasing([f(t / 100) for t in range(101)])
    with pytest.raises(ConfigError, match="exponential"):
        exponential(1.0, 0.0)


# --- the named schedules ---------------------------------------------------------------------------------


@FAST
@given(total=st.integers(10, 400), wfrac=st.floats(0.0, 0.3), m=st.floats(0.0, 0.5))
def test_cosine(total, wfrac, m):
    w = int(wfrac * total)
    xs = values(build_schedule(ScheduleConfig("cosine", warmup_steps=w, min_lr_ratio=m), total), total + 5)
    if w:
        assert xs[0] == pytest.approx(1 / w)  # never a zero learning rate
        assert xs[w - 1] == pytest.approx(1.0)
        assert nondecreasing(xs[:w])
    assert nonincreasing(xs[max(w - 1, 0) :])
    assert xs[total - 1] == pytest.approx(m)
    assert xs[-1] == pytest.approx(m)  # holds after the end
    assert max(xs) <= 1.0 + 1e-12 and min(xs[w:]) >= m - 1e-12 and min(xs[: total - 1]) > 0
    bound = max(1 / w if w else 0.0, (1 - m) * math.pi / 2 / (total - w))
    assert max_jump(xs) <= bound + 1e-12


@FAST
@given(
    cycles=st.integers(1, 4),
    period=st.integers(10, 120),
    w=st.integers(1, 9),
    m=st.floats(0.01, 0.5),
)
def test_rewarm_cycles_are_continuous_and_peak_each_cycle(cycles, period, w, m):
    total = cycles * period
    config = ScheduleConfig("rewarm", warmup_steps=w, min_lr_ratio=m, cycles=cycles)
    xs = values(build_schedule(config, total), total)
    for c in range(cycles):
        start = c * period
        assert xs[start] == pytest.approx(m + (1 - m) / w)  # re-warm starts from the previous end (m)
        assert xs[start + w - 1] == pytest.approx(1.0)  # peak at the end of each re-warm
        assert xs[start + period - 1] == pytest.approx(m)  # re-decayed to the minimum
        assert nondecreasing(xs[start : start + w])
        assert nonincreasing(xs[start + w - 1 : start + period])
    # continuous across cycle boundaries: the re-warm's first step is one warmup slope above m
    bound = max((1 - m) / w, (1 - m) * math.pi / 2 / (period - w))
    assert max_jump(xs) <= bound + 1e-12


def test_rewarm_from_zero_and_explicit_start():
    f = build_schedule(ScheduleConfig("rewarm", warmup_steps=4, min_lr_ratio=0.1, rewarm_start_ratio=0.0), 20)
    assert f(0) == pytest.approx(0.25)
    assert f(3) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="cycles"):
        build_schedule(ScheduleConfig("rewarm", warmup_steps=8, cycles=4), 20)


@FAST
@given(
    total=st.integers(50, 400),
    w=st.integers(1, 10),
    cooldown=st.floats(0.05, 0.3),
    anneal=st.floats(0.05, 0.3),
    c=st.floats(0.2, 0.9),
    m=st.floats(0.01, 0.19),
    shape=st.sampled_from(["exponential", "linear", "cosine"]),
)
def test_infinite_phases(total, w, cooldown, anneal, c, m, shape):
    config = ScheduleConfig(
        "infinite",
        warmup_steps=w,
        cooldown_fraction=cooldown,
        decay_fraction=anneal,
        constant_ratio=c,
        min_lr_ratio=m,
        decay_shape=shape,
    )
    xs = values(build_schedule(config, total), total + 3)
    cd, an = round(cooldown * total), round(anneal * total)
    a0 = total - an
    assert xs[w - 1] == pytest.approx(1.0)
    assert nondecreasing(xs[:w])
    assert nonincreasing(xs[w - 1 : w + cd])
    assert xs[w + cd - 1] == pytest.approx(c)  # cooled down to the constant
    assert all(x == pytest.approx(c) for x in xs[w + cd - 1 : a0])  # constant phase
    assert nonincreasing(xs[a0 - 1 : total])
    assert xs[total - 1] == pytest.approx(m)  # annealed to the minimum
    lip = {"exponential": c * math.log(c / m), "linear": c - m, "cosine": (c - m) * math.pi / 2}[shape]
    bound = max(1 / w, (1 - c) * math.pi / 2 / cd, lip / an)
    assert max_jump(xs) <= bound + 1e-12


def test_infinite_exponential_anneal_is_geometric():
    f = infinite(
        warmup_steps=2, cooldown_steps=2, constant_ratio=0.5, anneal_start=10, anneal_steps=4, min_ratio=0.05
    )
    anneal = [f(s) for s in range(10, 14)]
    ratios = [b / a for a, b in zip([0.5, *anneal], anneal, strict=False)]
    assert ratios == pytest.approx([0.1 ** (1 / 4)] * 4)


def test_infinite_open_ended_stays_constant():
    f = infinite(
        warmup_steps=5,
        cooldown_steps=10,
        constant_ratio=0.4,
        anneal_start=None,
        anneal_steps=0,
        min_ratio=0.0,
    )
    assert f(14) == pytest.approx(0.4)
    assert f(10**7) == pytest.approx(0.4)
    with pytest.raises(ConfigError, match="min_lr_ratio"):
        build_schedule(ScheduleConfig("infinite", min_lr_ratio=0.0), 100)  # exponential to 0 is impossible


@FAST
@given(
    total=st.integers(20, 400),
    w=st.integers(0, 5),
    d=st.floats(0.05, 0.5),
    m=st.floats(0.0, 0.5),
    shape=st.sampled_from(["1-sqrt", "linear", "cosine"]),
)
def test_wsd(total, w, d, m, shape):
    config = ScheduleConfig("wsd", warmup_steps=w, decay_fraction=d, min_lr_ratio=m, decay_shape=shape)
    xs = values(build_schedule(config, total), total)
    ds = round(d * total)
    assert all(x == pytest.approx(1.0) for x in xs[max(w - 1, 0) : total - ds])  # stable at the peak
    assert nonincreasing(xs[total - ds - 1 :])
    assert xs[total - 1] == pytest.approx(m)
    jump = {"1-sqrt": (1 - m) / math.sqrt(ds), "linear": (1 - m) / ds, "cosine": (1 - m) * math.pi / 2 / ds}
    assert max_jump(xs) <= max(1 / w if w else 0.0, jump[shape]) + 1e-12


def test_constant_and_errors():
    f = build_schedule(ScheduleConfig("constant", warmup_steps=4), 10)
    assert values(f, 10) == pytest.approx([0.25, 0.5, 0.75] + [1.0] * 7)
    with pytest.raises(ConfigError, match="warmup_steps"):
        build_schedule(ScheduleConfig("cosine", warmup_steps=11), 10)
    with pytest.raises(ConfigError, match="decay_fraction"):
        build_schedule(ScheduleConfig("wsd", decay_fraction=1.5), 10)


def test_drives_lambdalr():
    """The engine's use: the optimizer's lr is peak * multiplier at every step."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.2)
    f = build_schedule(ScheduleConfig("wsd", warmup_steps=3, decay_fraction=0.3, min_lr_ratio=0.1), 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, f)
    seen = []
    for _ in range(20):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.2 * f(s) for s in range(20)])
    assert seen[-1] == pytest.approx(0.02)


def test_plot_schedules(tmp_path):
    from warmstart.optim import plot_schedules

    out = plot_schedules(tmp_path / "s.png", total_steps=50)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
