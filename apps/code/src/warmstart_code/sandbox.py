"""Execution sandbox for model-written programs: OS-level isolation, a verdict out of the program's reach.

Seed context: HumanEval's harness ("Evaluating Large Language Models Trained on Code", arXiv 2107.03374)
runs each completion *and its tests* in one forked process with a SIGALRM timeout and a "reliability guard"
that sets dangerous functions to ``None`` — and warns it is *not a security sandbox*; EvalPlus (arXiv
2305.01210) adds more of the same. Such guards are escaped through ``importlib``, ``posix``, ``ctypes``,
``os.exec*``, sockets and absolute paths, and a candidate that shares the tests' process can forge their
verdict. Here (see ``_sandbox_worker.py``) the kernel isolates — user, network, mount and PID namespaces, a
read-only root and a capped tmpfs, rlimits, Landlock, a seccomp filter, a subreaper sweep — and
:meth:`Sandbox.check` runs the tests in the worker, a separate non-dumpable process that calls the
candidate's functions in the program's process through a pipe and accepts only plain values back, so no
code of the candidate runs where the verdict is made. :meth:`Sandbox.run` executes an opaque whole program
(its "passed" is the program's own claim).

The threat model (what is contained and what is not) is in the app's README. Written by hand (no library
in the workspace does this); the worker is stdlib-only so it starts fast.
"""

from __future__ import annotations

import json
import logging
import queue
import select
import struct
import subprocess
import sys
import threading
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from warmstart.errors import ConfigError
from warmstart.eval import pass_at_k

log = logging.getLogger(__name__)

WORKER = Path(__file__).with_name("_sandbox_worker.py")
STATUSES = ("passed", "failed", "timeout", "memory", "output_limit", "killed_by_program", "error", "crashed")
"""Every status but ``sandbox_refused: <what>`` (an operation the sandbox refused made the program fail).
``killed_by_program``: the program sent SIGKILL to itself, its process group or its parent (seccomp ends it)."""


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
    landlock: bool = True
    """Restrict writes to the work dir, TCP and signals with Landlock where the kernel has it."""
    drop_privileges: bool = True
    """When run as root, execute as uid/gid 65534 (nobody)."""


@dataclass
class ExecResult:
    """What one execution gave."""

    status: str
    """One of :data:`STATUSES` or ``sandbox_refused: <what>``."""
    passed: bool
    exit_code: int = -1
    output: str = ""
    seconds: float = 0.0
    id: str | int | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class CheckJob:
    """A candidate and the tests that judge it; the tests run in a process the candidate cannot reach."""

    code: str
    """The untrusted program text (HumanEval: prompt + completion), run in the program's process."""
    test: str
    """Trusted test code defining ``check(candidate)``, run in the worker (outside the candidate's process)."""
    entry_point: str
    """The function ``check`` receives (a proxy that calls it in the program's process)."""
    context: str = ""
    """Trusted code run beside the tests first (the task's prompt: imports, helpers such as ``poly``)."""


def build_program(prompt: str, completion: str, test: str, entry_point: str) -> str:
    """HumanEval's check program: prompt + completion + test code + ``check(entry_point)``."""
    return f"{prompt}{completion}\n\n{test}\n\ncheck({entry_point})\n"


def check_job(prompt: str, completion: str, test: str, entry_point: str) -> CheckJob:
    """The same task as :func:`build_program`, with the tests out of the candidate's reach."""
    return CheckJob(f"{prompt}{completion}\n", test, entry_point, prompt)


def _job_message(job_id: str | int | None, job: str | CheckJob) -> dict:
    if isinstance(job, CheckJob):
        return {"id": job_id, "mode": "check"} | asdict(job)
    return {"id": job_id, "mode": "program", "program": job}


