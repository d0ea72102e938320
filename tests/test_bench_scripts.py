"""The repository-level benchmark scripts run end to end at tiny sizes and write sound JSON."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "shared" / "bench"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_engine_overhead_writes_paired_ratios(tmp_path: Path) -> None:
    out = tmp_path / "engine.json"
    _load("engine_overhead").main(
        ["--steps", "12", "--rounds", "2", "--fixed-steps", "30", "--out", str(out)]
    )
    result = json.loads(out.read_text())
    for key in ("engine_over_plain", "engine_over_hf"):
        rounds = result["per_round"][key]
        assert len(rounds) == 2 and all(r > 0 and math.isfinite(r) for r in rounds)
        assert min(rounds) <= result[key] <= max(rounds)  # the median of the per-round ratios
    assert all(len(v) == 2 for v in result["steps_per_s"].values())
    fixed = result["fixed_cost"]
    assert fixed["engine_us_per_step"] > 0 and fixed["plain_us_per_step"] > 0
    assert fixed["engine_extra_us_per_step"] == pytest.approx(
        fixed["engine_us_per_step"] - fixed["plain_us_per_step"]
    )


@pytest.mark.slow
def test_expand_vocabulary_times_every_method_and_the_peer(tmp_path: Path) -> None:
    out = tmp_path / "vocab.json"
    argv = ["--old-vocab", "600", "--new-tokens", "60", "--hidden", "16", "--repeats", "1"]
    argv += [
        "--cw2v-steps",
        "2",
        "--cw2v-batch",
        "4",
        "--cw2v-rank",
        "4",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    _load("expand_vocabulary").main(argv)
    result = json.loads(out.read_text())
    rows = result["results"]
    assert rows[0]["level"] == "peer"
    from warmstart.init import METHODS

    assert {r["method"] for r in rows if r["level"] == "model"} == set(METHODS)
    assert all(r["seconds"] > 0 and len(r["runs"]) == 1 for r in rows)


@pytest.mark.slow
def test_checkpoint_io_times_save_verify_and_load(tmp_path: Path) -> None:
    out = tmp_path / "ckpt.json"
    _load("checkpoint_io").main(
        ["--params", "2e5", "--rounds", "1", "--dir", str(tmp_path), "--out", str(out)]
    )
    result = json.loads(out.read_text())
    median = result["median_s"]
    for key in ("plain_safetensors_save", "plain_torch_save", "engine_save", "digest_only", "engine_verify"):
        assert median[key] > 0 and math.isfinite(median[key])
    assert result["bytes"] == 4 * 200_000 and result["engine_save_over_plain_save"] > 0


@pytest.mark.slow
def test_data_loading_compares_workers_and_checks_resume(tmp_path: Path) -> None:
    out = tmp_path / "loading.json"
    _load("data_loading").main(
        ["--scenes", "2", "--batch", "4", "--batches", "3", "--rounds", "1", "--out", str(out)]
    )
    result = json.loads(out.read_text())
    assert result["resume_equal_with_workers"] is True
    assert result["samples_per_s"]["workers_0"] > 0 and result["samples_per_s"]["workers_2"] > 0
