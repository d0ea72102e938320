"""Pictures of rl runs: episode-return curves (a run's TensorBoard and ``returns.png``; a bench's per-arm
curves) and L2M's accuracy matrices, written with matplotlib and embedded in the bench reports."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

Curve = Sequence[tuple[int, float]]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def return_figure(curves: Mapping[str, Sequence[Curve]], title: str, ylabel: str = "episode return") -> Any:
    """One line per (arm, seed) of (env step, return) points, arms coloured alike; returns the figure."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, (arm, per_seed) in enumerate(curves.items()):
        for j, curve in enumerate(per_seed):
            if curve:
                steps, values = zip(*curve, strict=True)
                ax.plot(steps, values, color=f"C{i}", alpha=0.8, label=arm if j == 0 else None)
    ax.set_xlabel("environment steps")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def log_return_curve(run_dir: Path, curve: Curve, title: str) -> Path:
    """A run's episode returns: scalars ``episode/return`` (x = env step) and the figure ``episode_return``
    in the run's TensorBoard (``<run>/tensorboard``, the engine's folder), and the same figure as
    ``<run>/returns.png``; returns the PNG's path."""
    from warmstart.engine.metrics import log_pictures

    png = Path(run_dir) / "returns.png"
    fig = return_figure({"episodes": [list(curve)]}, title)
    fig.savefig(png, dpi=80)
    last = int(curve[-1][0]) if curve else 0
    log_pictures(run_dir, figures={"episode_return": fig}, scalars={"episode/return": list(curve)}, step=last)
    return png


def save_figure(fig: Any, path: Path) -> Path:
    plt = _pyplot()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def matrix_figure(matrices: Mapping[str, Sequence[Sequence[float]]], tasks: Sequence[str]) -> Any:
    """L2M's accuracy matrices, one panel per arm: row = after learning task i, column = task j."""
    import numpy as np

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(matrices), figsize=(3.2 * len(matrices), 3.0), squeeze=False)
    n = len(tasks)
    for ax, (arm, rows) in zip(axes[0], matrices.items(), strict=True):
        grid = np.full((n, n), np.nan)
        for i, row in enumerate(rows):
            grid[i, : len(row)] = row
        ax.imshow(grid, vmin=0, vmax=1, cmap="viridis")
        for i in range(n):
            for j in range(i + 1):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7, color="w")
        ax.set_title(arm, fontsize=9)
        ax.set_xticks(range(n), tasks, rotation=60, fontsize=6)
        ax.set_yticks(range(n), [f"after {t}" for t in tasks], fontsize=6)
    fig.tight_layout()
    return fig


def append_pictures(report_md: Path, pictures: Mapping[str, Path]) -> None:
    """Add a 'Pictures' section with the PNGs (relative links) to a bench's ``report.md``."""
    lines = ["", "## Pictures", ""]
    for caption, path in pictures.items():
        lines += [f"{caption}:", "", f"![{caption}]({Path(path).name})", ""]
    with open(report_md, "a", encoding="utf-8") as fh:
        fh.write("\n".join(lines))
