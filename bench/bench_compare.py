"""Benchmark: CompareSnapshots beside `btrfs send --no-data | btrfs receive --dump` and
`snapper status` (issue 13).

Run as root: scripts/dev bench compare [--files 100000] [--changed 1.0] [--n 10]
[--no-snapper]
One loop image: a subvolume with --files small files (100 directories), a snapper
config on it when snapper is there (bench_cli.py's private bus and snapperd), a first
snapshot (snapper's number 1, or a plain read-only one), --changed percent of the files
changed (a quarter each appended to, chmod'ed, deleted, and new ones added), a second
snapshot. Each row compares the two snapshots --n times, interleaved a round at a time:
- CompareSnapshots: one D-Bus call per page from this process (dbus-fast), as a front
  end would make it, through the sandbox's daemon (polkit check included);
- btrfsctl diff --json: the whole client process, start-up included;
- btrfs send | receive --dump: the two btrfs-progs processes, output to a pipe;
- snapper status 1..2: the `snapper` client and snapperd; snapper keeps a comparison's
  file list (.snapshots/2/filelist-1.txt, maybe compressed), which is removed before
  each run so every run compares (otherwise it only reads the list back).
Prints p50/min/max per row and the issue's targets judged on this run's numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import btrfsutil
from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cli import run, snapper
from common import bench_sandbox, is_root, pct, wall

BTRFSCTL = str(Path(sys.executable).parent / "btrfsctl")
PAGE = 10_000
DIRS = 100
OURS = "CompareSnapshots"
SEND = "btrfs send | receive --dump"
SNAPPER = "snapper status"


def make_files(top: Path, files: int) -> None:
    """``files`` small files in DIRS directories, written with one os call each."""
    per = -(-files // DIRS)
    data = b"x" * 100
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    for d in range(DIRS):
        sub = top / f"d{d:03d}"
        sub.mkdir()
        dfd = os.open(sub, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for f in range(min(per, files - d * per)):
                fd = os.open(f"f{f:05d}", flags, 0o644, dir_fd=dfd)
                os.write(fd, data)
                os.close(fd)
        finally:
            os.close(dfd)


def change(top: Path, files: int, percent: float) -> int:
    """Change ``percent`` of the files, spread over the directories; returns how many."""
    count = max(4, round(files * percent / 100))
    per = -(-files // DIRS)
    step = max(1, files // count)
    touched = 0
    for k in range(0, count):
        i = k * step
        path = top / f"d{i // per:03d}" / f"f{i % per:05d}"
        kind = k % 4
        if kind == 0:
            with open(path, "ab") as f:
                f.write(b"more")
        elif kind == 1:
            os.chmod(path, 0o600)
        elif kind == 2:
            path.unlink()
        else:
            (path.parent / f"new{k:05d}").write_bytes(b"new")
        touched += 1
    return touched


async def compare_calls(fs: str, old: str, new: str, n_runs: int) -> tuple[list[float], int]:
    """Seconds of each of ``n_runs`` complete comparisons (every page) over D-Bus, and
    the rows of the last."""
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    times: list[float] = []
    rows = 0
    try:
        for _ in range(n_runs):
            loop = asyncio.get_running_loop()
            t = loop.time()
            offset, total, rows = 0, None, 0
            while total is None or offset < total:
                reply = await bus.call(Message(
                    destination="org.btrfsd1", path=fs, interface="org.btrfsd1.Filesystem",
                    member="CompareSnapshots", signature="ssa{sv}",
                    body=[old, new, {"offset": Variant("t", offset),
                                     "limit": Variant("t", PAGE)}]))
                assert reply is not None
                if reply.message_type == MessageType.ERROR:
                    raise RuntimeError(f"{reply.error_name}: {reply.body}")
                total, columns = reply.body
                got = len(columns[0])
                if not got:
                    break
                offset += got
                rows += got
            times.append(loop.time() - t)
    finally:
        bus.disconnect()
    return times, rows


SIGPIPE_EXITS: list[int] = []  # lines the dump had printed when send was cut off


def send_dump(old: Path, new: Path) -> None:
    """One `btrfs send --no-data -p old new | btrfs receive --dump`, output to a pipe.
    A send killed by SIGPIPE after the dump ended well is counted, not an error: seen in
    this bench (btrfs-progs 6.2) on some runs though the dump had the whole stream; the
    run's time then still covers the dump's complete work. Raises RuntimeError."""
    send = subprocess.Popen(["btrfs", "send", "-q", "--no-data", "-p", str(old), str(new)],
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    dump = subprocess.run(["btrfs", "receive", "--dump"], stdin=send.stdout,
                          capture_output=True)
    assert send.stdout is not None and send.stderr is not None
    send.stdout.close()
    errors = send.stderr.read()
    send.stderr.close()
    code = send.wait()
    if code == -13 and dump.returncode == 0:
        SIGPIPE_EXITS.append(dump.stdout.count(b"\n"))
        return
    if code != 0 or dump.returncode != 0:
        raise RuntimeError(f"btrfs send | receive --dump failed: {code} "
                           f"{errors!r} {dump.returncode} {dump.stderr!r}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--changed", type=float, default=1.0, help="percent of the files")
    ap.add_argument("--n", type=int, default=10, help="runs per row")
    ap.add_argument("--no-snapper", action="store_true", help="leave snapper out")
    args = ap.parse_args()
    if not is_root():
        return 1
    has_snapper = not args.no_snapper and shutil.which("snapper") is not None
    if not args.no_snapper and not has_snapper:
        print("snapper is not installed (apt-get install snapper); its row is left out",
              file=sys.stderr)
    with bench_sandbox() as sb, contextlib.ExitStack() as stack:
        fs = sb.add_filesystem(size="4G", label="btrfsd-compare")
        mnt = fs.mount_point
        data = mnt / "data"
        btrfsutil.create_subvolume(str(data))
        env = sb.env
        name = f"btrfsd-bench-{os.getpid()}"
        senv = stack.enter_context(snapper(data, name, env)) if has_snapper else None
        print(f"  making {args.files} files", file=sys.stderr, flush=True)
        make_files(data, args.files)
        if senv is not None:
            run(["snapper", "-c", name, "create"], senv)
            old = data / ".snapshots/1/snapshot"
        else:
            old = mnt / "s1"
            btrfsutil.create_snapshot(str(data), str(old), read_only=True)
        touched = change(data, args.files, args.changed)
        if senv is not None:
            run(["snapper", "-c", name, "create"], senv)
            new = data / ".snapshots/2/snapshot"
        else:
            new = mnt / "s2"
            btrfsutil.create_snapshot(str(data), str(new), read_only=True)
        fs_path = "/org/btrfsd1/filesystems/" + fs.uuid.replace("-", "_")
        def snapper_status() -> None:
            assert senv is not None
            for kept in (data / ".snapshots/2").glob("filelist-1.txt*"):
                kept.unlink()
            run(["snapper", "-c", name, "status", "1..2"], senv)

        times: dict[str, list[float]] = {OURS: [], "btrfsctl diff --json": [], SEND: []}
        if senv is not None:
            times[SNAPPER] = []
        rows = 0
        for i in range(args.n):
            ours, rows = asyncio.run(compare_calls(fs_path, str(old), str(new), 1))
            times[OURS] += ours
            times["btrfsctl diff --json"].append(wall(lambda: run(
                [BTRFSCTL, "diff", "--json", str(old), str(new)], env)))
            times[SEND].append(wall(lambda: send_dump(old, new)))
            if senv is not None:
                times[SNAPPER].append(wall(snapper_status))
            print(f"  round {i + 1}/{args.n}", file=sys.stderr, flush=True)
    report(times, args.files, touched, rows)
    if SIGPIPE_EXITS:
        print(f"note: btrfs send was killed by SIGPIPE in {len(SIGPIPE_EXITS)} run(s) after "
              f"receive --dump ended well ({max(SIGPIPE_EXITS)} dump lines at most)")
    return 0


def report(rows: dict[str, list[float]], files: int, touched: int, changes: int) -> None:
    width = max(len(name) for name in rows) + 2
    print(f"\n{files} files, {touched} changed between two snapshots; CompareSnapshots "
          f"reports {changes} changed paths (directories whose entries changed included)")
    head = f"{'comparison':<{width}}{'n':>5}{'p50 ms':>10}{'min ms':>10}{'max ms':>10}"
    print(head)
    print("-" * len(head))
    for name, samples in rows.items():
        print(f"{name:<{width}}{len(samples):>5}{pct(samples, 50):>10.2f}"
              f"{min(samples) * 1000:>10.2f}{max(samples) * 1000:>10.2f}")
    print()
    ours = pct(rows[OURS], 50)
    ratio = ours / pct(rows[SEND], 50)
    print(f"target: {OURS} within 1.5x of {SEND}: {ratio:.2f}x -> "
          f"{'met' if ratio <= 1.5 else 'not met'}")
    if SNAPPER in rows:
        faster = pct(rows[SNAPPER], 50) / ours
        print(f"target: {OURS} at least 10x faster than {SNAPPER}: {faster:.1f}x -> "
              f"{'met' if faster >= 10 else 'not met'}")
    else:
        print("snapper: left out")


if __name__ == "__main__":
    sys.exit(main())
