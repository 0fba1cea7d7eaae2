"""Benchmark: restore. Restoring a 1 GiB directory from a read-only snapshot through
btrfsd (btrfsctl restore: a job, data shared by reflink) against `cp -a
--reflink=never` (a copy) and plain `cp -a` (coreutils 9 reflinks by default on
btrfs), and the same for a directory of many small files: wall time and the
filesystem's used space after each (synced). One run, one table.

Run as root: scripts/dev bench restore   Options: --mib M (size of the big directory),
--files N (small files), --runs R (best of R).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "loopdev-fixtures"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import bench_sandbox, is_root, wall
from sandbox import Sandbox

MiB = 1 << 20
CTL = str(Path(sys.executable).parent / "btrfsctl")


def used(mnt: Path) -> int:
    subprocess.run(["btrfs", "filesystem", "sync", str(mnt)], check=True)
    st = os.statvfs(mnt)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def fill(sv: Path, mib: int, files: int) -> None:
    big = sv / "big"
    big.mkdir()
    chunk = os.urandom(MiB)
    for i in range(mib // 16):
        with open(big / f"f{i}", "wb") as f:
            for _ in range(16):
                f.write(chunk)
    small = sv / "small"
    small.mkdir()
    for i in range(files):
        (small / f"s{i}").write_bytes(chunk[:1000])


def measure(mnt: Path, fn: Callable[[], object]) -> tuple[float, int]:
    before = used(mnt)
    seconds = wall(fn)
    return seconds, used(mnt) - before


def run(sb: Sandbox, mib: int, files: int, runs: int) -> None:
    fs = sb.add_filesystem("6G", "bench-restore")
    mnt = fs.mount_point
    subprocess.run(["btrfs", "subvolume", "create", str(mnt / "sv")], check=True,
                   stdout=subprocess.DEVNULL)
    fill(mnt / "sv", mib, files)
    snap = mnt / "snap"
    subprocess.run(["btrfs", "subvolume", "snapshot", "-r", str(mnt / "sv"), str(snap)],
                   check=True, stdout=subprocess.DEVNULL)
    n = 0

    def target() -> Path:
        nonlocal n
        n += 1
        d = mnt / "sv" / f"into{n}"
        d.mkdir()
        return d

    def btrfsd(what: str) -> Callable[[], object]:
        d = target()
        return lambda: subprocess.run([CTL, "restore", str(snap), what, "--to", str(d),
                                       "--json"], check=True, env=sb.env,
                                      stdout=subprocess.DEVNULL)

    def cp(what: str, *extra: str) -> Callable[[], object]:
        d = target()
        return lambda: subprocess.run(["cp", "-a", *extra, str(snap / what), str(d)],
                                      check=True)

    rows = []
    for what, label in (("big", f"{mib} MiB in {mib // 16} files"),
                        ("small", f"{files} files of 1000 B")):
        for how, make in (("btrfsctl restore (btrfsd)", lambda w=what: btrfsd(w)),
                          ("cp -a --reflink=never", lambda w=what: cp(w, "--reflink=never")),
                          # coreutils 9 reflinks by default on btrfs
                          ("cp -a", lambda w=what: cp(w))):
            best = min((measure(mnt, make()) for _ in range(runs)), key=lambda r: r[0])
            rows.append((label, how, best[0], best[1]))
    print(f"\nRestore from a read-only snapshot (best of {runs}; page cache warm; used "
          "space after btrfs filesystem sync)\n")
    print(f"| {'directory':<26} | {'how':<26} | {'seconds':>8} | {'used space added':>16} |")
    print(f"|{'-' * 28}|{'-' * 28}|{'-' * 9}:|{'-' * 17}:|")
    for label, how, seconds, grown in rows:
        print(f"| {label:<26} | {how:<26} | {seconds:>8.3f} | {grown / MiB:>12.1f} MiB |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=2)
    a = ap.parse_args()
    if not is_root():
        return 1
    with bench_sandbox() as sb:
        run(sb, a.mib, a.files, a.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
