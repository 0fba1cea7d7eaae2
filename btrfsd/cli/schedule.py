"""btrfsctl schedule and cleanup: timelines of snapshots with retention."""

from __future__ import annotations

import argparse
from typing import Any

from dbus_fast import Variant

from . import argtypes, output
from .client import CallError, Client, absolute
from .errors import EXIT_FAILED
from .output import Outcome

PERIODS = ("hourly", "daily", "weekly", "monthly", "yearly")


def _fmt_duration(seconds: int) -> str:
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


async def schedule_set(c: Client, a: argparse.Namespace) -> Any:
    spec = {"subvolume": Variant("s", absolute(a.subvolume)),
            "every": Variant("t", a.every), "keep_last": Variant("u", a.keep_last),
            "min_age": Variant("t", a.min_age), "timer": Variant("s", a.timer)}
    for p in PERIODS:
        spec[p] = Variant("u", getattr(a, p))
    if a.backup:
        spec["backup"] = Variant("s", a.backup)
    await c.manager("SetSchedule", "sa{sv}a{sv}", a.name, spec,
                    {"replace": Variant("b", a.replace)})
    if not a.json:
        output.console.print(f"Schedule {a.name}: {a.subvolume} every {_fmt_duration(a.every)}")
    return {"name": a.name, **Client.plain(spec)}


async def _all(c: Client) -> dict[str, dict[str, Any]]:
    (schedules,) = await c.manager("GetSchedules", "a{sv}", {})
    return {n: Client.plain(s) for n, s in schedules.items()}


def _keeps(s: dict[str, Any]) -> str:
    parts = [f"{p} {s[p]}" for p in PERIODS if s[p]]
    if s["keep_last"]:
        parts.append(f"last {s['keep_last']}")
    if s["min_age"]:
        parts.append(f"min age {_fmt_duration(s['min_age'])}")
    return ", ".join(parts) or "nothing (cleanup deletes all but the newest min-age)"


async def schedule_list(c: Client, a: argparse.Namespace) -> Any:
    items = await _all(c)
    if not a.json:
        output.table(None, ["Name", "Subvolume", "Every", "Keeps"], [
            [n, s["subvolume"], _fmt_duration(s["every"]), _keeps(s)]
            for n, s in items.items()])
    return items


async def schedule_show(c: Client, a: argparse.Namespace) -> Any:
    items = await _all(c)
    if a.name not in items:
        raise CallError("org.btrfsd1.Error.NotFound", f"there is no schedule {a.name!r}")
    s = items[a.name]
    if not a.json:
        output.key_values({"name": a.name, **s, "keeps": _keeps(s)})
    return {"name": a.name, **s}


async def schedule_remove(c: Client, a: argparse.Namespace) -> Any:
    await c.manager("RemoveSchedule", "sa{sv}", a.name, {})
    if not a.json:
        output.console.print(f"Removed schedule {a.name} (its snapshots stay)")
    return {"name": a.name, "removed": True}


def _print_result(r: dict[str, Any], dry_run: bool = False) -> None:
    if r.get("snapshot"):
        output.console.print(f"Snapshot {r['snapshot']}")
    if r.get("backup_job", "/") != "/":
        output.console.print(f"Backup started: {r['backup_job']}", markup=False)
    verb = "Would delete" if dry_run else "Deleted"
    for p in r["deleted"]:
        output.console.print(f"{verb} {p}")
    for p, why in r["failed"]:
        output.err_console.print(f"Could not delete {p}: {why} (tried again next time)",
                                 markup=False)


async def schedule_run(c: Client, a: argparse.Namespace) -> Any:
    (r,) = await c.manager("RunSchedule", "sa{sv}", a.name, {})
    r = Client.plain(r)
    if not a.json:
        _print_result(r)
    # A failed delete is reported and retried next time, but scripts must notice it.
    return Outcome(r, EXIT_FAILED) if r["failed"] else r


async def cleanup(c: Client, a: argparse.Namespace) -> Any:
    (r,) = await c.manager("CleanupSchedule", "sa{sv}", a.name,
                           {"dry_run": Variant("b", a.dry_run)})
    r = Client.plain(r)
    if not a.json:
        _print_result(r, dry_run=a.dry_run)
        if not r["deleted"] and not r["failed"]:
            output.console.print("Nothing to delete.")
    # A failed delete is reported and retried next time, but scripts must notice it.
    return Outcome(r, EXIT_FAILED) if r["failed"] else r


async def schedule_explain(c: Client, a: argparse.Namespace) -> Any:
    (rows,) = await c.manager("ExplainSchedule", "sa{sv}", a.name, {})
    items = [dict(zip(("path", "uuid", "created", "important", "keep", "reasons",
                       "description"), r, strict=True)) for r in rows]
    if not a.json:
        output.table(f"Schedule {a.name}: youngest first", ["Snapshot", "Made", "Decision",
                                                           "Kept by", "Description"], [
            [i["path"], output.fmt_time(i["created"]), "keep" if i["keep"] else "DELETE",
             i["reasons"].replace(",", ", ") or "-", i["description"] or "-"]
            for i in items])
    return items


