"""btrfsctl's full path: every command through argparse, asyncio and dbus-fast
(docs/cli.md). main.py sends the commonest commands through lean.py instead."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

from dbus_fast import Variant

from ..constants import VERSION
from . import backup, diff, fleet, jobs, output, quota, restore, schedule
from .client import CallError, Client, absolute
from .errors import EXIT_USAGE

# A handler returns its JSON-able data, or an Outcome when its exit code is not 0.
Handler = Callable[[Client, argparse.Namespace], Awaitable[Any]]


# -- handlers: each returns JSON-able data and prints the human form itself -------------
async def status(c: Client, a: argparse.Namespace) -> Any:
    (info,) = await c.manager("GetStatus", "a{sv}", {})
    data = Client.plain(info)
    if not a.json:
        output.console.print(f"btrfsd {data['version']}: {data['filesystems']} filesystem(s), "
                             f"{data['active_jobs']} job(s) running", markup=False,
                             highlight=False)
        for problem in data["problems"]:
            output.console.print(f"problem: {problem}", markup=False, highlight=False)
        if not data["problems"]:
            output.console.print("no problems since btrfsd started")
    return data


async def fs_list(c: Client, a: argparse.Namespace) -> Any:
    (paths,) = await c.manager("GetFilesystems", "a{sv}", {})
    items = []
    for p in paths:
        props = await c.properties(p, "org.btrfsd1.Filesystem")
        props["object_path"] = p
        items.append(props)
    if not a.json:
        output.table(None, ["UUID", "Label", "Mounted at", "Devices", "Size", "Used", "Free"], [
            [f["Uuid"], f["Label"] or "-", "\n".join(f["MountPoints"]), "\n".join(f["Devices"]),
             output.fmt_bytes(f["TotalBytes"]), output.fmt_bytes(f["UsedBytes"]),
             output.fmt_bytes(f["FreeBytes"])] for f in items
        ])
    return items


async def subvolume_create(c: Client, a: argparse.Namespace) -> Any:
    path = absolute(a.path)
    fs = await c.filesystem_of(os.path.dirname(path))
    (made,) = await c.filesystem(fs, "CreateSubvolume", "sa{sv}", path, {})
    if not a.json:
        output.console.print(f"Created subvolume {made}")
    return {"path": made}


async def subvolume_delete(c: Client, a: argparse.Namespace) -> Any:
    path = absolute(a.path)
    fs = await c.filesystem_of(path)
    await c.filesystem(fs, "DeleteSubvolume", "sa{sv}", path,
                       {"recursive": Variant("b", a.recursive)})
    if not a.json:
        output.console.print(f"Deleted {path} (space is freed in the background)")
    return {"path": path, "deleted": True}


async def subvolume_list(c: Client, a: argparse.Namespace) -> Any:
    fs = await c.filesystem_of(absolute(a.path))
    (rows,) = await c.filesystem(fs, "ListSubvolumes", "a{sv}", {})
    items = output.subvolume_rows(rows)
    if not a.json:
        output.subvolume_table(items)
    return items


async def subvolume_show(c: Client, a: argparse.Namespace) -> Any:
    path = absolute(a.path)
    fs = await c.filesystem_of(path)
    (info,) = await c.filesystem(fs, "GetSubvolume", "sa{sv}", path, {})
    data = {"mount_path": path, **Client.plain(info)}
    if not a.json:
        output.key_values(data)
    return data


async def subvolume_readonly(c: Client, a: argparse.Namespace) -> Any:
    path = absolute(a.path)
    fs = await c.filesystem_of(path)
    value = a.state == "on"
    await c.filesystem(fs, "SetReadOnly", "sba{sv}", path, value, {})
    if not a.json:
        output.console.print(f"{path} is now {'read-only' if value else 'writable'}")
    return {"path": path, "read_only": value}


async def subvolume_set_default(c: Client, a: argparse.Namespace) -> Any:
    path = absolute(a.path)
    fs = await c.filesystem_of(path)
    (sid,) = await c.filesystem(fs, "SetDefaultSubvolume", "sa{sv}", path, {})
    if not a.json:
        output.console.print(f"Default subvolume is now {path} (id {sid})")
    return {"path": path, "id": sid}


async def subvolume_get_default(c: Client, a: argparse.Namespace) -> Any:
    fs = await c.filesystem_of(absolute(a.path))
    props = await c.properties(fs, "org.btrfsd1.Filesystem")
    sid = props["DefaultSubvolumeId"]
    if not a.json:
        output.console.print(f"Default subvolume id: {sid}")
    return {"id": sid}


async def snapshot_create(c: Client, a: argparse.Namespace) -> Any:
    source = absolute(a.source)
    fs = await c.filesystem_of(source)
    dest = absolute(a.dest) if a.dest else ""
    (made,) = await c.filesystem(fs, "CreateSnapshot", "ssa{sv}", source, dest, {
        "read_only": Variant("b", not a.writable), "recursive": Variant("b", a.recursive)})
    if not a.json:
        kind = "writable" if a.writable else "read-only"
        output.console.print(f"Created {kind} snapshot {made}")
    return {"source": source, "path": made, "read_only": not a.writable}


async def snapshot_list(c: Client, a: argparse.Namespace) -> Any:
    source = absolute(a.source)
    fs = await c.filesystem_of(source)
    (rows,) = await c.filesystem(fs, "ListSubvolumes", "a{sv}",
                                 {"snapshots_of": Variant("s", source)})
    items = output.subvolume_rows(rows)
    if not a.json:
        output.subvolume_table(items)
    return items


# -- argument parsing ---------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print machine-readable JSON")
    p = argparse.ArgumentParser(prog="btrfsctl", parents=[common],
                                description="Manage btrfs through the btrfsd service.")
    p.add_argument("--version", action="version", version=f"btrfsctl {VERSION}")
    p.add_argument("--no-ask", action="store_true",
                   help="never let PolicyKit ask for a password")
    fleet.add_options(p)
    sub = p.add_subparsers(dest="group", required=True, metavar="COMMAND")

    def cmd(parent: Any, name: str, handler: Handler, help_: str) -> argparse.ArgumentParser:
        # hidden helper commands get no help entry at all (argparse would print SUPPRESS)
        extra = {} if help_ == argparse.SUPPRESS else {"help": help_}
        sp: argparse.ArgumentParser = parent.add_parser(name, parents=[common], **extra)
        sp.set_defaults(handler=handler)
        return sp

    cmd(sub, "status", status, "btrfsd's version, what it serves, problems since its start")
    fs = sub.add_parser("fs", help="filesystems").add_subparsers(dest="cmd", required=True)
    cmd(fs, "list", fs_list, "list mounted btrfs filesystems")

    sv = sub.add_parser("subvolume", aliases=["subvol"], help="subvolumes").add_subparsers(
        dest="cmd", required=True)
    cmd(sv, "create", subvolume_create, "create a subvolume").add_argument("path")
    d = cmd(sv, "delete", subvolume_delete, "delete a subvolume or snapshot")
    d.add_argument("path")
    d.add_argument("-r", "--recursive", action="store_true", help="also nested subvolumes")
    cmd(sv, "list", subvolume_list, "list subvolumes of the filesystem holding PATH"
        ).add_argument("path")
    cmd(sv, "show", subvolume_show, "show one subvolume").add_argument("path")
    ro = cmd(sv, "readonly", subvolume_readonly, "set or clear the read-only flag")
    ro.add_argument("path")
    ro.add_argument("state", choices=["on", "off"])
    cmd(sv, "set-default", subvolume_set_default, "make PATH the default subvolume"
        ).add_argument("path")
    cmd(sv, "get-default", subvolume_get_default, "show the default subvolume id"
        ).add_argument("path")

    sn = cmd(sub, "snapshot", snapshot_create,
             "snapshot SOURCE [DEST]; also: snapshot list SOURCE, snapshot delete PATH")
    sn.add_argument("source")
    sn.add_argument("dest", nargs="?", default="",
                    help="default: SOURCE/.snapshots/<UTC time, e.g. 20261122T043000Z>; "
                    ".btrfsd-snapshots beside snapper or btrbk")
    sn.add_argument("--writable", action="store_true", help="make a writable snapshot")
    sn.add_argument("--recursive", action="store_true", help="include nested subvolumes")
    sl = cmd(sub, "snapshot-list", snapshot_list, argparse.SUPPRESS)
    sl.add_argument("source")
    sd = cmd(sub, "snapshot-delete", subvolume_delete, argparse.SUPPRESS)
    sd.add_argument("path")
    sd.add_argument("-r", "--recursive", action="store_true")

    jobs.add_commands(sub, cmd)
    quota.add_commands(sub, cmd)
    schedule.add_commands(sub, cmd)
    restore.add_commands(sub, cmd)
    diff.add_commands(sub, cmd)
    backup.add_commands(sub, cmd)
    fleet.add_commands(sub, cmd)
    return p


def _rewrite(argv: list[str]) -> list[str]:
    # "snapshot SOURCE [DEST]" and "snapshot list|delete ..." share a word; argparse cannot
    # tell them apart, so the sub-forms get their own hidden commands.
    for i, word in enumerate(argv):
        if word.startswith("-") or (i and argv[i - 1] in fleet.VALUED_OPTIONS):
            continue
        if word == "snapshot" and i + 1 < len(argv) and argv[i + 1] in ("list", "delete"):
            return [*argv[:i], f"snapshot-{argv[i + 1]}", *argv[i + 2:]]
        break
    return argv


async def _run(args: argparse.Namespace) -> int:
    try:
        async with fleet.client_for(args) as c:
            data = await args.handler(c, args)
    except CallError as e:
        return output.finish(e, args.json)
    return output.finish(data, args.json)


def run(argv: list[str]) -> int:
    """Run one btrfsctl command line (without the program name); return the exit code
    (docs/cli.md lists them). argparse exits (SystemExit) on a usage error."""
    parser = build_parser()
    args = parser.parse_args(_rewrite(argv))
    if not hasattr(args, "json"):
        args.json = False
    try:
        return asyncio.run(fleet.run(args) if fleet.wants_fleet(args) else _run(args))
    except KeyboardInterrupt:  # commands that watch a job have said it keeps running
        return 130
    except SystemExit as e:  # argparse inside handlers
        return int(e.code or EXIT_USAGE)
