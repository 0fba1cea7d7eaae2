"""Benchmark: jobs. A cheap read call's latency idle and while a scrub or a balance runs
through btrfsd; PropertiesChanged signals per second per job; and the wall time of a
scrub and a balance through btrfsd vs raw ioctls vs the btrfs CLI, in one run.

Run as root: scripts/dev bench jobs   Options: --n N (read calls per row), --data-mib M,
--limit-mib L (scrub speed limit for the latency rows).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "loopdev-fixtures"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_subvolumes import Bench
from common import bench_sandbox, is_root, pct, wall

from btrfsd.fs import balance as kbalance
from btrfsd.fs import scrub as kscrub
from btrfsd.fs import sysfs

MiB = 1 << 20


class JobRun:
    """Start a job through btrfsd and count its signals until Completed."""

    def __init__(self, fs_obj: str, member: str, options: dict[str, Variant]) -> None:
        self.fs_obj, self.member, self.options = fs_obj, member, options
        self.changes = 0
        self.seconds = 0.0
        self.message = ""

    async def run(self, during: Callable[[], list[float]]) -> list[float]:
        bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
        done = asyncio.Event()
        path = ""

        def on_message(msg: Message) -> None:
            if msg.path != path or msg.message_type != MessageType.SIGNAL:
                return
            if msg.member == "PropertiesChanged":
                self.changes += 1
            elif msg.member == "Completed":
                self.message = msg.body[1]
                done.set()

        bus.add_message_handler(on_message)
        await bus.call(Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                               interface="org.freedesktop.DBus", member="AddMatch",
                               signature="s", body=["type='signal',sender='org.btrfsd1'"]))
        t0 = time.perf_counter()
        reply = await bus.call(Message(destination="org.btrfsd1", path=self.fs_obj,
                                       interface="org.btrfsd1.Filesystem", member=self.member,
                                       signature="a{sv}", body=[self.options]))
        if reply.message_type == MessageType.ERROR:
            raise RuntimeError(f"{self.member}: {reply.error_name}: {reply.body}")
        path = reply.body[0]
        samples = await asyncio.to_thread(during)
        ended_early = done.is_set()
        await done.wait()
        self.seconds = time.perf_counter() - t0
        bus.disconnect()
        if ended_early:
            print(f"  warning: {self.member} ended before the read calls did", file=sys.stderr)
        return samples


def sb_wait_idle(b: Bench) -> None:
    """Wait until btrfsd shows no running job (it follows CLI-started ones too)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        out = subprocess.run(["busctl", f"--address={b.sb.address}", "call", "org.btrfsd1",
                              "/org/btrfsd1", "org.btrfsd1.Manager", "GetJobs", "a{sv}", "0"],
                             capture_output=True, text=True).stdout
        paths = out.split()[2:]
        states = [subprocess.run(["busctl", f"--address={b.sb.address}", "get-property",
                                  "org.btrfsd1", p.strip('"'), "org.btrfsd1.Job", "State"],
                                 capture_output=True, text=True).stdout for p in paths]
        if not any('"running"' in s or '"paused"' in s for s in states):
            return
        time.sleep(0.1)


