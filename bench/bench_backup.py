"""Benchmark: backups (issue 14). btrfsd's RunBackup job against `btrfs send | btrfs
receive` in a shell pipe, for a full send of 1 GiB and an incremental after 1% of it
changed; and a small read call's latency idle and while a full backup runs.

Run as root: scripts/dev bench backup [--runs 3] [--mib 1024] [--files 64]
[--changed-mib 10] [--read-gap-ms 5] [--py-spy FILE]
Two loop images: the source (a subvolume with --mib MiB of random data in --files
files) and the target (one directory per way of sending). Each round, the rows run one
after the other, their order rotated round by round so machine noise hits all alike:
- full: each way sends a fresh snapshot of the unchanged source into an empty target
  directory;
- then --changed-mib MiB are rewritten in place (in five files) and each way sends a new
  snapshot incrementally against its own full copy;
- the ways: btrfsd (RunBackup, timed from the call to the job's Completed signal: takes
  the snapshot, sends, receives, verifies, applies retention); `btrfs send -q [-p PARENT]
  SNAP | btrfs receive -q DIR` in a bash pipe, of a snapshot taken untimed just before
  (the issue's reference); and `btrfs subvolume snapshot -r` then that pipe, timed
  together (the same work as the job);
- every timed run ends with `sync -f` of the target filesystem, timed too (the same for
  every way), and starts after an untimed `sync -f` of both filesystems;
- read latency: this process calls GetFilesystems and GetSubvolume(source) in turn,
  one call every --read-gap-ms over a connection of its own, idle for as long as this
  round's full btrfsd run took, then while a full backup runs (call to Completed);
- at the end of a round every copy and every snapshot is deleted (and the cleaner waited
  for), so each round starts alike.
Prints p50/min/max seconds and MB/s (the stream's bytes, the job's BytesDone, over wall
seconds) per row, p50/p99 of the read calls, and the targets judged on this run's numbers.
--py-spy FILE records the daemon's Python stacks (every thread, idle ones too) for the
whole run into FILE, collapsed (py-spy's raw format; py-spy must be in the venv).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import bench_sandbox, is_root, pct, wall

MiB = 1 << 20
NAME = "bench"
MANAGER = "/org/btrfsd1"
OURS = "btrfsd RunBackup"
PIPE = "send | receive"
SNAP_PIPE = "snapshot -r; send | receive"
WAYS = (OURS, PIPE, SNAP_PIPE)
FULL, INCR = "full", "incremental"
READS = ("GetFilesystems", "GetSubvolume")
IDLE, BUSY_OURS, BUSY_PIPE = "idle", "during a btrfsd backup", "during a send | receive"
TARGET_RATIO = 1.1
TARGET_LATENCY = 2.0


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def sync(*mounts: Path) -> None:
    for m in mounts:
        sh("sync", "-f", str(m))


def fill(sv: Path, mib: int, files: int) -> None:
    """``mib`` MiB of random data in ``files`` files, synced."""
    per = mib * MiB // files
    for i in range(files):
        with open(sv / f"f{i:03d}", "wb") as f:
            left = per
            while left:
                n = min(left, 16 * MiB)
                f.write(os.urandom(n))
                left -= n
    sync(sv)


def change(sv: Path, files: int, mib: int, round_no: int) -> None:
    """Rewrite ``mib`` MiB in place with new random data, spread over five files (other
    files each round), synced."""
    count = 5
    piece = mib * MiB // count
    for k in range(count):
        fd = os.open(sv / f"f{(round_no * count + k) % files:03d}", os.O_WRONLY)
        try:
            os.pwrite(fd, os.urandom(piece), MiB)
        finally:
            os.close(fd)
    sync(sv)


def subvolumes_in(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir()
                  if p.is_dir() and not p.is_symlink() and p.stat().st_ino == 256)


def delete_all(dirs: list[Path], mount: Path) -> None:
    """Delete every subvolume directly in ``dirs`` and wait until the cleaner has
    removed them (no background work left for the next run)."""
    gone = [str(p) for d in dirs for p in subvolumes_in(d)]
    if gone:
        sh("btrfs", "subvolume", "delete", *gone)
    sh("btrfs", "subvolume", "sync", str(mount))


@dataclass
class Places:
    source_mnt: Path
    target_mnt: Path
    data: Path  # the source subvolume
    pipe_snaps: Path  # snapshots the pipes send (btrfsd's are in data/.snapshots)
    targets: dict[str, Path]  # by way
    source_obj: str  # the source filesystem's D-Bus object
    parents: dict[str, Path] = field(default_factory=dict)  # by way: the last sent

    def cleanup(self) -> None:
        delete_all(list(self.targets.values()), self.target_mnt)
        delete_all([self.data / ".snapshots", self.pipe_snaps], self.source_mnt)
        self.parents.clear()


class Client:
    """This process's D-Bus connection: RunBackup and the jobs' Completed signals."""

    def __init__(self) -> None:
        self.bus: MessageBus | None = None
        self.ended: dict[str, tuple[float, bool, str]] = {}
        self.changed = asyncio.Event()

    async def connect(self) -> MessageBus:
        self.bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
        self.bus.add_message_handler(self._on_message)
        await self.call("org.freedesktop.DBus", "/org/freedesktop/DBus",
                        "org.freedesktop.DBus", "AddMatch", "s",
                        "type='signal',interface='org.btrfsd1.Job',member='Completed'")
        return self.bus

    def _on_message(self, msg: Message) -> None:
        if msg.message_type == MessageType.SIGNAL and msg.member == "Completed":
            self.ended[str(msg.path)] = (time.perf_counter(), msg.body[0], msg.body[1])
            self.changed.set()

    async def call(self, dest: str, path: str, iface: str, member: str, sig: str,
                   *body: Any) -> list[Any]:
        """One call's reply body. Raises RuntimeError for an error reply."""
        assert self.bus is not None
        reply = await self.bus.call(Message(destination=dest, path=path, interface=iface,
                                            member=member, signature=sig, body=list(body)))
        assert reply is not None
        if reply.message_type == MessageType.ERROR:
            raise RuntimeError(f"{member}: {reply.error_name}: {reply.body}")
        return reply.body  # type: ignore[no-any-return]

    async def manager(self, member: str, sig: str, *body: Any) -> list[Any]:
        return await self.call("org.btrfsd1", MANAGER, "org.btrfsd1.Manager", member, sig,
                               *body)

    async def run_backup(self) -> tuple[float, dict[str, Any]]:
        """Seconds from the RunBackup call to the job's Completed signal, and the job's
        properties. Raises RuntimeError when the job did not succeed."""
        t0 = time.perf_counter()
        (job,) = await self.manager("RunBackup", "sa{sv}", NAME, {})
        while job not in self.ended:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 600)
        t1, success, message = self.ended.pop(job)
        (props,) = await self.call("org.btrfsd1", job, "org.freedesktop.DBus.Properties",
                                   "GetAll", "s", "org.btrfsd1.Job")
        if not success:
            raise RuntimeError(f"the backup failed: {message}")
        return t1 - t0, {k: unwrap(v) for k, v in props.items()}


