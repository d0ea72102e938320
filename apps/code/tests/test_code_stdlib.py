"""Correct programs are not failed for the sandbox's sake: the whole standard library, every codec, and a
refusal of the sandbox reported as ``sandbox_refused: <what>`` rather than as a wrong answer."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from warmstart_code.sandbox import Sandbox, SandboxConfig, check_job

SANDBOX = {"timeout_s": 10.0, "cpu_s": 5}  # this module's sandbox (the `sandbox` fixture of conftest.py)

# Modules whose import has an effect outside the program (antigravity opens a web browser).
NOT_TRIED = {"antigravity"}


def _importable_on_this_python() -> list[str]:
    """Every public stdlib module this interpreter can import (in a fresh, isolated interpreter)."""
    probe = (
        "import sys, json, io, contextlib\nok = []\n"
        "for n in sorted(sys.stdlib_module_names):\n"
        f"    if n.startswith('_') or n in {sorted(NOT_TRIED)!r}:\n        continue\n"
        "    try:\n        with contextlib.redirect_stdout(io.StringIO()):\n            __import__(n)\n"
        "        ok.append(n)\n    except Exception:\n        pass\n"
        "sys.stdout.write(json.dumps(ok))\n"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe], capture_output=True, text=True, timeout=120
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_every_stdlib_module_imports_in_the_sandbox(sandbox):
    names = _importable_on_this_python()
    assert len(names) > 150  # the probe itself worked
    results = sandbox.run_many([f"import {n}" for n in names], names)
    refused = {n: (r.status, r.output[-200:]) for n, r in zip(names, results, strict=True) if not r.passed}
    assert not refused, refused


def test_modules_named_in_the_issue_work_not_only_import(sandbox):
    program = """
import secrets, unittest, doctest, sqlite3, zoneinfo, datetime, io, codecs
assert len(secrets.token_hex(8)) == 16
class T(unittest.TestCase):
    def test_add(self):
        self.assertEqual(1 + 1, 2)
result = unittest.TextTestRunner(stream=io.StringIO()).run(unittest.defaultTestLoader.loadTestsFromTestCase(T))
assert result.wasSuccessful()
def double(x):
    '''
    >>> double(21)
    42
    '''
    return 2 * x
assert doctest.run_docstring_examples(double, {"double": double}) is None
db = sqlite3.connect(":memory:")
db.execute("create table t (x)"); db.executemany("insert into t values (?)", [(1,), (2,)])
assert db.execute("select sum(x) from t").fetchone() == (3,)
paris = datetime.datetime(2024, 7, 1, 12, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
assert paris.utcoffset() == datetime.timedelta(hours=2)
assert "bücher.example".encode("idna") == b"xn--bcher-kva.example"
print("ok")
"""
    result = sandbox.run(program)
    assert result.status == "passed" and "ok" in result.output, result.output


def test_every_codec_is_available(sandbox):
    lookup = (
        "import codecs, encodings.aliases, json\nok = []\n"
        "for name in sorted(set(encodings.aliases.aliases.values())):\n"
        "    try:\n        codecs.lookup(name); ok.append(name)\n    except LookupError:\n        pass\n"
        "print(json.dumps(ok))\n"
    )
    host = subprocess.run(
        [sys.executable, "-I", "-S", "-c", lookup], capture_output=True, text=True, timeout=60
    )
    inside = sandbox.run(lookup)
    assert inside.status == "passed", inside.output
    assert json.loads(inside.output.strip().splitlines()[-1]) == json.loads(host.stdout)


def test_a_refusal_is_reported_as_such_never_as_a_wrong_answer(sandbox):
    programs = [
        "import socket\nsocket.create_connection(('example.com', 80), timeout=1)",  # idna, then no network
        "import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)",
        "open('/etc/ws-probe', 'w')",
    ]
    statuses = [r.status for r in sandbox.run_many(programs)]
    assert statuses[0].startswith("sandbox_refused: network"), statuses
    assert statuses[1].startswith("sandbox_refused: network"), statuses
    assert statuses[2].startswith("sandbox_refused: ") and "/etc/ws-probe" in statuses[2], statuses
    # inside a checked call the refusal travels to the verdict too
    prompt = "def fetch():\n"
    code = "    import urllib.request\n    return urllib.request.urlopen('http://example.com').read()\n"
    test = "def check(candidate):\n    assert candidate() == b'x'\n"
    status = sandbox.run(check_job(prompt, code, test, "fetch")).status
    assert status.startswith("sandbox_refused: network"), status


def test_labels_for_the_limits_and_for_a_program_that_kills_itself():
    config = SandboxConfig(
        workers=2, timeout_s=1.5, cpu_s=1, memory_mb=256, max_output_bytes=4096, guard=False
    )
    programs = [
        "import time\ntime.sleep(30)",
        "while True:\n    pass",
        "b = bytearray(2**31)",
        "while True:\n    print('x' * 999)",
        "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
        "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n    pass",
    ]
    with Sandbox(config) as sb:
        statuses = [r.status for r in sb.run_many(programs)]
    assert statuses == ["timeout", "timeout", "memory", "output_limit", "killed_by_program", "timeout"]
