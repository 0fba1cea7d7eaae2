"""btrfsctl backup: snapshots sent to another btrfs disk (docs/backup.md); a run is a job
followed with a progress bar like restore."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from dbus_fast import Variant

from . import argtypes, output
from .client import Client, absolute
from .jobs import run_job

PERIODS = ("hourly", "daily", "weekly", "monthly", "yearly")


async def backup_set(c: Client, a: argparse.Namespace) -> Any:
    options = {p: Variant("u", getattr(a, p)) for p in PERIODS}
    options["keep_last"] = Variant("u", a.keep_last)
    options["rate_limit"] = Variant("t", a.rate_limit)
    options["replace"] = Variant("b", a.replace)
    if a.schedule:
        options["schedule"] = Variant("s", a.schedule)
    source, target = absolute(a.source), absolute(a.target)
    await c.manager("SetBackup", "sssa{sv}", a.name, source, target, options)
    if not a.json:
        output.console.print(f"Backup {a.name}: {source} to {target}", markup=False,
                             highlight=False)
    return {"name": a.name, "source": source, "target": target,
            **Client.plain({k: v for k, v in options.items() if k != "replace"})}


def _keeps(b: dict[str, Any]) -> str:
    parts = [f"{p} {b[p]}" for p in PERIODS if b[p]]
    if b["keep_last"]:
        parts.append(f"last {b['keep_last']}")
    return ", ".join(parts)


async def backup_list(c: Client, a: argparse.Namespace) -> Any:
    (backups,) = await c.manager("ListBackups", "a{sv}", {})
    items = {n: Client.plain(b) for n, b in backups.items()}
    if not a.json:
        output.table(None, ["Name", "Source", "Target", "Keeps on the target"], [
            [n, b["source"], b["target"], _keeps(b)] for n, b in sorted(items.items())])
    return items


async def backup_run(c: Client, a: argparse.Namespace) -> Any:
    return await run_job(c, lambda: c.manager("RunBackup", "sa{sv}", a.name, {}),
                         wait=not a.no_wait, as_json=a.json)


async def backup_explain(c: Client, a: argparse.Namespace) -> Any:
    (rows,) = await c.manager("ExplainBackup", "sa{sv}", a.name, {})
    items = [dict(zip(("path", "uuid", "created", "keep", "reasons"), r, strict=True))
             for r in rows]
    if not a.json:
        output.table(f"Backup {a.name}: copies on the target, youngest first",
                     ["Copy", "Made", "Decision", "Kept by"], [
            [i["path"], output.fmt_time(i["created"]), "keep" if i["keep"] else "DELETE",
             i["reasons"].replace(",", ", ").replace(
                 "parent", "parent of the next incremental") or "-"]
            for i in items])
    return items


async def backup_restore(c: Client, a: argparse.Namespace) -> Any:
    # a copy is named as in its target directory; a path to it (as explain shows) works
    copy = a.copy.rstrip("/").rpartition("/")[2]
    dest = absolute(a.dest)
    return await run_job(c, lambda: c.manager("RestoreBackup", "sssa{sv}", a.name, copy,
                                              dest, {}),
                         wait=not a.no_wait, as_json=a.json)


async def backup_remove(c: Client, a: argparse.Namespace) -> Any:
    await c.manager("RemoveBackup", "sa{sv}", a.name, {})
    if not a.json:
        output.console.print(f"Backup {a.name} removed (its copies on the target stay).")
    return {"removed": a.name}


def add_commands(sub: Any, cmd: Callable[..., argparse.ArgumentParser]) -> None:
    """Register backup with the top-level parser."""
    bc = sub.add_parser("backup", help="send snapshots to another btrfs disk, with "
                        "retention there").add_subparsers(dest="cmd", required=True)
    s = cmd(bc, "set", backup_set, "create (or with --replace change) a backup")
    s.add_argument("name")
    s.add_argument("source", help="the subvolume to back up")
    s.add_argument("target", help="a directory on another btrfs filesystem")
    for p in PERIODS:
        s.add_argument(f"--{p}", type=argtypes.count, default=0, metavar="N",
                       help=f"on the target, keep the first copy of the last N {p} periods")
    s.add_argument("--keep-last", type=argtypes.count, default=0, metavar="N",
                   help="also keep the N newest copies")
    s.add_argument("--schedule", default="", metavar="NAME",
                   help="send this schedule's newest snapshot instead of taking one")
    s.add_argument("--rate-limit", type=argtypes.count, default=0, metavar="BYTES",
                   help="bytes per second (default: no limit)")
    s.add_argument("--replace", action="store_true", help="change an existing backup")
    cmd(bc, "list", backup_list, "list backups")
    r = cmd(bc, "run", backup_run, "send a snapshot to the target now (a job)")
    r.add_argument("name")
    r.add_argument("--no-wait", action="store_true",
                   help="start the job and return (default: show progress until it ends)")
    cmd(bc, "explain", backup_explain, "every copy on the target: kept (by which rule) or "
        "deleted by the next run").add_argument("name")
    rs = cmd(bc, "restore", backup_restore, "send a copy on the target back into a "
             "directory on a btrfs filesystem (a job; the result is read-only)")
    rs.add_argument("name")
    rs.add_argument("copy", help="the copy's name (or path) on the target, as explain "
                    "lists them")
    rs.add_argument("dest", help="a directory on a btrfs filesystem, root's all the way up")
    rs.add_argument("--no-wait", action="store_true",
                    help="start the job and return (default: show progress until it ends)")
    cmd(bc, "remove", backup_remove, "forget a backup (its copies stay)").add_argument("name")
