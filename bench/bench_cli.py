"""Benchmark: whole-process btrfsctl beside the btrfs CLI and snapper (issue 11).

Run as root: scripts/dev bench cli [--snapshots 1000] [--n 20] [--no-snapper]
One loop image: a subvolume with --snapshots read-only snapshots (what `btrfsctl snapshot
list` lists), beside it a subvolume with a snapper config holding as many snapper
snapshots. Each row starts the command --n times (output to a pipe, as scripts read it)
and times the whole process from outside, start-up included; the rows of one section run
interleaved, a round at a time, so they share the machine's drift. New snapshots go to
their own directory, so the listings stay at --snapshots.

snapper runs as it does on a system: `snapper` talks to snapperd over a system bus, here
a private one of its own (a dbus-daemon with snapper's own policy file from the Debian
package; the sandbox's bus carries only btrfsd's and polkit's policy). Its config is
made with `snapper create-config` (machine-wide: /etc/snapper/configs/NAME and
SNAPPER_CONFIGS) and deleted again afterwards. --no-snapper leaves snapper out.
Prints p50/min/max per row and the issue's targets judged on this run's numbers.

Then the same operations over D-Bus, one dbus-fast client in this process (no start-up):
btrfsd's ListSubvolumes of the subvolume's snapshots against snapperd's ListSnapshots of
its config (interleaved, nothing changed between calls; btrfsd's twice: all columns,
and only the 6 that btrfsctl's table shows, the `columns` option), then btrfsd's
CreateSnapshot against snapperd's CreateSingleSnapshot, the polkit round trip btrfsd pays
per call (CheckAuthorization of this client for org.btrfsd1.snapshot-create, from the
same client) and a listing right after each create (it cannot be answered again).
Targets (issue 11): the listing within 2x of snapper's, the snapshot within snapper's
plus the polkit round trip.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import btrfsutil
from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import bench_sandbox, is_root, pct, wall
from sandbox import bus_config

BTRFSCTL = str(Path(sys.executable).parent / "btrfsctl")
# issue 11: whole process, p50
TARGETS = {"btrfsctl snapshot": 35.0, "btrfsctl snapshot list": 60.0,
           "btrfsctl --json snapshot list": 60.0}
SNAPPER = {"destination": "org.opensuse.Snapper", "path": "/org/opensuse/Snapper",
           "interface": "org.opensuse.Snapper"}
SNAPPER_POLICY = Path("/usr/share/dbus-1/system.d/org.opensuse.Snapper.conf")
# The columns btrfsctl's snapshot table shows (cli/plain.py): a listing with `columns`.
SHOWN_COLUMNS = ("id", "parent_id", "path", "read_only", "is_snapshot", "otime")
LIST_SHOWN = "D-Bus ListSubvolumes (snapshots_of, 6 columns)"


def run(argv: list[str], env: dict[str, str]) -> None:
    """Run one command to its end, its output read through a pipe. Raises RuntimeError
    if it fails."""
    r = subprocess.run(argv, env=env, capture_output=True, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise RuntimeError(f"{argv} exited {r.returncode}: {r.stderr.decode(errors='replace')}")


@contextlib.contextmanager
def snapper(mount: Path, name: str, env: dict[str, str]) -> Iterator[dict[str, str]]:
    """A private system bus with snapperd on it and a snapper config ``name`` for the
    subvolume ``mount``; yields the environment for `snapper` commands. Everything is
    removed afterwards (config, snapshots, snapperd, the bus)."""
    work = Path(tempfile.mkdtemp(prefix="btrfsd-snapper-"))
    conf = work / "bus.conf"
    (work / "services").mkdir()
    # the sandbox's bus, with snapper's policy where btrfsd's would be
    conf.write_text(bus_config(work / "socket", work / "services", SNAPPER_POLICY))
    procs: list[subprocess.Popen[bytes]] = []
    senv = dict(env, DBUS_SYSTEM_BUS_ADDRESS=f"unix:path={work / 'socket'}")
    try:
        procs.append(subprocess.Popen(["dbus-daemon", f"--config-file={conf}", "--nofork"],
                                      stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 10
        while not (work / "socket").exists():
            if time.monotonic() > deadline:
                raise TimeoutError("snapper's bus did not start")
            time.sleep(0.02)
        procs.append(subprocess.Popen(["/usr/sbin/snapperd"], env=senv,
                                      stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        while subprocess.run(["busctl", f"--address={senv['DBUS_SYSTEM_BUS_ADDRESS']}",
                              "status", "org.opensuse.Snapper"],
                             capture_output=True).returncode != 0:
            if time.monotonic() > deadline or procs[-1].poll() is not None:
                raise RuntimeError("snapperd did not take its name on its bus")
            time.sleep(0.05)
        run(["snapper", "-c", name, "create-config", str(mount)], senv)
        try:
            yield senv
        finally:
            subprocess.run(["snapper", "-c", name, "delete-config"], env=senv,
                           capture_output=True)
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(10)
        shutil.rmtree(work, ignore_errors=True)
        _forget_config(name)


def _forget_config(name: str) -> None:
    """Leave no trace of config ``name`` if delete-config could not remove it."""
    with contextlib.suppress(FileNotFoundError):
        Path("/etc/snapper/configs", name).unlink()
    configs = Path("/etc/default/snapper")
    if configs.exists():
        text = configs.read_text()
        lines = [line if not line.startswith("SNAPPER_CONFIGS=") else
                 'SNAPPER_CONFIGS="' + " ".join(
                     c for c in line.split("=", 1)[1].strip('"').split() if c != name) + '"'
                 for line in text.splitlines()]
        if lines != text.splitlines():
            configs.write_text("\n".join(lines) + "\n")


def rounds(rows: dict[str, list[str] | None], n: int, env: dict[str, str],
           envs: dict[str, dict[str, str]]) -> dict[str, list[float]]:
    """Seconds of ``n`` runs of each command line (None: a row left out), interleaved a
    round at a time; a "{i}" in an argument becomes the run's number."""
    times: dict[str, list[float]] = {name: [] for name, argv in rows.items() if argv}
    for i in range(n):
        for name in times:
            argv = [a.replace("{i}", str(i)) for a in rows[name] or []]
            e = envs.get(name, env)
            times[name].append(wall(lambda argv=argv, e=e: run(argv, e)))
        print(f"  round {i + 1}/{n}", file=sys.stderr, flush=True)
    return times


