"""The demo (registered for the tour) and the bench on the smallest settings: files written, numbers sane."""

from __future__ import annotations

import json
import math

import pytest

from warmstart_lang.cli import app


@pytest.mark.slow
def test_demo_runs_the_whole_path(tmp_path):
    result, _ = app.run_demo(tmp_path / "demo")
    assert app.demo_command == "demo"
    d = result.details
    assert d["fertility_extended"] <= 0.7 * d["fertility_base"]
    assert math.isfinite(result.value) and result.value < d["target_ppl_before"]  # adaptation helped
    assert (tmp_path / "demo" / "model" / "model.safetensors").is_file()


@pytest.mark.slow
def test_bench_writes_the_core_report(tmp_path):
    out = tmp_path / "bench"
    code = app.main(
        [
            "bench",
            "--out",
            str(out),
            "--settings.methods",
            "[scratch, random, fvt]",
            "--settings.schedules",
            "[cosine, infinite]",
            "--settings.seeds",
            "1",
            "--settings.steps",
            "6",
            "--settings.eval_every",
            "3",
            "--settings.world.n_source",
            "200",
            "--settings.world.n_target",
            "100",
            "--settings.world.source_steps",
            "5",
            "--settings.replay_row",
            "0.25",
            "--settings.growth_steps",
            "4",
            "--settings.growth_source_steps",
            "3",
            "--settings.meco_steps",
            "4",
            "--settings.encoder_steps",
            "3",
        ]
    )
    assert code == 0
    for sub in ("init", "schedule", "forgetting", "growth", "meco", "encoder"):
        for name in ("report.md", "plot.png", "results.json"):
            assert (out / sub / name).is_file()
    results = json.loads((out / "init" / "results.json").read_text())
    assert set(results["methods"]) == {"scratch", "random", "fvt"}
    for m in results["methods"].values():
        assert m["n"] == 1 and m["mean"] > 1
    curve = results["curves"]["fvt"]
    assert curve["steps"] == [0, 3, 6]
    assert results["config"]["fertility_extended"] < results["config"]["fertility_base"]
    headline = json.loads((out / "init" / "headline.json").read_text())
    assert headline["budget_steps"] == 6 and set(headline) >= {"scratch", "fvt", "scratch_final_target_ppl"}
    assert headline["scratch"]["seeds_reaching"] == 1  # scratch reaches its own final value by the end
    growth = json.loads((out / "growth" / "headline.json").read_text())
    assert len(growth["flops_saved_to_reach_scratch_loss"]) == 1 and growth["paper"] == 0.45
    assert json.loads((out / "meco" / "headline.json").read_text())["baseline_tokens"] == 4 * 8 * 64
    # the source model is a cached artifact: a second bench finds it instead of training it again
    from warmstart.cache import list_artifacts

    kinds = {a.kind for a in list_artifacts()}
    assert {"lang.source_lm", "lang.growth_small", "lang.encoder_source"} <= kinds
