"""The bench report every app writes: ``report.md``, ``plot.png`` and ``results.json`` for transfer vs scratch.

Every app's ``bench`` compares its transfer method(s) against training from scratch on the same budget over
several seeds (DESIGN.md §1); this module turns those per-seed numbers into the product's proof, reported
as they are. Statistics: mean, sample std (ddof = 1), a percentile-bootstrap CI of the mean over seeds and
of the difference to the baseline (Efron & Tibshirani, 1993); no significance claims beyond whether that
interval excludes zero. Plot through matplotlib's Agg canvas (no pyplot global state). Left out: HTML
output and statistical tests across many benchmarks.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import math
import platform
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from warmstart.eval.bootstrap import bootstrap_ci, bootstrap_diff_ci

PerSeed = Sequence[float] | Mapping[int | str, float]
"""Per-seed values of one method: a list (seeds 0, 1, …) or a ``{seed: value}`` mapping."""
Curve = Sequence[tuple[int, float]] | Mapping[str, Sequence[float]]
"""One seed's curve: ``[(step, value), …]`` or ``{"steps": [...], "values": [...]}``."""
PerSeedCurves = Sequence[Curve] | Mapping[int | str, Curve]


@dataclass
class BenchReport:
    """Paths of the written files and the computed summary (the content of ``results.json``)."""

    out_dir: Path
    report_md: Path
    plot_png: Path
    results_json: Path
    summary: dict[str, Any]


def _per_seed(values: PerSeed) -> tuple[list[str], list[float]]:
    if isinstance(values, Mapping):
        return [str(k) for k in values], [float(v) for v in values.values()]
    return [str(i) for i in range(len(values))], [float(v) for v in values]


def _stats(values: list[float], *, confidence: float, n_resamples: int, seed: int) -> dict[str, Any]:
    finite = [v for v in values if math.isfinite(v)]
    out: dict[str, Any] = {"n": len(finite), "n_failed": len(values) - len(finite)}
    if not finite:
        return out | {"mean": None, "std": None, "ci": [None, None]}
    arr = np.asarray(finite)
    out["mean"] = float(arr.mean())
    out["std"] = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    out["ci"] = list(bootstrap_ci(arr, confidence=confidence, n_resamples=n_resamples, seed=seed))
    return out


def _curve(curve: Curve) -> tuple[list[int], list[float]]:
    if isinstance(curve, Mapping):
        return [int(s) for s in curve["steps"]], [float(v) for v in curve["values"]]
    return [int(s) for s, _ in curve], [float(v) for _, v in curve]


def _curves_summary(curves: PerSeedCurves) -> dict[str, Any]:
    items = curves.items() if isinstance(curves, Mapping) else enumerate(curves)
    per_seed: dict[str, dict[str, Any]] = {}
    for seed, c in items:
        steps, values = _curve(c)
        per_seed[str(seed)] = {"steps": steps, "values": values}
    common = sorted(set.intersection(*(set(c["steps"]) for c in per_seed.values()))) if per_seed else []
    mean, std = [], []
    for step in common:
        vals = np.asarray([c["values"][c["steps"].index(step)] for c in per_seed.values()])
        mean.append(float(vals.mean()))
        std.append(float(vals.std(ddof=1)) if vals.size > 1 else 0.0)
    return {"per_seed": per_seed, "steps": common, "mean": mean, "std": std}