def unwrap(v: Any) -> Any:
    if isinstance(v, Variant):
        return unwrap(v.value)
    if isinstance(v, dict):
        return {k: unwrap(x) for k, x in v.items()}
    return v


class Bench:
    def __init__(self, client: Client, places: Places, args: argparse.Namespace) -> None:
        self.client, self.p, self.args = client, places, args
        self.seconds: dict[tuple[str, str], list[float]] = {}  # sync included
        self.synced: dict[tuple[str, str], list[float]] = {}  # of which sync
        self.stream: dict[str, list[int]] = {FULL: [], INCR: []}  # the job's BytesDone
        self.reads: dict[tuple[str, str], list[float]] = {}
        self.n_snap = 0

    # -- the three ways of sending -----------------------------------------------------
    def _pipe(self, way: str, kind: str) -> tuple[list[str], Path]:
        """The bash command line of a pipe way (timed) and the snapshot it sends."""
        p = self.p
        self.n_snap += 1
        snap = p.pipe_snaps / f"s{self.n_snap:04d}"
        parent = ["-p", str(p.parents[way])] if kind == INCR else []
        script = ('set -euo pipefail; btrfs send -q "$@" | btrfs receive -q '
                  f'"{p.targets[way]}"')
        if way == SNAP_PIPE:
            script = f'btrfs subvolume snapshot -r "{p.data}" "{snap}" >/dev/null; {script}'
        else:
            sh("btrfs", "subvolume", "snapshot", "-r", str(p.data), str(snap))
        return ["bash", "-c", script, "bash", *parent, str(snap)], snap

    async def one(self, way: str, kind: str) -> None:
        """One timed run of ``way``: seconds until it is done, then of ``sync -f`` of
        the target."""
        p = self.p
        sync(p.source_mnt, p.target_mnt)
        if way == OURS:
            seconds, props = await self.client.run_backup()
            if props["Details"]["incremental"] != (kind == INCR):
                raise RuntimeError(f"a {kind} run sent {props['Details']}")
            self.stream[kind].append(props["BytesDone"])
            p.parents[way] = Path(props["Details"]["snapshot"])
        else:
            argv, p.parents[way] = self._pipe(way, kind)
            seconds = wall(lambda: sh(*argv))
        synced = wall(lambda: sync(p.target_mnt))
        self.seconds.setdefault((kind, way), []).append(seconds + synced)
        self.synced.setdefault((kind, way), []).append(synced)
        print(f"    {kind}: {way}: {seconds:.3f} + sync {synced:.3f} s", file=sys.stderr,
              flush=True)

    # -- read calls ----------------------------------------------------------------------
    async def reads_while(self, done: asyncio.Future[Any], label: str) -> None:
        """Read calls over a connection of their own, one every --read-gap-ms, until
        ``done``; seconds per call kept under (label, call)."""
        bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
        gap = self.args.read_gap_ms / 1000
        calls: dict[str, dict[str, Any]] = {
            "GetFilesystems": dict(path=MANAGER, interface="org.btrfsd1.Manager",
                                   member="GetFilesystems", signature="a{sv}", body=[{}]),
            "GetSubvolume": dict(path=self.p.source_obj, interface="org.btrfsd1.Filesystem",
                                 member="GetSubvolume", signature="sa{sv}",
                                 body=[str(self.p.data), {}]),
        }
        try:
            i = 0
            while not done.done():
                name = READS[i % 2]
                msg = Message(destination="org.btrfsd1", **calls[name])  # a serial each
                t = time.perf_counter()
                reply = await bus.call(msg)
                took = time.perf_counter() - t
                assert reply is not None
                if reply.message_type == MessageType.ERROR:
                    raise RuntimeError(f"{name}: {reply.error_name}: {reply.body}")
                self.reads.setdefault((label, name), []).append(took)
                i += 1
                await asyncio.wait({done}, timeout=gap)
        finally:
            bus.disconnect()

    async def latency_round(self, idle_seconds: float, r: int) -> None:
        """Read calls idle, during a full btrfsd backup and during a full `send |
        receive` pipe (the machine's share: the same kernel and disk work without
        btrfsd's job), the latter two in turns; everything sent is deleted after."""
        loop = asyncio.get_running_loop()
        p = self.p
        sync(p.source_mnt, p.target_mnt)
        idle: asyncio.Future[None] = loop.create_future()
        loop.call_later(idle_seconds, idle.set_result, None)
        await self.reads_while(idle, IDLE)
        for label in (BUSY_OURS, BUSY_PIPE)[::1 if r % 2 == 0 else -1]:
            sync(p.source_mnt, p.target_mnt)
            if label == BUSY_OURS:
                work: asyncio.Future[Any] = asyncio.ensure_future(self.client.run_backup())
            else:
                argv, _ = self._pipe(PIPE, FULL)
                work = asyncio.ensure_future(asyncio.to_thread(sh, *argv))
            await self.reads_while(work, label)
            await work
            p.cleanup()

    # -- a round ---------------------------------------------------------------------------
    async def round(self, r: int) -> None:
        a = self.args
        order = list(WAYS[r % 3:] + WAYS[:r % 3])
        for way in order:
            await self.one(way, FULL)
        change(self.p.data, a.files, a.changed_mib, r)
        for way in order:
            await self.one(way, INCR)
        self.p.cleanup()
        last = self.seconds[(FULL, OURS)][-1] - self.synced[(FULL, OURS)][-1]
        await self.latency_round(max(last, 2.0), r)


