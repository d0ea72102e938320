"""The umbrella CLI ``warmstart``: list the installed apps and run their demos as a tour."""

from __future__ import annotations

import logging
import tempfile
import time
import traceback
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from warmstart.cli.app import App
from warmstart.cli.show import print_table

GROUP = "warmstart.apps"
app = App("warmstart", "warmstart — never train from scratch. Apps: see `warmstart apps`.")
log = logging.getLogger(__name__)


def installed_apps() -> dict[str, EntryPoint]:
    """Entry points of the ``warmstart.apps`` group, by name (not loaded)."""
    return {ep.name: ep for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name)}


class _BuiltinDemo:
    """The core's own demo as a pseudo entry point: the tour runs it when no app is installed, or on request."""

    name = "core"

    def load(self) -> App:
        from warmstart.demo import app as core_app

        return core_app


@app.command
def apps() -> None:
    """List the installed apps (entry-point group ``warmstart.apps``)."""
    rows = []
    for name, ep in installed_apps().items():
        try:
            loaded = ep.load()
            rows.append((name, loaded.prog, loaded.description, ", ".join(loaded.commands)))
        except Exception as exc:  # noqa: BLE001 - a broken app must not hide the others
            rows.append((name, ep.value, f"failed to load: {type(exc).__name__}: {exc}", ""))
    if not rows:
        print("no warmstart apps installed")
        return
    print_table("installed apps", ("app", "command", "what it does", "subcommands"), rows)


@app.command
def tour(only: list[str] | None = None, out: Path | None = None, keep_going: bool = True) -> int:
    """Run every installed app's demo (CPU, a few minutes) and print one table.

    Without apps installed, the core's own demo runs (a tiny causal LM trained, stopped and resumed).

    Args:
        only: run just these apps (by name, see `warmstart apps`; `core` is the core's own demo).
        out: where demo outputs go (default: a temporary directory, removed afterwards).
        keep_going: continue after an app fails (the exit code is still 1).
    """
    found: dict[str, EntryPoint | _BuiltinDemo] = dict(installed_apps())
    if not found or (only and "core" in only):
        found = {"core": _BuiltinDemo(), **found}
    if only:
        unknown = sorted(set(only) - set(found))
        if unknown:
            from warmstart.errors import ConfigError

            raise ConfigError(
                f"--only: no installed app named {', '.join(unknown)}; installed: {', '.join(found)}"
            )
        found = {k: v for k, v in found.items() if k in only}
    rows, failed = [], 0
    with tempfile.TemporaryDirectory(prefix="warmstart-tour-") as tmp:
        root = Path(out) if out is not None else Path(tmp)
        for name, ep in found.items():
            start = time.perf_counter()
            try:
                loaded = ep.load()
                result, seconds = loaded.run_demo(root / name)
                rows.append((name, result.what, result.headline(), f"{seconds:.1f} s"))
            except Exception as exc:  # noqa: BLE001 - report and go on to the next app
                failed += 1
                log.error("demo of %s failed:\n%s", name, traceback.format_exc())
                seconds = time.perf_counter() - start
                rows.append((name, "FAILED", f"{type(exc).__name__}: {exc}"[:120], f"{seconds:.1f} s"))
                if not keep_going:
                    break
    print_table("warmstart tour", ("app", "what ran", "headline", "time"), rows)
    return 1 if failed else 0


def main() -> None:
    app.entry()


@app.command
def cache(
    action: str = "list", kind: str | None = None, older_than_days: float | None = None, dry_run: bool = False
) -> int:
    """Show or remove cached pretrained sources (``$WARMSTART_CACHE``; see ``warmstart.cache``).

    Args:
        action: `list` (every artifact, newest first), `prune` (remove; narrowed by --kind and
            --older_than_days; stale builder locks go too) or `path` (print the cache folder).
        kind: only artifacts of this kind (e.g. `eo.mae-source`).
        older_than_days: prune only artifacts older than this many days.
        dry_run: with `prune`, list what would be removed without removing it.
    """
    from warmstart import cache as artifacts
    from warmstart.errors import ConfigError

    if action == "path":
        print(artifacts.cache_root())
        return 0
    if action == "list":
        rows = [
            (a.kind, a.key, f"{a.size / 2**20:.1f} MiB", f"{a.age_days:.1f} d", a.description)
            for a in artifacts.list_artifacts()
            if kind is None or a.kind == kind
        ]
        if not rows:
            print(f"no cached artifacts under {artifacts.cache_root()}")
            return 0
        print_table(
            f"cached artifacts, {artifacts.cache_root()}", ("kind", "key", "size", "age", "what"), rows
        )
        return 0
    if action == "prune":
        locks = artifacts.prune_locks(dry_run=dry_run)
        removed = artifacts.prune(kind=kind, older_than_days=older_than_days, dry_run=dry_run)
        verb = "would remove" if dry_run else "removed"
        print(
            f"{verb} {len(removed)} artifact(s), {sum(a.size for a in removed) / 2**20:.1f} MiB, "
            f"and {len(locks)} stale lock(s)"
        )
        return 0
    raise ConfigError(f"--action {action!r}: use list, prune or path")