def environment_info() -> dict[str, Any]:
    """Versions, device and time of this run (what ``results.json`` records as ``environment``)."""
    info: dict[str, Any] = {
        "time_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "argv": list(sys.argv),
    }
    for dist in ("warmstart", "torch", "numpy", "transformers"):
        try:
            info[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            info[dist] = None
    try:
        import torch

        cuda = torch.cuda.is_available()
        info["device"] = torch.cuda.get_device_name(0) if cuda else "cpu"
        info["cuda"] = torch.version.cuda if cuda else None
        info["threads"] = torch.get_num_threads()
    except Exception:  # noqa: BLE001 — a report must never fail over environment details
        info["device"] = "unknown"
    return info


def _fmt(v: float | None, precision: int) -> str:
    return "—" if v is None else f"{v:.{precision}g}"


def _md_name(name: str) -> str:
    return name.replace("|", "\\|")


def write_bench_report(
    out_dir: str | Path,
    title: str,
    results: Mapping[str, PerSeed],
    *,
    metric: str,
    higher_is_better: bool,
    baseline: str | None = "scratch",
    curves: Mapping[str, PerSeedCurves] | None = None,
    curve_metric: str | None = None,
    extra_metrics: Mapping[str, Mapping[str, PerSeed]] | None = None,
    description: str = "",
    config: Mapping[str, Any] | None = None,
    environment: Mapping[str, Any] | None = None,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
    precision: int = 4,
) -> BenchReport:
    """Write ``report.md``, ``plot.png`` and ``results.json`` into ``out_dir`` (created if needed).

    Args:
        out_dir: where the three files go (usually the bench's run directory).
        title: the report's heading, e.g. ``"lang: vocabulary expansion vs scratch"``.
        results: per method, the final ``metric`` of each seed — ``{"scratch": [3.1, 3.2, 3.0],
            "fvt": {0: 2.7, 1: 2.8, 2: 2.75}}``. Methods keep the given order. Non-finite values (a diverged
            run) are counted as failed (``n_failed``) and left out of the statistics.
        metric: the metric's name (table header and axis label), e.g. ``"val perplexity"``.
        higher_is_better: direction of ``metric``; picks the best method and the sign of "better".
        baseline: the method every other is compared with (Δ = mean(method) − mean(baseline), with a
            bootstrap CI); ``None`` for no comparison. Must be a key of ``results`` when given.
        curves: optional learning curves per method, per seed: ``{"scratch": [[(0, 5.1), (100, 4.2)], …]}``
            (or ``{seed: {"steps": [...], "values": [...]}}``). Plotted as mean ± std over the steps all
            seeds share.
        curve_metric: the curves' y label (default ``metric``).
        extra_metrics: other per-seed numbers shown as mean ± std in a second table, e.g.
            ``{"wall time (s)": {"scratch": [12.0, 11.8], "fvt": [12.3, 12.1]}}``.
        description: a paragraph under the title (what was run, the budget, the data).
        config: the resolved bench configuration, stored in ``results.json``.
        environment: extra environment entries merged over :func:`environment_info` (e.g. the device used).
        confidence, n_resamples, seed: the bootstrap's settings (percentile interval of the mean).
        precision: significant digits in ``report.md`` (``results.json`` keeps full precision).

    Returns:
        A :class:`BenchReport` with the three paths and the summary written to ``results.json``:
        ``methods[name]`` has ``seeds``, ``values``, ``n``, ``n_failed``, ``mean``, ``std`` (ddof 1),
        ``ci`` and, against the baseline, ``delta``, ``delta_ci``, ``relative_delta`` and ``better``.

    Example::

        from warmstart.eval import write_bench_report

        report = write_bench_report(
            run_dir, "eo: SatMAE++ transfer vs scratch (EuroSAT, 200 steps)",
            {"scratch": [0.61, 0.64, 0.60], "satmae++": [0.78, 0.80, 0.77]},
            metric="kNN top-1", higher_is_better=True, baseline="scratch",
            curves={"scratch": scratch_curves, "satmae++": transfer_curves},  # per seed [(step, loss), ...]
            curve_metric="train loss",
            extra_metrics={"wall time (s)": {"scratch": [31.0, 30.2, 30.9], "satmae++": [33.1, 32.8, 33.0]}},
            config=asdict(bench_config),
        )
        print(report.report_md.read_text())
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not results:
        raise ValueError("results is empty: nothing to report")
    if baseline is not None and baseline not in results:
        raise ValueError(f"baseline {baseline!r} is not among the methods {list(results)}")

    methods: dict[str, dict[str, Any]] = {}
    for name, per_seed in results.items():
        seeds, values = _per_seed(per_seed)
        methods[name] = {"seeds": seeds, "values": values} | _stats(
            values, confidence=confidence, n_resamples=n_resamples, seed=seed
        )
    if baseline is not None:
        base = methods[baseline]
        base_vals = [v for v in base["values"] if math.isfinite(v)]
        for name, m in methods.items():
            vals = [v for v in m["values"] if math.isfinite(v)]
            if name == baseline or not vals or not base_vals:
                continue
            delta = m["mean"] - base["mean"]
            lo, hi = bootstrap_diff_ci(
                vals, base_vals, confidence=confidence, n_resamples=n_resamples, seed=seed
            )
            m["delta"] = delta
            m["delta_ci"] = [lo, hi]
            m["relative_delta"] = delta / abs(base["mean"]) if base["mean"] else None
            m["better"] = delta > 0 if higher_is_better else delta < 0
            m["delta_ci_excludes_zero"] = lo > 0 or hi < 0
    ranked = [n for n in methods if methods[n]["mean"] is not None]
    best = (max if higher_is_better else min)(ranked, key=lambda n: methods[n]["mean"]) if ranked else None

    curve_summary = {name: _curves_summary(c) for name, c in (curves or {}).items()}
    extra_summary: dict[str, dict[str, Any]] = {}
    for metric_name, per_method in (extra_metrics or {}).items():
        extra_summary[metric_name] = {}
        for name, per_seed in per_method.items():
            seeds, values = _per_seed(per_seed)
            extra_summary[metric_name][name] = {"seeds": seeds, "values": values} | _stats(
                values, confidence=confidence, n_resamples=n_resamples, seed=seed
            )

    env = environment_info() | dict(environment or {})
    summary: dict[str, Any] = {
        "title": title,
        "description": description,
        "metric": metric,
        "higher_is_better": higher_is_better,
        "baseline": baseline,
        "best": best,
        "methods": methods,
        "curves": curve_summary,
        "curve_metric": curve_metric or metric,
        "extra_metrics": extra_summary,
        "statistics": {
            "std_ddof": 1,
            "ci": f"percentile bootstrap of the mean over seeds, {confidence:.0%}, {n_resamples} resamples, "
            f"seed {seed}",
            "delta_ci": "percentile bootstrap of mean(method) − mean(baseline), groups resampled independently",
        },
        "config": dict(config or {}),
        "environment": env,
        "files": {"report": "report.md", "plot": "plot.png", "results": "results.json"},
    }

    paths = BenchReport(out, out / "report.md", out / "plot.png", out / "results.json", summary)
    _write_plot(paths.plot_png, summary)
    paths.report_md.write_text(_markdown(summary, precision, confidence), encoding="utf-8")
    paths.results_json.write_text(
        json.dumps(_json_safe(summary), indent=2, allow_nan=False, default=str) + "\n", encoding="utf-8"
    )
    return paths


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return _json_safe(obj.item())
    return obj


def _markdown(s: dict[str, Any], precision: int, confidence: float) -> str:
    p = precision
    ci_label = f"{confidence:.0%} CI"
    lines = [f"# {s['title']}", ""]
    if s["description"]:
        lines += [s["description"], ""]
    direction = "higher" if s["higher_is_better"] else "lower"
    base = s["baseline"]
    lines += [
        f"Metric: **{s['metric']}** ({direction} is better). "
        + (f"Baseline: `{base}`. " if base else "")
        + f"CI: {s['statistics']['ci']}; std with ddof 1.",
        "",
    ]
    header = ["method", "mean", "std", "n seeds", ci_label]
    if base:
        header += [f"Δ vs {base}", f"Δ {ci_label}"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, m in s["methods"].items():
        label = f"**{_md_name(name)}**" if name == s["best"] else _md_name(name)
        n = f"{m['n']}" + (f" ({m['n_failed']} failed)" if m["n_failed"] else "")
        ci = "—" if m["mean"] is None else f"[{_fmt(m['ci'][0], p)}, {_fmt(m['ci'][1], p)}]"
        row = [label, _fmt(m["mean"], p), _fmt(m["std"], p), n, ci]
        if base:
            if "delta" in m:
                rel = m.get("relative_delta")
                rel_s = f" ({rel:+.1%})" if rel is not None else ""
                row += [
                    f"{m['delta']:+.{p}g}{rel_s}",
                    f"[{_fmt(m['delta_ci'][0], p)}, {_fmt(m['delta_ci'][1], p)}]",
                ]
            else:
                row += ["—", "—"]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    if s["best"] is not None:
        lines += [f"Best mean: **{_md_name(s['best'])}** (bold).", ""]
    if s["extra_metrics"]:
        names = list(s["methods"])
        for em in s["extra_metrics"].values():
            names += [n for n in em if n not in names]
        cols = list(s["extra_metrics"])
        lines += ["## Other metrics (mean ± std)", "", "| method | " + " | ".join(cols) + " |"]
        lines.append("|" + "---|" * (len(cols) + 1))
        for name in names:
            cells = []
            for col in cols:
                m = s["extra_metrics"][col].get(name)
                cells.append(
                    "—" if not m or m["mean"] is None else f"{_fmt(m['mean'], p)} ± {_fmt(m['std'], p)}"
                )
            lines.append(f"| {_md_name(name)} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Plot", "", "![bench plot](plot.png)", ""]
    lines += ["## Per-seed values", "", "| method | seed: value |", "|---|---|"]
    for name, m in s["methods"].items():
        vals = ", ".join(f"{sd}: {v:.{p}g}" for sd, v in zip(m["seeds"], m["values"], strict=True))
        lines.append(f"| {_md_name(name)} | {vals} |")
    env = s["environment"]
    lines += [
        "",
        f"Environment: warmstart {env.get('warmstart')}, torch {env.get('torch')}, device {env.get('device')}, "
        f"Python {env.get('python')}, {env.get('time_utc')}. Raw numbers: `results.json`.",
        "",
    ]
    return "\n".join(lines)


def _write_plot(path: Path, s: dict[str, Any]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    has_curves = any(c["per_seed"] for c in s["curves"].values())
    fig = Figure(figsize=(11 if has_curves else 6, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 2 if has_curves else 1, 1)
    names = list(s["methods"])
    means = [s["methods"][n]["mean"] if s["methods"][n]["mean"] is not None else np.nan for n in names]
    stds = [s["methods"][n]["std"] or 0.0 for n in names]
    colors = [f"C{i % 10}" for i in range(len(names))]
    xs = np.arange(len(names))
    ax.bar(xs, means, yerr=stds, capsize=5, color=colors, alpha=0.75)
    for i, n in enumerate(names):
        vals = [v for v in s["methods"][n]["values"] if math.isfinite(v)]
        ax.scatter(np.full(len(vals), xs[i]), vals, color="k", s=12, zorder=3)
    ax.set_xticks(xs, names, rotation=20 if len(names) > 3 else 0, ha="right" if len(names) > 3 else "center")
    arrow = "↑" if s["higher_is_better"] else "↓"
    ax.set_ylabel(f"{s['metric']} ({arrow} better)")
    ax.set_title("mean ± std over seeds (dots: seeds)", fontsize=9)
    finite = [v for n in names for v in s["methods"][n]["values"] if math.isfinite(v)]
    if finite:
        lo, hi = min(finite), max(finite)
        pad = 0.15 * (hi - lo) if hi > lo else 0.1 * abs(hi) + 1e-9
        ax.set_ylim(lo - pad - max(stds), hi + pad + max(stds))
    if has_curves:
        ax2 = fig.add_subplot(1, 2, 2)
        for i, (name, c) in enumerate(s["curves"].items()):
            color = colors[names.index(name)] if name in names else f"C{(len(names) + i) % 10}"
            if c["steps"]:
                m, sd = np.asarray(c["mean"]), np.asarray(c["std"])
                ax2.plot(c["steps"], m, color=color, label=name)
                ax2.fill_between(c["steps"], m - sd, m + sd, color=color, alpha=0.2)
            else:  # seeds share no step: draw each seed thinly
                for j, run in enumerate(c["per_seed"].values()):
                    ax2.plot(run["steps"], run["values"], color=color, lw=0.8, label=name if j == 0 else None)
        ax2.set_xlabel("step")
        ax2.set_ylabel(s["curve_metric"])
        ax2.set_title("learning curves: mean ± std", fontsize=9)
        ax2.legend(fontsize=8)
    fig.suptitle(s["title"], fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png")
