"""Shared fixtures of the rl tests: one torch thread (fastest for tiny networks, and it keeps the shared CI
cores free), a run folder and a cache folder per test, and the one-line error check."""

import os

import pytest
import torch

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Benches cache their pretrained sources: each test gets its own cache folder."""
    monkeypatch.setenv("WARMSTART_CACHE", str(tmp_path / "cache"))


@pytest.fixture(autouse=True)
def _runs(tmp_path, monkeypatch):
    """Commands without --out write their run folder under the test's own folder."""
    monkeypatch.setenv("WARMSTART_RUNS", str(tmp_path / "runs"))


@pytest.fixture
def one_line_error():
    """``one_line_error(capsys)``: the captured stderr, asserted to be one line without a traceback."""

    def check(capsys) -> str:
        err = capsys.readouterr().err.strip()
        assert "Traceback" not in err and len(err.splitlines()) == 1, err
        return err

    return check
