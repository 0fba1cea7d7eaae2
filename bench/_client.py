"""Timing client run by bench_subvolumes.py, as root or (via setpriv) as another user.

argv: KIND N FS_OBJECT_PATH ARG...   prints a JSON list of per-call seconds.
KIND getfs_for takes N as seconds and says "ready" on stderr once connected.
KIND list also says "rows R" on stderr: how many subvolumes the last reply held.
Only the standard library and dbus-fast: it is copied into the sandbox and run from there.
"""

import asyncio
import itertools
import json
import sys
import time

from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus


def message(kind, i, fs, args):
    base = dict(destination="org.btrfsd1", path=fs, interface="org.btrfsd1.Filesystem")
    if kind == "snapshot":
        src, dest_dir = args
        return Message(**base, member="CreateSnapshot", signature="ssa{sv}",
                       body=[src, f"{dest_dir}/s{i}", {}])
    if kind == "create":
        (dest_dir,) = args
        return Message(**base, member="CreateSubvolume", signature="sa{sv}",
                       body=[f"{dest_dir}/c{i}", {}])
    if kind == "getfs":  # a cheap read call: polkit check + a short reply
        return Message(destination="org.btrfsd1", path="/org/btrfsd1",
                       interface="org.btrfsd1.Manager", member="GetFilesystems",
                       signature="a{sv}", body=[{}])
    if kind == "quota":
        return Message(**base, member="GetQuotaUsage", signature="a{sv}", body=[{}])
    if kind == "list":
        return Message(**base, member="ListSubvolumes", signature="a{sv}", body=[{}])
    if kind == "polkit":
        from dbus_fast import Variant

        return Message(destination="org.freedesktop.PolicyKit1",
                       path="/org/freedesktop/PolicyKit1/Authority",
                       interface="org.freedesktop.PolicyKit1.Authority",
                       member="CheckAuthorization", signature="(sa{sv})sa{ss}us",
                       body=[("system-bus-name", {"name": Variant("s", args[0])}),
                             "org.btrfsd1.snapshot-create", {}, 0, ""])
    raise SystemExit(f"unknown kind {kind}")


async def main():
    kind, n, fs, *args = sys.argv[1:]
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    if kind == "polkit":
        args = [bus.unique_name]
    if kind == "getfs_for":  # N is seconds here: call back to back for that long
        kind, calls, end = "getfs", itertools.count(), time.perf_counter() + float(n)
        print("ready", file=sys.stderr, flush=True)
    else:
        calls, end = range(int(n)), float("inf")
    times = []
    for i in calls:
        if time.perf_counter() > end:
            break
        msg = message(kind, i, fs, args)
        t = time.perf_counter()
        reply = await bus.call(msg)
        times.append(time.perf_counter() - t)
        if reply.message_type == MessageType.ERROR:
            raise SystemExit(f"{kind} failed: {reply.error_name}: {reply.body}")
    if kind == "list" and times:
        print(f"rows {len(reply.body[0][0])}", file=sys.stderr)
    print(json.dumps(times))


asyncio.run(main())
