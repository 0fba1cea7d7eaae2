"""Benchmark: a call over NATS through btrfsd-fleet against the same call on local D-Bus
(issue 15), fleet status over 3 hosts, and the message sizes docs/fleet.md's estimate
for 1,000 hosts uses.

Run as root: scripts/dev bench fleet [--n 300]
One sandbox (loop image, private bus, polkitd, btrfsd), Debian's nats-server on a free
127.0.0.1 port with JetStream, and three bridges (hosts b1..b3) in front of the same
btrfsd, running as root like the local caller, so both paths pay the same polkit check
and the difference is what NATS and the bridge add. Calls of both paths run interleaved,
one of each per round, so they share the machine's drift. Prints p50/p90 per row and
the extra per call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import is_root, pct
from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from sandbox import Sandbox

from btrfsd.fleet.connect import Requester
from btrfsd.fleet.settings import NatsSettings
from btrfsd.fleet.status import HostStatus, read_all

HOSTS = ("b1", "b2", "b3")
TARGET_EXTRA_MS = 2.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_until(cond: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await cond():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("the bridges did not come up")


async def measure(sb: Any, url: str, n: int) -> None:
    mnt = sb.filesystems[0].mount_point
    fs_path = "/org/btrfsd1/filesystems/" + sb.filesystems[0].uuid.replace("-", "_")
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    req = Requester(NatsSettings(servers=[url]))
    nc = await req.connect()

    async def ready() -> bool:
        hosts = await read_all(nc, "btrfsd-fleet")
        return sorted(h.host for h in hosts if h.reachable()) == list(HOSTS)
    await wait_until(ready)

    calls: list[tuple[str, str, str, str, str, list[Any]]] = [
        ("GetFilesystems", "/org/btrfsd1", "org.btrfsd1.Manager", "GetFilesystems", "a{sv}",
         [{}]),
        ("ResolvePath", "/org/btrfsd1", "org.btrfsd1.Manager", "ResolvePath", "sa{sv}",
         [str(mnt), {}]),
        ("GetSubvolume", fs_path, "org.btrfsd1.Filesystem", "GetSubvolume", "sa{sv}",
         [str(mnt), {}]),
    ]
    rows = []
    sizes: dict[str, tuple[int, int]] = {}
    for label, path, iface, member, sig, body in calls:
        local, remote = [], []
        token = iface.rsplit(".", 1)[1]
        subject = f"btrfsd.b1.{token}.{member}"
        for _ in range(n):
            t = time.perf_counter()
            reply = await bus.call(Message(destination="org.btrfsd1", path=path,
                                           interface=iface, member=member, signature=sig,
                                           body=body))
            local.append(time.perf_counter() - t)
            assert reply is not None and reply.message_type == MessageType.METHOD_RETURN
            t = time.perf_counter()
            await req.call(subject, path, body)
            remote.append(time.perf_counter() - t)
        data = json.dumps({"object": path, "args": body}).encode()
        answer = await req.request(subject, data)
        sizes[label] = (len(subject) + len(data), len(answer))
        rows.append((label, pct(local, 50), pct(local, 90), pct(remote, 50), pct(remote, 90)))

    # a snapshot: the write path, fewer rounds (each makes a subvolume)
    local, remote = [], []
    for i in range(min(n, 50)):
        t = time.perf_counter()
        reply = await bus.call(Message(
            destination="org.btrfsd1", path=fs_path, interface="org.btrfsd1.Filesystem",
            member="CreateSnapshot", signature="ssa{sv}",
            body=[str(mnt), f"{mnt}/l{i}", {"read_only": Variant("b", True)}]))
        local.append(time.perf_counter() - t)
        assert reply is not None and reply.message_type == MessageType.METHOD_RETURN
        t = time.perf_counter()
        await req.call("btrfsd.b1.Filesystem.CreateSnapshot", fs_path,
                       [str(mnt), f"{mnt}/r{i}", {"read_only": Variant("b", True)}])
        remote.append(time.perf_counter() - t)
    rows.append(("CreateSnapshot", pct(local, 50), pct(local, 90), pct(remote, 50),
                 pct(remote, 90)))

    status_times = []
    for _ in range(30):
        t = time.perf_counter()
        hosts = await read_all(nc, "btrfsd-fleet")
        status_times.append(time.perf_counter() - t)
    record = max(len(h.to_json()) for h in hosts)

    # fleet status at 1,000 hosts: the 3 real records plus 997 written like a bridge's
    kv = await nc.jetstream().key_value("btrfsd-fleet")
    for i in range(1000 - len(HOSTS)):
        fake = HostStatus.from_json(hosts[0].to_json())
        fake.host = f"sim-{i:04d}"
        await kv.put(fake.host, fake.to_json())
    big_times = []
    for _ in range(5):
        t = time.perf_counter()
        many = await read_all(nc, "btrfsd-fleet")
        big_times.append(time.perf_counter() - t)
    assert len(many) == 1000, len(many)

    # event sizes: a scrub's events on b1 (every bridge publishes the same signals)
    events: list[tuple[str, int]] = []

    async def got(msg: Any) -> None:
        events.append((msg.subject.rsplit(".", 1)[1], len(msg.subject) + len(msg.data)))
    await nc.subscribe("btrfsd.b1.events.>", cb=got)
    await nc.flush()
    await req.call("btrfsd.b1.Filesystem.StartScrub", fs_path, [{}])
    deadline = time.monotonic() + 30
    while not any(k == "completed" for k, _ in events) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)

    print(f"\nbtrfsd-fleet: one call, local D-Bus vs NATS via the bridge ({n} rounds, "
          "interleaved; ms)")
    print(f"{'call':16} {'D-Bus p50':>10} {'p90':>7} {'NATS p50':>10} {'p90':>7} "
          f"{'extra p50':>10}")
    for label, lp50, lp90, rp50, rp90 in rows:
        print(f"{label:16} {lp50:10.2f} {lp90:7.2f} {rp50:10.2f} {rp90:7.2f} "
              f"{rp50 - lp50:10.2f}")
    worst = max(r[3] - r[1] for r in rows)
    verdict = "met" if worst < TARGET_EXTRA_MS else "missed"
    print(f"target: under {TARGET_EXTRA_MS:g} ms extra at p50: {verdict} "
          f"(worst {worst:.2f} ms)")
    print(f"\nfleet status over {len(HOSTS)} hosts (read from the KV bucket): "
          f"p50 {pct(status_times, 50):.2f} ms, p90 {pct(status_times, 90):.2f} ms; "
          f"one host's record {record} bytes (1 filesystem)")
    print(f"fleet status over 1,000 hosts (997 simulated records): p50 "
          f"{pct(big_times, 50):.1f} ms, max {pct(big_times, 100):.1f} ms")
    print("\nmessage sizes (bytes, subject + body)")
    for label, (q, a) in sizes.items():
        print(f"  {label:16} request {q:5}  reply {a:5}")
    by_kind: dict[str, list[int]] = {}
    for kind, size in events:
        by_kind.setdefault(kind, []).append(size)
    for kind, s in sorted(by_kind.items()):
        print(f"  event {kind:14} {max(s):5} (largest of {len(s)})")
    await req.close()
    bus.disconnect()


def main() -> int:
    ap = argparse.ArgumentParser(prog="scripts/dev bench fleet")
    ap.add_argument("--n", type=int, default=300, help="rounds per read call (default 300)")
    args = ap.parse_args()
    if not is_root():
        return 1
    if shutil.which("nats-server") is None:
        print("nats-server missing: apt-get install nats-server", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="btrfsd-bench-fleet-"))
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with Sandbox(daemon_args=["--log-level", "warning"]) as sb:
            try:
                procs.append(subprocess.Popen(
                    ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(port), "-sd",
                     str(work / "js")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                for host in HOSTS:
                    conf = work / f"{host}.toml"
                    conf.write_text(f'host = "{host}"\nheartbeat = 1\n[nats]\n'
                                    f'servers = ["{url}"]\n')
                    procs.append(subprocess.Popen(
                        [str(Path(sys.executable).parent / "btrfsd-fleet"), "--config",
                         str(conf), "--log-level", "warning"], env=sb.env))
                os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = sb.address
                asyncio.run(measure(sb, url, args.n))
            finally:  # the bridges go before the sandbox's bus does
                for p in reversed(procs):
                    p.terminate()
                    p.wait(10)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
