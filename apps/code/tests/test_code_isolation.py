"""The rlimits fallback (no namespaces) says what it does not isolate and closes what it can without them;
asking for namespaces where the kernel refuses them fails at once with one line."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from pathlib import Path

import pytest

import warmstart_code.sandbox as sandbox_module
from warmstart.errors import ConfigError
from warmstart_code.sandbox import Sandbox, SandboxConfig


@pytest.fixture(scope="module")
def fallback():
    with Sandbox(SandboxConfig(workers=1, isolation="rlimits", timeout_s=3.0, guard=False)) as sb:
        yield sb


def test_one_warning_line_names_what_is_not_isolated(caplog):
    with (
        caplog.at_level(logging.WARNING, logger="warmstart_code.sandbox"),
        Sandbox(SandboxConfig(workers=2, isolation="rlimits")) as sb,
    ):
        assert sb.info["isolation"] == "rlimits"
    lines = [r.getMessage() for r in caplog.records if r.name == "warmstart_code.sandbox"]
    assert len(lines) == 1, lines  # once per pool, not once per worker
    for word in ("/dev/shm", "/var/tmp", "network", "/proc"):
        assert word in lines[0]
    assert "\n" not in lines[0]


def test_writes_outside_the_work_dir_are_closed_without_namespaces(fallback):
    if fallback.info.get("landlock_abi", 0) < 1:
        pytest.skip("this kernel has no Landlock: the warning says these folders stay writable")
    marker = f"ws-probe-{uuid.uuid4().hex}"
    targets = [f"/dev/shm/{marker}", f"/var/tmp/{marker}", f"/tmp/{marker}"]
    results = fallback.run_many(
        [f"open({t!r}, 'w').write('x')" for t in targets if os.path.isdir(os.path.dirname(t))]
    )
    assert not any(os.path.exists(t) for t in targets)
    assert all(r.status.startswith("sandbox_refused: ") for r in results), [r.status for r in results]
    assert fallback.run("open('inside.txt', 'w').write('x')\nassert open('inside.txt').read() == 'x'").passed


def test_no_connection_reaches_a_host_listener_without_namespaces(fallback):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    udp = f"import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.sendto(b'x', ('127.0.0.1', {port}))"
    tcp = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\nprint('connected')"
    results = fallback.run_many([tcp, udp])
    with pytest.raises(TimeoutError):
        server.accept()
    server.close()
    assert all(r.status.startswith("sandbox_refused: network") for r in results), [r.status for r in results]


def test_a_setsid_grandchild_does_not_outlive_its_job(fallback):
    program = (
        "import os, time\nr, w = os.pipe()\npid = os.fork()\n"
        "if pid == 0:\n    os.setsid()\n    g = os.fork()\n    if g == 0:\n        time.sleep(30)\n        os._exit(0)\n"
        "    os.write(w, str(g).encode())\n    os._exit(0)\n"
        "os.waitpid(pid, 0)\nprint('grandchild', os.read(r, 32).decode())\n"
    )
    result = fallback.run(program)
    assert result.status == "passed", result.output
    grandchild = int(result.output.split("grandchild")[1].split()[0])
    deadline = time.monotonic() + 2.0
    while os.path.exists(f"/proc/{grandchild}") and time.monotonic() < deadline:
        time.sleep(0.05)
    stat = Path(f"/proc/{grandchild}/stat")
    alive = stat.exists() and "Z" not in stat.read_text().split()[2]  # a zombie awaiting its reaper is dead
    assert not alive, f"pid {grandchild} escaped the job"


def test_killing_the_parent_is_labelled_killed_by_program(fallback):
    result = fallback.run("import os\nos.kill(os.getppid(), 9)\nimport time\ntime.sleep(5)")
    assert result.status == "killed_by_program", (result.status, result.output)


def test_namespaces_on_demand_fail_fast_with_one_line(monkeypatch, capsys, tmp_path):
    def refusing(config):
        return sandbox_module.asdict(config) | {"_deny_namespaces": True}

    monkeypatch.setattr(sandbox_module, "_worker_config", refusing)
    start = time.monotonic()
    with pytest.raises(ConfigError) as err:
        Sandbox(SandboxConfig(workers=2, isolation="namespaces"))
    assert time.monotonic() - start < 10
    message = str(err.value)
    assert "\n" not in message and "--sandbox.isolation namespaces" in message and "rlimits" in message
    with Sandbox(SandboxConfig(workers=1, isolation="auto")) as sb:  # auto falls back instead, and says so
        assert sb.info["isolation"] == "rlimits" and "simulated" in sb.info["namespace_error"]

    from warmstart_code.cli import app
    from warmstart_code.data import generate_tasks, write_jsonl

    tasks = write_jsonl(generate_tasks(2, seed=0), tmp_path / "t.jsonl")
    code = app.main(
        ["eval", "--tasks", str(tasks), "--out", str(tmp_path / "e"), "--sandbox.isolation", "namespaces"]
    )
    assert code == 2
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1 and "--sandbox.isolation namespaces" in err_lines[0], err_lines
    assert not (tmp_path / "e" / "summary.json").exists()
