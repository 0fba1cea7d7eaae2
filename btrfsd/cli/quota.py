"""btrfsctl quota: enable/disable/rescan, limits, usage table, and alerts as they happen."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from dbus_fast import Message, Variant

from ..constants import FILESYSTEM_IFACE
from ..units import format_qgroupid
from . import argtypes, output
from .client import Client, absolute
from .jobs import start_job

QGROUP_FIELDS = ("qgroupid", "path", "referenced", "exclusive", "max_referenced",
                 "max_exclusive")


async def quota_enable(c: Client, a: argparse.Namespace) -> Any:
    fs = await c.filesystem_of(absolute(a.path))
    (note,) = await c.filesystem(fs, "EnableQuota", "a{sv}", {
        "simple": Variant("b", a.simple), "force": Variant("b", a.force)})
    if not a.json:
        output.console.print(f"Quotas are on ({'simple' if a.simple else 'full'}).")
        if note:
            output.console.print(note, markup=False, highlight=False)
    return {"mode": "squota" if a.simple else "qgroup", "note": note}


async def quota_disable(c: Client, a: argparse.Namespace) -> Any:
    await c.filesystem(await c.filesystem_of(absolute(a.path)), "DisableQuota", "a{sv}", {})
    if not a.json:
        output.console.print("Quotas are off; their limits are gone.")
    return {"mode": ""}


async def quota_rescan(c: Client, a: argparse.Namespace) -> Any:
    return await start_job(c, a, "RescanQuota", {})


async def quota_set(c: Client, a: argparse.Namespace) -> Any:
    path = absolute(a.subvolume)
    fs = await c.filesystem_of(path)
    await c.filesystem(fs, "SetQuotaLimit", "stta{sv}", path, a.limit, a.exclusive, {})
    if not a.json:
        ref = output.fmt_bytes(a.limit) if a.limit else "none"
        exc = output.fmt_bytes(a.exclusive) if a.exclusive else "none"
        output.console.print(f"{path}: referenced limit {ref}, exclusive limit {exc}")
    return {"path": path, "max_referenced": a.limit, "max_exclusive": a.exclusive}


def _pct(used: int, limit: int) -> str:
    return f"{used * 100 / limit:.0f}%" if limit else "-"


def _fullest(q: dict[str, Any]) -> str:
    used = [u * 100 / lim for u, lim in ((q["referenced"], q["max_referenced"]),
                                         (q["exclusive"], q["max_exclusive"])) if lim]
    return f"{max(used):.0f}%" if used else "-"


async def quota_show(c: Client, a: argparse.Namespace) -> Any:
    fs = await c.filesystem_of(absolute(a.path))
    mode, inconsistent, rows = await c.filesystem(fs, "GetQuotaUsage", "a{sv}",
                                                  {"sync": Variant("b", a.sync)})
    items = [dict(zip(QGROUP_FIELDS, r, strict=True)) for r in rows]
    if not a.json:
        if not mode:
            output.console.print("Quotas are off (btrfsctl quota enable PATH).")
        else:
            if inconsistent:
                output.err_console.print("Warning: the kernel marks these numbers inconsistent; "
                                         "run btrfsctl quota rescan PATH to correct them.")
            output.table(f"Quotas ({'simple' if mode == 'squota' else 'full'})",
                         ["Qgroup", "Subvolume", "Referenced", "Exclusive", "Ref. limit",
                          "Excl. limit", "Used"], [
                [format_qgroupid(q["qgroupid"]), q["path"] or "-",
                 output.fmt_bytes(q["referenced"]), output.fmt_bytes(q["exclusive"]),
                 output.fmt_bytes(q["max_referenced"]) if q["max_referenced"] else "none",
                 output.fmt_bytes(q["max_exclusive"]) if q["max_exclusive"] else "none",
                 _fullest(q)]
                for q in items])
    return {"mode": mode, "inconsistent": inconsistent, "qgroups": items}


async def quota_watch(c: Client, a: argparse.Namespace) -> Any:
    fs = await c.filesystem_of(absolute(a.path))
    alerts: asyncio.Queue[list[Any]] = asyncio.Queue()

    def on_signal(msg: Message) -> None:
        if msg.member == "QuotaWarning" and msg.path == fs:
            alerts.put_nowait(list(msg.body))

    await c.subscribe(f"type='signal',sender='org.btrfsd1',interface='{FILESYSTEM_IFACE}',"
                      f"member='QuotaWarning',path='{fs}'", on_signal)
    if not a.json:
        output.err_console.print("Watching quota alerts; Ctrl-C stops.")
    while True:
        path, qid, used, limit, level = await alerts.get()
        if a.json:
            output.emit_json({"path": path, "qgroupid": qid, "used": used, "limit": limit,
                              "level": level})
        else:
            output.console.print(f"{level.upper()}: {path or format_qgroupid(qid)} uses "
                                 f"{output.fmt_bytes(used)} of {output.fmt_bytes(limit)} "
                                 f"({_pct(used, limit)})", markup=False, highlight=False)


def add_commands(sub: Any, cmd: Any) -> None:
    """Register the quota group with the top-level parser."""
    q = sub.add_parser("quota", help="qgroup quotas: limits, usage, alerts"
                       ).add_subparsers(dest="cmd", required=True)
    e = cmd(q, "enable", quota_enable, "turn quotas on for the filesystem holding PATH")
    e.add_argument("path")
    e.add_argument("--simple", action="store_true",
                   help="simple quotas (Linux 6.7+): cheap with many snapshots")
    e.add_argument("--force", action="store_true",
                   help="full quotas even on a filesystem with many snapshots")
    cmd(q, "disable", quota_disable, "turn quotas off (limits are lost)").add_argument("path")
    r = cmd(q, "rescan", quota_rescan, "recount full quotas (a job)")
    r.add_argument("path")
    r.add_argument("--wait", action="store_true", help="show progress until it ends")
    s = cmd(q, "set", quota_set, "set a subvolume's limits (SIZE like 20G, or none)")
    s.add_argument("subvolume")
    s.add_argument("limit", type=argtypes.size_or_none, help="referenced limit, or none")
    s.add_argument("--exclusive", type=argtypes.size_or_none, default=0, metavar="SIZE",
                   help="exclusive limit (default none)")
    sh = cmd(q, "show", quota_show, "usage and limits of every qgroup")
    sh.add_argument("path")
    sh.add_argument("--sync", action="store_true", help="commit first for the latest numbers")
    cmd(q, "watch", quota_watch, "print quota alerts as they happen").add_argument("path")
