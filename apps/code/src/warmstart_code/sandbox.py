"""Execution sandbox for model-written programs: OS-level isolation and a worker pool.

Seed context: HumanEval's harness ("Evaluating Large Language Models Trained on Code", arXiv 2107.03374)
runs each completion in a forked process with a SIGALRM timeout and a "reliability guard" that sets
dangerous functions to ``None`` — and warns it is *not a security sandbox*; EvalPlus (arXiv 2305.01210)
adds more of the same. Such guards are escaped through ``importlib``, ``posix``, ``ctypes``, ``os.exec*``,
sockets and absolute paths. Here the isolation is the kernel's (see ``_sandbox_worker.py``): per worker a
user + network namespace (no network at all) and, when the caller is root, a drop to ``nobody``; per
execution a mount + PID namespace with a read-only filesystem, a size-capped tmpfs as the only writable
place, a fresh ``/proc``, rlimits on CPU, address space, file size, processes and descriptors, a scrubbed
environment, no inherited descriptors, a wall-clock kill of the whole namespace, and capped output. An
audit-hook guard is kept as an extra, optional layer. Where the kernel refuses namespaces the worker falls
back to rlimits + a private temp dir + a killed process group (``isolation = "rlimits"``), and says so.

What it cannot stop (honestly): kernel exploits (no seccomp filter is installed); reading world-readable
files (the filesystem is read-only, not hidden); a program that inspects its own process memory can forge
the pass token (tests run in the program's process, as in HumanEval); and in ``rlimits`` mode a process
that calls ``setsid`` can outlive the group kill until its CPU limit, files outside the temp dir are
writable wherever the user may write, and the network is only blocked by the (escapable) guard.

Written by hand (no library in the workspace does this); the worker is stdlib-only so it starts fast.
"""

from __future__ import annotations

import json
import logging
import queue
import secrets
import struct
import subprocess
import sys
import threading
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

WORKER = Path(__file__).with_name("_sandbox_worker.py")
Status = Literal["passed", "failed", "timeout", "memory", "output_limit", "error", "crashed"]


@dataclass
class SandboxConfig:
    """Limits of one execution and the pool's shape."""

    timeout_s: float = 3.0
    """Wall-clock limit per execution (the whole process tree is killed after it)."""
    cpu_s: float = 2.0
    """CPU-time limit (RLIMIT_CPU, rounded up to whole seconds)."""
    memory_mb: int = 512
    """Address-space limit (RLIMIT_AS)."""
    file_size_mb: int = 8
    """Largest file the program may write (RLIMIT_FSIZE)."""
    tmpfs_mb: int = 32
    """Size of the private writable /tmp (namespaces mode)."""
    max_output_bytes: int = 65536
    """stdout+stderr beyond this kills the program (status output_limit)."""
    max_processes: int = 16
    """RLIMIT_NPROC of the program's user."""
    workers: int = 2
    """Worker processes executing in parallel."""
    isolation: Literal["auto", "namespaces", "rlimits"] = "auto"
    """auto: kernel namespaces when allowed, else rlimits only."""
    guard: bool = True
    """Also install the audit-hook guard (an extra, escapable layer)."""
    drop_privileges: bool = True
    """When run as root, execute as uid/gid 65534 (nobody)."""


@dataclass
class ExecResult:
    """What one execution gave."""

    status: Status
    passed: bool
    exit_code: int = -1
    output: str = ""
    seconds: float = 0.0
    id: str | int | None = None
    extra: dict = field(default_factory=dict)


def build_program(prompt: str, completion: str, test: str, entry_point: str) -> str:
    """HumanEval's check program: prompt + completion + test code + ``check(entry_point)``."""
    return f"{prompt}{completion}\n\n{test}\n\ncheck({entry_point})\n"


class _Worker:
    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},  # scrubbed: no secrets reach the worker
            close_fds=True,
            cwd="/",
        )
        self._send(asdict(config))
        hello = self._receive()
        if hello is None or not hello.get("ready"):
            self.close()
            detail = hello.get("error") if hello else "worker exited"
            raise RuntimeError(f"sandbox worker failed to start: {detail}")
        self.info = hello

    def _send(self, message: dict) -> None:
        data = json.dumps(message).encode()
        assert self.proc.stdin is not None
        self.proc.stdin.write(struct.pack(">I", len(data)) + data)
        self.proc.stdin.flush()

    def _receive(self) -> dict | None:
        assert self.proc.stdout is not None
        head = self.proc.stdout.read(4)
        if len(head) < 4:
            return None
        (size,) = struct.unpack(">I", head)
        return json.loads(self.proc.stdout.read(size))

    def run(self, job_id: str | int | None, program: str) -> ExecResult | None:
        try:
            self._send({"id": job_id, "program": program, "token": secrets.token_hex(16)})
            reply = self._receive()
        except (BrokenPipeError, OSError):
            reply = None
        if reply is None:
            return None
        return ExecResult(reply["status"], reply["passed"], reply["exit_code"], reply["output"],
                          reply["seconds"], reply["id"])  # fmt: skip

    def close(self) -> None:
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
            self.proc.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


class Sandbox:
    """A pool of sandbox workers. Use as a context manager; :meth:`run_many` keeps input order.

    A worker that dies mid-job (killed, crashed) reports that job as ``crashed`` and is replaced; the other
    results are kept.
    """

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self._workers = [_Worker(self.config) for _ in range(max(1, self.config.workers))]
        self.info = self._workers[0].info
        if self.info["isolation"] != "namespaces":
            log.warning("sandbox: kernel namespaces unavailable (%s); rlimits-only isolation",
                        self.info.get("namespace_error", "?"))  # fmt: skip

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for worker in self._workers:
            worker.close()
        self._workers = []

    def run(self, program: str, job_id: str | int | None = None) -> ExecResult:
        return self.run_many([program], [job_id])[0]

    def run_many(
        self, programs: Sequence[str], ids: Iterable[str | int | None] | None = None
    ) -> list[ExecResult]:
        """Execute ``programs`` on the pool; results in input order."""
        ids = list(ids) if ids is not None else list(range(len(programs)))
        jobs: queue.Queue[int] = queue.Queue()
        for i in range(len(programs)):
            jobs.put(i)
        results: list[ExecResult | None] = [None] * len(programs)

        def drain(slot: int) -> None:
            while True:
                try:
                    i = jobs.get_nowait()
                except queue.Empty:
                    return
                result = self._workers[slot].run(ids[i], programs[i])
                if result is None:  # the worker died: this job is lost, the worker replaced, the rest go on
                    log.warning("sandbox worker %d died on job %s; restarting it", slot, ids[i])
                    result = ExecResult("crashed", False, -1, "sandbox worker died", 0.0, ids[i])
                    self._workers[slot].close()
                    self._workers[slot] = _Worker(self.config)
                results[i] = result

        threads = [threading.Thread(target=drain, args=(s,), daemon=True) for s in range(len(self._workers))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return [r for r in results if r is not None]

    def worker_pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers]


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k estimator of Chen et al. (2021): 1 − C(n−c, k) / C(n, k), computed stably."""
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod
