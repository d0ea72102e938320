"""Run directories: ``runs/<app>/<command>/<timestamp>/`` with the resolved config, and resume lookup."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from warmstart.engine.checkpoint import latest_checkpoint
from warmstart.errors import CheckpointError


def runs_root() -> Path:
    """Where run directories go: ``$WARMSTART_RUNS`` or ``./runs``."""
    return Path(os.environ.get("WARMSTART_RUNS", "runs"))


@dataclass
class RunContext:
    """Handed by the CLI to commands that declare a ``run: RunContext`` parameter."""

    app: str
    command: str
    config_yaml: str = ""

    @property
    def base(self) -> Path:
        return runs_root() / self.app / self.command

    def open(self, resume: str | Path | None = None, out: Path | None = None) -> tuple[Path, Path | None]:
        """Create (or, with ``resume``, find) the run directory; returns (run_dir, checkpoint or None).

        ``resume`` is ``latest`` (the newest run of this command with a checkpoint), a run directory, or a
        ``checkpoints/step-N`` directory. The resolved config is written as ``config.yaml`` (on resume as
        ``config.resume-<time>.yaml``: nothing already on disk is overwritten).
        """
        stamp = time.strftime("%Y%m%d-%H%M%S")
        checkpoint: Path | None = None
        if resume is None:
            run_dir = Path(out) if out is not None else self.base / stamp
            suffix = 1
            while (run_dir / "config.yaml").exists() or (run_dir / "checkpoints").exists():
                if out is not None:
                    raise CheckpointError(
                        f"{run_dir} already holds a run; pass --resume {run_dir} to continue it or choose "
                        f"another --out"
                    )
                run_dir = self.base / f"{stamp}-{suffix}"
                suffix += 1
            run_dir.mkdir(parents=True, exist_ok=True)
            config_file = run_dir / "config.yaml"
        else:
            run_dir, checkpoint = self.find_resume(resume)
            config_file = run_dir / f"config.resume-{stamp}.yaml"
        if self.config_yaml:
            config_file.write_text(self.config_yaml)
        return run_dir, checkpoint

    def find_resume(self, resume: str | Path) -> tuple[Path, Path]:
        if str(resume) == "latest":
            candidates = sorted(
                (p for p in self.base.glob("*") if latest_checkpoint(p / "checkpoints")),
                key=lambda p: p.stat().st_mtime,
            )
            if not candidates:
                raise CheckpointError(f"--resume latest: no run with a checkpoint under {self.base}")
            run_dir = candidates[-1]
            return run_dir, latest_checkpoint(run_dir / "checkpoints")
        path = Path(resume)
        if not path.exists():
            raise CheckpointError(f"--resume {path}: no such directory; pass a run directory or 'latest'")
        if (path / "meta.json").is_file():
            return path.parent.parent, path
        found = latest_checkpoint(path / "checkpoints")
        if found is None:
            raise CheckpointError(f"--resume {path}: no complete checkpoint in {path / 'checkpoints'}")
        return path, found
