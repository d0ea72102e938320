"""Preemption: SIGTERM (what SLURM and Kubernetes send) and SIGINT end a run at a step boundary, saved.

Inside :meth:`Engine.fit` both signals only raise a flag; the loop finishes the optimizer step it is in
(all ranks agree on the step through the per-step all-reduce), writes a checkpoint and raises
:class:`Interrupted`, which the CLI turns into one line and exit code 143 (SIGTERM) or 130 (SIGINT). A
second signal while that checkpoint is written gets the default behaviour (the save is atomic, so
nothing half-written is left).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HANDLED = (signal.SIGTERM, signal.SIGINT)


class Interrupted(BaseException):  # noqa: N818 - like KeyboardInterrupt, not an error of the program
    """A run stopped by a signal after saving; ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None, run_dir: Path | None) -> None:
        self.signum = signum
        self.step = step
        self.checkpoint = checkpoint
        self.run_dir = run_dir
        super().__init__(self.line())

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def line(self) -> str:
        name = signal.Signals(self.signum).name
        if self.run_dir is None:
            return f"stopped at step {self.step} ({name}); no run directory, nothing saved"
        return f"stopped at step {self.step} ({name}); resume with --resume {self.run_dir}"


class StopFlag:
    """Which signal arrived (0: none yet)."""

    def __init__(self) -> None:
        self.signum = 0


@contextmanager
def catch_stop_signals() -> Iterator[StopFlag]:
    """Turn SIGTERM/SIGINT into a flag for the block's duration (main thread only; elsewhere a no-op)."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: object) -> None:
        flag.signum = signum
        for sig in HANDLED:  # a second signal acts at once
            signal.signal(sig, previous[sig])

    previous = {sig: signal.getsignal(sig) for sig in HANDLED}
    for sig in HANDLED:
        signal.signal(sig, handler)
    try:
        yield flag
    finally:
        for sig in HANDLED:
            signal.signal(sig, previous[sig])
