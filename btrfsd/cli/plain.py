"""Output without rich where rich's output is known: tables, lines and JSON.

Drawing a 1,000-row table with rich took ~440 ms (its per-cell measuring, markup and
wrapping), and importing it ~50 ms. btrfsctl's tables are plain text (no markup, a bold
header on a terminal) and usually fit the width, so this module draws them itself, byte
for byte as rich would, whenever it can be sure of that. When it cannot (a cell rich
would read as markup or emoji, non-ASCII or control characters, a table wider than the
console, an environment that changes rich's mind about the terminal), its functions
return None and the caller uses rich. tests/unit/test_cli_plain.py compares both.

Standard library only, and not ``re`` or ``json`` either (~10 ms each to import, a
quarter of a whole ``btrfsctl snapshot``): btrfsctl's lean path imports this module.
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False  # typing costs ~5 ms at start-up; mypy still reads the block below
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, TextIO

SUBVOLUME_FIELDS = ("id", "parent_id", "path", "uuid", "parent_uuid", "received_uuid",
                    "generation", "ctime", "otime", "read_only", "is_snapshot",
                    "referenced", "exclusive", "max_referenced", "max_exclusive")
SUBVOLUME_COLUMNS = ["ID", "Parent", "Path", "Read-only", "Snapshot", "Created"]
# What the table shows them from: a listing for the table asks for these columns only
# (ListSubvolumes' `columns`: a third of the bytes to move and read at 1,000 snapshots).
TABLE_FIELDS = ("id", "parent_id", "path", "read_only", "is_snapshot", "otime")
# Piped output must not be folded at 80 columns: scripts grep for UUIDs and paths.
PIPE_WIDTH = 250
BOLD, RESET = "\x1b[1m", "\x1b[0m"
# rich's HEAVY_HEAD box without the outer edge (Table(show_edge=False))
_HEAD_BAR, _BODY_BAR, _RULE, _RULE_CROSS = "┃", "│", "━", "╇"
# Environment variables with which rich may decide differently about the terminal than
# a look at the stream does (rich.console.Console.is_terminal, .size, jupyter).
_RICH_ENV = ("FORCE_COLOR", "TTY_COMPATIBLE", "COLUMNS", "JUPYTER_COLUMNS")
_ZEROS = str.maketrans("123456789", "000000000")


def subvolume_rows(columns: list[list[Any]]) -> list[dict[str, Any]]:
    """ListSubvolumes' columns as one dict per subvolume, keyed like GetSubvolume's reply."""
    return [dict(zip(SUBVOLUME_FIELDS, row, strict=True)) for row in zip(*columns, strict=True)]


def fmt_time(usec: int) -> str:
    if not usec:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(usec / 1e6))


def subvolume_cells(items: list[dict[str, Any]]) -> list[list[str]]:
    """The rows of the subvolume table (SUBVOLUME_COLUMNS) for subvolume_rows' dicts."""
    return [[str(s["id"]), str(s["parent_id"]), s["path"], "yes" if s["read_only"] else "no",
             "yes" if s["is_snapshot"] else "no", fmt_time(s["otime"])] for s in items]


def subvolume_columns(columns: Sequence[Sequence[Any]]) -> list[list[str]]:
    """``subvolume_cells(subvolume_rows(columns))`` a column at a time (for table_columns):
    no dict per subvolume. The columns the table does not show may be empty (a listing
    asked for TABLE_FIELDS only). Raises ValueError where subvolume_rows does (columns
    of different lengths, or rows that are not SUBVOLUME_FIELDS long)."""
    count = len(columns[0]) if columns else 0
    if count and len(columns) != len(SUBVOLUME_FIELDS):
        raise ValueError("ListSubvolumes' columns do not make rows of its fields")
    field = dict(zip(SUBVOLUME_FIELDS, columns, strict=False))
    if any(len(field.get(name, ())) != count for name in TABLE_FIELDS) or any(
            len(c) not in (0, count) for c in columns):
        raise ValueError("ListSubvolumes' columns do not make rows of its fields")
    if not count:
        return [[] for _ in SUBVOLUME_COLUMNS]
    return [list(map(str, field["id"])), list(map(str, field["parent_id"])),
            list(field["path"]), ["yes" if v else "no" for v in field["read_only"]],
            ["yes" if v else "no" for v in field["is_snapshot"]],
            list(map(fmt_time, field["otime"]))]


