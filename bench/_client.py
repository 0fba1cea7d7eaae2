"""Timing client run by bench_subvolumes.py, as root or (via setpriv) as another user.

argv: KIND N FS_OBJECT_PATH ARG...   prints a JSON list of per-call seconds.
KIND getfs_for takes N as seconds and says "ready" on stderr once connected.
KIND small alternates GetFilesystems and GetSubvolume(ARG); getsub is GetSubvolume(ARG).
KIND list also says "rows R" on stderr: how many subvolumes the last reply held.
KIND list_cli is ListSubvolumes with the columns `btrfs subvolume list` prints (id,
generation, parent id, path).
KIND list_flood (getfs_flood) takes N as calls kept in flight: each of N loops calls
ListSubvolumes (GetFilesystems) back to back until SIGTERM, then it prints {"ok": seconds
of each answered call, "busy": count refused with Busy, "other": other errors} (it says
"ready" on stderr once connected).
Only the standard library and dbus-fast: it is copied into the sandbox and run from there.
"""

import asyncio
import itertools
import json
import signal
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
    if kind == "getsub":  # a read call answered from a worker thread
        return Message(**base, member="GetSubvolume", signature="sa{sv}", body=[args[0], {}])
    if kind == "small":  # GetFilesystems and GetSubvolume (args[0]) in turn
        return message("getfs" if i % 2 == 0 else "getsub", i, fs, args)
    if kind == "quota":
        return Message(**base, member="GetQuotaUsage", signature="a{sv}", body=[{}])
    if kind == "list":
        return Message(**base, member="ListSubvolumes", signature="a{sv}", body=[{}])
    if kind == "list_cli":
        from dbus_fast import Variant

        return Message(**base, member="ListSubvolumes", signature="a{sv}", body=[{
            "columns": Variant("as", ["id", "generation", "parent_id", "path"])}])
    if kind == "polkit":
        from dbus_fast import Variant

        return Message(destination="org.freedesktop.PolicyKit1",
                       path="/org/freedesktop/PolicyKit1/Authority",
                       interface="org.freedesktop.PolicyKit1.Authority",
                       member="CheckAuthorization", signature="(sa{sv})sa{ss}us",
                       body=[("system-bus-name", {"name": Variant("s", args[0])}),
                             "org.btrfsd1.snapshot-create", {}, 0, ""])
    raise SystemExit(f"unknown kind {kind}")


async def flood(bus, inflight, fs, kind):
    """``inflight`` loops of ``kind`` calls (list, getfs) back to back until SIGTERM."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    ok, counts = [], {"busy": 0, "other": 0}

    async def loop():
        while not stop.is_set():
            t = time.perf_counter()
            reply = await bus.call(message(kind, 0, fs, []))
            if reply.message_type != MessageType.ERROR:
                ok.append(time.perf_counter() - t)
            elif reply.error_name == "org.btrfsd1.Error.Busy":
                counts["busy"] += 1
            else:
                counts["other"] += 1
                print(f"error {reply.error_name}: {reply.body}", file=sys.stderr)

    print("ready", file=sys.stderr, flush=True)
    tasks = [asyncio.create_task(loop()) for _ in range(inflight)]
    await stop.wait()
    await asyncio.gather(*tasks)  # each finishes the call it has in flight
    print(json.dumps({"ok": ok, **counts}))


async def main():
    kind, n, fs, *args = sys.argv[1:]
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    if kind in ("list_flood", "getfs_flood"):
        await flood(bus, int(n), fs, kind.removesuffix("_flood"))
        return
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