async def _dbus_rounds(address: str, snapper_address: str | None, fs_path: str, src: Path,
                       made: Path, config: str, n: int) -> dict[str, list[float]]:
    """Seconds per call of the D-Bus rows (see the module's doc), ``n`` rounds
    interleaved. Raises RuntimeError when a call fails."""
    ours = await MessageBus(bus_address=address, bus_type=BusType.SYSTEM).connect()
    theirs = (await MessageBus(bus_address=snapper_address, bus_type=BusType.SYSTEM).connect()
              if snapper_address else None)
    btrfsd = {"destination": "org.btrfsd1", "path": fs_path,
              "interface": "org.btrfsd1.Filesystem"}
    calls: dict[str, tuple[MessageBus, Any]] = {
        "D-Bus ListSubvolumes (snapshots_of)": (ours, lambda i: Message(
            **btrfsd, member="ListSubvolumes", signature="a{sv}",
            body=[{"snapshots_of": Variant("s", str(src))}])),
        # what btrfsctl's table and a snapshot page show (docs/api.md, `columns`)
        LIST_SHOWN: (ours, lambda i: Message(
            **btrfsd, member="ListSubvolumes", signature="a{sv}",
            body=[{"snapshots_of": Variant("s", str(src)),
                   "columns": Variant("as", list(SHOWN_COLUMNS))}])),
        "D-Bus CreateSnapshot": (ours, lambda i: Message(
            **btrfsd, member="CreateSnapshot", signature="ssa{sv}",
            body=[str(src), str(made / f"d{i}"), {}])),
        "polkit CheckAuthorization": (ours, lambda i: Message(
            destination="org.freedesktop.PolicyKit1",
            path="/org/freedesktop/PolicyKit1/Authority",
            interface="org.freedesktop.PolicyKit1.Authority", member="CheckAuthorization",
            signature="(sa{sv})sa{ss}us",
            body=[("system-bus-name", {"name": Variant("s", ours.unique_name)}),
                  "org.btrfsd1.snapshot-create", {}, 0, ""])),
    }
    if theirs is not None:
        calls["snapperd ListSnapshots"] = (theirs, lambda i: Message(
            **SNAPPER, member="ListSnapshots", signature="s", body=[config]))
        calls["snapperd CreateSingleSnapshot"] = (theirs, lambda i: Message(
            **SNAPPER, member="CreateSingleSnapshot", signature="sssa{ss}",
            body=[config, f"bench {i}", "", {}]))
    lists = ("D-Bus ListSubvolumes (snapshots_of)", LIST_SHOWN, "snapperd ListSnapshots")
    calls["D-Bus ListSubvolumes after a CreateSnapshot"] = calls[lists[0]]
    times: dict[str, list[float]] = {name: [] for name in calls}
    try:
        # listings first, a block of their own: nothing changes between them (a page
        # refreshing, a script polling); then the creates, each followed by a listing
        for block in ([n for n in calls if n in lists], [n for n in calls if n not in lists]):
            for i in range(n):
                for name in block:
                    bus, make = calls[name]
                    msg = make(i)
                    t = time.perf_counter()
                    reply = await bus.call(msg)
                    times[name].append(time.perf_counter() - t)
                    if reply is None or reply.message_type == MessageType.ERROR:
                        raise RuntimeError(f"{name}: {reply and reply.error_name} "
                                           f"{reply and reply.body}")
    finally:
        ours.disconnect()
        if theirs is not None:
            theirs.disconnect()
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--snapshots", type=int, default=1000)
    ap.add_argument("--n", type=int, default=20, help="runs per row")
    ap.add_argument("--no-snapper", action="store_true", help="leave snapper out")
    ap.add_argument("--dbus-n", type=int, default=200, help="calls per D-Bus row")
    args = ap.parse_args()
    if not is_root():
        return 1
    has_snapper = not args.no_snapper and shutil.which("snapper") is not None
    if not args.no_snapper and not has_snapper:
        print("snapper is not installed (apt-get install snapper); its rows are left out",
              file=sys.stderr)
    with bench_sandbox() as sb:
        fs = sb.add_filesystem(size="8G", label="btrfsd-cli")
        mnt = fs.mount_point
        src, made, snap_src = mnt / "data", mnt / "made", mnt / "snapper"
        btrfsutil.create_subvolume(str(src))
        btrfsutil.create_subvolume(str(snap_src))
        (src / ".snapshots").mkdir()
        made.mkdir()
        print(f"  making {args.snapshots} snapshots", file=sys.stderr, flush=True)
        for k in range(args.snapshots):
            btrfsutil.create_snapshot(str(src), str(src / ".snapshots" / f"s{k:05d}"),
                                      read_only=True)
        env = sb.env
        with contextlib.ExitStack() as stack:
            envs: dict[str, dict[str, str]] = {}
            name = ""
            if has_snapper:
                name = f"btrfsd-bench-{os.getpid()}"
                senv = stack.enter_context(snapper(snap_src, name, env))
                print(f"  making {args.snapshots} snapper snapshots", file=sys.stderr,
                      flush=True)
                for _ in range(args.snapshots):
                    run(["snapper", "-c", name, "create"], senv)
                envs = {k: senv for k in ("snapper create", "snapper list")}
                # the listings stay at --snapshots: snapper's D-Bus creates come last
            sn = (lambda *a: ["snapper", "-c", name, *a]) if has_snapper else None
            creates = rounds({
                "btrfsctl snapshot": [BTRFSCTL, "snapshot", str(src), str(made / "c{i}")],
                "btrfs subvolume snapshot -r": ["btrfs", "subvolume", "snapshot", "-r",
                                                str(src), str(made / "b{i}")],
                "snapper create": sn("create") if sn else None,
            }, args.n, env, envs)
            lists = rounds({
                "btrfsctl snapshot list": [BTRFSCTL, "snapshot", "list", str(src)],
                "btrfsctl --json snapshot list": [BTRFSCTL, "--json", "snapshot", "list",
                                                  str(src)],
                "btrfs subvolume list": ["btrfs", "subvolume", "list", str(mnt)],
                "snapper list": sn("list") if sn else None,
            }, args.n, env, envs)
            print("  D-Bus rounds", file=sys.stderr, flush=True)
            dbus = asyncio.run(_dbus_rounds(
                env["DBUS_SYSTEM_BUS_ADDRESS"],
                envs["snapper list"]["DBUS_SYSTEM_BUS_ADDRESS"] if has_snapper else None,
                "/org/btrfsd1/filesystems/" + fs.uuid.replace("-", "_"), src, made, name,
                args.dbus_n))
    report({**creates, **lists}, args.snapshots, has_snapper)
    report_dbus(dbus, args.snapshots)
    return 0


