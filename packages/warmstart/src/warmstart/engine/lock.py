"""One writer per run directory: an advisory lock on ``RUN/.lock`` holding the writer's PID and host.

Two processes resuming the same run would prune and overwrite each other's checkpoints, so the writer
(rank 0) takes an exclusive ``flock`` on ``RUN/.lock`` for as long as it works on the run and writes its
PID, host and start time into it; a second writer is refused with one line naming them. The kernel drops
the lock when its holder dies (even by SIGKILL), so a crashed run never leaves a lock that needs deleting.
Locks are re-entrant inside one process (the CLI and the engine both take it). POSIX only; on a network
file system the lock is as good as its ``flock`` support.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from warmstart.errors import CheckpointError

LOCK_NAME = ".lock"

_HELD: dict[str, tuple[int, int]] = {}  # resolved run dir -> (fd, re-entrant count)


def _key(run_dir: Path) -> str:
    return str(Path(run_dir).resolve())


def holder(run_dir: Path) -> dict[str, Any] | None:
    """What the lock file says about its holder (pid, host, since), or None."""
    try:
        found: dict[str, Any] | None = json.loads((Path(run_dir) / LOCK_NAME).read_text() or "null")
        return found
    except (OSError, json.JSONDecodeError):
        return None


def acquire(run_dir: Path) -> None:
    """Take the run's lock (or count one more use of it in this process); CheckpointError when held."""
    key = _key(run_dir)
    if key in _HELD:
        fd, count = _HELD[key]
        _HELD[key] = (fd, count + 1)
        return
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    fd = os.open(Path(run_dir) / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        who = holder(run_dir) or {}
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(who.get("since", 0))) if who else "?"
        raise CheckpointError(
            f"{run_dir} is in use by PID {who.get('pid', '?')} on host {who.get('host', '?')} (since {since}); "
            f"wait for that run to end or stop it, then retry (one writer per run directory)"
        ) from None
    record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()})
    os.ftruncate(fd, 0)
    os.pwrite(fd, record.encode(), 0)
    _HELD[key] = (fd, 1)


def release(run_dir: Path) -> None:
    """Drop one use of the lock; the last use unlocks it (the file stays: it is only a name to lock)."""
    key = _key(run_dir)
    if key not in _HELD:
        return
    fd, count = _HELD[key]
    if count > 1:
        _HELD[key] = (fd, count - 1)
        return
    del _HELD[key]
    try:
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def held(run_dir: Path) -> bool:
    """Whether this process holds the run's lock."""
    return _key(run_dir) in _HELD
