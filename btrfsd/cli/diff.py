"""btrfsctl diff: what changed between two snapshots (CompareSnapshots, paged)."""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Any

from dbus_fast import Variant

from . import output
from .client import Client, absolute

# Rows asked for per call: a reply of a few MiB, however many paths changed.
PAGE = 10_000
FIELDS = ("path", "change", "old_path", "type", "size", "data", "metadata")
KINDS = ("added", "deleted", "modified", "metadata", "renamed", "linked")


async def changes(c: Client, fs: str, old: str, new: str) -> list[dict[str, Any]]:
    """Every changed path from ``old`` to ``new``, page by page. Raises CallError."""
    items: list[dict[str, Any]] = []
    offset, total = 0, None
    while total is None or offset < total:
        total, columns = await c.filesystem(fs, "CompareSnapshots", "ssa{sv}", old, new, {
            "offset": Variant("t", offset), "limit": Variant("t", PAGE)})
        page = [dict(zip(FIELDS, row, strict=True)) for row in zip(*columns, strict=True)]
        if not page:
            break
        items += page
        offset += len(page)
    return items


def summary(items: list[dict[str, Any]]) -> str:
    counts = Counter(i["change"] for i in items)
    parts = [f"{counts[k]} {k}" for k in KINDS if counts[k]]
    return f"{len(items)} changed path(s)" + (": " + ", ".join(parts) if parts else "")


async def diff(c: Client, a: argparse.Namespace) -> Any:
    old = absolute(a.old)
    new = absolute(a.new) if a.new else ""
    fs = await c.filesystem_of(old)
    items = await changes(c, fs, old, new)
    if not a.json:
        output.table(None, ["Change", "Type", "Size", "Path", "Was"], [
            [i["change"], i["type"] or "-",
             output.fmt_bytes(i["size"]) if i["type"] in ("file", "symlink") else "-",
             i["path"], i["old_path"] or "-"] for i in items])
        output.console.print(summary(items), markup=False, highlight=False)
    counts = Counter(i["change"] for i in items)
    return {"old": old, "new": new, "total": len(items),
            "counts": {k: counts[k] for k in KINDS}, "changes": items}


def add_commands(sub: Any, cmd: Any) -> None:
    d = cmd(sub, "diff", diff, "what changed from snapshot OLD to NEW (default: the "
            "subvolume OLD was taken of, as it is now)")
    d.add_argument("old")
    d.add_argument("new", nargs="?", default="")
