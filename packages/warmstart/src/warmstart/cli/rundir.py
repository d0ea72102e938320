"""Run directories: ``runs/<app>/<command>/<timestamp>/`` with the resolved config, and resume lookup.

One run is one directory under every launcher (``torchrun``, ``srun``, Fabric's own): rank 0 creates
(or resumes) it, takes its lock and writes ``config.yaml``; the other ranks join it and write nothing.
With ``--out`` every rank knows the path; without it rank 0 leaves the path in a small hand-off file
keyed by the launch (torchrun's run id and master address, SLURM's job and step, or the parent process
under Fabric's launcher), which the other ranks wait for. ``--resume latest`` means the run in ``--out``
(started fresh there when it has no checkpoint yet: the same command line can be requeued), or without
``--out`` the newest run of this command; never another command's run. Checkpoints are verified
(:func:`warmstart.engine.checkpoint.resolve_checkpoint`) and a failing one is skipped with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from warmstart.engine import lock
from warmstart.engine.checkpoint import complete_checkpoints, resolve_checkpoint
from warmstart.errors import CheckpointError

log = logging.getLogger(__name__)

HANDOFF_DIR = ".launch"
JOIN_TIMEOUT_S = float(os.environ.get("WARMSTART_JOIN_TIMEOUT", "300"))
"""How long a non-zero rank waits for rank 0 to name the run directory."""


def runs_root() -> Path:
    """Where run directories go: ``$WARMSTART_RUNS`` or ``./runs``."""
    return Path(os.environ.get("WARMSTART_RUNS", "runs"))


def launcher_rank() -> int:
    """This process's global rank as the launcher set it (0 when not launched by one)."""
    env = os.environ
    if "RANK" in env:
        return int(env["RANK"])
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        return int(env["SLURM_PROCID"])
    if "LOCAL_RANK" in env:  # Fabric's subprocess launcher: children carry LOCAL_RANK (and NODE_RANK)
        return int(env["LOCAL_RANK"]) + int(env.get("NODE_RANK", "0")) * 1000
    return 0


def launch_keys(child: bool) -> list[str]:
    """Names of this launch that every rank computes alike (a child of Fabric's launcher: its parent)."""
    env = os.environ
    keys = []
    if "TORCHELASTIC_RUN_ID" in env or ("MASTER_PORT" in env and "RANK" in env):
        parts = [env.get(k, "") for k in ("TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT")]
        parts.append(env.get("TORCHELASTIC_RESTART_COUNT", "0"))
        keys.append("torchrun-" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:16])
    if "SLURM_JOB_ID" in env:
        keys.append(f"slurm-{env['SLURM_JOB_ID']}-{env.get('SLURM_STEP_ID', '0')}")
    keys.append(f"pid-{os.getppid() if child else os.getpid()}")
    return keys


def _process_start() -> float:
    try:
        import psutil

        started: float = psutil.Process().create_time()
        return started
    except Exception:  # noqa: BLE001 - psutil missing or /proc unreadable: the import time is close enough
        return _IMPORTED


_IMPORTED = time.time()


