"""Shared fixtures: one tiny generated corpus per test session (espeak-ng speech, real WAV/FLAC files)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from warmstart_speech.data import SynthConfig, synth_corpus

    return synth_corpus(
        tmp_path_factory.mktemp("speech") / "corpus", SynthConfig(n_train=24, n_test=8, seed=3)
    )


@pytest.fixture(autouse=True)
def _runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARMSTART_RUNS", str(tmp_path / "runs"))


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one intra-op thread is as fast and far more robust on a shared 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def quiet() -> Callable[..., list[str]]:
    """CLI flags of a quiet engine run (no TensorBoard, progress bar or final checkpoint) plus the given
    ``--engine.train.<field>`` values: ``quiet(max_steps=6, micro_batch_size=4)``."""

    def flags(**train: int) -> list[str]:
        out = ["--engine.logging.tensorboard", "false", "--engine.logging.progress", "none"]
        out += ["--engine.checkpoint.save_final", "false"]
        for name, value in train.items():
            out += [f"--engine.train.{name}", str(value)]
        return out

    return flags