def _worker_config(config: SandboxConfig) -> dict:
    return asdict(config)


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
        self._send(_worker_config(config))
        hello = self._receive()
        if hello is None or not hello.get("ready"):
            self.close()
            detail = hello.get("error") if hello else "worker exited"
            if config.isolation == "namespaces":
                raise ConfigError(
                    f"--sandbox.isolation namespaces: this kernel refuses them ({detail}); use "
                    f"--sandbox.isolation auto (rlimits fallback, with a warning) or rlimits"
                )
            raise RuntimeError(f"sandbox worker failed to start: {detail}")
        self.info = hello

    def _send(self, message: dict) -> None:
        data = json.dumps(message).encode()
        assert self.proc.stdin is not None
        self.proc.stdin.write(struct.pack(">I", len(data)) + data)
        self.proc.stdin.flush()

    def _receive(self, timeout: float | None = None) -> dict | None:
        assert self.proc.stdout is not None
        if timeout is not None and not select.select([self.proc.stdout], [], [], timeout)[0]:
            self.hung = True  # the worker itself is stuck (a test in a C call past every alarm)
            return None
        head = self.proc.stdout.read(4)
        if len(head) < 4:
            return None
        (size,) = struct.unpack(">I", head)
        return json.loads(self.proc.stdout.read(size))

    def run(self, job_id: str | int | None, job: str | CheckJob) -> ExecResult | None:
        self.hung = False
        try:
            self._send(_job_message(job_id, job))
            reply = self._receive(timeout=self.config.timeout_s + 10.0)
        except (BrokenPipeError, OSError):
            reply = None
        if reply is None and self.hung:
            return ExecResult(
                "timeout",
                False,
                -1,
                "the worker ran past the wall clock",
                self.config.timeout_s,
                job_id,
                {"worker_restarted": True},
            )
        if reply is None:
            return None
        return ExecResult(
            reply["status"],
            reply["passed"],
            reply["exit_code"],
            reply["output"],
            reply["seconds"],
            reply["id"],
        )

    def close(self, kill: bool = False) -> None:
        try:
            if kill:
                self.proc.kill()
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
            log.warning(rlimits_warning(self.info, self.config))

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for worker in self._workers:
            worker.close()
        self._workers = []

    def run(self, program: str | CheckJob, job_id: str | int | None = None) -> ExecResult:
        """One job: a whole program (passed = it ran to its end, as it says) or a :class:`CheckJob`."""
        return self.run_many([program], [job_id])[0]

    def check(self, code: str, test: str, entry_point: str, context: str = "") -> ExecResult:
        """Judge ``code`` by ``test`` run outside the candidate's process (see :class:`CheckJob`)."""
        return self.run(CheckJob(code, test, entry_point, context))

    def run_many(
        self, programs: Sequence[str | CheckJob], ids: Iterable[str | int | None] | None = None
    ) -> list[ExecResult]:
        """Execute ``programs`` (whole programs or :class:`CheckJob`) on the pool; results in input order."""
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
                if result is not None and result.extra.get("worker_restarted"):
                    self._workers[slot].close(kill=True)
                    self._workers[slot] = _Worker(self.config)
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


def rlimits_warning(info: dict, config: SandboxConfig) -> str:
    """The one line saying what the rlimits fallback does not isolate (and what it still closes)."""
    abi = int(info.get("landlock_abi", 0)) if config.landlock else 0
    seccomp = bool(info.get("seccomp"))
    files = "closed (Landlock: writes only in the work dir)" if abi >= 1 else "WRITABLE"
    tcp = "TCP closed (Landlock)" if abi >= 4 else ""
    net = "closed (seccomp: no inet sockets)" if seccomp else tcp or "OPEN (only the escapable guard)"
    signals = "only inside the job (Landlock)" if abi >= 6 else "to any process of the same user"
    why = (
        f"kernel namespaces unavailable ({info['namespace_error']})"
        if "namespace_error" in info
        else "isolation=rlimits requested"
    )
    return (
        f"sandbox: {why}; rlimits-only "
        f"isolation: /dev/shm and /var/tmp {files}; network {net}; /proc VISIBLE (the host's processes "
        f"and their command lines); signals {signals}"
    )


__all__ = [
    "STATUSES",
    "CheckJob",
    "ExecResult",
    "Sandbox",
    "SandboxConfig",
    "build_program",
    "check_job",
    "pass_at_k",
    "rlimits_warning",
]
