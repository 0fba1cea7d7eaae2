"""Rendering results: rich tables for people, JSON for scripts."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from ..units import format_bytes
from . import plain
from .callerror import CallError
from .errors import EXIT_OK, error_json, error_line, explain
from .plain import SUBVOLUME_FIELDS, fmt_time, subvolume_rows

__all__ = ["SUBVOLUME_FIELDS", "Outcome", "console", "emit_json", "err_console", "finish",
           "fmt_bytes", "fmt_time", "key_values", "subvolume_rows", "subvolume_table", "table"]


@dataclass(frozen=True)
class Outcome:
    """What a handler returns when its exit code is not 0: the JSON-able ``data`` and the
    ``exit_code`` (a handler with nothing special to say returns its data alone)."""

    data: Any
    exit_code: int = EXIT_OK


# Piped output must not be folded at 80 columns: scripts grep for UUIDs and paths.
console = Console(width=None if sys.stdout.isatty() else 250)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 250)


fmt_bytes = format_bytes


def emit_json(data: Any) -> None:
    sys.stdout.write(plain.dumps(data) + "\n")


def finish(result: Any, as_json: bool) -> int:
    """Write what a command ended with (its data, an Outcome, or the CallError it raised)
    as the command line asked; return the exit code. Raises nothing."""
    if isinstance(result, CallError):
        if as_json:
            emit_json(error_json(result))
        err_console.print(error_line(result), markup=False, highlight=False)
        return explain(result.name).exit_code
    outcome = result if isinstance(result, Outcome) else Outcome(result)
    if as_json:
        emit_json(outcome.data)
    return outcome.exit_code


def table(title: str | None, columns: list[str], rows: list[list[str]]) -> None:
    # plain.py draws what rich would, without rich's per-cell cost (~0.4 ms a row)
    if title is None and console.encoding.lower().startswith("utf") and not (
            console.legacy_windows or console.is_jupyter):
        text = plain.table(columns, rows, console.width, console.color_system is not None)
        if text is not None:
            console.file.write(text)
            console.file.flush()
            return
    t = Table(title=title, show_edge=False, header_style="bold")
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*r)
    console.print(t)


def subvolume_table(items: list[dict[str, Any]]) -> None:
    table(None, plain.SUBVOLUME_COLUMNS, plain.subvolume_cells(items))


def key_values(data: dict[str, Any]) -> None:
    t = Table(show_header=False, show_edge=False, box=None)
    t.add_column(style="bold")
    t.add_column()
    for k, v in data.items():
        if k in ("ctime", "otime"):
            v = fmt_time(v)
        elif isinstance(v, bool):
            v = "yes" if v else "no"
        t.add_row(k, str(v) if v != "" else "-")
    console.print(t)
