"""Atomic, verifiable checkpoints.

Layout of ``checkpoints/step-N/``:

- ``model.safetensors`` — the model's weights (full state dict, gathered on rank 0);
- ``optimizer.pt`` — the optimizer state (tensors and plain containers; loaded with ``weights_only=True``);
- ``state.pt`` — step, scheduler, data position, per-rank RNG states, metrics;
- ``meta.json`` — written last: step, time, the engine config, and each file's size and content digest
  (xxh3-128 by default, :mod:`warmstart.integrity`), so truncated *and* altered bytes are refused on load.

Under ``strategy=fsdp`` a checkpoint is *sharded* (``"format": "sharded"`` in ``meta.json``): every rank
writes its own shard of the weights and optimizer state through ``torch.distributed.checkpoint`` (DCP)
into ``shards/`` (DCP's ``.metadata`` plus one ``__R_0.distcp`` per rank), rank 0 adds ``state.pt`` and
``meta.json`` with every shard's digest, and nothing is gathered on one rank. DCP reshards on load, so a
run may resume on another number of ranks; :func:`consolidate` turns the shards into one state dict.

Rank 0 writes everything into ``.tmp-step-N`` and renames it to ``step-N`` only when every file is flushed
to disk, so a kill mid-write never leaves a directory that looks complete. A failed write (a full disk)
removes its temporary directory and says that the previous checkpoint is intact. Resuming from a run
picks the newest checkpoint that verifies (:func:`resolve_checkpoint`), naming each one it skipped.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import pickle
import random
import re
import shutil
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from warmstart.errors import CheckpointError
from warmstart.integrity import manifest, verify

log = logging.getLogger(__name__)

STEP_DIR = re.compile(r"^step-(\d+)$")
FILES = ("model.safetensors", "optimizer.pt", "state.pt")
SHARDS = "shards"
SHARDED_FILES = ("state.pt", f"{SHARDS}/.metadata")


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


def _free_bytes(path: Path) -> int:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return -1


def _mb(n: int) -> str:
    return f"{n / 2**20:.0f} MB"


def _state_bytes(model_state: dict[str, torch.Tensor], optimizer_state: dict[str, Any]) -> int:
    """Roughly what a checkpoint of these states takes on disk (its tensors' bytes)."""

    def tensors(obj: Any) -> int:
        if isinstance(obj, torch.Tensor):
            return obj.numel() * obj.element_size()
        if isinstance(obj, dict):
            return sum(tensors(v) for v in obj.values())
        if isinstance(obj, list | tuple):
            return sum(tensors(v) for v in obj)
        return 0

    return tensors(model_state) + tensors(optimizer_state)


def _dealiased(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU tensors safetensors accepts: contiguous, and a copy only where storage is shared (tied weights)."""
    seen: set[int] = set()
    out = {}
    for key, value in state.items():
        tensor = value.detach().contiguous().cpu()
        ptr = tensor.untyped_storage().data_ptr()
        if ptr in seen or tensor.untyped_storage().nbytes() != tensor.numel() * tensor.element_size():
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        out[key] = tensor
    return out


def save_checkpoint(
    root: Path,
    step: int,
    model_state: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    state: dict[str, Any],
    keep_last: int = 0,
    *,
    config: dict[str, Any] | None = None,
    digest: str = "xxh3_128",
) -> Path:
    """Write ``root/step-<step>`` atomically and prune older ones beyond ``keep_last``; returns its path.

    An OS error while writing (``ENOSPC``, a read-only or vanished disk) removes the temporary directory
    and raises :class:`CheckpointError` naming the path, the space needed and the intact previous
    checkpoint. Leftover temporary directories of killed saves are removed first: call this only from
    the holder of the run's lock (:mod:`warmstart.engine.lock`).
    """
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-step-*"):  # leftovers of a killed save: never complete, safe to drop
        shutil.rmtree(stale, ignore_errors=True)
    final = root / f"step-{step}"
    tmp = root / f".tmp-step-{step}"
    try:
        tmp.mkdir()
        tensors = _dealiased(model_state)
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt", "step": str(step)})
        with open(tmp / "model.safetensors", "rb+") as fh:
            os.fsync(fh.fileno())
        _torch_save(optimizer_state, tmp / "optimizer.pt")
        _torch_save(state, tmp / "state.pt")
        meta = {
            "step": step,
            "time": time.time(),
            "digest": digest,
            "files": manifest(tmp, FILES, digest),
            "config": config or {},
        }
        _publish(root, tmp, final, meta)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _save_error(root, final, exc, _state_bytes(model_state, optimizer_state)) from None
    _prune(root, keep_last)
    return final


def _save_error(root: Path, final: Path, exc: OSError, need: int) -> CheckpointError:
    """One line for a failed save: the path, why, the space needed and free, the intact previous one."""
    previous = [p for p in complete_checkpoints(root) if p != final]
    intact = (
        f"the previous checkpoint {previous[-1]} is intact" if previous else "no earlier checkpoint exists"
    )
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    hint = "free space" if exc.errno == errno.ENOSPC else "fix the disk"
    return CheckpointError(
        f"could not write checkpoint {final}: {reason} (needs about {_mb(need)}, {_mb(_free_bytes(root))} "
        f"free); {intact}; {hint} and resume with --resume {root.parent}"
    )


def _publish(root: Path, tmp: Path, final: Path, meta: dict[str, Any]) -> None:
    """Write ``meta.json`` last, fsync, and rename ``tmp`` to ``final`` (swapping out an older copy)."""
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    with open(tmp / "meta.json", "rb+") as fh:
        os.fsync(fh.fileno())
    _fsync_dir(tmp)
    if final.exists():  # re-saving a step (e.g. after a resume): swap, then drop the old copy
        old = root / f".old-step-{final.name.removeprefix('step-')}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync_dir(root)


def _prune(root: Path, keep_last: int) -> None:
    if keep_last > 0:
        for stale in complete_checkpoints(root)[:-keep_last]:
            shutil.rmtree(stale, ignore_errors=True)


def save_sharded_checkpoint(
    root: Path,
    step: int,
    app_state: dict[str, Any],
    state: dict[str, Any],
    *,
    writer: bool,
    barrier: Callable[[], None],
    keep_last: int = 0,
    config: dict[str, Any] | None = None,
    digest: str = "xxh3_128",
) -> Path:
    """Collective: every rank writes its shards of ``app_state`` (sharded/DTensor state dicts) through DCP.

    ``writer`` (rank 0, the lock holder) prepares ``.tmp-step-N``, adds ``state.pt`` and ``meta.json``
    (digests of every shard) and renames it once every rank's shards are flushed (DCP's writer fsyncs
    them; its coordinator writes ``.metadata`` after gathering every rank's result). The directory must
    be on a filesystem all ranks share, as for any DCP checkpoint. Errors as :func:`save_checkpoint`.
    """
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.filesystem import FileSystemWriter
    from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

    final = root / f"step-{step}"
    tmp = root / f".tmp-step-{step}"
    if writer:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".tmp-step-*"):  # leftovers of a killed save: never complete, safe to drop
            shutil.rmtree(stale, ignore_errors=True)
    barrier()
    need = _state_bytes(app_state, {})
    try:
        with warnings.catch_warnings():  # DCP's own use of TypedStorage, and one process without a group
            warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated|.*assuming the intent")
            dcp_save(app_state, storage_writer=FileSystemWriter(str(tmp / SHARDS), sync_files=True))
    except CheckpointException as exc:  # DCP gathers every rank's failure and raises it on all of them
        if writer:
            shutil.rmtree(tmp, ignore_errors=True)
        failures = [f for f in getattr(exc, "failures", {}).values()]
        os_error = next((f for f in failures if isinstance(f, OSError)), None)
        if os_error is not None:
            raise _save_error(root, final, os_error, need) from None
        raise CheckpointError(f"could not write checkpoint {final}: {exc}") from None
    except OSError as exc:
        if writer:
            shutil.rmtree(tmp, ignore_errors=True)
        raise _save_error(root, final, exc, need) from None
    if not writer:
        return final
    try:
        _torch_save(state, tmp / "state.pt")
        shards = sorted(f"{SHARDS}/{p.name}" for p in (tmp / SHARDS).iterdir() if p.is_file())
        meta = {
            "step": step,
            "time": time.time(),
            "format": "sharded",
            "digest": digest,
            "files": manifest(tmp, ["state.pt", *shards], digest),
            "config": config or {},
        }
        _publish(root, tmp, final, meta)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _save_error(root, final, exc, need) from None
    _prune(root, keep_last)
    return final


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """Collective under FSDP2: the whole (gathered, CPU) state dict of a sharded model on rank 0, ``{}`` on
    the other ranks; ``None`` for a model that is not sharded (its own ``state_dict()`` is whole). Call it
    on every rank before rank 0 exports the model (``save_pretrained(..., state_dict=...)``)."""
    if not any(hasattr(p, "full_tensor") for p in model.parameters()):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)  # type: ignore[return-value]  # tensors here


def is_sharded(path: Path) -> bool:
    """Whether the checkpoint at ``path`` is a sharded (DCP) one."""
    return read_meta(path).get("format") == "sharded"


def load_sharded_state(path: Path) -> dict[str, Any]:
    """Verify a sharded checkpoint and read its engine ``state.pt`` (the shards are read by DCP)."""
    reason = verify_checkpoint(path)
    if reason is not None:
        raise CheckpointError(
            f"checkpoint {path} is refused: {reason}; delete it or resume from an older checkpoint"
        )
    return _load_pickle(path / "state.pt", path)  # type: ignore[no-any-return]


def consolidate(path: Path) -> dict[str, Any]:
    """A sharded checkpoint's full state (``{"model": ..., "optim": ...}``) in one process, no process group."""
    import tempfile

    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    reason = verify_checkpoint(path)
    if reason is not None:
        raise CheckpointError(f"checkpoint {path} is refused: {reason}")
    with tempfile.TemporaryDirectory() as tmp:
        dcp_to_torch_save(str(path / SHARDS), str(Path(tmp) / "full.pt"))
        return torch.load(Path(tmp) / "full.pt", map_location="cpu", weights_only=True)  # type: ignore[no-any-return]


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
    """The newest complete ``step-N`` under ``root`` (not verified; see :func:`resolve_checkpoint`)."""
    found = complete_checkpoints(root)
    return found[-1] if found else None


def read_meta(path: Path) -> dict[str, Any]:
    """A checkpoint's ``meta.json`` (``CheckpointError`` when missing or unreadable)."""
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        raise CheckpointError(
            f"{path} is not a complete checkpoint (no meta.json); pass a run directory or a step-N directory"
        )
    try:
        meta = json.loads(meta_path.read_text())
        meta["files"]  # noqa: B018 - the one key every version has
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{meta_path} is corrupt ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{meta_path} is corrupt (not a JSON object)")
    return meta


_VERIFIED: set[tuple[Any, ...]] = set()  # (path, each file's mtime and size) already verified in this process


def _stamp(path: Path, names: Iterable[str]) -> tuple[Any, ...]:
    stats = [(path / name).stat() for name in (*names, "meta.json") if (path / name).is_file()]
    return (str(path.resolve()), *((s.st_mtime_ns, s.st_size, s.st_ino) for s in stats))


def verify_checkpoint(path: Path) -> str | None:
    """None when ``path`` is a complete checkpoint whose files match their sizes and digests, else why not.

    Checkpoints written before digests were recorded are checked by size alone.
    """
    try:
        meta = read_meta(path)
    except CheckpointError as exc:
        return str(exc)
    entries = {
        name: (entry if isinstance(entry, dict) else {"size": entry}) for name, entry in meta["files"].items()
    }
    key = _stamp(path, entries)
    if key in _VERIFIED:
        return None
    required = SHARDED_FILES if meta.get("format") == "sharded" else FILES
    missing = [name for name in required if name not in entries]
    if missing:
        return f"meta.json lists no {missing[0]}"
    reason = verify(path, entries, meta.get("digest", "xxh3_128"))
    if reason is None:
        _VERIFIED.add(key)
    return reason


class AutoCheckpoint(type(Path())):  # type: ignore[misc]
    """A checkpoint :func:`resolve_checkpoint` chose in a run (not one the user named): when it verifies
    but still cannot be loaded, the engine falls back to the older ones (:func:`older_checkpoints`)."""


def older_checkpoints(path: Path) -> list[Path]:
    """The complete checkpoints beside ``path`` that are older than it, newest first."""
    siblings = complete_checkpoints(Path(path).parent)
    return [p for p in reversed(siblings) if _step_of(p) < _step_of(Path(path))]


def _step_of(path: Path) -> int:
    match = STEP_DIR.match(path.name)
    return int(match.group(1)) if match else -1


def resolve_checkpoint(path: Path) -> Path:
    """The checkpoint to resume from ``path``: a ``step-N`` directory (which must verify), or the newest
    checkpoint that verifies in a run directory (``path/checkpoints``) or a checkpoints directory, skipping
    (and logging) the ones that do not."""
    path = Path(path)
    if (path / "meta.json").is_file():
        reason = verify_checkpoint(path)
        if reason is not None:
            raise CheckpointError(f"checkpoint {path} is refused: {reason}; resume from an older checkpoint")
        return path
    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    candidates = complete_checkpoints(root)
    if not candidates:
        raise CheckpointError(f"no complete checkpoint under {path}; start without --resume")
    refused: list[tuple[Path, str]] = []
    for candidate in reversed(candidates):
        reason = verify_checkpoint(candidate)
        if reason is None:
            for skipped, why in refused:
                log.warning("skipped checkpoint %s: %s", skipped, why)
            return AutoCheckpoint(candidate)
        refused.append((candidate, reason))
    details = "; ".join(f"{p.name}: {why}" for p, why in refused)
    raise CheckpointError(f"no checkpoint under {path} verifies ({details}); start without --resume")


def _load_pickle(file: Path, path: Path) -> Any:
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's text advises weights_only=False, which would run code from the file: never do that
        raise CheckpointError(
            f"checkpoint file {file} holds objects beyond tensors and plain containers, so it is refused "
            f"(pickles are only loaded in the safe weights-only mode); it was not written by this engine "
            f"or was altered; resume from another checkpoint than {path}"
        ) from None


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Read and verify a checkpoint directory: (model state, optimizer state, engine state).

    Raises :class:`CheckpointError` naming the file when anything is missing, truncated, altered or
    unreadable.
    """
    reason = verify_checkpoint(path)
    if reason is not None:
        raise CheckpointError(
            f"checkpoint {path} is refused: {reason}; delete it or resume from an older checkpoint"
        )
    if is_sharded(path):
        raise CheckpointError(
            f"checkpoint {path} is sharded (written under FSDP): resume it with --engine.distributed.strategy "
            f"fsdp, or read it in one process with warmstart.engine.checkpoint.consolidate"
        )
    try:
        model_state = load_file(str(path / "model.safetensors"))
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a corrupt file for the user
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise CheckpointError(
            f"checkpoint file {path / 'model.safetensors'} is unreadable ({type(exc).__name__}: {first}); "
            f"delete {path} to resume from an older checkpoint"
        ) from None
    optimizer_state = _load_pickle(path / "optimizer.pt", path)
    state = _load_pickle(path / "state.pt", path)
    return model_state, optimizer_state, state
