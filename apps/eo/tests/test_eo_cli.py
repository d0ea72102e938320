"""End-to-end: every command on tiny settings through ``app.main``; bad input → one line, exit 2."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from warmstart_eo.cli import app
from warmstart_eo.data import SynthConfig, scene_transform, synth_scene, write_scene


def test_synth_stats_pretrain_finetune_probe(eo_root: Path, tmp_path: Path, capsys, tiny) -> None:
    assert (
        app.main(["data-synth", "--out", str(tmp_path / "d"), "--synth.scenes", "1", "--synth.size", "32"])
        == 0
    )
    assert (tmp_path / "d" / "images" / "scene_0000.tif").is_file()
    assert app.main(["stats", "--data", str(eo_root), "--out", str(tmp_path / "s.json")]) == 0
    stats = json.loads((tmp_path / "s.json").read_text())
    assert len(stats["mean"]) == 13 and min(stats["std"]) > 0
    pre = tmp_path / "pre"
    argv = [
        "pretrain",
        "--data",
        str(eo_root),
        "--model.family",
        "prithvi",
        "--data_config.frames",
        "3",
        "--out",
        str(pre),
        *tiny(3),
    ]
    assert app.main(argv) == 0
    assert {
        "model.safetensors",
        "config.json",
        "README.md",
        "stats.json",
        "config.yaml",
        "reconstructions.png",
    } <= {p.name for p in pre.iterdir()}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(pre / "tensorboard")).Reload()
    assert "mae/reconstructions" in events.Tags()["images"]  # the picture beside the loss curves
    argv = [
        "finetune",
        "--data",
        str(eo_root),
        "--pretrained",
        str(pre),
        "--task",
        "segment",
        "--out",
        str(tmp_path / "ft"),
        *tiny(3),
    ]
    assert app.main(argv) == 0
    assert "miou" in capsys.readouterr().out
    assert app.main(["probe", "--data", str(eo_root), "--pretrained", str(pre)]) == 0
    assert "stats_knn" in capsys.readouterr().out


@pytest.mark.slow
def test_bench_writes_report(eo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARMSTART_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "bench"
    argv = [
        "bench",
        "--data",
        str(eo_root),
        "--out",
        str(out),
        "--bench.seeds",
        "1",
        "--bench.pretrain_steps",
        "20",
        "--bench.finetune_steps",
        "1",
        "--bench.batch",
        "4",
        "--bench.families",
        "[mae]",
        "--bench.corpus_scenes",
        "2",
        "--bench.label_fractions",
        "[0.5,1.0]",
        "--bench.segmentation",
        "false",
        "--bench.probe_chip_size",
        "16",
        "--bench.workers",
        "1",
    ]
    assert app.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["methods"]) == {"scratch", "mae"}
    assert 0.0 <= results["methods"]["mae"]["mean"] <= 1.0
    assert set(results["headline"]["labels needed to match it"]) == {"scratch", "mae"}
    assert results["headline"]["labels needed to match it"]["scratch"] in (0.5, 1.0)  # scratch reaches itself
    assert (out / "plot.png").stat().st_size > 0 and (out / "reconstructions.png").stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "reconstructions.png" in report and "label_efficiency.png" in report
    assert (out / "label_efficiency.png").stat().st_size > 0

    def artifacts() -> list[Path]:
        return sorted(
            p for p in (tmp_path / "cache" / "eo.bench-source").iterdir() if not p.name.startswith(".")
        )

    cached = artifacts()
    assert len(cached) == 1  # the source is an artifact: a second run reuses it
    stamp = (cached[0] / "pretrain_seconds.txt").stat().st_mtime
    again = tmp_path / "again"  # --kind grid: the resize × normalisation grid alone, on the cached source
    assert app.main([argv[0], "--kind", "grid", *argv[1:4], str(again), *argv[5:]]) == 0
    assert artifacts() == cached and (cached[0] / "pretrain_seconds.txt").stat().st_mtime == stamp
    grid = json.loads((again / "grid" / "results.json").read_text())
    assert len(grid["methods"]) == 6  # resize on/off × 3 normalisations


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["pretrain", "--data", "/nonexistent/eo", "TINY"], "/nonexistent/eo"),
        (["finetune", "--data", "/tmp", "--pretrained", "/nonexistent/run"], "/nonexistent/run"),
        (["pretrain", "--data", "DATA", "--data_config.bands", "[B99]", "TINY"], "B99"),
        (["pretrain", "--data", "DATA", "--data_config.frames", "9", "TINY"], "data.frames"),
        (["pretrain", "--data", "eurosat", "TINY"], "--root"),
        (["bench", "--bench.pretrain_steps", "10", "--bench.finetune_steps", "1"], "20×"),
        (["bench", "--bench.spectral_overlap", "1.5"], "bench.spectral_overlap"),
        (["data-synth", "--out", "NOCRS", "--synth.spectral_overlap", "-1"], "spectral_overlap"),
        (["pretrain", "--data", "NOCRS", "TINY"], "none of 1 GeoTIFFs is usable (scene_0000.tif: has no CRS"),
        (
            ["pretrain", "--data", "NOCRS", "--data_config.on_bad_file", "fail", "TINY"],
            "scene_0000.tif: has no CRS",
        ),
    ],
)
def test_bad_input_one_line_exit_2(
    eo_root: Path, tmp_path: Path, argv: list[str], needle: str, tiny, one_line
) -> None:
    if "NOCRS" in argv:  # a folder whose only scene has no CRS
        image, _ = synth_scene(SynthConfig(size=32, frames=1), 0)
        (tmp_path / "nocrs" / "images").mkdir(parents=True)
        write_scene(tmp_path / "nocrs" / "images" / "scene_0000.tif", image, scene_transform(0, 32), crs=None)
    argv = [str(eo_root) if a == "DATA" else str(tmp_path / "nocrs") if a == "NOCRS" else a for a in argv]
    argv = [flag for a in argv for flag in (tiny(3) if a == "TINY" else [a])]
    assert app.main(argv) == 2
    assert needle in one_line()


@pytest.mark.slow
def test_demo(tmp_path: Path) -> None:
    result, _ = app.run_demo(tmp_path / "demo")
    assert 0.0 <= result.value <= 1.0 and "scratch_accuracy" in result.details


@pytest.mark.slow
def test_bench_throughput_runs_both_frameworks(tmp_path: Path) -> None:
    argv = [
        "bench",
        "--kind",
        "throughput",
        "--out",
        str(tmp_path / "tp"),
        "--throughput.steps",
        "1",
        "--throughput.warmup",
        "1",
        "--throughput.batch",
        "2",
        "--throughput.rounds",
        "2",
    ]
    assert app.main(argv) == 0
    result = json.loads((tmp_path / "tp" / "throughput.json").read_text())
    assert result["ours_images_per_s"] > 0 and result["torchgeo_images_per_s"] > 0
    rates = result["per_round_images_per_s"]
    ratios = [a / t for a, t in zip(rates["ours"], rates["torchgeo"], strict=True)]
    assert result["per_round_ratio"] == pytest.approx(ratios) and len(ratios) == 2
    assert result["ratio"] == pytest.approx(statistics.median(ratios))
    assert result["ratio_min"] <= result["ratio"] <= result["ratio_max"]
    # same model size: torchgeo's encoder differs only by its class token, its (1 + 196)-row position table
    # and lightly's encoder mask token, 192 wide each
    assert result["torchgeo_encoder_params"] - result["ours_encoder_params"] == (1 + 197 + 1) * 192


def test_pretrain_without_full_rgb_still_draws_its_reconstructions(
    eo_root: Path, tmp_path: Path, tiny
) -> None:
    # a band subset with no B03/B02 (as S1 VV/VH or a red/NIR pair): the picture falls back to one band in grey
    out = tmp_path / "red-nir"
    argv = [
        "pretrain",
        "--data",
        str(eo_root),
        "--data_config.bands",
        "[B04,B08]",
        "--out",
        str(out),
        *tiny(2),
    ]
    assert app.main(argv) == 0
    assert (out / "reconstructions.png").stat().st_size > 0
