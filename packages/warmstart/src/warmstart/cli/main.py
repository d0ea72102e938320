"""The umbrella CLI ``warmstart``: list the installed apps and run their demos as a tour."""

from __future__ import annotations

import logging
import tempfile
import time
import traceback
from importlib.metadata import entry_points
from pathlib import Path

from warmstart.cli.app import App
from warmstart.cli.show import print_table

GROUP = "warmstart.apps"
app = App("warmstart", "warmstart — never train from scratch. Apps: see `warmstart apps`.")
log = logging.getLogger(__name__)


def installed_apps() -> dict[str, object]:
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
    found: dict[str, object] = installed_apps()
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
