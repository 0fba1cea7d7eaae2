"""Benchmark: what quotas cost, in one run on three loop images (quotas off, simple, full).

Rows: snapshot create at N existing snapshots in each mode (raw btrfsutil, and D-Bus in
the mode btrfsd recommends); freeing deleted snapshots in each mode (btrfsd's deletes;
for full qgroups also the kernel's default path, fewer because each takes long);
GetQuotaUsage at N qgroups vs `btrfs qgroup show`; the alert watcher's CPU per pass at N
limited qgroups.

Run as root: scripts/dev bench quota [--snapshots 1000] [--creates 10] [--deletes 100]
[--slow-deletes 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import btrfsutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "loopdev-fixtures"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_subvolumes import Bench
from common import bench_sandbox, is_root, pct, wall
from sandbox import LoopFs

from btrfsd.config import QuotaAlertSettings
from btrfsd.core.filesystems import Registry
from btrfsd.core.quota_alerts import QuotaWatcher
from btrfsd.core.quotas import Quotas
from btrfsd.core.subvolumes import Subvolumes
from btrfsd.fs import quota as kquota

MiB = 1 << 20


def prepare(fs: LoopFs, n: int, mode: str) -> Path:
    """A source with a few thousand files (a tree of several levels) and n snapshots,
    then quotas in ``mode`` (enabled last: full qgroups would make the n creates slow)."""
    mnt = fs.mount_point
    src = mnt / "src"
    btrfsutil.create_subvolume(str(src))
    for i in range(3000):
        (src / f"f{i}").write_bytes(os.urandom(1024))
    (mnt / "snaps").mkdir()
    for i in range(n):
        btrfsutil.create_snapshot(str(src), str(mnt / "snaps" / f"s{i}"), read_only=True)
    if mode:  # by ioctl: Debian 12's btrfs-progs cannot enable simple quotas
        fd = os.open(mnt, os.O_RDONLY)
        try:
            kquota.quota_ctl(fd, kquota.QUOTA_CTL_ENABLE_SIMPLE if mode == "squota"
                             else kquota.QUOTA_CTL_ENABLE)
        finally:
            os.close(fd)
    subprocess.run(["btrfs", "quota", "rescan", "-w", str(mnt)], check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["btrfs", "filesystem", "sync", str(mnt)], check=True)
    return src


def creates(src: Path, dest: Path, n: int) -> list[float]:
    dest.mkdir(exist_ok=True)
    out = []
    for i in range(n):
        t = time.perf_counter()
        btrfsutil.create_snapshot(str(src), str(dest / f"c{i}"), read_only=True)
        out.append(time.perf_counter() - t)
    return out


def wait_freed(mnt: Path, fsid: str, rescan_too: bool, timeout: float = 3600) -> float:
    """Seconds until the cleaner has freed every deleted subvolume (and, for btrfsd's
    full-qgroup path, until the follow-up rescan has run and the threshold is back)."""
    t0 = time.perf_counter()
    deadline = time.monotonic() + timeout
    while btrfsutil.deleted_subvolumes(str(mnt)) or (
            rescan_too and (kquota.inconsistent(fsid)
                            or kquota.drop_subtree_threshold(fsid) == 0)):
        if time.monotonic() > deadline:
            raise TimeoutError("deleted snapshots not freed")
        time.sleep(0.1)
    return time.perf_counter() - t0


def dbus_delete(b: Bench, fs_obj: str, paths: list[Path]) -> None:
    for p in paths:
        r = subprocess.run(["busctl", f"--address={b.sb.address}", "call", "org.btrfsd1",
                            fs_obj, "org.btrfsd1.Filesystem", "DeleteSubvolume", "sa{sv}",
                            str(p), "0"], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(r.stderr)


def watcher_cpu(fs_uuid: str, passes: int = 5) -> float:
    """CPU seconds per watcher pass over one filesystem's limited qgroups (in-process)."""
    async def run() -> float:
        registry = Registry()
        await registry.rescan()
        registry._filesystems = {u: f for u, f in registry._filesystems.items() if u == fs_uuid}
        watcher = QuotaWatcher(registry, Quotas(Subvolumes(registry)), QuotaAlertSettings(),
                               Path("/nonexistent-btrfsd-bench"), lambda alert: None)
        watcher.path = Path(os.devnull)  # alert state is not the point here
        t = time.process_time()
        for _ in range(passes):
            await watcher.check_all()
        return (time.process_time() - t) / passes
    return asyncio.run(run())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--snapshots", type=int, default=1000)
    ap.add_argument("--creates", type=int, default=10)
    ap.add_argument("--deletes", type=int, default=100)
    ap.add_argument("--slow-deletes", type=int, default=3)
    args = ap.parse_args()
    if not is_root():
        return 2
    with bench_sandbox() as sb:
        modes = {"off": "", "simple": "squota", "full": "qgroup"}
        fss = {name: sb.add_filesystem("3G", f"bench-{name}") for name in modes}
        srcs = {}
        for name, mode in modes.items():
            print(f"  preparing {name}: {args.snapshots} snapshots", file=sys.stderr)
            srcs[name] = prepare(fss[name], args.snapshots, mode)
        time.sleep(1)  # let btrfsd see the mounts
        b = Bench(sb, args.creates)
        objs = {name: "/org/btrfsd1/filesystems/" + fs.uuid.replace("-", "_")
                for name, fs in fss.items()}
        seconds: dict[str, float] = {}
        try:
            n = args.snapshots
            for name in modes:  # interleaving is moot: each mode has its own image
                b.add(f"snapshot create at {n} snapshots, quotas {name}, raw btrfsutil",
                      creates(srcs[name], fss[name].mount_point / f"new-{name}", args.creates))
            b.add(f"snapshot create at {n} snapshots, quotas simple, D-Bus", b.dbus_on(
                objs["simple"], "snapshot", args.creates, str(srcs["simple"]),
                str(b.fresh_dir(fss["simple"].mount_point / "new-dbus"))))
            b.add(f"GetQuotaUsage at {n}+ qgroups (full), D-Bus", b.dbus_on(
                objs["full"], "quota", 10))
            b.add(f"btrfs qgroup show at {n}+ qgroups (full)", [
                wall(lambda: subprocess.run(["btrfs", "qgroup", "show", str(
                    fss["full"].mount_point)], check=True, stdout=subprocess.DEVNULL))
                for _ in range(10)])
            full = fss["full"]
            for i in range(n):  # limit every snapshot's qgroup
                path = full.mount_point / "snaps" / f"s{i}"
                fd = os.open(path, os.O_RDONLY)
                try:
                    kquota.set_limit(fd, kquota.qgroupid(0, btrfsutil.subvolume_id(fd)),
                                     referenced=1 << 30, exclusive=None)
                finally:
                    os.close(fd)
            seconds["watcher CPU per pass, full, limited qgroups"] = watcher_cpu(full.uuid)
            for name in modes:
                fs = fss[name]
                victims = [fs.mount_point / "snaps" / f"s{i}" for i in range(args.deletes)]
                dbus_delete(b, objs[name], victims)
                seconds[f"free {args.deletes} deleted snapshots, quotas {name} (btrfsd)"] = (
                    wait_freed(fs.mount_point, fs.uuid, rescan_too=name == "full"))
            fs = fss["full"]
            for i in range(args.deletes, args.deletes + args.slow_deletes):
                btrfsutil.delete_subvolume(str(fs.mount_point / "snaps" / f"s{i}"))
            seconds[f"free {args.slow_deletes} deleted snapshots, quotas full, kernel default "
                    f"threshold {kquota.drop_subtree_threshold(fs.uuid)}"] = wait_freed(
                fs.mount_point, fs.uuid, rescan_too=False)
        except Exception:
            print(sb.daemon_log()[-4000:], file=sys.stderr)
            raise
        print(b.table({}).rstrip())
        print()
        for k, v in seconds.items():
            print(f"{k:<75} {v:>8.3f} s")
        off = pct(b.rows[0][1], 50)
        simple = pct(b.rows[1][1], 50)
        print(f"\ntarget: simple-quota snapshot create within 2x of quotas off at {n} "
              f"snapshots: {simple:.2f} vs {off:.2f} ms -> "
              f"{'met' if simple <= 2 * off else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
