"""Terminal output of the CLI layer (the only place that prints)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from warmstart.engine.metrics import RunSummary


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*[str(cell) for cell in row])
    Console(width=max(100, Console().width)).print(table)


def print_summary(summary: RunSummary, title: str = "run summary") -> None:
    print_table(title, ("", ""), summary.rows())
