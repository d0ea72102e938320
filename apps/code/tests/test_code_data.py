"""Task loading (HumanEval and MBPP layouts, bad lines) and the generator's tests."""

from __future__ import annotations

import json

import pytest

from warmstart.errors import DataError
from warmstart_code.data import generate_tasks, load_tasks, write_jsonl
from warmstart_code.sandbox import Sandbox, SandboxConfig


def test_generated_canonical_solutions_pass_and_wrong_ones_fail(tmp_path):
    tasks, errors = load_tasks(write_jsonl(generate_tasks(24, seed=3), tmp_path / "t.jsonl"))
    assert errors == [] and len(tasks) == 24 and {t.family for t in tasks} <= {"string", "list", "arith"}
    with Sandbox(SandboxConfig(workers=2)) as sb:
        good = sb.run_many([t.program(t.canonical_solution) for t in tasks])
        bad = sb.run_many([t.program("    return None\n") for t in tasks])
    assert all(r.passed for r in good)
    assert not any(r.passed for r in bad)  # the tests discriminate


def test_mbpp_layout_and_bad_lines_are_skipped(tmp_path):
    mbpp = {
        "task_id": 11,
        "text": "Add one.",
        "code": "def add_one(n):\n    return n + 1",
        "test_list": ["assert add_one(1) == 2"],
        "test_setup_code": "",
    }
    lines = [
        json.dumps(mbpp),
        "{not json",
        json.dumps({"task_id": "x", "prompt": "def f():\n", "entry_point": "f", "test": "def check(:\n"}),
        json.dumps({"task_id": "y", "prompt": "def f():\n"}),
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    tasks, errors = load_tasks(path)
    assert [t.entry_point for t in tasks] == ["add_one"]
    assert len(errors) == 3 and "does not parse" in errors[1] and "missing field" in errors[2]
    assert "mixed.jsonl:2" in errors[0]
    with pytest.raises(DataError, match="mixed.jsonl:2"):
        load_tasks(path, on_error="raise")
    with Sandbox(SandboxConfig(workers=1)) as sb:
        assert sb.run(
            tasks[0].program(tasks[0].canonical_solution)
        ).passed  # MBPP: the code is the whole program


def test_javascript_versions_cover_every_template_and_are_valid_javascript(tmp_path):
    import shutil
    import subprocess

    from warmstart_code.data import JS_BODIES, TEMPLATES, generate_js_tasks
    from warmstart_code.zecoler import snippet, understanding_split

    assert {t[1] for t in TEMPLATES} == set(JS_BODIES)
    tasks = generate_js_tasks(60, seed=1)
    assert {t.language for t in tasks} == {"javascript"} and {t.family for t in tasks} == {
        "string",
        "list",
        "arith",
    }
    train, test = understanding_split(6, 6, seed=0)
    assert {t.language for t in train} == {"python"} and {t.language for t in test} == {"javascript"}
    assert snippet(test[0]).endswith("// kind:") and snippet(train[0]).endswith("# kind:")
    node = shutil.which("node")
    if node is None:
        pytest.skip("no JavaScript runtime here to check the syntax (the task itself needs none)")
    source = tmp_path / "all.js"
    source.write_text("".join(t.prompt + t.canonical_solution for t in tasks))
    done = subprocess.run([node, "--check", str(source)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