def console_mode(stream: TextIO) -> tuple[int, bool] | None:
    """(width, bold header) of the rich Console output.py makes for ``stream`` (stdout or
    stderr: width 250 when not a terminal), or None when only rich itself can say."""
    if any(k in os.environ for k in _RICH_ENV):
        return None
    if not (stream.encoding or "").lower().startswith("utf"):
        return None  # rich would draw an ASCII box
    try:
        terminal = stream.isatty()
    except ValueError:
        return None
    if not terminal:
        return PIPE_WIDTH, False
    if os.environ.get("TERM", "").lower() in ("dumb", "unknown"):
        return None
    width = 0
    for fd in (0, 1, 2):  # rich asks these in this order
        try:
            width = os.get_terminal_size(fd).columns
        except (AttributeError, ValueError, OSError):
            continue
        break
    return width or 80, True


def _plain(joined: str) -> bool:
    """Whether rich prints each of the cells joined by "|" in ``joined`` as it is:
    printable ASCII without markup ("["), with no space at either end, and no colon but
    those of a time ("HH:MM:SS" at the end of a cell: rich's emoji codes are ":name:" and
    no name is two digits). False also for a cell that holds "| ": rich decides then."""
    return (joined.isascii() and joined.isprintable() and "[" not in joined
            and joined[:1] != " " and joined[-1:] != " "
            and "| " not in joined and " |" not in joined
            and (":" not in joined or _times_only(joined)))


def _times_only(joined: str) -> bool:
    """Whether every colon in the "|"-joined cells is one of a time's "MM" or "MM:SS"
    ending its cell. Without ``re`` (importing it cost ~10 ms, a quarter of a whole
    ``btrfsctl snapshot``: docs/benchmarks.md, "btrfsctl, third step") and without a
    loop over the cells (~3 ms at 1,000 rows): with every digit made a "0", the endings
    ":00:00|" and ":00|" are taken away; a colon left over is not a time's. The first
    leaves a "#" before its "|", so that what is left of ":00:00:00|" is no ":00|"."""
    rest = (joined + "|").translate(_ZEROS).replace(":00:00|", "#|").replace(":00|", "|")
    return ":" not in rest


def plain_cell(text: str) -> bool:
    """Whether rich prints ``text`` (a table cell) as it is (see _plain)."""
    return _plain(text)


def table(columns: Sequence[str], rows: Sequence[Sequence[str]], width: int, bold: bool
          ) -> str | None:
    """The text rich prints for ``Table(show_edge=False, header_style="bold")`` with these
    columns and rows on a console ``width`` wide (bold: a terminal with colours), or None
    when only rich can draw it."""
    n = len(columns)
    if any(len(row) != n for row in rows):
        return None
    return table_columns(columns, [[row[j] for row in rows] for j in range(n)], width, bold)


def table_columns(columns: Sequence[str], cells: Sequence[Sequence[str]], width: int,
                  bold: bool) -> str | None:
    """``table`` of the rows whose cells are given a column at a time (``cells[j][i]``:
    column j of row i), as ListSubvolumes replies: no list per row is made."""
    n = len(columns)
    count = len(cells[0]) if cells else 0
    if len(cells) != n or any(len(c) != count for c in cells):
        return None
    try:  # one check of every cell at once: per cell, it cost more than the drawing
        joined = "|".join(["|".join(columns), *["|".join(c) for c in cells]])
    except TypeError:  # a cell that is no str
        return None
    if not _plain(joined):
        return None
    widths = [max(len(c), max(map(len, column), default=0))
              for c, column in zip(columns, cells, strict=True)]
    if sum(widths) + 3 * n - 1 > width:
        return None  # rich would shrink and fold columns
    if bold:
        head = _HEAD_BAR.join(f"{BOLD} {RESET}{BOLD}{c.ljust(w)}{RESET}{BOLD} {RESET}"
                              for c, w in zip(columns, widths, strict=True))
    else:
        head = _HEAD_BAR.join(f" {c.ljust(w)} " for c, w in zip(columns, widths, strict=True))
    rule = _RULE_CROSS.join(_RULE * (w + 2) for w in widths)
    # Each row is " ", cell, " │ ", cell, ..., cell, " \n": the pieces of every row go in
    # one list, filled a column at a time by slice assignment and joined once (a format
    # or a join per row cost twice as much at 1,000 rows).
    step = 2 * n + 1
    parts = [" "] * (count * step)
    for j, (column, w) in enumerate(zip(cells, widths, strict=True)):
        parts[1 + 2 * j::step] = [cell.ljust(w) for cell in column]
        parts[2 + 2 * j::step] = [f" {_BODY_BAR} " if j < n - 1 else " \n"] * count
    return f"{head}\n{rule}\n" + "".join(parts)


