"""CLI building blocks every app uses: typed commands, run directories, friendly errors, the tour."""

from warmstart.cli.app import App, DemoResult
from warmstart.cli.rundir import RunContext, runs_root

__all__ = ["App", "DemoResult", "RunContext", "runs_root"]
