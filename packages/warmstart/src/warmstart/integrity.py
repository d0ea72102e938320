"""Content hashes for files we write and later trust: checkpoints, cached artifacts, saved models.

One place for the digest (xxh3-128 by default: several GB/s on one core, so verifying a checkpoint costs
a fraction of writing it; sha256 where a cryptographic hash is wanted) and for a manifest — a mapping
``{relative path: {"size": bytes, "digest": hex}}`` — written beside the files and checked on load.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import xxhash

_CHUNK = 1 << 22  # 4 MiB reads


class _Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...
    def hexdigest(self) -> str: ...


ALGORITHMS = ("xxh3_128", "sha256")


def digest_file(path: str | Path, algorithm: str = "xxh3_128") -> str:
    """The hex digest of a file's bytes, read in 4 MiB chunks."""
    h: _Hasher
    if algorithm == "xxh3_128":
        h = xxhash.xxh3_128()
    elif algorithm == "sha256":
        h = hashlib.sha256()
    else:
        raise ValueError(f"unknown digest algorithm {algorithm!r}; use one of {ALGORITHMS}")
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def manifest(
    root: str | Path, files: Iterable[str], algorithm: str = "xxh3_128"
) -> dict[str, dict[str, Any]]:
    """``{name: {"size", "digest"}}`` for ``files`` (paths relative to ``root``)."""
    root = Path(root)
    return {
        name: {"size": (root / name).stat().st_size, "digest": digest_file(root / name, algorithm)}
        for name in files
    }


def verify(root: str | Path, entries: dict[str, dict[str, Any]], algorithm: str = "xxh3_128") -> str | None:
    """None when every file in ``entries`` exists with its recorded size and digest, else why not.

    Sizes are checked first (cheap: a truncated file fails without being read), then digests.
    """
    root = Path(root)
    for name, entry in entries.items():
        path = root / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if "size" in entry and size != entry["size"]:
            return f"{name} has {size} bytes where {entry['size']} were written (truncated or replaced)"
    for name, entry in entries.items():
        if "digest" in entry and digest_file(root / name, algorithm) != entry["digest"]:
            return f"{name} does not match its recorded {algorithm} digest (its bytes changed after it was written)"
    return None