@dataclass
class RunContext:
    """Handed by the CLI to commands that declare a ``run: RunContext`` parameter."""

    app: str
    command: str
    config_yaml: str = ""
    run_dir: Path | None = field(default=None, init=False)
    """The directory :meth:`open` chose (None before)."""
    created: bool = field(default=False, init=False)
    written: list[Path] = field(default_factory=list, init=False)

    @property
    def base(self) -> Path:
        return runs_root() / self.app / self.command

    @property
    def rank(self) -> int:
        return launcher_rank()

    @property
    def writer(self) -> bool:
        """Whether this process writes the run's files (rank 0): guard an app's own outputs with it."""
        return self.rank == 0

    def open(self, resume: str | Path | None = None, out: Path | None = None) -> tuple[Path, Path | None]:
        """Create (or, with ``resume``, find) the run directory; returns (run_dir, checkpoint or None).

        ``resume`` is ``latest``, a run directory, or a ``checkpoints/step-N`` directory. Rank 0 locks the
        directory and writes the resolved config as ``config.yaml`` (on resume as
        ``config.resume-<time>.yaml``: nothing already on disk is overwritten); other ranks only join.
        """
        if self.rank != 0:
            return self._join(resume, out)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        checkpoint: Path | None = None
        early: Path | None = None
        if resume is not None and str(resume) == "latest" and out is not None and not _has_checkpoint(out):
            log.info("--resume latest: %s has no checkpoint yet; starting the run there", out)
            run_dir, fresh = Path(out), True
        elif resume is None:
            run_dir, fresh = self._fresh_dir(out, stamp), True
        else:
            # a second writer is refused by the lock before the run's checkpoints are even looked at
            early = _resume_target(resume, out)
            if early is not None:
                lock.acquire(early)
            try:
                run_dir, checkpoint = self.find_resume(resume, out)
            except BaseException:
                if early is not None:
                    lock.release(early)
                raise
            fresh = False
        self.created = not run_dir.exists()
        run_dir.mkdir(parents=True, exist_ok=True)
        lock.acquire(run_dir)
        if resume is not None and early is not None:
            lock.release(early)
        self.run_dir = run_dir
        config_file = run_dir / ("config.yaml" if fresh else f"config.resume-{stamp}.yaml")
        if self.config_yaml:
            config_file.write_text(self.config_yaml)
            self.written.append(config_file)
        if out is None:
            self._hand_off(run_dir, checkpoint)
        return run_dir, checkpoint

    def _fresh_dir(self, out: Path | None, stamp: str) -> Path:
        run_dir = Path(out) if out is not None else self.base / stamp
        suffix = 1
        while (run_dir / "config.yaml").exists() or _has_checkpoint(run_dir):
            if out is not None:
                raise CheckpointError(
                    f"{run_dir} already holds a run; pass --resume {run_dir} to continue it or choose "
                    f"another --out"
                )
            run_dir = self.base / f"{stamp}-{suffix}"
            suffix += 1
        return run_dir

    def find_resume(self, resume: str | Path, out: Path | None = None) -> tuple[Path, Path]:
        """(run dir, the newest checkpoint that verifies) for ``--resume`` (and ``--out``)."""
        if str(resume) == "latest":
            if out is not None:
                return Path(out), resolve_checkpoint(Path(out))
            candidates = sorted(
                (p for p in self.base.glob("*") if p.is_dir() and _has_checkpoint(p)),
                key=lambda p: p.stat().st_mtime,
            )
            if not candidates:
                raise CheckpointError(f"--resume latest: no run with a checkpoint under {self.base}")
            run_dir = candidates[-1]
            return run_dir, resolve_checkpoint(run_dir)
        path = Path(resume)
        if not path.exists():
            raise CheckpointError(f"--resume {path}: no such directory; pass a run directory or 'latest'")
        if (path / "meta.json").is_file():
            return path.parent.parent, resolve_checkpoint(path)
        if not complete_checkpoints(path / "checkpoints"):
            raise CheckpointError(f"--resume {path}: no complete checkpoint in {path / 'checkpoints'}")
        return path, resolve_checkpoint(path)

    # -- ranks other than 0 -------------------------------------------------------------------------
    def _hand_off(self, run_dir: Path, checkpoint: Path | None) -> None:
        """Rank 0: name the run directory for the other ranks of this launch (and prune old names)."""
        folder = self.base / HANDOFF_DIR
        folder.mkdir(parents=True, exist_ok=True)
        record = {
            "run_dir": str(run_dir),
            "checkpoint": str(checkpoint) if checkpoint else None,
            "started": _process_start(),
        }
        for key in launch_keys(child=False):
            tmp = folder / f".{key}.tmp"
            tmp.write_text(json.dumps(record))
            os.replace(tmp, folder / f"{key}.json")
        for old in folder.glob("*.json"):
            if time.time() - old.stat().st_mtime > 86400:
                old.unlink(missing_ok=True)

    def _join(self, resume: str | Path | None, out: Path | None) -> tuple[Path, Path | None]:
        """A non-zero rank: the run directory rank 0 chose, without writing anything."""
        if out is not None:
            run_dir = Path(out)
            if resume is None or (str(resume) == "latest" and not _has_checkpoint(run_dir)):
                self.run_dir = run_dir
                return run_dir, None
            self.run_dir, checkpoint = self.find_resume(resume, out)
            return self.run_dir, checkpoint
        if resume is not None and str(resume) != "latest":
            self.run_dir, checkpoint = self.find_resume(resume)
            return self.run_dir, checkpoint
        started = _process_start()
        folder = self.base / HANDOFF_DIR
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        keys = launch_keys(child=True)  # torchrun/SLURM names match; under Fabric's launcher, the parent
        while time.monotonic() < deadline:
            for key in keys:
                try:
                    record = json.loads((folder / f"{key}.json").read_text())
                except (OSError, json.JSONDecodeError):
                    continue
                if abs(float(record.get("started", 0)) - started) < 120:  # this launch, not an earlier one
                    self.run_dir = Path(record["run_dir"])
                    cp = record.get("checkpoint")
                    return self.run_dir, Path(cp) if cp else None
            time.sleep(0.1)
        raise CheckpointError(
            f"rank {self.rank}: rank 0 did not name a run directory under {folder} within "
            f"{JOIN_TIMEOUT_S:.0f} s; pass --out DIR (the same for every rank)"
        )

    # -- the end of a command -----------------------------------------------------------------------
    def close(self) -> None:
        """Release the run's lock (the CLI calls this when the command returns)."""
        if self.run_dir is not None and self.rank == 0:
            lock.release(self.run_dir)

    def abandon(self) -> None:
        """Undo a run that failed before its first checkpoint: nothing of it is left behind, so the same
        command (with the mistake fixed) can be run again with the same ``--out``."""
        run_dir = self.run_dir
        if run_dir is None or self.rank != 0 or _has_checkpoint(run_dir):
            self.close()
            return
        self.close()
        if self.created:
            shutil.rmtree(run_dir, ignore_errors=True)
            return
        for path in self.written:
            path.unlink(missing_ok=True)
        (run_dir / lock.LOCK_NAME).unlink(missing_ok=True)


def _has_checkpoint(run_dir: Path) -> bool:
    return bool(complete_checkpoints(Path(run_dir) / "checkpoints"))


def _resume_target(resume: str | Path, out: Path | None) -> Path | None:
    """The existing run directory a ``--resume`` names (before its checkpoints are checked), or None."""
    if str(resume) == "latest":
        path = Path(out) if out is not None else None
    else:
        path = Path(resume)
        if (path / "meta.json").is_file():
            path = path.parent.parent
    return path if path is not None and path.is_dir() else None
