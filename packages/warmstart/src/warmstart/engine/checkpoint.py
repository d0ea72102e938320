"""Atomic, verifiable checkpoints.

Layout of ``checkpoints/step-N/``:

- ``model.safetensors`` — the model's weights (full state dict, gathered on rank 0);
- ``optimizer.pt`` — the optimizer state (tensors and plain containers; loaded with ``weights_only=True``);
- ``state.pt`` — step, scheduler, data position, per-rank RNG states, metrics;
- ``meta.json`` — written last: step, time, and each file's size, used to detect truncation.

Rank 0 writes everything into ``.tmp-step-N`` and renames it to ``step-N`` only when every file is flushed
to disk, so a kill mid-write never leaves a directory that looks complete.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from warmstart.errors import CheckpointError

STEP_DIR = re.compile(r"^step-(\d+)$")
FILES = ("model.safetensors", "optimizer.pt", "state.pt")


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states in a ``weights_only``-loadable form."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    npst = state["numpy"]
    np.random.set_state(
        (npst["kind"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"], npst["cached"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_as_tuple(v) for v in value)
    return value


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _torch_save(obj: Any, path: Path) -> None:
    with open(path, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())


def save_checkpoint(
    root: Path,
    step: int,
    model_state: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    state: dict[str, Any],
    keep_last: int = 0,
) -> Path:
    """Write ``root/step-<step>`` atomically and prune older ones beyond ``keep_last``; returns its path."""
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-step-*"):  # leftovers of a killed save: never complete, safe to drop
        shutil.rmtree(stale, ignore_errors=True)
    final = root / f"step-{step}"
    tmp = root / f".tmp-step-{step}"
    tmp.mkdir()
    # safetensors refuses shared storage: store contiguous, de-aliased copies
    tensors = {k: v.detach().contiguous().cpu().clone() for k, v in model_state.items()}
    save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt", "step": str(step)})
    with open(tmp / "model.safetensors", "rb+") as fh:
        os.fsync(fh.fileno())
    _torch_save(optimizer_state, tmp / "optimizer.pt")
    _torch_save(state, tmp / "state.pt")
    meta = {
        "step": step,
        "time": time.time(),
        "files": {name: (tmp / name).stat().st_size for name in FILES},
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    with open(tmp / "meta.json", "rb+") as fh:
        os.fsync(fh.fileno())
    _fsync_dir(tmp)
    if final.exists():  # re-saving a step (e.g. after a resume): swap, then drop the old copy
        old = root / f".old-step-{step}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync_dir(root)
    if keep_last > 0:
        for stale in complete_checkpoints(root)[:-keep_last]:
            shutil.rmtree(stale, ignore_errors=True)
    return final


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete ``step-N`` directories under ``root``, oldest first."""
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = STEP_DIR.match(child.name)
        if match and child.is_dir() and (child / "meta.json").is_file():
            found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found)]


def latest_checkpoint(root: Path) -> Path | None:
    found = complete_checkpoints(root)
    return found[-1] if found else None


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Read and verify a checkpoint directory: (model state, optimizer state, engine state).

    Raises :class:`CheckpointError` naming the file when anything is missing, truncated or unreadable.
    """
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        raise CheckpointError(
            f"{path} is not a complete checkpoint (no meta.json); pass a run directory or a step-N directory"
        )
    try:
        meta = json.loads(meta_path.read_text())
        sizes = meta["files"]
    except (json.JSONDecodeError, KeyError) as exc:
        raise CheckpointError(
            f"{meta_path} is corrupt ({exc}); delete {path} to resume from an older one"
        ) from exc
    for name in FILES:
        file = path / name
        if not file.is_file():
            raise CheckpointError(
                f"checkpoint file {file} is missing; delete {path} to resume from an older one"
            )
        if file.stat().st_size != sizes.get(name):
            raise CheckpointError(
                f"checkpoint file {file} is truncated or corrupt ({file.stat().st_size} bytes, "
                f"expected {sizes.get(name)}); delete {path} to resume from an older checkpoint"
            )
    try:
        model_state = load_file(str(path / "model.safetensors"))
        optimizer_state = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a corrupt file for the user
        raise CheckpointError(
            f"checkpoint {path} is unreadable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            f"delete it to resume from an older checkpoint"
        ) from exc
    return model_state, optimizer_state, state
