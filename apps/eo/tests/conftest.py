"""Shared fixtures: one tiny generated GeoTIFF folder per test session (4 scenes × 64 px × 3 frames), run
folders under each test's tmp_path, the tiny engine flags of CLI runs, and the one-line error check."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from warmstart_eo.data import SynthConfig, synthesize

torch.set_num_threads(1)  # shared CPUs: tiny models run 10-20x faster single-threaded here


def tiny_flags(steps: int = 2) -> list[str]:
    """Engine flags of a CLI run that trains ``steps`` steps at batch 4 and writes no logs or checkpoints."""
    return [
        "--engine.train.max_steps",
        str(steps),
        "--engine.train.micro_batch_size",
        "4",
        "--engine.logging.tensorboard",
        "false",
        "--engine.logging.progress",
        "none",
        "--engine.checkpoint.save_final",
        "false",
    ]


@pytest.fixture(scope="session")
def eo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("eo") / "scenes"
    synthesize(root, SynthConfig(scenes=4, size=64, frames=3, seed=3, event_prob=1.0))
    return root


@pytest.fixture(autouse=True)
def _runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run folders of every test under its own tmp_path."""
    monkeypatch.setenv("WARMSTART_RUNS", str(tmp_path / "runs"))


@pytest.fixture
def tiny() -> Callable[..., list[str]]:
    """:func:`tiny_flags`: ``tiny()`` (2 steps) or ``tiny(3)``."""
    return tiny_flags


@pytest.fixture
def one_line(capsys: pytest.CaptureFixture[str]) -> Callable[[], str]:
    """The captured stderr, checked to be exactly one line."""

    def read() -> str:
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        return err

    return read