def cell(text: str) -> str:
    """A markdown table cell's text (a bar inside a cell must be escaped)."""
    return text.replace("|", "\\|")


def row(label: str, seconds: list[float], synced: list[float], stream: list[int]) -> str:
    p50 = pct(seconds, 50) / 1000
    before = pct([t - s for t, s in zip(seconds, synced, strict=True)], 50) / 1000
    rate = sorted(stream)[len(stream) // 2] / p50 / 1e6
    return (f"| {label:<42} | {len(seconds):>2} | {p50:>7.3f} | {min(seconds):>7.3f} | "
            f"{max(seconds):>7.3f} | {before:>17.3f} | {pct(synced, 50) / 1000:>13.3f} | "
            f"{rate:>6.1f} |")


def report(b: Bench) -> None:
    a = b.args
    print(f"\nBackup of {a.mib} MiB in {a.files} files; incremental after {a.changed_mib} MiB "
          f"rewritten; {a.runs} runs per row, interleaved; each run ends with a timed "
          "`sync -f` of the target. MB/s: the stream's bytes (the job's BytesDone, "
          f"median: full {sorted(b.stream[FULL])[a.runs // 2] / 1e6:.1f} MB, incremental "
          f"{sorted(b.stream[INCR])[a.runs // 2] / 1e6:.1f} MB) over p50 seconds.\n")
    print(f"| {'row':<42} | {'n':>2} | {'p50 s':>7} | {'min s':>7} | {'max s':>7} | "
          "p50 s before sync | p50 s of sync |   MB/s |")
    print(f"|{'-' * 44}|{'-' * 3}:|{'-' * 8}:|{'-' * 8}:|{'-' * 8}:|{'-' * 19}:|"
          f"{'-' * 15}:|{'-' * 7}:|")
    for (kind, way), seconds in sorted(b.seconds.items(),
                                       key=lambda kv: (kv[0][0] != FULL, WAYS.index(kv[0][1]))):
        print(row(cell(f"{kind}: {way}"), seconds, b.synced[(kind, way)],
                  b.stream[kind]))
    print(f"\nRead calls from a client, one every {a.read_gap_ms} ms\n")
    print(f"| {'call':<42} | {'n':>5} | {'p50 ms':>7} | {'p99 ms':>7} | {'max ms':>7} |")
    print(f"|{'-' * 44}|{'-' * 6}:|{'-' * 8}:|{'-' * 8}:|{'-' * 8}:|")
    labels = (IDLE, BUSY_OURS, BUSY_PIPE)
    for (label, name), s in sorted(b.reads.items(),
                                   key=lambda kv: (kv[0][1], labels.index(kv[0][0]))):
        print(f"| {cell(name + ', ' + label):<42} | {len(s):>5} | {pct(s, 50):>7.2f} | "
              f"{pct(s, 99):>7.2f} | {max(s) * 1000:>7.2f} |")
    print()
    for kind in (FULL, INCR):
        ours = pct(b.seconds[(kind, OURS)], 50)
        for ref in (PIPE, SNAP_PIPE):
            ratio = ours / pct(b.seconds[(kind, ref)], 50)
            best = min(b.seconds[(kind, OURS)]) / min(b.seconds[(kind, ref)])
            unsynced = before_sync(b, kind, OURS) / before_sync(b, kind, ref)
            print(f"target: {kind} {OURS} within {TARGET_RATIO}x of `{ref}`: sync included "
                  f"p50 {ratio:.2f}x (min {best:.2f}x) -> {judge(ratio)}; before the sync "
                  f"p50 {unsynced:.2f}x -> {judge(unsynced)}")
    for name in READS:
        idle = pct(b.reads[(IDLE, name)], 99)
        busy = pct(b.reads[(BUSY_OURS, name)], 99)
        pipe = pct(b.reads[(BUSY_PIPE, name)], 99)
        verdict = "met" if busy <= TARGET_LATENCY * idle else "not met"
        print(f"target: {name} p99 during a backup within {TARGET_LATENCY}x of idle: "
              f"{busy:.2f} / {idle:.2f} ms = {busy / idle:.2f}x -> {verdict} (during a "
              f"send | receive pipe: {pipe / idle:.2f}x)")


def judge(ratio: float) -> str:
    return "met" if ratio <= TARGET_RATIO else "not met"


def before_sync(b: Bench, kind: str, way: str) -> float:
    """p50 seconds of a row without its sync."""
    pairs = zip(b.seconds[(kind, way)], b.synced[(kind, way)], strict=True)
    return pct([t - s for t, s in pairs], 50)


async def wait_for_filesystems(client: Client, objs: list[str]) -> None:
    """Until the daemon lists both new filesystems. Raises TimeoutError."""
    deadline = time.monotonic() + 30
    while not set(objs) <= set((await client.manager("GetFilesystems", "a{sv}", {}))[0]):
        if time.monotonic() > deadline:
            raise TimeoutError("btrfsd never saw the bench's filesystems")
        await asyncio.sleep(0.1)


async def bench(places: Places, args: argparse.Namespace, target_obj: str) -> Bench:
    client = Client()
    bus = await client.connect()
    try:
        await wait_for_filesystems(client, [places.source_obj, target_obj])
        await client.manager("SetBackup", "sssa{sv}", NAME, str(places.data),
                             str(places.targets[OURS]), {"keep_last": Variant("u", 1000)})
        b = Bench(client, places, args)
        for r in range(args.runs):
            await b.round(r)
            print(f"  round {r + 1}/{args.runs}", file=sys.stderr, flush=True)
        return b
    finally:
        bus.disconnect()


def record(pid: int, out: str) -> subprocess.Popen[bytes]:
    """py-spy recording process ``pid`` into ``out`` until SIGINT."""
    return subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-p",
                             str(pid), "-o", out, "--format", "raw", "--threads", "--idle",
                             "--rate", "250", "--nonblocking"], stdout=subprocess.DEVNULL)


