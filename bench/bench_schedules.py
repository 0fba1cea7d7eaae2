"""Benchmark: a schedule's cleanup deciding over N snapshots, and the deletes; and
whether a scheduled snapshot (RunSchedule) costs the same with 10 snapshots on the
filesystem as with 1,000 (issue 11: p50 at 1,000 within 1.2x of at 10), beside the
kernel's own snapshot of the same source at the same two sizes.

N read-only snapshots (default 5,000: 52 days of a 15-minute timeline) are made with
btrfsutil and recorded as the schedule's; then, through D-Bus: ExplainSchedule (list +
decide), CleanupSchedule (decide + delete all but ~45). For comparison in the same run:
the pure decision in-process, and deleting M snapshots by raw btrfsutil and by the btrfs
CLI.

Run as root: scripts/dev bench schedules [--snapshots 5000] [--compare 300]
    [--flat-runs 40] [--flat-pile 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import btrfsutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "loopdev-fixtures"))
from sandbox import Sandbox

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import bench_sandbox, is_root, wall
from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from btrfsd.core.retention import Candidate, decide
from btrfsd.core.schedules import parse_schedule

STEP = 900
LIMITS = {"hourly": 24, "daily": 7, "weekly": 4, "monthly": 12}


def busctl(sb: Sandbox, *args: str) -> str:
    r = subprocess.run(["busctl", f"--address={sb.address}", "--json=short", "call",
                        "org.btrfsd1", "/org/btrfsd1", "org.btrfsd1.Manager", *args],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr)
    return r.stdout


async def run_schedule(bus: MessageBus, name: str) -> float:
    """Seconds of one RunSchedule call. Raises RuntimeError when it fails."""
    t = time.perf_counter()
    reply = await bus.call(Message(
        destination="org.btrfsd1", path="/org/btrfsd1", interface="org.btrfsd1.Manager",
        member="RunSchedule", signature="sa{sv}", body=[name, {}]))
    took = time.perf_counter() - t
    if reply.message_type == MessageType.ERROR:
        raise RuntimeError(f"RunSchedule: {reply.error_name}: {reply.body}")
    return took


def flatness(sb: Sandbox, runs: int, pile: int) -> list[str]:
    """RunSchedule's p50 with 10 snapshots and with ``pile``: two filesystems, each with
    a schedule (keep_last holds everything, so nothing is deleted), one given 10
    snapshots and the other ``pile``; then ``runs`` rounds, each a RunSchedule on both
    and a raw snapshot (btrfsutil, in this process) of each source into its schedule's
    directory, so that both sizes, and the kernel's own snapshot at both, are timed in
    the same minutes of a noisy machine."""
    sources = {}
    for label in ("few", "many"):
        fs = sb.add_filesystem("4G", f"bench-flat-{label}")
        sources[label] = fs.mount_point / "flat"
        btrfsutil.create_subvolume(str(sources[label]))
    time.sleep(0.5)  # let btrfsd see the new mounts

    async def go() -> dict[str, tuple[list[float], list[float]]]:
        bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
        try:
            for label, src in sources.items():
                spec = {"subvolume": Variant("s", str(src)), "every": Variant("t", 3600),
                        "keep_last": Variant("u", pile + 2 * runs + 10)}
                reply = await bus.call(Message(
                    destination="org.btrfsd1", path="/org/btrfsd1",
                    interface="org.btrfsd1.Manager", member="SetSchedule",
                    signature="sa{sv}a{sv}", body=[label, spec, {}]))
                if reply.message_type == MessageType.ERROR:
                    raise RuntimeError(f"SetSchedule: {reply.error_name}: {reply.body}")
            print(f"  making 10 and {pile} scheduled snapshots", file=sys.stderr)
            for label, n in (("few", 10), ("many", pile)):
                for _ in range(n):
                    await run_schedule(bus, label)
            got: dict[str, tuple[list[float], list[float]]] = {
                label: ([], []) for label in sources}
            for i in range(runs):
                for label, src in sources.items():
                    got[label][0].append(await run_schedule(bus, label))
                    got[label][1].append(wall(lambda src=src, i=i: btrfsutil.create_snapshot(
                        str(src), str(src / ".snapshots" / f"raw-{i}"), read_only=True)))
            return got
        finally:
            bus.disconnect()

    got = asyncio.run(go())
    p_few, p_many = (statistics.median(got[k][0]) * 1000 for k in ("few", "many"))
    k_few, k_many = (statistics.median(got[k][1]) * 1000 for k in ("few", "many"))
    ratio = p_many / p_few
    own_few, own_many = p_few - k_few, p_many - k_many
    own = own_many / own_few
    # the raw snapshots count too: each filesystem holds both kinds
    return [f"RunSchedule p50 with 10-{10 + 2 * runs} snapshots: {p_few:.2f} ms; "
            f"with {pile}-{pile + 2 * runs}: {p_many:.2f} ms ({ratio:.2f}x)",
            f"the kernel's snapshot of the same source (btrfsutil, in-process), p50: "
            f"{k_few:.2f} ms; {k_many:.2f} ms ({k_many / k_few:.2f}x)",
            f"RunSchedule less the kernel's snapshot (btrfsd's own cost): {own_few:.2f} ms; "
            f"{own_many:.2f} ms",
            f"target (issue 11): RunSchedule at {pile} within 1.2x of at 10: whole call "
            f"{ratio:.2f}x -> {'met' if ratio <= 1.2 else 'not met'}; btrfsd's own cost "
            f"{own:.2f}x -> {'met' if own <= 1.2 else 'not met'}"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--snapshots", type=int, default=5000)
    ap.add_argument("--compare", type=int, default=300)
    ap.add_argument("--flat-runs", type=int, default=40,
                    help="RunSchedule calls per figure of the flatness rows")
    ap.add_argument("--flat-pile", type=int, default=1000,
                    help="scheduled snapshots made before the second figure")
    ap.add_argument("--only-flat", action="store_true", help="only the flatness rows")
    args = ap.parse_args()
    if not is_root():
        return 2
    rows: list[tuple[str, float]] = []
    with bench_sandbox() as sb:
        flat = flatness(sb, args.flat_runs, args.flat_pile)
        if args.only_flat:
            print("\n".join(flat))
            return 0
        fs = sb.add_filesystem("8G", "bench-sched")
        src = fs.mount_point / "src"
        btrfsutil.create_subvolume(str(src))
        (src / "file").write_text("data")
        snaps = src / ".snapshots"
        snaps.mkdir()
        start = time.time() - args.snapshots * STEP
        print(f"  making {args.snapshots} snapshots", file=sys.stderr)
        records = {}
        for k in range(args.snapshots):
            created = start + k * STEP
            path = snaps / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(created))
            btrfsutil.create_snapshot(str(src), str(path), read_only=True)
            uuid = btrfsutil.subvolume_info(str(path)).uuid.hex()
            uuid = f"{uuid[:8]}-{uuid[8:12]}-{uuid[12:16]}-{uuid[16:20]}-{uuid[20:]}"
            records[uuid] = {"schedule": "bench", "filesystem": fs.uuid, "created": created}
        others = fs.mount_point / "others"
        others.mkdir()
        for k in range(2 * args.compare):
            btrfsutil.create_snapshot(str(src), str(others / f"o{k}"), read_only=True)
        sb.stop("btrfsd")  # hand the records to the daemon as if it had made them
        sb.state_dir.mkdir(exist_ok=True)
        (sb.state_dir / "snapshots.json").write_text(json.dumps(
            {"version": 1, "snapshots": records, "last_run": {"bench": time.time()}}))
        sb.start_daemon()
        time.sleep(0.5)
        spec = ["subvolume", "s", str(src), "every", "t", str(STEP),
                *[x for k, v in LIMITS.items() for x in (k, "u", str(v))]]
        busctl(sb, "SetSchedule", "sa{sv}a{sv}", "bench", str(len(spec) // 3), *spec, "0")

        sched = parse_schedule("bench", {"subvolume": str(src), "every": STEP, **LIMITS})
        cands = [Candidate(u, r["created"]) for u, r in records.items()]
        rows.append((f"decide over {args.snapshots} (in-process, pure)",
                     min(wall(lambda: decide(cands, sched.limits(), time.time()))
                         for _ in range(5))))
        explain = [wall(lambda: busctl(sb, "ExplainSchedule", "sa{sv}", "bench", "0"))
                   for _ in range(5)]
        rows.append((f"ExplainSchedule over {args.snapshots} (D-Bus: list + decide)",
                     sorted(explain)[2]))
        dry = wall(lambda: busctl(sb, "CleanupSchedule", "sa{sv}", "bench", "1", "dry_run",
                                   "b", "true"))
        rows.append((f"CleanupSchedule dry run over {args.snapshots} (D-Bus)", dry))
        out: dict[str, str] = {}
        real = wall(lambda: out.update(r=busctl(sb, "CleanupSchedule", "sa{sv}", "bench",
                                                 "0")))
        result = json.loads(out["r"])["data"][0]
        deleted = len(result["deleted"]["data"])
        rows.append((f"CleanupSchedule over {args.snapshots}: {deleted} deleted (D-Bus)", real))
        kept = len(list(snaps.iterdir()))
        m = args.compare
        rows.append((f"delete {m} snapshots, raw btrfsutil", wall(lambda: [
            btrfsutil.delete_subvolume(str(others / f"o{k}")) for k in range(m)])))
        rows.append((f"delete {m} snapshots, btrfs subvolume delete (one call)", wall(
            lambda: subprocess.run(["btrfs", "-q", "subvolume", "delete",
                                    *[str(others / f"o{k}") for k in range(m, 2 * m)]],
                                   check=True))))
        print(f"{'measurement':<66} {'seconds':>9}  {'per snapshot ms':>15}")
        for name, secs in rows:
            n = deleted if "deleted" in name else (m if "delete " in name else args.snapshots)
            print(f"{name:<66} {secs:>9.3f}  {secs / n * 1000:>15.3f}")
        print(f"\nkept {kept} of {args.snapshots} (limits {LIMITS}); failed deletes: "
              f"{len(result['failed']['data'])}")
        print("\n".join(flat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
