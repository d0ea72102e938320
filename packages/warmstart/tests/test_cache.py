"""Cached artifacts: built once per key, rebuilt when altered, keys that follow config/data/code, prune."""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import threading

import pytest

from warmstart import cache
from warmstart.cli.main import app


def _builder(calls: list):
    def build(folder):
        calls.append(folder)
        (folder / "weights.bin").write_bytes(b"x" * 100)
        (folder / "sub").mkdir()
        (folder / "sub" / "note.txt").write_text("hi")

    return build


def test_built_once_and_reused(tmp_path):
    calls: list = []
    first = cache.cached("t.src", {"steps": 10}, _builder(calls), root=tmp_path, description="a source")
    second = cache.cached("t.src", {"steps": 10}, _builder(calls), root=tmp_path)
    assert first == second and len(calls) == 1
    assert (first / "sub" / "note.txt").read_text() == "hi"
    assert not list(tmp_path.glob("t.src/.*.tmp-*"))


def test_key_follows_config_data_and_code():
    base = cache.artifact_key("k", {"a": 1, "b": [1, 2]}, data={"n": 3}, code_version="1")
    assert base == cache.artifact_key("k", {"b": [1, 2], "a": 1.0}, data={"n": 3}, code_version="1")
    assert base != cache.artifact_key("k", {"a": 2, "b": [1, 2]}, data={"n": 3}, code_version="1")
    assert base != cache.artifact_key("k", {"a": 1, "b": [1, 2]}, data={"n": 4}, code_version="1")
    assert base != cache.artifact_key("k", {"a": 1, "b": [1, 2]}, data={"n": 3}, code_version="2")


def test_altered_artifact_is_rebuilt(tmp_path, caplog):
    calls: list = []
    folder = cache.cached("t.src", {"s": 1}, _builder(calls), root=tmp_path)
    (folder / "weights.bin").write_bytes(b"y" * 100)  # same size, other bytes
    folder = cache.cached("t.src", {"s": 1}, _builder(calls), root=tmp_path)
    assert len(calls) == 2 and (folder / "weights.bin").read_bytes() == b"x" * 100
    assert "failed verification" in caplog.text


def test_failed_build_leaves_nothing(tmp_path):
    def broken(folder):
        (folder / "half").write_text("..")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        cache.cached("t.src", {"s": 2}, broken, root=tmp_path)
    assert cache.list_artifacts(tmp_path) == []
    assert not list((tmp_path / "t.src").iterdir())  # no temporary folder, no lock left behind


def test_list_prune_and_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WARMSTART_CACHE", str(tmp_path))
    cache.cached("a.src", {"s": 1}, _builder([]))
    cache.cached("b.src", {"s": 1}, _builder([]))
    assert {a.kind for a in cache.list_artifacts()} == {"a.src", "b.src"}
    assert app.main(["cache", "--action", "list"]) == 0
    assert "a.src" in capsys.readouterr().out
    assert app.main(["cache", "--action", "prune", "--kind", "a.src"]) == 0
    assert [a.kind for a in cache.list_artifacts()] == ["b.src"]
    assert app.main(["cache", "--action", "nonsense"]) == 2


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _hold(lock, pid: int):
    """Hold ``lock`` through a descriptor of our own (as an orphaned child would) naming ``pid``."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    fh = open(lock, "a+")  # noqa: SIM115 - the test closes it
    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    fh.write(f"{pid}@{socket.gethostname()}\n")
    fh.flush()
    return fh


def _in_thread(fn):
    out: dict = {}
    thread = threading.Thread(target=lambda: out.setdefault("path", fn()), daemon=True)
    thread.start()
    return thread, out


def test_a_dead_holders_lock_is_taken_over(tmp_path, caplog):
    key = cache.artifact_key("t.src", {"s": 3})
    holder = _hold(tmp_path / "t.src" / f".{key}.lock", _dead_pid())
    calls: list = []
    try:
        thread, out = _in_thread(lambda: cache.cached("t.src", {"s": 3}, _builder(calls), root=tmp_path))
        thread.join(timeout=20)
        assert not thread.is_alive(), "cached() waited on a lock whose holder is dead"
    finally:
        holder.close()
    assert len(calls) == 1 and (out["path"] / "weights.bin").is_file()
    assert "taking over" in caplog.text


def test_a_live_holder_is_waited_for(tmp_path):
    key = cache.artifact_key("t.src", {"s": 4})
    holder = _hold(tmp_path / "t.src" / f".{key}.lock", os.getpid())
    calls: list = []
    try:
        thread, out = _in_thread(lambda: cache.cached("t.src", {"s": 4}, _builder(calls), root=tmp_path))
        thread.join(timeout=0.6)
        assert thread.is_alive() and not calls  # still waiting: the holder runs
    finally:
        holder.close()  # releases the lock
    thread.join(timeout=20)
    assert not thread.is_alive() and len(calls) == 1 and out["path"].is_dir()


def test_prune_removes_stale_locks_and_keeps_live_ones(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WARMSTART_CACHE", str(tmp_path))
    leftover = tmp_path / "a.src" / ".0000.lock"  # nobody holds it
    leftover.parent.mkdir()
    leftover.write_text(f"{_dead_pid()}@{socket.gethostname()}\n")
    dead, live = tmp_path / "a.src" / ".1111.lock", tmp_path / "b.src" / ".2222.lock"
    holders = [_hold(dead, _dead_pid()), _hold(live, os.getpid())]
    try:
        assert app.main(["cache", "--action", "prune", "--dry_run", "true"]) == 0
        assert "would remove 0 artifact(s), 0.0 MiB, and 2 stale lock(s)" in capsys.readouterr().out
        assert leftover.exists() and dead.exists()
        assert app.main(["cache", "--action", "prune"]) == 0
        assert "and 2 stale lock(s)" in capsys.readouterr().out
        assert not leftover.exists() and not dead.exists() and live.exists()
    finally:
        for fh in holders:
            fh.close()