def table(title: str, first: str, rows: dict[str, list[float]],
          figures: dict[str, Callable[[list[float]], float]]) -> None:
    """Print a row per name: its count, then each figure (milliseconds) of its samples."""
    width = max(len(name) for name in rows) + 2
    print(f"\n{title}")
    head = f"{first:<{width}}{'n':>5}" + "".join(f"{f:>10}" for f in figures)
    print(head)
    print("-" * len(head))
    for name, samples in rows.items():
        print(f"{name:<{width}}{len(samples):>5}"
              + "".join(f"{fn(samples):>10.2f}" for fn in figures.values()))
    print()


def report(rows: dict[str, list[float]], snapshots: int, has_snapper: bool) -> None:
    table(f"whole process, output to a pipe; listings at {snapshots} snapshots", "command",
          rows, {"p50 ms": lambda s: pct(s, 50), "min ms": lambda s: min(s) * 1000,
                 "max ms": lambda s: max(s) * 1000})
    if not has_snapper:
        print("snapper: left out")
    for name, target in TARGETS.items():
        p50 = pct(rows[name], 50)
        verdict = "met" if p50 < target else "not met"
        print(f"target: {name} p50 under {target:.0f} ms: {p50:.2f} ms -> {verdict}")
    for ours, theirs in (("btrfsctl snapshot", "snapper create"),
                         ("btrfsctl snapshot list", "snapper list"),
                         ("btrfsctl snapshot", "btrfs subvolume snapshot -r"),
                         ("btrfsctl snapshot list", "btrfs subvolume list")):
        if theirs in rows:
            print(f"ratio: {ours} / {theirs}: "
                  f"{pct(rows[ours], 50) / pct(rows[theirs], 50):.2f}x")



