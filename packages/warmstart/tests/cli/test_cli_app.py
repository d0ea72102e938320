"""The CLI building blocks: typed options, config files, friendly one-line errors, run directories."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from warmstart.cli import App, RunContext
from warmstart.engine import Engine, EngineConfig
from warmstart.errors import DataError


@dataclass
class DataConfig:
    path: Path = Path("data")
    """Folder of training files."""
    shuffle: bool = True
    """Shuffle the files."""


def make_app(calls: list) -> App:
    app = App("toy", "A toy app")

    @app.command
    def train(
        data: DataConfig = DataConfig(),
        engine: EngineConfig = EngineConfig(),
        steps: int = 3,
        resume: str | None = None,
        run: RunContext | None = None,
    ) -> None:
        """Train the toy.

        Args:
            steps: how many steps to take.
        """
        if not data.path.exists():
            raise DataError(f"data.path: {data.path} does not exist; pass --data.path FOLDER")
        run_dir, checkpoint = run.open(resume=resume)
        calls.append((data, engine, steps, run_dir, checkpoint))

    return app


@pytest.fixture(autouse=True)
def runs_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARMSTART_RUNS", str(tmp_path / "runs"))


def one_error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


def test_dotted_overrides_and_saved_config(tmp_path: Path) -> None:
    calls: list = []
    code = make_app(calls).main(
        ["train", "--data.path", str(tmp_path), "--engine.train.max_steps", "7", "--steps", "5"]
    )
    assert code == 0
    data, engine, steps, run_dir, checkpoint = calls[0]
    assert engine.train.max_steps == 7 and steps == 5 and checkpoint is None
    assert run_dir.parent == tmp_path / "runs" / "toy" / "train"
    saved = (run_dir / "config.yaml").read_text()
    assert "max_steps: 7" in saved and "steps: 5" in saved


def test_config_file(tmp_path: Path) -> None:
    calls: list = []
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"data:\n  path: {tmp_path}\nengine:\n  optimizer:\n    lr: 0.01\n")
    assert make_app(calls).main(["train", "--config", str(recipe), "--engine.train.seed", "4"]) == 0
    assert calls[0][1].optimizer.lr == 0.01 and calls[0][1].train.seed == 4


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["train", "--engine.train.max_stepz", "3"], "max_stepz"),
        (["train", "--engine.train.max_steps", "many"], "engine.train.max_steps"),
        (["train", "--data.path", "/no/such/folder"], "data.path"),
        (["train", "--config", "/no/such/recipe.yaml"], "recipe.yaml"),
        (["trian"], "trian"),
    ],
)
def test_user_mistakes_get_one_line_and_exit_2(argv, needle, capsys) -> None:
    assert make_app([]).main(argv) == 2
    assert needle in one_error_line(capsys)


def test_unknown_field_in_config_file(tmp_path: Path, capsys) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("engine:\n  train:\n    max_stepz: 3\n")
    assert make_app([]).main(["train", "--config", str(recipe)]) == 2
    assert "max_stepz" in one_error_line(capsys)


def test_help_shows_fields_defaults_and_docs(capsys) -> None:
    assert make_app([]).main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--engine.train.max_steps" in out and "Optimizer steps in the whole run" in out
    assert "how many steps to take" in out and "default: 3" in out
    assert out.count("how many steps to take") == 1 and "Args:" not in out  # per option, not also on top
    assert "Train the toy." in out


def test_resume_paths(tmp_path: Path, capsys) -> None:
    app = make_app([])
    assert app.main(["train", "--data.path", str(tmp_path), "--resume", str(tmp_path / "nothing")]) == 2
    assert "no such directory" in one_error_line(capsys)
    empty = tmp_path / "empty-run"
    empty.mkdir()
    assert app.main(["train", "--data.path", str(tmp_path), "--resume", str(empty)]) == 2
    assert "no complete checkpoint" in one_error_line(capsys)
    assert app.main(["train", "--data.path", str(tmp_path), "--resume", "latest"]) == 2
    assert "no run with a checkpoint" in one_error_line(capsys)


def test_resume_finds_the_latest_checkpoint_and_keeps_the_first_config(tmp_path: Path) -> None:
    import torch

    ctx = RunContext("toy", "train", "first: true\n")
    run_dir, _ = ctx.open()
    config = EngineConfig()
    config.train.max_steps = 2
    config.logging.progress = "none"
    config.logging.tensorboard = False

    class Task:
        model = torch.nn.Linear(2, 1)

        def loss(self, batch):
            return self.model(batch).pow(2).mean(), {}

    Engine(config, run_dir).fit(Task(), [torch.ones(2)] * 8)
    calls: list = []
    assert make_app(calls).main(["train", "--data.path", str(tmp_path), "--resume", "latest"]) == 0
    assert calls[0][3] == run_dir and calls[0][4].name == "step-2"
    assert (run_dir / "config.yaml").read_text() == "first: true\n"
    assert len(list(run_dir.glob("config.resume-*.yaml"))) == 1


def test_umbrella_cli(capsys) -> None:
    from warmstart.cli.main import app, installed_apps

    assert app.main(["apps"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in installed_apps()) or "no warmstart apps installed" in out
    with pytest.raises(SystemExit):
        app.parser().parse_args(["--version"])
    assert "warmstart 0." in capsys.readouterr().out
    assert app.main(["tour", "--only", "[nonexistent]"]) == 2
    assert "nonexistent" in one_error_line(capsys)


@pytest.mark.slow
def test_core_demo_trains_and_resumes(tmp_path: Path) -> None:
    from warmstart.demo import app

    result, seconds = app.run_demo(tmp_path / "demo")
    assert result.value < 0.2 * result.details["perplexity_before"]
    assert (tmp_path / "demo" / "checkpoints" / "step-200" / "meta.json").exists()
