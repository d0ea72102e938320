"""End-to-end runs of every warmstart-rl command on tiny settings, and one-line errors for bad input."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from warmstart_rl.cli import app

ENV = ["--env.env_id", "MiniGrid-Empty-Random-5x5-v0"]
FAST = ["--engine.train.max_steps", "40", "--engine.logging.progress", "none"]


def test_vpt_pipeline_end_to_end(tmp_path, capsys, one_line_error) -> None:
    data = tmp_path / "corpus"
    assert (
        app.main(
            ["collect", *ENV, "--episodes", "40", "--labelled", "12", "--noise", "0.3", "--out", str(data)]
        )
        == 0
    )
    assert (data / "index.jsonl").is_file() and (data / "meta.json").is_file()

    assert app.main(["idm-train", "--data", str(data), *FAST, "--out", str(tmp_path / "idm")]) == 0
    assert (tmp_path / "idm" / "idm" / "model.safetensors").is_file()
    assert (tmp_path / "idm" / "config.yaml").is_file()

    assert app.main(["idm-label", "--data", str(data), "--model", str(tmp_path / "idm")]) == 0
    pseudo = sorted((data / "pseudo").glob("*.npz"))
    assert len(pseudo) == 28  # one file per unlabelled episode
    with np.load(pseudo[0]) as labels:
        assert (
            labels["actions"].max() < 3 and ((labels["confidence"] > 0) & (labels["confidence"] <= 1)).all()
        )

    assert (
        app.main(
            ["bc", "--data", str(data), *FAST, "--options.eval_episodes", "2", "--out", str(tmp_path / "bc")]
        )
        == 0
    )
    spec = json.loads((tmp_path / "bc" / "policy" / "config.json").read_text())
    assert spec["metrics"]["bc/transitions"] > 28  # labelled + pseudo-labelled frames

    out = tmp_path / "ft"
    assert (
        app.main(
            [
                "finetune",
                "--policy",
                str(tmp_path / "bc"),
                "--ppo.total_steps",
                "256",
                "--ppo.n_envs",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert zipfile.is_zipfile(out / "ppo.zip")
    curve = json.loads((out / "curve.json").read_text())
    assert all(0 < step <= 256 for step, _ in curve)

    # the fine-tuned SB3 checkpoint drives `collect` on its own environment ...
    assert (
        app.main(
            [
                "collect",
                *ENV,
                "--episodes",
                "2",
                "--labelled",
                "1",
                "--policy",
                str(out / "ppo.zip"),
                "--out",
                str(tmp_path / "c2"),
            ]
        )
        == 0
    )
    capsys.readouterr()
    # ... and is refused, with one line, on another environment
    code = app.main(
        [
            "collect",
            "--env.env_id",
            "MiniGrid-Empty-Random-5x5-v0",
            "--env.size",
            "40",
            "--episodes",
            "1",
            "--labelled",
            "0",
            "--policy",
            str(out / "ppo.zip"),
            "--out",
            str(tmp_path / "c3"),
        ]
    )
    assert code == 2 and "trained on observations" in one_line_error(capsys)


def test_bench_writes_report(tmp_path) -> None:
    out = tmp_path / "bench"
    code = app.main(
        [
            "bench",
            "--setup.seeds",
            "1",
            "--setup.total_steps",
            "256",
            "--setup.episodes",
            "30",
            "--setup.labelled",
            "10",
            "--setup.idm_steps",
            "20",
            "--setup.bc_steps",
            "20",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert (out / "report.md").is_file() and (out / "plot.png").stat().st_size > 1000
    assert set(results["methods"]) == {"scratch", "vpt-bc", "vpt-bc+kl", "random policy"}
    for method in results["methods"].values():
        assert len(method["values"]) == 1 and 0.0 <= method["values"][0] <= 1.0  # MiniGrid returns
    ratio = results["config"]["steps_to_threshold_ratio"]
    assert ratio["scratch"] == pytest.approx(1.0)
    assert results["extra_metrics"]["IDM gate passed"]["vpt-bc"]["values"][0] in (0.0, 1.0)
    # the pretrained source is a cached artifact: a second run reuses it instead of rebuilding
    from warmstart import cache

    artifacts = [a for a in cache.list_artifacts() if a.kind == "rl.vpt-source"]
    assert len(artifacts) == 1


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (
            ["collect", "--env.env_id", "NoSuchEnv-v0", "--episodes", "1", "--labelled", "0"],
            "not a registered",
        ),
        (
            [
                "collect",
                "--env.env_id",
                "Pendulum-v1",
                "--env.actions",
                "null",
                "--episodes",
                "1",
                "--labelled",
                "0",
            ],
            "not Discrete",
        ),
        (["collect", "--episodes", "2", "--labelled", "5"], "labelled"),
        (["idm-train", "--data", "/no/such/corpus"], "is missing"),
        (["finetune", "--policy", "/no/such/policy"], "config.json"),
    ],
)
def test_bad_input_is_one_line_exit_2(argv, needle, capsys, one_line_error) -> None:
    assert app.main(argv) == 2
    assert needle in one_line_error(capsys)


def test_corrupt_labels_are_one_line_exit_2(tmp_path, capsys, one_line_error) -> None:
    data = tmp_path / "corpus"
    assert app.main(["collect", *ENV, "--episodes", "3", "--labelled", "2", "--out", str(data)]) == 0
    first = data / "episodes" / "ep-000000.npz"
    with np.load(first) as f:
        arrays = dict(f)
    np.savez_compressed(first, **(arrays | {"actions": arrays["actions"] + 5}))
    capsys.readouterr()
    assert app.main(["idm-train", "--data", str(data)]) == 2
    assert "outside the action space" in one_line_error(capsys)


@pytest.mark.slow
def test_demo_runs(tmp_path) -> None:
    result, _ = app.run_demo(tmp_path / "demo")
    assert 0.0 <= result.value <= 1.0 and result.metric == "IDM pseudo-label accuracy"


@pytest.mark.slow
def test_throughput_command(tmp_path) -> None:
    assert app.main(["throughput", "--steps", "256", "--repeats", "1", "--out", str(tmp_path / "t")]) == 0
    result = json.loads((tmp_path / "t" / "throughput.json").read_text())
    assert result["ratio"] == pytest.approx(result["finetune_bc_kl"] / result["plain_sb3_ppo"])


def test_recipes_parse() -> None:
    """Every recipe parses into its command's typed config (one parser for all: building it is the cost)."""
    from pathlib import Path

    import yaml

    import warmstart_rl

    root = Path(warmstart_rl.__file__).parent / "recipes"
    recipes = sorted(root.glob("*/*.yaml"))
    assert len(recipes) == 14
    parser = app.parser()
    for recipe in recipes:
        command = recipe.stem
        extra = (
            ["--data", "corpus"] if command in ("idm-train", "bc", "worldmodel-pretrain", "robofume") else []
        )
        cfg = parser.parse_args([command, "--config", str(recipe), *extra])
        assert cfg.command == command, recipe
        for key in yaml.safe_load(recipe.read_text()):  # every top-level section landed in the config
            assert key in cfg[command], (recipe, key)
        assert parser.dump(cfg)  # what --print_config prints
    assert app.main(["bench", "--config", str(root / "tiny.yaml"), "--print_config"]) == 0
