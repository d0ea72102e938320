"""warmstart.eval.run_jobs: results in call order, in this process or in spawned workers.

The jobs are stdlib functions: a spawned worker imports a job's module by name, and a test module is not
importable by name under pytest's importlib mode (a bench's jobs live in its app's package)."""

from __future__ import annotations

import operator
import os

from warmstart.eval import run_jobs


def test_in_process_keeps_order() -> None:
    assert run_jobs(operator.pow, [(3, 2), (1, 5), (2, 3)], workers=1) == [9, 1, 8]
    assert run_jobs(os.getpid, [(), ()], workers=1) == [os.getpid()] * 2


def test_workers_run_elsewhere_and_keep_order() -> None:
    assert run_jobs(operator.pow, [(3, 2), (1, 5), (2, 3)], workers=2) == [9, 1, 8]
    pids = set(run_jobs(os.getpid, [(), (), ()], workers=2))
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
