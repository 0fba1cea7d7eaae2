"""btrfsctl restore and rollback: files back from a snapshot (a job, followed with a
progress bar like scrub start --wait), a subvolume back to a snapshot."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from dbus_fast import Variant

from . import output
from .client import Client, absolute
from .jobs import run_job

FS_IFACE = "org.btrfsd1.Filesystem"


async def restore(c: Client, a: argparse.Namespace) -> Any:
    snapshot = absolute(a.snapshot)
    fs = await c.filesystem_of(snapshot)
    options: dict[str, Variant] = {"overwrite": Variant("b", a.overwrite)}
    if a.to:
        options["destination"] = Variant("s", absolute(a.to))
    return await run_job(c, lambda: c.filesystem(fs, "RestoreFiles", "sasa{sv}", snapshot,
                                                 list(a.paths), options),
                         wait=not a.no_wait, as_json=a.json)


async def rollback(c: Client, a: argparse.Namespace) -> Any:
    subvolume, snapshot = absolute(a.subvolume), absolute(a.snapshot)
    fs = await c.filesystem_of(subvolume)
    before = (await c.properties(fs, FS_IFACE))["DefaultSubvolumeId"]
    (saved,) = await c.filesystem(fs, "Rollback", "ssa{sv}", subvolume, snapshot, {})
    after = (await c.properties(fs, FS_IFACE))["DefaultSubvolumeId"]
    deferred = after != before
    if not a.json:
        output.console.print(f"The state before is kept as {saved}", markup=False,
                             highlight=False)
        if deferred:
            output.console.print(
                f"{subvolume} is mounted or the default: subvolume id {after} is the "
                "default now and the rollback takes effect at the next mount or boot. "
                "Mounts that name subvol= or subvolid= (fstab, the boot loader's "
                "rootflags=) must be changed to it (btrfsd's log names them).",
                markup=False, highlight=False)
        else:
            output.console.print(f"{subvolume} is now a writable copy of {snapshot}",
                                 markup=False, highlight=False)
    return {"subvolume": subvolume, "snapshot": snapshot, "saved": saved,
            "new_default_id": after if deferred else None}


def add_commands(sub: Any, cmd: Callable[..., argparse.ArgumentParser]) -> None:
    """Register restore and rollback with the top-level parser."""
    r = cmd(sub, "restore", restore, "put files or directories from SNAPSHOT back")
    r.add_argument("snapshot")
    r.add_argument("paths", nargs="+", metavar="PATH",
                   help="inside the snapshot (relative to it, or absolute below it)")
    r.add_argument("--to", metavar="DIR", default="",
                   help="restore into DIR instead of the original places")
    r.add_argument("--overwrite", action="store_true",
                   help="replace what is there (default: move it aside as "
                   "NAME.before-restore-<time>)")
    r.add_argument("--no-wait", action="store_true",
                   help="start the job and return (default: show progress until it ends)")
    rb = cmd(sub, "rollback", rollback, "make SUBVOLUME a writable copy of SNAPSHOT, "
             "keeping its state as a read-only snapshot")
    rb.add_argument("subvolume")
    rb.add_argument("snapshot")