async def schedule_mark(c: Client, a: argparse.Namespace) -> Any:
    info: dict[str, Variant] = {}
    if a.important is not None:
        info["important"] = Variant("b", a.important)
    if a.description is not None:
        info["description"] = Variant("s", a.description)
    path = absolute(a.path)
    await c.manager("SetSnapshotInfo", "sa{sv}a{sv}", path, info, {})
    if not a.json:
        output.console.print(f"Updated {path}")
    return {"path": path, **Client.plain(info)}


def _usages(text: str) -> list[int]:
    values = [argtypes.percent(v) for v in text.split(",") if v.strip()]
    if not values:
        raise argparse.ArgumentTypeError("give usage percentages like 5,10")
    return values


async def maintenance_set(c: Client, a: argparse.Namespace) -> Any:
    fs = await c.filesystem_of(absolute(a.path))
    spec = {"scrub": Variant("s", a.scrub), "balance": Variant("s", a.balance),
            "data_usage": Variant("au", a.data_usage),
            "metadata_usage": Variant("au", a.metadata_usage)}
    await c.filesystem(fs, "SetMaintenance", "a{sv}a{sv}", spec, {})
    if not a.json:
        output.console.print(f"Maintenance of {a.path}: scrub {a.scrub}, balance {a.balance} "
                             f"(data usage {a.data_usage}, metadata usage {a.metadata_usage})")
    return Client.plain(spec)


async def maintenance_show(c: Client, a: argparse.Namespace) -> Any:
    fs = await c.filesystem_of(absolute(a.path))
    (plan,) = await c.filesystem(fs, "GetMaintenance", "a{sv}", {})
    plan = Client.plain(plan)
    if not a.json:
        if plan:
            output.key_values(plan)
        else:
            output.console.print("No periodic maintenance (btrfsctl schedule set-maintenance).")
    return plan


async def maintenance_remove(c: Client, a: argparse.Namespace) -> Any:
    fs = await c.filesystem_of(absolute(a.path))
    await c.filesystem(fs, "RemoveMaintenance", "a{sv}", {})
    if not a.json:
        output.console.print("Periodic maintenance removed.")
    return {"removed": True}


def add_commands(sub: Any, cmd: Any) -> None:
    """Register schedule and cleanup with the top-level parser."""
    sc = sub.add_parser("schedule", help="timelines: snapshots on a timer, with retention"
                        ).add_subparsers(dest="cmd", required=True)
    s = cmd(sc, "set", schedule_set, "create (or with --replace change) a schedule")
    s.add_argument("name")
    s.add_argument("subvolume")
    s.add_argument("--every", type=argtypes.duration, required=True, metavar="DURATION",
                   help="15m, 1h, 1d, ... (at least 1m)")
    for p in PERIODS:
        s.add_argument(f"--{p}", type=argtypes.count, default=0, metavar="N",
                       help=f"keep the first snapshot of the last N {p} periods")
    s.add_argument("--keep-last", type=argtypes.count, default=0, metavar="N",
                   help="also keep the N newest")
    s.add_argument("--min-age", type=argtypes.duration, default=0, metavar="DURATION",
                   help="never delete snapshots younger than this")
    s.add_argument("--replace", action="store_true", help="change an existing schedule")
    s.add_argument("--timer", choices=["btrfsd", "systemd"], default="btrfsd",
                   help="who fires it: btrfsd's own timer, or btrfsd-schedule@NAME.timer")
    s.add_argument("--backup", default="", metavar="NAME",
                   help="run this backup of the subvolume after each snapshot (it sends "
                        "that snapshot)")
    cmd(sc, "list", schedule_list, "list schedules")
    cmd(sc, "show", schedule_show, "show one schedule").add_argument("name")
    cmd(sc, "remove", schedule_remove, "remove a schedule (its snapshots stay)"
        ).add_argument("name")
    cmd(sc, "run", schedule_run, "take a snapshot now and clean up").add_argument("name")
    cmd(sc, "explain", schedule_explain,
        "every snapshot of the schedule: kept or to be deleted, and by which rule"
        ).add_argument("name")
    m = cmd(sc, "mark", schedule_mark, "mark a scheduled snapshot important, or describe it")
    m.add_argument("path")
    m.add_argument("--important", action="store_true", default=None,
                   help="keep it outside the limits")
    m.add_argument("--not-important", dest="important", action="store_false")
    m.add_argument("--description")
    periods = ["none", "daily", "weekly", "monthly"]
    sm = cmd(sc, "set-maintenance", maintenance_set,
             "periodic scrub and balance of the filesystem holding PATH (as Jobs)")
    sm.add_argument("path")
    sm.add_argument("--scrub", choices=periods, default="monthly")
    sm.add_argument("--balance", choices=periods, default="weekly")
    sm.add_argument("--data-usage", type=_usages, default=[5, 10], metavar="N,N",
                    help="data usage filters, one balance each (default 5,10)")
    sm.add_argument("--metadata-usage", type=_usages, default=[5], metavar="N,N",
                    help="metadata usage filters (default 5)")
    cmd(sc, "maintenance", maintenance_show, "show the periodic maintenance of PATH"
        ).add_argument("path")
    cmd(sc, "remove-maintenance", maintenance_remove, "stop periodic maintenance of PATH"
        ).add_argument("path")
    cl = cmd(sub, "cleanup", cleanup, "delete a schedule's snapshots its rules do not keep")
    cl.add_argument("name")
    cl.add_argument("--dry-run", action="store_true", help="only say what would go")
