"""Pretrained sources as cached artifacts: built once, keyed by what made them, verified on every use.

A bench's source model (an MAE pretrained for thousands of steps, a world model pretrained on other
environments' videos) plays the part of a foundation model a user downloads: it is built once and reused.
:func:`cached` keys it by the hash of (kind, its config, its data recipe, the code version), builds it
into a temporary folder, records a manifest of every file's size and digest, and renames the folder into
place — so a crash never leaves an artifact that looks complete, and a changed byte is caught on load
(the artifact is rebuilt, with a warning). ``warmstart cache list|prune|path`` shows and removes them.

Builders of one key serialise on ``<kind>/.<key>.lock`` (``flock``; the holder writes ``pid@host`` into it
and removes it when done). A lock still held by a process that has died on this host — a forked child
that inherited the descriptor outlives its parent, or a crash on a filesystem that keeps the lock — is
taken over, and ``prune`` removes such stale locks.

Location: ``$WARMSTART_CACHE``, else ``$XDG_CACHE_HOME/warmstart``, else ``~/.cache/warmstart``.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from warmstart import integrity

log = logging.getLogger(__name__)
MANIFEST = "artifact.json"


def cache_root() -> Path:
    """Where artifacts live (``$WARMSTART_CACHE``, ``$XDG_CACHE_HOME/warmstart`` or ``~/.cache/warmstart``)."""
    if env := os.environ.get("WARMSTART_CACHE"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "warmstart"


def _canonical(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _canonical(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return int(value) if abs(value) < 2**53 else value
    return value


def artifact_key(kind: str, config: Any, *, data: Any = None, code_version: str = "") -> str:
    """A 16-hex-digit key: sha256 of the canonical JSON of (kind, config, data recipe, code version)."""
    blob = json.dumps(
        {"kind": kind, "config": _canonical(config), "data": _canonical(data), "code": code_version},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def code_version(*modules: Any) -> str:
    """A version string for the code that builds an artifact: the package version plus a hash of the
    given modules' source files (so editing the pretraining code invalidates its cached sources)."""
    from warmstart import __version__

    h = hashlib.sha256(__version__.encode())
    for module in modules:
        path = getattr(module, "__file__", None)
        if path and Path(path).is_file():
            h.update(Path(path).read_bytes())
    return f"{__version__}+{h.hexdigest()[:12]}"


@dataclass(frozen=True)
class Artifact:
    kind: str
    key: str
    path: Path
    created: float
    size: int
    description: str

    @property
    def age_days(self) -> float:
        return (time.time() - self.created) / 86400


_POLL_SECONDS = 0.2


def _holder(fh: IO[str]) -> tuple[int, str] | None:
    """``(pid, host)`` written in an open lock file, or None when it holds no such line (yet)."""
    fh.seek(0)
    pid, _, host = fh.read().strip().partition("@")
    return (int(pid), host) if pid.isdigit() and host else None


def _dead_holder(fh: IO[str]) -> tuple[int, str] | None:
    """The holder of this lock file when it is a process of this host that no longer runs, else None."""
    holder = _holder(fh)
    if holder is None or holder[1] != socket.gethostname() or _alive(holder[0]):
        return None
    return holder


def _is_current(fh: IO[str], path: Path) -> bool:
    """Whether ``path`` still names the file ``fh`` has open (it was not removed or replaced since)."""
    try:
        return os.fstat(fh.fileno()).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _try_lock(fh: IO[str]) -> bool:
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _acquire(path: Path) -> IO[str]:
    """Open and lock ``path``, waiting for a live holder and taking over from a dead one."""
    waited = False
    while True:
        fh = open(path, "a+")  # noqa: SIM115 - closed by the caller (or below, to retry)
        while not _try_lock(fh):
            if not _is_current(fh, path):
                break  # the holder finished (or the lock was taken over): open the new file
            if dead := _dead_holder(fh):
                log.warning("taking over %s: its holder, process %d on %s, has died", path, *dead)
                path.unlink(missing_ok=True)  # the dead holder's file goes; the next open makes a fresh one
                break
            if not waited:
                log.info("waiting for %s (held by %s)", path, _holder(fh) or "a starting process")
                waited = True
            time.sleep(_POLL_SECONDS)
        else:
            if _is_current(fh, path):
                return fh
            fcntl.flock(fh, fcntl.LOCK_UN)  # we locked a file its holder has just removed
        fh.close()


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = _acquire(path)
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}@{socket.gethostname()}\n")
        fh.flush()
        yield
    finally:
        path.unlink(missing_ok=True)  # before unlocking: a waiter that then gets this file sees it is gone
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


