"""Cached artifacts: built once per key, rebuilt when altered, keys that follow config/data/code, prune."""

from __future__ import annotations

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
    assert not [p for p in (tmp_path / "t.src").iterdir() if not p.name.endswith(".lock")]


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
