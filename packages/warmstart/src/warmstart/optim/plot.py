"""Plot every learning-rate schedule of :mod:`warmstart.optim.schedules` into one PNG (for the docs).

Regenerate the docs figure with
``python -c "from warmstart.optim import plot_schedules; plot_schedules('packages/warmstart/docs/schedules.png')"``.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from warmstart.optim.schedules import ScheduleConfig, build_schedule

log = logging.getLogger(__name__)

#: The configurations drawn (warmup is 5 % of the run), with their legend labels.
PLOTTED: list[tuple[str, ScheduleConfig]] = [
    ("cosine (warmup + cosine)", ScheduleConfig(name="cosine")),
    ("rewarm, 3 cycles", ScheduleConfig(name="rewarm", cycles=3)),
    ("infinite (exp. anneal)", ScheduleConfig(name="infinite", decay_fraction=0.15)),
    ("wsd (1-sqrt decay)", ScheduleConfig(name="wsd")),
    ("constant", ScheduleConfig(name="constant")),
]


def plot_schedules(path: str | Path, total_steps: int = 1000) -> Path:
    """Draw each schedule in :data:`PLOTTED` over ``total_steps`` steps and save a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(len(PLOTTED), 1, figsize=(7, 1.6 * len(PLOTTED)), sharex=True)
    steps = list(range(total_steps))
    for ax, (label, config) in zip(axes, PLOTTED, strict=True):
        schedule = build_schedule(replace(config, warmup_steps=max(1, total_steps // 20)), total_steps)
        ax.plot(steps, [schedule(s) for s in steps], lw=1.8)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("lr / peak")
        ax.set_title(label, fontsize=9, loc="left")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("optimizer step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    log.info("wrote %s", path)
    return path