def fs_obj(uuid: str) -> str:
    return "/org/btrfsd1/filesystems/" + uuid.replace("-", "_")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="runs per row")
    ap.add_argument("--mib", type=int, default=1024, help="data in the source subvolume")
    ap.add_argument("--files", type=int, default=64)
    ap.add_argument("--changed-mib", type=int, default=10, help="rewritten before the "
                    "incremental")
    ap.add_argument("--read-gap-ms", type=float, default=5.0)
    ap.add_argument("--py-spy", metavar="FILE", help="record the daemon's stacks")
    args = ap.parse_args()
    if not is_root():
        return 1
    gib = -(-args.mib // 1024)
    with bench_sandbox() as sb:
        # the source holds the data once (snapshots share it); the target a full copy
        # per way at once, the incrementals beside them
        src = sb.add_filesystem(f"{2 * gib + 1}G", "btrfsd-bk-source")
        tgt = sb.add_filesystem(f"{3 * gib + 2}G", "btrfsd-bk-target")
        data = src.mount_point / "data"
        sh("btrfs", "subvolume", "create", str(data))
        print(f"  writing {args.mib} MiB", file=sys.stderr, flush=True)
        fill(data, args.mib, args.files)
        pipe_snaps = src.mount_point / "pipe-snaps"
        pipe_snaps.mkdir()
        targets = {way: tgt.mount_point / f"to-{i}" for i, way in enumerate(WAYS)}
        for d in targets.values():
            d.mkdir(mode=0o755)
        places = Places(src.mount_point, tgt.mount_point, data, pipe_snaps, targets,
                        fs_obj(src.uuid))
        spy = record(sb._procs["btrfsd"].pid, args.py_spy) if args.py_spy else None
        try:
            b = asyncio.run(bench(places, args, fs_obj(tgt.uuid)))
        except Exception:
            print(sb.daemon_log()[-4000:], file=sys.stderr)
            raise
        finally:
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its file and exits
                spy.wait(60)
    report(b)
    return 0


if __name__ == "__main__":
    sys.exit(main())
