"""Bench jobs (one seed, one arm) in spawned worker processes: the one way a bench spreads over cores."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def run_jobs[T](fn: Callable[..., T], calls: Sequence[tuple[Any, ...]], workers: int) -> list[T]:
    """``fn(*args)`` for every call, in order: in this process when ``workers`` ≤ 1 (or one call), else in
    that many *spawned* processes (a fresh interpreter each: no forked torch/OpenMP state). ``fn`` must be a
    module-level function and its arguments and result picklable; give each worker one torch thread
    (``warmstart.engine.cpu_threads``) so that ``workers`` processes use ``workers`` cores."""
    if workers <= 1 or len(calls) <= 1:
        return [fn(*args) for args in calls]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(workers, len(calls)), mp_context=context) as pool:
        futures = [pool.submit(fn, *args) for args in calls]
        return [future.result() for future in futures]