def prune_locks(root: Path | None = None, *, dry_run: bool = False) -> list[Path]:
    """Remove the stale builder locks under ``root``: lock files nobody holds (left by a crash) and locks
    whose holder has died on this host. Returns the locks (that would be) removed; live ones are kept."""
    root = root or cache_root()
    stale: list[Path] = []
    for path in sorted(root.glob("*/.*.lock")) if root.is_dir() else []:
        try:
            fh = open(path)  # noqa: SIM115 - closed below
        except FileNotFoundError:
            continue  # released meanwhile
        with fh:
            held_by_us = _try_lock(fh)
            if not held_by_us and _dead_holder(fh) is None:
                continue  # a live builder's
            if _is_current(fh, path):
                stale.append(path)
                if not dry_run:
                    path.unlink(missing_ok=True)
            if held_by_us:
                fcntl.flock(fh, fcntl.LOCK_UN)
    return stale


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        manifest: dict[str, Any] | None = json.loads((folder / MANIFEST).read_text())
        return manifest
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def _files_of(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def lookup(kind: str, key: str, root: Path | None = None) -> Path | None:
    """The artifact's folder when present and verified, else None (a folder that fails is removed)."""
    folder = (root or cache_root()) / kind / key
    if not folder.is_dir():
        return None
    manifest = _read_manifest(folder)
    problem = (
        "no readable manifest" if manifest is None else integrity.verify(folder, manifest.get("files", {}))
    )
    if problem:
        log.warning("cached %s %s failed verification (%s); rebuilding it", kind, key, problem)
        shutil.rmtree(folder, ignore_errors=True)
        return None
    return folder


def cached(
    kind: str,
    config: Any,
    build: Callable[[Path], Any],
    *,
    data: Any = None,
    code: str = "",
    description: str = "",
    root: Path | None = None,
) -> Path:
    """The folder of the artifact made by ``build(folder)`` for this (kind, config, data, code).

    ``build`` writes its files into the folder it is given (a temporary one); on success the folder is
    moved into place with a manifest. Concurrent callers of the same key wait on a lock and the second
    one finds the first one's result. Returns the artifact's folder.
    """
    root = root or cache_root()
    key = artifact_key(kind, config, data=data, code_version=code)
    if found := lookup(kind, key, root):
        log.info("using cached %s %s", kind, key)
        return found
    with _locked(root / kind / f".{key}.lock"):
        if found := lookup(kind, key, root):
            return found
        final = root / kind / key
        tmp = root / kind / f".{key}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            build(tmp)
            files = _files_of(tmp)
            manifest = {
                "kind": kind,
                "key": key,
                "created": time.time(),
                "description": description,
                "config": _canonical(config),
                "data": _canonical(data),
                "code": code,
                "files": integrity.manifest(tmp, files),
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


def list_artifacts(root: Path | None = None) -> list[Artifact]:
    """Every complete artifact under the cache root, newest first."""
    root = root or cache_root()
    found: list[Artifact] = []
    if not root.is_dir():
        return found
    for kind_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for folder in sorted(p for p in kind_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            manifest = _read_manifest(folder)
            if manifest is None:
                continue
            size = sum(e.get("size", 0) for e in manifest.get("files", {}).values())
            found.append(
                Artifact(
                    kind_dir.name,
                    folder.name,
                    folder,
                    manifest.get("created", 0.0),
                    size,
                    manifest.get("description", ""),
                )
            )
    return sorted(found, key=lambda a: -a.created)


def prune(
    root: Path | None = None,
    *,
    kind: str | None = None,
    older_than_days: float | None = None,
    dry_run: bool = False,
) -> list[Artifact]:
    """Remove artifacts (of ``kind``, older than ``older_than_days``; all when both are None), stale
    temporary folders and stale locks (:func:`prune_locks`); returns the artifacts (that would be) removed."""
    root = root or cache_root()
    chosen = [
        a
        for a in list_artifacts(root)
        if (kind is None or a.kind == kind) and (older_than_days is None or a.age_days > older_than_days)
    ]
    if not dry_run:
        for artifact in chosen:
            shutil.rmtree(artifact.path, ignore_errors=True)
        if root.is_dir():
            for tmp in root.glob("*/.*.tmp-*"):
                pid = tmp.name.rsplit("-", 1)[-1]
                if pid.isdigit() and not _alive(int(pid)):
                    shutil.rmtree(tmp, ignore_errors=True)
        prune_locks(root)
    return chosen


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