def report_dbus(rows: dict[str, list[float]], snapshots: int) -> None:
    table(f"D-Bus calls from one client in this process; listings at {snapshots} snapshots",
          "call", rows, {"p50 ms": lambda s: pct(s, 50), "p90 ms": lambda s: pct(s, 90),
                         "min ms": lambda s: min(s) * 1000})
    p50 = {name: pct(samples, 50) for name, samples in rows.items()}
    if "snapperd ListSnapshots" not in p50:
        print("snapper: left out, no D-Bus targets judged")
        return
    theirs = p50["snapperd ListSnapshots"]
    for row, what in (("D-Bus ListSubvolumes (snapshots_of)", "all 15 columns"),
                      (LIST_SHOWN, "the 6 columns btrfsctl shows")):
        ours = p50[row]
        print(f"target: ListSubvolumes of {snapshots} snapshots ({what}) within 2x of "
              f"snapper's ListSnapshots: {ours / theirs:.2f}x -> "
              f"{'met' if ours <= 2 * theirs else 'not met'}")
    ours = p50["D-Bus CreateSnapshot"]
    bound = p50["snapperd CreateSingleSnapshot"] + p50["polkit CheckAuthorization"]
    print(f"target: CreateSnapshot p50 within snapper's CreateSingleSnapshot + the polkit "
          f"round trip ({bound:.2f} ms): {ours:.2f} ms -> "
          f"{'met' if ours <= bound else 'not met'}")


if __name__ == "__main__":
    sys.exit(main())