def line(text: str, width: int, bold: bool) -> str | None:
    """What rich's ``console.print(text)`` writes (with its default markup, emoji and
    highlighting), or None when only rich can say (on a terminal highlighting colours
    paths and numbers)."""
    if bold or len(text) > width or not plain_cell(text) or ":" in text:
        return None
    return text + "\n"


def dumps(data: Any) -> str:
    """``json.dumps(data, indent=2, sort_keys=True)``. With an indent the json module
    encodes in Python (~40 ms for a 1,000-row listing); records (dicts of str, int and
    bool with the same keys, btrfsctl's usual shape), alone or in a list, are written
    here a column at a time with json's C string encoder instead."""
    records = data if type(data) is list else [data]
    first = records[0] if records else None
    text = None
    if type(first) is dict and all(type(r) is dict and r.keys() == first.keys()
                                   for r in records):
        keys = list(first)
        text = _records(keys, [[r[k] for r in records] for k in keys],
                        "  " if type(data) is list else "")
    if text is None:
        import json

        return json.dumps(data, indent=2, sort_keys=True)
    return f"[\n{text}\n]" if type(data) is list else text


def records_json(keys: Sequence[str], columns: Sequence[Sequence[Any]]) -> str:
    """``dumps`` of the list of records whose values under ``keys[i]`` are
    ``columns[i]`` (ListSubvolumes' reply as it comes), without making the dicts."""
    text = _records(keys, columns, "  ") if columns and columns[0] else None
    if text is None:
        return dumps([dict(zip(keys, row, strict=True)) for row in zip(*columns, strict=True)])
    return f"[\n{text}\n]"


_BOOL = {True: "true", False: "false"}


def _records(keys: Sequence[str], columns: Sequence[Sequence[Any]], indent: str
             ) -> str | None:
    """The records, each indented by ``indent``, joined by ",\n"; None when there are
    none, a key is no str, the columns differ in length or one holds anything but only
    str, only int or only bool values."""
    try:  # json's own C encoder, without importing json (and with it re: ~10 ms)
        from _json import encode_basestring_ascii as string
    except ImportError:  # an interpreter without the C part: json's Python one
        from json.encoder import encode_basestring_ascii as string

    count = len(columns[0]) if columns else 0
    if (not keys or not count or not all(type(k) is str for k in keys)
            or any(len(c) != count for c in columns)):
        return None
    encoded: dict[str, list[str]] = {}
    for k, values in zip(keys, columns, strict=True):
        kinds = set(map(type, values))
        if len(kinds) != 1 or not kinds <= {str, int, bool}:
            return None  # mixed, None, floats, nested: json's own rules
        if values.count(values[0]) == count:  # one value (quota columns, often): once
            values = values[:1]
        if kinds == {str}:
            texts = list(map(string, values))
        elif kinds == {int}:
            texts = list(map(int.__repr__, values))
        else:
            texts = list(map(_BOOL.__getitem__, values))
        encoded[k] = texts * count if len(texts) == 1 else texts
    # Each record is indent "{\n", then per key: inner "key": value, joined by ",\n",
    # then "\n" indent "}": one list of every record's pieces, filled a key at a time
    # by slice assignment and joined once (a format per record cost ~3x as much).
    order = sorted(keys)
    inner = indent + "  "
    step = 2 * len(order) + 1
    parts: list[str] = [""] * (count * step)
    for i, k in enumerate(order):
        lead = f"{indent}{{\n" if i == 0 else ",\n"
        parts[2 * i::step] = [f"{lead}{inner}{string(k)}: "] * count
        parts[2 * i + 1::step] = encoded[k]
    parts[step - 1::step] = [f"\n{indent}}},\n"] * count
    parts[-1] = f"\n{indent}}}"
    return "".join(parts)