def raw_scrub(mnt: Path, fsid: str) -> None:
    fd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY)
    try:
        threads = [threading.Thread(target=kscrub.scrub_device, args=(fd, devid))
                   for devid in sysfs.device_ids(fsid)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        os.close(fd)


def during_raw_scrub(mnt: Path, fsid: str, limit: int,
                     during: Callable[[], list[float]]) -> list[float]:
    """The kernel's share: read calls while a scrub btrfsd did not start runs."""
    for devid in sysfs.device_ids(fsid):
        kscrub.write_speed_limit(fsid, devid, limit)
    t = threading.Thread(target=raw_scrub, args=(mnt, fsid))
    t.start()
    time.sleep(0.2)
    try:
        return during()
    finally:
        t.join()
        for devid in sysfs.device_ids(fsid):
            kscrub.write_speed_limit(fsid, devid, 0)


def raw_balance(mnt: Path) -> None:
    fd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY)
    try:
        kbalance.balance_start(fd, kbalance.TypeFilter(usage=100), None)
    finally:
        os.close(fd)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--data-mib", type=int, default=1500)
    ap.add_argument("--limit-mib", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if not is_root():
        return 2
    with bench_sandbox() as sb:
        fs = sb.add_filesystem("4G", "btrfsd-bench-jobs")
        subprocess.run(["dd", "if=/dev/zero", f"of={fs.mount_point}/data", "bs=1M",
                        f"count={args.data_mib}", "status=none"], check=True)
        subprocess.run(["sync"], check=True)
        time.sleep(0.5)  # let the daemon see the new mount
        b = Bench(sb, args.n)
        mnt, fs_obj = fs.mount_point, b.fs_obj

        def reads() -> list[float]:
            return b.dbus("getfs", args.n)

        try:
            b.add("read call (GetFilesystems), idle", reads())
            limit = {"limit": Variant("t", args.limit_mib * MiB)}
            scrub = JobRun(fs_obj, "StartScrub", limit)
            b.add(f"read call, during a scrub ({args.limit_mib} MiB/s limit)",
                  asyncio.run(scrub.run(reads)))
            b.add("read call, during a raw-ioctl scrub (same limit, no btrfsd job)",
                  during_raw_scrub(mnt, fs.uuid, args.limit_mib * MiB, reads))
            bal = JobRun(fs_obj, "StartBalance", {"data_usage": Variant("u", 100)})
            b.add("read call, during a balance (data_usage=100)", asyncio.run(bal.run(reads)))
            b.add("read call, idle again", reads())
            walls: dict[str, list[float]] = {}
            for r in range(args.rounds):
                # interleaved, and the order rotated each round: an operation on data
                # that was just rewritten can run at a different speed
                methods = list({
                    "scrub, btrfsd job (start to Completed)": lambda: asyncio.run(
                        JobRun(fs_obj, "StartScrub", {}).run(lambda: [])),
                    "scrub, raw ioctl (thread per device)": lambda: raw_scrub(mnt, fs.uuid),
                    "scrub, btrfs scrub start -B": lambda: subprocess.run(
                        ["btrfs", "scrub", "start", "-B", str(mnt)], check=True,
                        stdout=subprocess.DEVNULL),
                    "balance, btrfsd job (start to Completed)": lambda: asyncio.run(
                        JobRun(fs_obj, "StartBalance", {"data_usage": Variant("u", 100)}
                               ).run(lambda: [])),
                    "balance, raw ioctl": lambda: raw_balance(mnt),
                    "balance, btrfs balance start -dusage=100": lambda: subprocess.run(
                        ["btrfs", "balance", "start", "-dusage=100", str(mnt)], check=True,
                        stdout=subprocess.DEVNULL),
                }.items())
                for op in (methods[:3], methods[3:]):
                    for name, fn in op[r % 3:] + op[:r % 3]:
                        sb_wait_idle(b)
                        walls.setdefault(name, []).append(wall(fn))
        except Exception:
            print(sb.daemon_log()[-4000:], file=sys.stderr)
            raise
        print(b.table({}).rstrip())
        print()
        print(f"{'whole operation (wall time)':<44}  {'runs':>4}  {'median s':>8}")
        for name, secs in walls.items():
            print(f"{name:<44}  {len(secs):>4}  {sorted(secs)[len(secs) // 2]:>8.2f}")
        print()
        for name, job in (("scrub", scrub), ("balance", bal)):
            print(f"{name}: {job.changes} PropertiesChanged in {job.seconds:.1f} s = "
                  f"{job.changes / job.seconds:.2f}/s ({job.message})")
        idle = pct(b.rows[0][1], 99)
        during = pct(b.rows[1][1], 99)
        print(f"\ntarget: p99 during scrub within 2x idle: {during:.2f} vs {idle:.2f} ms -> "
              f"{'met' if during <= 2 * idle else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
