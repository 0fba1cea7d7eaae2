"""Rendering results: rich tables for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from ..units import format_bytes
from .errors import EXIT_OK

SUBVOLUME_FIELDS = ("id", "parent_id", "path", "uuid", "parent_uuid", "received_uuid",
                    "generation", "ctime", "otime", "read_only", "is_snapshot",
                    "referenced", "exclusive", "max_referenced", "max_exclusive")

@dataclass(frozen=True)
class Outcome:
    """What a handler returns when its exit code is not 0: the JSON-able ``data`` and the
    ``exit_code`` (a handler with nothing special to say returns its data alone)."""

    data: Any
    exit_code: int = EXIT_OK


# Piped output must not be folded at 80 columns: scripts grep for UUIDs and paths.
console = Console(width=None if sys.stdout.isatty() else 250)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 250)


def subvolume_rows(columns: list[list[Any]]) -> list[dict[str, Any]]:
    """ListSubvolumes' columns as one dict per subvolume, keyed like GetSubvolume's reply."""
    return [dict(zip(SUBVOLUME_FIELDS, row, strict=True)) for row in zip(*columns, strict=True)]


def fmt_time(usec: int) -> str:
    if not usec:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(usec / 1e6))


fmt_bytes = format_bytes


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


def table(title: str | None, columns: list[str], rows: list[list[str]]) -> None:
    t = Table(title=title, show_edge=False, header_style="bold")
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*r)
    console.print(t)


def subvolume_table(items: list[dict[str, Any]]) -> None:
    table(None, ["ID", "Parent", "Path", "Read-only", "Snapshot", "Created"], [
        [str(s["id"]), str(s["parent_id"]), s["path"], "yes" if s["read_only"] else "no",
         "yes" if s["is_snapshot"] else "no", fmt_time(s["otime"])]
        for s in items
    ])


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
