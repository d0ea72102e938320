"""The bench report: three files; JSON numbers equal the inputs' mean/std; the PNG is a valid image."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from warmstart.eval import write_bench_report

RESULTS = {
    "scratch": [3.10, 3.25, 3.05],
    "fvt": {0: 2.70, 1: 2.85, 2: 2.78},
    "mean-init": [2.95, float("nan"), 2.99],
}
CURVES = {
    "scratch": [[(0, 6.0), (10, 4.5), (20, 3.2)], [(0, 6.1), (10, 4.4), (20, 3.3)]],
    "fvt": {
        0: {"steps": [0, 10, 20], "values": [4.0, 3.1, 2.7]},
        1: {"steps": [0, 10], "values": [4.2, 3.0]},
    },
}


def test_report_files_and_numbers(tmp_path: Path) -> None:
    rep = write_bench_report(
        tmp_path / "bench",
        "lang: vocabulary init vs scratch",
        RESULTS,
        metric="val perplexity",
        higher_is_better=False,
        curves=CURVES,
        curve_metric="train loss",
        extra_metrics={"wall time (s)": {"scratch": [10.0, 12.0], "fvt": [11.0, 11.5]}},
        config={"steps": 20},
        description="Tiny run.",
        n_resamples=2000,
    )
    for p in (rep.report_md, rep.plot_png, rep.results_json):
        assert p.exists() and p.stat().st_size > 0
    data = json.loads(rep.results_json.read_text())  # strict JSON: NaN became null
    for name, values in RESULTS.items():
        vals = list(values.values()) if isinstance(values, dict) else values
        finite = np.asarray([v for v in vals if math.isfinite(v)])
        m = data["methods"][name]
        assert m["mean"] == pytest.approx(finite.mean(), abs=1e-12)
        assert m["std"] == pytest.approx(finite.std(ddof=1), abs=1e-12)
        assert m["n"] == finite.size
        assert m["ci"][0] <= m["mean"] <= m["ci"][1]
    assert data["methods"]["mean-init"]["n_failed"] == 1
    assert data["methods"]["mean-init"]["values"][1] is None
    fvt = data["methods"]["fvt"]
    assert fvt["seeds"] == ["0", "1", "2"]
    assert fvt["delta"] == pytest.approx(np.mean([2.70, 2.85, 2.78]) - np.mean([3.10, 3.25, 3.05]))
    assert fvt["better"] is True and fvt["delta_ci"][1] < 0
    assert data["best"] == "fvt"
    assert data["curves"]["fvt"]["steps"] == [0, 10]  # steps shared by every seed
    assert data["curves"]["scratch"]["mean"] == pytest.approx([6.05, 4.45, 3.25])
    assert data["extra_metrics"]["wall time (s)"]["scratch"]["mean"] == pytest.approx(11.0)
    assert data["environment"]["torch"] and data["config"] == {"steps": 20}

    md = rep.report_md.read_text()
    assert "| method | mean | std | n seeds | 95% CI | Δ vs scratch |" in md
    assert "| **fvt** |" in md and "2 (1 failed)" in md and "![bench plot](plot.png)" in md

    with Image.open(rep.plot_png) as img:
        img.verify()
    with Image.open(rep.plot_png) as img:
        assert img.format == "PNG" and img.size[0] > 500


def test_report_without_baseline_or_curves(tmp_path: Path) -> None:
    rep = write_bench_report(tmp_path, "t", {"a": [1.0]}, metric="acc", higher_is_better=True, baseline=None)
    data = json.loads(rep.results_json.read_text())
    assert data["methods"]["a"]["std"] == 0.0 and data["methods"]["a"]["ci"] == [1.0, 1.0]
    assert "delta" not in data["methods"]["a"]
    assert rep.plot_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_rejects_unknown_baseline(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="baseline"):
        write_bench_report(tmp_path, "t", {"a": [1.0]}, metric="acc", higher_is_better=True)
