"""Fixtures every lang test shares: one CPU thread, run folders and the bench cache under the test's
tmp_path, no hub access, and the check that a refused input is one line with exit 2."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _lang_env(tmp_path, monkeypatch) -> Iterator[None]:
    """Tiny models run faster on one thread than on two contended ones (see warmstart.engine.cpu_threads)."""
    monkeypatch.setenv("WARMSTART_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("WARMSTART_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def one_line_error(capsys) -> Callable[[int], str]:
    """``one_line_error(exit_code)``: assert exit 2 and a one-line error without a traceback; return it."""

    def check(code: int) -> str:
        assert code == 2
        err = capsys.readouterr().err.strip()
        assert err and "\n" not in err and "Traceback" not in err
        return err

    return check
