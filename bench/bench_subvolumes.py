"""Benchmark: btrfsd over D-Bus vs raw btrfsutil vs the btrfs CLI, in one run, one image.

Run as root: scripts/dev bench   (or: /opt/btrfsd-venv/bin/python bench/bench_subvolumes.py)
Prints a table (p50/p99 in ms). Options: --n N (calls per row), --list-sizes 1000,10000,
--privacy-reps N (calls per row of the read-privacy section), --sections (a subset of
create,list,privacy,stall,limit,memory; all but limit and memory by default), --limit-users K,
--limit-inflight C (the limit section's flooding clients and calls each keeps running),
--memory-calls, --soak-calls, --soak-clients (the memory section, issue 11).
Absolute numbers drift between runs on shared machines; compare rows of the same run.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import btrfsutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "loopdev-fixtures"))
from sandbox import TEST_ADMIN, TEST_USER, LoopFs, Sandbox

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import bench_sandbox, is_root, pct, rss_kib, rss_parts, slope, timed, wall

CLIENT = Path(__file__).with_name("_client.py")


class Bench:
    def __init__(self, sb: Sandbox, n: int) -> None:
        self.sb, self.n = sb, n
        self.fs = sb.filesystems[0]
        self.mnt = self.fs.mount_point
        self.fs_obj = "/org/btrfsd1/filesystems/" + self.fs.uuid.replace("-", "_")
        self.client = sb.workdir / "_client.py"
        shutil.copyfile(CLIENT, self.client)
        os.chmod(self.client, 0o644)
        self.rows: list[tuple[str, list[float]]] = []
        self.stalls: list[tuple[str, float, float]] = []  # how, longest call, wall (ms)
        self.notes: list[str] = []
        self.made: dict[Path, int] = {}  # snapshots populate() made, per mount point
        self.limits: list[tuple[str, float, int, int, int]] = []  # load, s, ok, busy, other
        self.memory: list[str] = []  # the memory section's lines
        self.memory_targets: list[str] = []

    @staticmethod
    def fresh_dir(path: Path) -> Path:
        path.mkdir()
        return path

    def dir(self, name: str) -> Path:
        d = self.mnt / name
        d.mkdir()
        return d

    def dbus(self, kind: str, n: int, *args: str, user: str | None = None) -> list[float]:
        return self.dbus_on(self.fs_obj, kind, n, *args, user=user)

    def dbus_on(self, fs_obj: str, kind: str, n: int, *args: str,
                user: str | None = None) -> list[float]:
        """Per-call seconds of n calls of ``kind`` from a separate client process."""
        return self.collect(self.spawn(fs_obj, kind, str(n), *args, user=user))

    def spawn(self, fs_obj: str, kind: str, n: str, *args: str,
              user: str | None = None) -> subprocess.Popen[str]:
        """Start the timing client (see _client.py); ``collect`` gets its samples."""
        prefix = self.sb.as_user(user) if user else []
        return subprocess.Popen([*prefix, sys.executable, str(self.client), kind, n, fs_obj,
                                 *args], env=self.sb.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=self.sb.workdir)

    @staticmethod
    def collect(proc: subprocess.Popen[str]) -> Any:
        """Wait for a timing client; its output (per-call seconds). Raises RuntimeError if
        it failed."""
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(err)
        return json.loads(out)

    def list_rows(self, fs_obj: str, n: int, user: str | None = None
                  ) -> tuple[list[float], int]:
        """Per-call seconds of n ListSubvolumes calls, and how many rows the reply had."""
        proc = self.spawn(fs_obj, "list", str(n), user=user)
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(err)
        rows = next(int(line.split()[1]) for line in err.splitlines()
                    if line.startswith("rows "))
        return json.loads(out), rows

    def add(self, name: str, samples: list[float]) -> None:
        self.rows.append((name, samples))
        print(f"  {name}: p50 {pct(samples, 50):.2f} ms", file=sys.stderr, flush=True)

    def run_create_and_snapshot(self, rounds: int = 10) -> None:
        """Each method runs n/rounds calls per round, rounds interleaved: snapshot cost grows
        with the number of snapshots, so running one method after another would bias it."""
        src = self.mnt / "source"
        btrfsutil.create_subvolume(str(src))
        for i in range(50):
            (src / f"f{i}").write_bytes(os.urandom(4096))
        self.add("polkit CheckAuthorization, root", self.dbus("polkit", self.n))
        self.add("polkit CheckAuthorization, non-root",
                 self.dbus("polkit", self.n, user=TEST_ADMIN))
        per = max(1, self.n // rounds)
        results: dict[str, list[float]] = {}
        for r in range(rounds):
            for name, fn in self._methods(src, r, per).items():
                results.setdefault(name, []).extend(fn())
        for name, samples in results.items():
            self.add(name, samples)

    def _methods(self, src: Path, r: int, per: int) -> dict[str, Callable[[], list[float]]]:
        def raw_snap() -> list[float]:
            d = self.dir(f"snap-raw-{r}")
            return timed(per, lambda i: btrfsutil.create_snapshot(
                str(src), str(d / f"s{i}"), read_only=True))

        def cli_snap() -> list[float]:
            d = self.dir(f"snap-cli-{r}")
            return timed(per, lambda i: subprocess.run(
                ["btrfs", "-q", "subvolume", "snapshot", "-r", str(src), str(d / f"s{i}")],
                check=True, stdout=subprocess.DEVNULL))

        def raw_create() -> list[float]:
            d = self.dir(f"sub-raw-{r}")
            return timed(per, lambda i: btrfsutil.create_subvolume(str(d / f"c{i}")))

        def cli_create() -> list[float]:
            d = self.dir(f"sub-cli-{r}")
            return timed(per, lambda i: subprocess.run(
                ["btrfs", "-q", "subvolume", "create", str(d / f"c{i}")], check=True,
                stdout=subprocess.DEVNULL))

        return {
            "snapshot create (ro), raw btrfsutil": raw_snap,
            "snapshot create (ro), btrfs CLI": cli_snap,
            "snapshot create (ro), D-Bus root": lambda: self.dbus(
                "snapshot", per, str(src), str(self.dir(f"snap-dbus-root-{r}"))),
            "snapshot create (ro), D-Bus non-root (polkit rule)": lambda: self.dbus(
                "snapshot", per, str(src), str(self.dir(f"snap-dbus-user-{r}")),
                user=TEST_ADMIN),
            "subvolume create, raw btrfsutil": raw_create,
            "subvolume create, btrfs CLI": cli_create,
            "subvolume create, D-Bus root": lambda: self.dbus(
                "create", per, str(self.dir(f"sub-dbus-root-{r}"))),
            "subvolume create, D-Bus non-root (polkit rule)": lambda: self.dbus(
                "create", per, str(self.dir(f"sub-dbus-user-{r}")), user=TEST_ADMIN),
        }

    def run_list(self, sizes: list[int]) -> None:
        src = self.mnt / "source"
        if not src.exists():  # the create/snapshot section was left out
            btrfsutil.create_subvolume(str(src))
        d = self.dir("many")
        made = 0
        for size in sizes:
            existing = len(list(btrfsutil.SubvolumeIterator(str(self.mnt), top=5)))
            for i in range(made, made + max(0, size - existing)):
                btrfsutil.create_snapshot(str(src), str(d / f"m{i}"), read_only=True)
            made += max(0, size - existing)
            total = len(list(btrfsutil.SubvolumeIterator(str(self.mnt), top=5)))
            reps = 10
            self.add(f"list {total} subvolumes, btrfs subvolume list", timed(reps, lambda i: (
                subprocess.run(["btrfs", "subvolume", "list", str(self.mnt)], check=True,
                               stdout=subprocess.DEVNULL))))
            self.add(f"list {total} subvolumes, raw btrfsutil iterator (info)", timed(
                reps, lambda i: list(btrfsutil.SubvolumeIterator(str(self.mnt), top=5,
                                                                 info=True))))
            self.add(f"list {total} subvolumes, D-Bus ListSubvolumes",
                     self.dbus("list", reps))
            # the same four facts the CLI prints (id, generation, parent, path)
            self.add(f"list {total} subvolumes, D-Bus ListSubvolumes (the CLI's columns)",
                     self.dbus("list_cli", reps))
            # each call right after a change of the root tree (a snapshot's read-only flag
            # flipped): the last listing cannot be answered again, a full scan is made
            after: list[float] = []
            for i in range(reps):
                btrfsutil.set_subvolume_read_only(str(d / "m0"), i % 2 == 1)
                after += self.dbus("list", 1)
            btrfsutil.set_subvolume_read_only(str(d / "m0"), True)
            self.add(f"list {total} subvolumes, D-Bus ListSubvolumes after a change", after)

    PRIVACY_WHO = (("root", None), ("user", TEST_USER), ("admin", TEST_ADMIN))

    def run_privacy(self, fs: LoopFs, sizes: list[int], reps: int, rounds: int = 5) -> None:
        """Issue 17: ListSubvolumes of a whole filesystem as root, as the unprivileged
        test user (btrfsd checks every path with the user's identity) and as the admin
        group's member (read-all through the example rules: the whole view, plus one
        polkit check), calls interleaved in ``rounds``. On its own filesystem, so
        ``size`` is exactly the number of subvolumes listed. The snapshots sit in two
        0755 directories (the user's listing has every row); the "half hidden" variant
        makes one of them 0700 (root's), so the user gets about half the rows."""
        fs_obj = self.many_fs(fs)
        halves = self.many_dirs(fs)
        per = max(1, reps // rounds)
        for size in sizes:
            made = self.populate(fs, size)
            for variant, mode in (("", 0o755), ("half hidden, ", 0o700)):
                os.chmod(halves[1], mode)
                samples: dict[str, list[float]] = {}
                rows: dict[str, int] = {}
                for _ in range(rounds):
                    for who, user in self.PRIVACY_WHO:
                        got, rows[who] = self.list_rows(fs_obj, per, user=user)
                        samples.setdefault(who, []).extend(got)
                for who, _user in self.PRIVACY_WHO:
                    self.add(f"privacy: list {made + 1}, {variant}{who} "
                             f"({rows[who]} rows)", samples[who])
            os.chmod(halves[1], 0o755)

    def many_fs(self, fs: LoopFs) -> str:
        """The object path of the privacy/limit sections' own filesystem, once btrfsd has
        picked its mount up from mountinfo; makes its source subvolume (50 small files)
        and the two 0755 directories its snapshots go in, if not there yet."""
        fs_obj = "/org/btrfsd1/filesystems/" + fs.uuid.replace("-", "_")
        deadline = time.monotonic() + 15
        while True:
            try:
                self.list_rows(fs_obj, 1)
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        src = fs.mount_point / "source"
        if not src.exists():
            btrfsutil.create_subvolume(str(src))
            for i in range(50):
                (src / f"f{i}").write_bytes(os.urandom(4096))
        for d in self.many_dirs(fs):
            if not d.exists():
                d.mkdir()
                os.chmod(d, 0o755)
        return fs_obj

    @staticmethod
    def many_dirs(fs: LoopFs) -> list[Path]:
        return [fs.mount_point / "snaps-a", fs.mount_point / "snaps-b"]

    def populate(self, fs: LoopFs, size: int) -> int:
        """Tops ``fs`` up to ``size`` subvolumes (size - 1 read-only snapshots of the source,
        alternating between the two directories); the number of snapshots it has."""
        made = self.made.get(fs.mount_point, 0)
        src, halves = fs.mount_point / "source", self.many_dirs(fs)
        for i in range(made, max(made, size - 1)):
            btrfsutil.create_snapshot(str(src), str(halves[i % 2] / f"m{i}"), read_only=True)
            if i % 1000 == 999:
                print(f"  {i + 1} snapshots", file=sys.stderr, flush=True)
        self.made[fs.mount_point] = made = max(made, size - 1)
        return made

    def run_limit(self, fs: LoopFs, size: int, users: int, inflight: int,
                  getfs_n: int, list_n: int) -> None:
        """Issue: one unprivileged caller looping on expensive reads must not starve others
        (reads_per_caller, read_share). Root's cheap read (GetFilesystems) and root's
        ListSubvolumes of ``size`` subvolumes, each from its own client process: idle, then
        while ``users`` client processes as the unprivileged test user each keep
        ``inflight`` calls running back to back: GetFilesystems (the cheapest call: a
        flood any D-Bus service sees, the floor), then ListSubvolumes. The user's calls
        answered vs refused with Busy are counted."""
        fs_obj = self.many_fs(fs)
        total = self.populate(fs, size) + 1
        root_getfs = lambda: self.dbus_on(fs_obj, "getfs", getfs_n)  # noqa: E731
        root_list = lambda: self.dbus_on(fs_obj, "list", list_n)  # noqa: E731
        self.add("limit: GetFilesystems, root, idle", root_getfs())
        self.add(f"limit: list {total}, root, idle", root_list())
        load = f"{users} user clients x {inflight} in flight"
        for flood, what in (("getfs_flood", "GetFilesystems"), ("list_flood", "list")):
            if not self._under_flood(fs_obj, flood, f"{what} flood, {load}", users,
                                     inflight, root_getfs, root_list, total):
                return

    def _under_flood(self, fs_obj: str, flood: str, load: str, users: int, inflight: int,
                     root_getfs: Callable[[], list[float]],
                     root_list: Callable[[], list[float]], total: int) -> bool:
        """One load of run_limit; False when btrfsd did not survive it."""
        floods = [self.spawn(fs_obj, flood, str(inflight), user=TEST_USER)
                  for _ in range(users)]
        try:
            for proc in floods:
                assert proc.stderr is not None
                proc.stderr.readline()  # "ready"
            time.sleep(1.0)  # every loop has calls running
            start = time.perf_counter()
            getfs = root_getfs()
            lists = root_list()
            seconds = time.perf_counter() - start
        except RuntimeError as e:
            if self.sb._procs["btrfsd"].poll() is None:
                raise
            self.notes.append(f"btrfsd EXITED under the load ({load}); root's call got: "
                              f"{str(e).strip().splitlines()[-1]}")
            print(self.sb.daemon_log()[-6000:], file=sys.stderr)
            for proc in floods:
                proc.kill()
                proc.communicate()
            return False
        finally:
            for proc in floods:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
        got = [self.collect(p) for p in floods]
        self.add(f"limit: GetFilesystems, root, under load ({load})", getfs)
        self.add(f"limit: list {total}, root, under load ({load})", lists)
        user_ok = [t for g in got for t in g["ok"]]
        self.add(f"limit: the user's answered calls under load ({load})", user_ok)
        self.limits.append((load, seconds, len(user_ok), sum(g["busy"] for g in got),
                            sum(g["other"] for g in got)))
        return True

    SOAK_SLOPE_KIB = 50.0  # per 10,000 calls: "no growth" (see run_memory)

    def run_memory(self, fs: LoopFs, size: int, calls: int, soak: int, clients: int,
                   chunks: int = 20) -> None:
        """Issue 11's memory targets, on ``fs`` (its own filesystem, so the other sections'
        rows do not change). btrfsd's RSS where it starts (its idle RSS once it serves
        ``fs``), after listing ``size`` subvolumes (10 ListSubvolumes calls) and after
        ``calls`` further small calls (GetFilesystems and GetSubvolume in turn, from 2
        clients); then a soak of ``soak`` small calls from ``clients`` client processes
        at once, in ``chunks`` rounds, RSS sampled after each, and the least-squares
        slope of RSS over calls. The first round is left out of the slope: it is the
        warm-up (allocator arenas of threads that first run, caches filled once)."""
        pid = self.sb._procs["btrfsd"].pid
        fs_obj = self.many_fs(fs)
        sub = str(fs.mount_point / "source")
        start = rss_parts(pid)
        total = self.populate(fs, size) + 1
        listed, rows = self.list_rows(fs_obj, 10)
        self.add(f"memory: list {total} subvolumes, D-Bus ListSubvolumes ({rows} rows)",
                 listed)
        after_list = rss_parts(pid)
        per = max(1, calls // 2)
        procs = [self.spawn(fs_obj, "small", str(per), sub) for _ in range(2)]
        small = [t for p in procs for t in self.collect(p)]
        self.add("memory: GetFilesystems / GetSubvolume, 2 clients at once", small)
        after_calls = rss_parts(pid)
        for what, got in (("where it started", start), (f"after listing {total}", after_list),
                          (f"after {len(small)} more small calls", after_calls)):
            self.memory.append(f"btrfsd RSS {what}: {got['VmRSS'] / 1024:.1f} MiB (anon "
                               f"{got['RssAnon'] / 1024:.1f}, file {got['RssFile'] / 1024:.1f})")
        idle = start["VmRSS"] / 1024
        self.memory_targets.append(
            f"target (issue 11): idle RSS under 35 MiB: {idle:.1f} MiB -> "
            f"{'met' if idle < 35 else 'not met'}")
        grew = (after_calls["VmRSS"] - start["VmRSS"]) / 1024
        self.memory_targets.append(
            f"target (issue 11): RSS after listing {total} and {len(small)} calls within "
            f"5 MiB of where it started: {grew:+.1f} MiB -> "
            f"{'met' if grew <= 5 else 'not met'}")
        self._soak(fs_obj, sub, soak, clients, chunks, pid)

    def _soak(self, fs_obj: str, sub: str, soak: int, clients: int, chunks: int,
              pid: int) -> None:
        per = max(1, soak // (chunks * clients))
        xs: list[float] = []
        ys: list[float] = []
        samples: list[float] = []
        done = 0
        began = time.perf_counter()
        for _ in range(chunks):
            procs = [self.spawn(fs_obj, "small", str(per), sub) for _ in range(clients)]
            for p in procs:
                samples.extend(self.collect(p))
            done += per * clients
            xs.append(done)
            ys.append(rss_kib(pid))
        seconds = time.perf_counter() - began
        self.add(f"memory: soak, GetFilesystems / GetSubvolume, {clients} clients at once",
                 samples)
        kib = slope(xs[1:], ys[1:]) * 10_000
        self.memory.append(
            f"soak: {done} calls from {clients} clients in {seconds:.1f} s "
            f"({done / seconds:.0f} calls/s); RSS after each {per * clients}: "
            + " ".join(f"{y / 1024:.1f}" for y in ys) + " MiB")
        self.memory_targets.append(
            f"target (issue 11): no growth over a soak of {done} calls: slope "
            f"{kib:+.1f} KiB per 10,000 calls (after the first {per * clients}), under "
            f"{self.SOAK_SLOPE_KIB:.0f} -> {'met' if kib < self.SOAK_SLOPE_KIB else 'not met'}")

    def reader(self, seconds: float) -> subprocess.Popen[str]:
        """A client calling GetFilesystems back to back for ``seconds``, once connected."""
        proc = self.spawn(self.fs_obj, "getfs_for", str(seconds))
        assert proc.stderr is not None
        proc.stderr.readline()  # "ready"
        return proc

    def run_stall(self, rounds: int = 3, mib: int = 256) -> None:
        """Read calls from another client while a snapshot flushes ``mib`` MiB of dirty
        data: through btrfsd, and while a separate process does the same snapshot with
        raw btrfsutil (the kernel's own share of the delay)."""
        src = self.mnt / "flushed"
        btrfsutil.create_subvolume(str(src))
        d = self.dir("stall")
        self.add("read call (GetFilesystems), idle", self.collect(self.reader(1.0)))
        dirty = os.urandom(1 << 20)
        results: dict[str, list[float]] = {}
        walls: dict[str, list[float]] = {}
        for r in range(rounds):
            for how in ("D-Bus", "raw btrfsutil"):
                with open(src / "big", "wb") as f:
                    for _ in range(mib):
                        f.write(dirty)
                reader = self.reader(2.0)
                time.sleep(0.2)
                if how == "D-Bus":
                    wall_s = self.dbus("snapshot", 1, str(src),
                                       str(self.fresh_dir(d / f"dbus{r}")))[0]
                else:  # in this process: its GIL does not hold up the reader
                    wall_s = wall(functools.partial(btrfsutil.create_snapshot, str(src),
                                                    str(d / f"raw{r}"), read_only=True))
                walls.setdefault(how, []).append(wall_s)
                results.setdefault(how, []).extend(self.collect(reader))
        for how, samples in results.items():
            self.add(f"read call while a {how} snapshot flushes {mib} MiB", samples)
            self.stalls.append((how, pct(samples, 100), pct(walls[how], 50)))

    def table(self, rss: dict[str, int]) -> str:
        width = max(len(n) for n, _ in self.rows)
        lines = [f"{'measurement':<{width}}  {'n':>5}  {'p50 ms':>8}  {'p99 ms':>8}",
                 "-" * (width + 27)]
        for name, s in self.rows:
            lines.append(f"{name:<{width}}  {len(s):>5}  {pct(s, 50):>8.2f}  {pct(s, 99):>8.2f}")
        lines.append("")
        for how, worst, wall_ms in self.stalls:
            lines.append(f"longest read call while a {how} snapshot flushed: "
                         f"{worst:.1f} ms (the snapshot took {wall_ms:.0f} ms)")
        for load, seconds, ok, busy, other in self.limits:
            lines.append(f"user's calls during root's {seconds:.1f} s under load "
                         f"({load}): {ok} answered, {busy} refused Busy, {other} other errors")
        lines.extend(self.notes)
        lines.extend(self.memory)
        for k, v in rss.items():
            lines.append(f"btrfsd RSS {k}: {v / 1024:.1f} MiB")
        lines.extend(self.targets())
        return "\n".join(lines)

    def p50(self, prefix: str) -> float | None:
        found = [pct(s, 50) for n, s in self.rows if n.startswith(prefix)]
        return found[-1] if found else None

    def targets(self) -> list[str]:
        """Issue 2's targets, judged on this run's own rows."""
        out = [""]
        raw = self.p50("snapshot create (ro), raw btrfsutil")
        for who, polkit_row in (("root", "polkit CheckAuthorization, root"),
                                ("non-root", "polkit CheckAuthorization, non-root")):
            dbus = self.p50(f"snapshot create (ro), D-Bus {who}")
            polkit = self.p50(polkit_row)
            if raw is None or dbus is None or polkit is None:
                continue
            limit = raw + polkit + 1.0
            out.append(f"target: snapshot p50 over D-Bus ({who}) <= raw + polkit + 1 ms: "
                       f"{dbus:.2f} vs {limit:.2f} -> "
                       f"{'met' if dbus <= limit else f'over by {dbus - limit:.2f} ms'}")
        lists = [n for n, _ in self.rows if n.endswith("D-Bus ListSubvolumes")]
        for name in lists:
            size = name.split()[1]
            if int(size) < 10_000:
                continue  # the issue sets this target for 10,000 snapshots
            rows = dict(self.rows)  # exact names: one is a prefix of the other
            cli = self.p50(f"list {size} subvolumes, btrfs subvolume list")
            dbus = pct(rows[name], 50)
            if cli:
                out.append(f"target: list {size} over D-Bus within 2x the CLI: "
                           f"{dbus / cli:.2f}x -> {'met' if dbus <= 2 * cli else 'not met'}")
                # issue 11: within 1x, answered again from the last listing and right
                # after a change (a full scan)
                for row in (name, name + " (the CLI's columns)", name + " after a change"):
                    if row in rows:
                        t = pct(rows[row], 50)
                        out.append(f"target (issue 11): {row.split(', ', 1)[1]} of {size} "
                                   f"within 1x the CLI: {t / cli:.2f}x -> "
                                   f"{'met' if t <= cli else 'not met'}")
        out.extend(self.memory_targets)
        out.extend(self.privacy_targets())
        out.extend(self.limit_ratios())
        return out

    def limit_ratios(self) -> list[str]:
        """Root's calls under each of the user's loads / idle (p50 and p99), and the
        issue's target: a flood of expensive reads slows root's calls no more than a
        flood of the cheapest call does (1.5x of it at p50; the cheap flood is the floor
        any D-Bus service has)."""
        out = []
        rows = dict(self.rows)
        under: dict[tuple[str, str], list[float]] = {}  # (what, flood) -> samples
        for name, s in self.rows:
            if not name.startswith("limit: ") or ", root, under load" not in name:
                continue
            what, _, load = name[len("limit: "):].partition(", root, under load (")
            under[(what, load.partition(" flood")[0])] = s
            idle = rows.get(f"limit: {what}, root, idle")
            if idle:
                out.append(f"ratio: {what}, root, under load ({load} / idle: p50 "
                           f"{pct(s, 50) / pct(idle, 50):.2f}x, "
                           f"p99 {pct(s, 99) / pct(idle, 99):.2f}x")
        for (what, flood), s in under.items():
            floor = under.get((what, "GetFilesystems"))
            if flood == "GetFilesystems" or floor is None:
                continue
            ratio = pct(s, 50) / pct(floor, 50)
            out.append(f"target: root's {what} p50 under the {flood} flood within 1.5x of "
                       f"under the GetFilesystems flood: {ratio:.2f}x -> "
                       f"{'met' if ratio <= 1.5 else 'not met'}")
        return out

    def privacy_rows(self) -> dict[tuple[str, str, str], tuple[list[float], int]]:
        """(size, variant, who) -> (samples, rows) of the privacy section's rows."""
        found: dict[tuple[str, str, str], tuple[list[float], int]] = {}
        for name, s in self.rows:
            if not name.startswith("privacy: list "):
                continue
            head, _, rows = name.rpartition(" (")
            size, _, rest = head[len("privacy: list "):].partition(", ")
            variant, _, who = rest.rpartition(", ")
            found[(size, variant, who)] = (s, int(rows.split()[0]))
        return found

    def privacy_targets(self) -> list[str]:
        """Issue 17: the unprivileged caller's listing of 10,000 within 1.5x of root's
        (p50; judged where the user sees every row). Ratios for every size and variant."""
        found = self.privacy_rows()
        out: list[str] = []
        for (size, variant, who), (s, rows) in found.items():
            if who == "root":
                continue
            root = found.get((size, variant, "root"))
            if root is None:
                continue
            r50 = pct(s, 50) / pct(root[0], 50)
            r99 = pct(s, 99) / pct(root[0], 99)
            what = (f"list {size}{', ' + variant if variant else ''}: {who} / root "
                    f"p50 {r50:.2f}x, p99 {r99:.2f}x ({rows} vs {root[1]} rows)")
            if who == "user" and not variant and int(size) >= 10_000:
                out.append(f"target: {what}, within 1.5x -> "
                           f"{'met' if r50 <= 1.5 else 'not met'}")
            else:
                out.append(f"ratio: {what}")
        return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--list-sizes", default="1000,10000")
    ap.add_argument("--privacy-reps", type=int, default=30,
                    help="ListSubvolumes calls per row of the read-privacy section")
    ap.add_argument("--sections", default="create,list,privacy,stall",
                    help="which sections to run, of create,list,privacy,stall,limit,memory")
    ap.add_argument("--limit-users", type=int, default=4,
                    help="limit section: client processes of the unprivileged user")
    ap.add_argument("--limit-inflight", type=int, default=4,
                    help="limit section: ListSubvolumes calls each of them keeps running")
    ap.add_argument("--limit-reps", type=int, default=20,
                    help="limit section: root's ListSubvolumes calls per row "
                         "(GetFilesystems: 10x as many)")
    ap.add_argument("--memory-size", type=int, default=10_000,
                    help="memory section: subvolumes listed")
    ap.add_argument("--memory-calls", type=int, default=10_000,
                    help="memory section: small calls after the listing")
    ap.add_argument("--soak-calls", type=int, default=100_000,
                    help="memory section: small calls of the soak (RSS slope)")
    ap.add_argument("--soak-clients", type=int, default=4,
                    help="memory section: client processes calling at once in the soak")
    ap.add_argument("--daemon-config", default="", metavar="TOML",
                    help="btrfsd.toml text for the daemon, e.g. 'read_share = 1.0'")
    ap.add_argument("--stall", action=argparse.BooleanOptionalAction, default=True,
                    help="read calls while a snapshot flushes dirty data")
    args = ap.parse_args()
    sections = set(args.sections.split(","))
    if unknown := sections - {"create", "list", "privacy", "stall", "limit",
                                    "memory"}:
        ap.error(f"unknown sections: {', '.join(sorted(unknown))}")
    if not args.stall:
        sections.discard("stall")
    sizes = [int(x) for x in args.list_sizes.split(",")]
    if not is_root():
        return 2
    with bench_sandbox(args.daemon_config) as sb:
        sb.add_filesystem("8G", "btrfsd-bench")
        priv = (sb.add_filesystem("8G", "btrfsd-bench-priv")
                if sections & {"privacy", "limit"} else None)
        # the memory section's own filesystem: its 10,000 snapshots change no other row
        mem = sb.add_filesystem("8G", "btrfsd-bench-mem") if "memory" in sections else None
        sb.wait_for_name("org.btrfsd1")
        time.sleep(0.5)  # let the daemon see the new mount
        pid = sb._procs["btrfsd"].pid
        b = Bench(sb, args.n)
        rss = {"idle": rss_kib(pid)}
        try:
            if mem is not None:  # first: where btrfsd starts is its idle RSS
                b.run_memory(mem, args.memory_size, args.memory_calls, args.soak_calls,
                             args.soak_clients)
            if "create" in sections:
                b.run_create_and_snapshot()
            if "list" in sections:
                b.run_list(sizes)
            if priv is not None and "privacy" in sections:  # its own filesystem: the
                b.run_privacy(priv, sizes, args.privacy_reps)  # rows above do not change it
            if priv is not None and "limit" in sections:  # the same one, largest size
                b.run_limit(priv, max(sizes), args.limit_users, args.limit_inflight,
                            10 * args.limit_reps, args.limit_reps)
            if "stall" in sections:  # last: its big files would slow the snapshots above
                b.run_stall()
        except Exception:
            print(sb.daemon_log()[-4000:], file=sys.stderr)
            raise
        if sb._procs["btrfsd"].poll() is None:
            rss["after runs"] = rss_kib(pid)
        print(b.table(rss))
    return 0


if __name__ == "__main__":
    sys.exit(main())
