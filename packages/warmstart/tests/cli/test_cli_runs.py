"""Run directories under launchers and on failure: one directory per run (rank 0 creates, others join),
``--resume latest`` never means another run, a failed validation leaves nothing, commands called as
plain functions get their RunContext from the App."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from warmstart.cli import App, RunContext
from warmstart.engine import Engine, EngineConfig

LAUNCH_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_JOB_ID")


@pytest.fixture(autouse=True)
def runs_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARMSTART_RUNS", str(tmp_path / "runs"))
    for key in (*LAUNCH_ENV, "TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)


class Task:
    def __init__(self) -> None:
        torch.manual_seed(0)
        self.model = torch.nn.Linear(2, 1)

    def loss(self, batch):
        return self.model(batch).pow(2).mean(), {}


def quiet(steps: int = 4) -> EngineConfig:
    config = EngineConfig()
    config.train.max_steps = steps
    config.train.micro_batch_size = 2
    config.logging.progress = "none"
    config.logging.tensorboard = False
    return config


def toy_app(seen: list) -> App:
    app = App("toy", "toy")

    @app.command
    def train(
        engine: EngineConfig = EngineConfig(),
        out: Path | None = None,
        resume: str | None = None,
        fail: bool = False,
        run: RunContext | None = None,
    ) -> None:
        """Train."""
        from warmstart.errors import DataError

        run_dir, checkpoint = run.open(resume=resume, out=out)
        seen.append((run_dir, checkpoint))
        if fail:
            raise DataError("data.path: bad file; pass another")
        Engine(engine, run_dir).fit(Task(), [torch.ones(2)] * 8, resume_from=checkpoint)

    return app


QUIET = [
    "--engine.logging.progress",
    "none",
    "--engine.logging.tensorboard",
    "false",
    "--engine.train.max_steps",
    "4",
]


def test_resume_latest_in_a_new_out_starts_there_and_leaves_the_finished_run_alone(tmp_path: Path) -> None:
    seen: list = []
    app = toy_app(seen)
    finished = tmp_path / "finished"
    assert app.main(["train", "--out", str(finished), *QUIET]) == 0
    before = (finished / "checkpoints" / "step-4" / "model.safetensors").read_bytes()
    fresh = tmp_path / "fresh"
    assert app.main(["train", "--out", str(fresh), "--resume", "latest", *QUIET]) == 0
    assert seen[-1] == (fresh, None)  # started fresh in --out, not resumed from the finished run
    assert (fresh / "checkpoints" / "step-4").is_dir()
    assert (finished / "checkpoints" / "step-4" / "model.safetensors").read_bytes() == before
    assert app.main(["train", "--out", str(fresh), "--resume", "latest", *QUIET]) == 0  # requeued: resumes
    assert seen[-1][1] is not None and seen[-1][1].parent.parent == fresh


def test_resume_latest_without_out_means_this_commands_newest_run(tmp_path: Path) -> None:
    seen: list = []
    app = toy_app(seen)
    assert app.main(["train", *QUIET]) == 0
    first = seen[-1][0]
    other = RunContext("toy", "other-command")
    other_dir, _ = other.open()
    Engine(quiet(), other_dir).fit(Task(), [torch.ones(2)] * 8)
    other.close()
    assert app.main(["train", "--resume", "latest", *QUIET]) == 0
    assert seen[-1][0] == first


@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [
        ("--engine.logging.log_every", "0", "engine.logging.log_every=0"),
        ("--engine.train.micro_batch_size", "0", "engine.train.micro_batch_size=0"),
        ("--engine.train.max_steps", "-5", "engine.train.max_steps=-5"),
        ("--engine.optimizer.lr", "-1", "engine.optimizer.lr=-1"),
        ("--engine.checkpoint.every", "-1", "engine.checkpoint.every=-1"),
    ],
)
def test_a_bad_engine_option_is_one_line_exit_2_and_leaves_nothing(
    tmp_path: Path, capsys, option: str, value: str, needle: str
) -> None:
    out = tmp_path / "out"
    assert toy_app([]).main(["train", "--out", str(out), *QUIET, option, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and "must be" in err[0]
    assert not out.exists()


def test_a_failed_command_leaves_no_run_so_the_rerun_is_not_refused(tmp_path: Path, capsys) -> None:
    seen: list = []
    app = toy_app(seen)
    out = tmp_path / "out"
    assert app.main(["train", "--out", str(out), "--fail", "true", *QUIET]) == 2
    assert not out.exists()
    out.mkdir()  # an --out the user made beforehand keeps existing, emptied of what the run wrote
    (out / "notes.txt").write_text("mine")
    assert app.main(["train", "--out", str(out), "--fail", "true", *QUIET]) == 2
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    capsys.readouterr()
    assert app.main(["train", "--out", str(out), *QUIET]) == 0


def test_commands_called_as_functions_get_a_run_context(tmp_path: Path) -> None:
    seen: list = []
    app = App("toy", "toy")

    @app.command
    def make(out: Path | None = None, run: RunContext | None = None) -> Path:
        """Make a run."""
        run_dir, _ = run.open(out=out)
        seen.append(run)
        return run_dir

    made = make()
    assert made.parent == tmp_path / "runs" / "toy" / "make"
    assert seen[0].app == "toy" and seen[0].command == "make"
    explicit = RunContext("toy", "make")
    make(out=tmp_path / "x", run=explicit)
    assert seen[1] is explicit


def test_other_ranks_join_rank_0s_directory_and_write_nothing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-7")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29511")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    zero = RunContext("toy", "train", "a: 1\n")
    run_dir, _ = zero.open()
    monkeypatch.setenv("RANK", "1")
    one = RunContext("toy", "train", "a: 1\n")
    joined, checkpoint = one.open()
    assert joined == run_dir and checkpoint is None
    assert zero.writer is False and one.writer is False  # both read RANK=1 now
    assert sorted(p.name for p in (tmp_path / "runs" / "toy" / "train").iterdir() if p.name != ".launch") == [
        run_dir.name
    ]
    out = tmp_path / "given"
    assert one.open(out=out) == (out, None) and not out.exists()  # rank 1 never creates it
    monkeypatch.setenv("RANK", "0")
    assert zero.writer
    zero.close()


def test_a_rank_ignores_the_hand_off_of_an_earlier_launch(tmp_path: Path, monkeypatch) -> None:
    import json

    import warmstart.cli.rundir as rundir

    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")  # torchrun's default: the same for every launch
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(rundir, "JOIN_TIMEOUT_S", 0.5)
    folder = tmp_path / "runs" / "toy" / "train" / rundir.HANDOFF_DIR
    folder.mkdir(parents=True)
    stale = {"run_dir": str(tmp_path / "old"), "checkpoint": None, "started": rundir._process_start() - 3600}
    for key in rundir.launch_keys(child=True):
        (folder / f"{key}.json").write_text(json.dumps(stale))
    from warmstart.errors import CheckpointError

    with pytest.raises(CheckpointError, match="did not name a run directory.*--out"):
        RunContext("toy", "train").open()


def test_launcher_rank_reads_torchrun_slurm_and_fabric(monkeypatch) -> None:
    from warmstart.cli.rundir import launcher_rank

    assert launcher_rank() == 0
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_PROCID", "3")
    assert launcher_rank() == 3
    monkeypatch.setenv("RANK", "2")
    assert launcher_rank() == 2
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("SLURM_NTASKS")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert launcher_rank() == 1
