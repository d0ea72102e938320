"""warmstart.eval.run_jobs: results in call order, in this process or in spawned workers."""

from __future__ import annotations

import os

from warmstart.eval import run_jobs


def _square_with_pid(x: int, offset: int) -> tuple[int, int]:
    return x * x + offset, os.getpid()


def test_in_process_keeps_order() -> None:
    out = run_jobs(_square_with_pid, [(3, 0), (1, 1), (2, 0)], workers=1)
    assert [value for value, _ in out] == [9, 2, 4]
    assert {pid for _, pid in out} == {os.getpid()}


def test_workers_run_elsewhere_and_keep_order() -> None:
    out = run_jobs(_square_with_pid, [(3, 0), (1, 1), (2, 0)], workers=2)
    assert [value for value, _ in out] == [9, 2, 4]
    pids = {pid for _, pid in out}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
