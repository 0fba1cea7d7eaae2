"""btrfsd-fleet on real parts: Debian's nats-server on 127.0.0.1 with JetStream and
per-user subject permissions, three hosts simulated as three sandboxes (own loop image,
private bus, polkitd, btrfsd in a mount namespace of its own where DATA is that host's
filesystem), each with a bridge running as the unprivileged user btrfsd-fleet under the
shipped example polkit rule (docs/fleet.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import btrfs
from sandbox import Sandbox, run, terminate, venv_bin

from btrfsd.fleet import events, protocol
from btrfsd.fleet.connect import FleetCallError, Requester
from btrfsd.fleet.settings import NatsSettings

REPO = Path(__file__).resolve().parents[2]
RULE = REPO / "polkit-actions" / "60-btrfsd-fleet.rules.example"
FLEET_USER = "btrfsd-fleet"
HOSTS = ("h1", "h2", "h3")
HEARTBEAT = 0.5  # a killed bridge shows as unreachable after 3 beats
SLOW_SCRUB = "256K/s"  # a scrub of the nearly empty filesystem then lasts ~1 s

pytestmark = pytest.mark.skipif(shutil.which("nats-server") is None,
                                reason="nats-server missing (scripts/dev installs it)")

# One server's configuration, as docs/fleet.md explains it (examples/fleet/ has the
# commented version): each bridge may only answer for its own host and write its own
# status key; "admin" may call every host; "viewer" may only read.
NATS_CONF = """
listen: 127.0.0.1:{port}
jetstream {{ store_dir: "{store}" }}
authorization {{
  users = [
{bridges}
    {{user: "admin", password: "{admin_pw}", permissions: {{
      publish: {{allow: ["btrfsd.*.Manager.>", "btrfsd.*.Filesystem.>", "btrfsd.*.Job.>",
                        "btrfsd.*.Properties.>", "btrfsd.*.ObjectManager.>",
                        "$JS.API.STREAM.INFO.KV_btrfsd-fleet",
                        "$JS.API.DIRECT.GET.KV_btrfsd-fleet.>",
                        "$JS.API.DIRECT.GET.BTRFSD_EVENTS", "$JS.API.DIRECT.GET.BTRFSD_EVENTS.>"]}},
      subscribe: {{allow: ["_INBOX.>", "btrfsd.*.events.>"]}}}}}},
    {{user: "viewer", password: "{viewer_pw}", permissions: {{
      publish: {{allow: ["btrfsd.*.Manager.GetFilesystems", "btrfsd.*.Manager.ResolvePath",
                        "btrfsd.*.Properties.GetAll", "$JS.API.STREAM.INFO.KV_btrfsd-fleet",
                        "$JS.API.DIRECT.GET.KV_btrfsd-fleet.>"]}},
      subscribe: {{allow: ["_INBOX.>"]}}}}}}
  ]
}}
"""
BRIDGE_USER = """    {{user: "bridge-{host}", password: "{pw}", permissions: {{
      publish: {{allow: ["btrfsd.{host}.events.>", "$KV.btrfsd-fleet.{host}",
                        "$JS.API.STREAM.INFO.KV_btrfsd-fleet",
                        "$JS.API.STREAM.CREATE.KV_btrfsd-fleet",
                        "$JS.API.STREAM.CREATE.BTRFSD_EVENTS"]}},
      subscribe: {{allow: ["btrfsd.{host}.>", "_INBOX.>"]}},
      allow_responses: true}}}},
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(cond: Any, what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


class Fleet:
    """The NATS server, the hosts and their bridges; btrfsctl as NATS users."""

    def __init__(self, workdir: Path, data: Path) -> None:
        self.workdir, self.data = workdir, data
        self.port = free_port()
        self.passwords = {u: secrets.token_hex(12) for u in
                          ["admin", "viewer", *(f"bridge-{h}" for h in HOSTS)]}
        self.hosts: dict[str, Sandbox] = {}
        self.bridges: dict[str, subprocess.Popen[bytes]] = {}
        self.nats: subprocess.Popen[bytes] | None = None
        conf = NATS_CONF.format(
            port=self.port, store=workdir / "js", admin_pw=self.passwords["admin"],
            viewer_pw=self.passwords["viewer"],
            bridges="".join(BRIDGE_USER.format(host=h, pw=self.passwords[f"bridge-{h}"])
                            for h in HOSTS))
        (workdir / "nats.conf").write_text(conf)
        for user in ("admin", "viewer"):
            self.client_config(user)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def client_config(self, user: str) -> Path:
        pw = self.workdir / f"{user}.pw"
        pw.write_text(self.passwords[user])
        os.chmod(pw, 0o600)
        path = self.workdir / f"{user}.toml"
        path.write_text(f'[nats]\nservers = ["{self.url}"]\nuser = "{user}"\n'
                        f'password_file = "{pw}"\nrequest_timeout = 20\n')
        return path

    def settings(self, user: str) -> NatsSettings:
        return NatsSettings(servers=[self.url], user=user,
                            password_file=self.workdir / f"{user}.pw", request_timeout=20)

    # -- the NATS server --------------------------------------------------------------
    def start_nats(self) -> None:
        log = open(self.workdir / "nats.log", "ab")  # noqa: SIM115
        self.nats = subprocess.Popen(["nats-server", "-js", "-c", str(self.workdir / "nats.conf")],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        wait_for(self._listening, "nats-server to listen")

    def _listening(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop_nats(self) -> None:
        if self.nats is not None and self.nats.poll() is None:
            self.nats.terminate()
            self.nats.wait(10)
        self.nats = None

    # -- bridges ----------------------------------------------------------------------
    def start_bridge(self, host: str) -> None:
        sb = self.hosts[host]
        pw = self.workdir / f"bridge-{host}.pw"
        pw.write_text(self.passwords[f"bridge-{host}"])
        user = pwd.getpwnam(FLEET_USER)
        os.chown(pw, user.pw_uid, user.pw_gid)
        os.chmod(pw, 0o600)
        conf = self.workdir / f"bridge-{host}.toml"
        conf.write_text(f'host = "{host}"\nheartbeat = {HEARTBEAT}\n[nats]\n'
                        f'servers = ["{self.url}"]\nuser = "bridge-{host}"\n'
                        f'password_file = "{pw}"\nreconnect_wait = 0.2\n')
        log = open(self.workdir / f"bridge-{host}.log", "ab")  # noqa: SIM115
        self.bridges[host] = subprocess.Popen(
            [*sb.as_user(FLEET_USER), venv_bin("btrfsd-fleet"), "--config", str(conf),
             "--log-level", "debug"], env=sb.env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=log)
        log.close()

    def kill_bridge(self, host: str) -> None:
        proc = self.bridges.pop(host)
        proc.kill()
        proc.wait()

    def stop_bridges(self) -> None:
        for host in list(self.bridges):
            terminate(self.bridges.pop(host))

    def bridge_log(self, host: str) -> str:
        return (self.workdir / f"bridge-{host}.log").read_text(errors="replace")

    # -- clients ----------------------------------------------------------------------
    def ctl(self, *argv: str, user: str = "admin") -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "BTRFSD_FLEET_CONFIG": str(self.workdir / f"{user}.toml")}
        return subprocess.run([venv_bin("btrfsctl"), *argv], env=env, capture_output=True,
                              text=True, timeout=60)

    def ctl_json(self, *argv: str, user: str = "admin") -> tuple[int, Any]:
        r = self.ctl("--json", *argv, user=user)
        return r.returncode, json.loads(r.stdout) if r.stdout.strip() else None

    def status(self) -> dict[str, dict[str, Any]]:
        code, data = self.ctl_json("fleet", "status")
        assert code == 0, data
        return {h["host"]: h for h in data}

    def request(self, subject: str, data: bytes, user: str = "admin") -> Any:
        """One raw request in-process: the reply's JSON."""
        async def go() -> Any:
            req = Requester(self.settings(user))
            await req.connect()
            try:
                return json.loads(await req.request(subject, data, timeout=20))
            finally:
                await req.close()
        return asyncio.run(go())


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    if os.geteuid() != 0:
        pytest.skip("integration tests need root")
    workdir = Path(tempfile.mkdtemp(prefix="btrfsd-fleet-"))
    os.chmod(workdir, 0o755)  # the bridges' user reads its config here
    data = workdir / "data"
    data.mkdir()
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        made_user = False
        try:
            pwd.getpwnam(FLEET_USER)
        except KeyError:
            run("useradd", "--system", "-M", "-U", "-s", "/usr/sbin/nologin", FLEET_USER)
            made_user = True
        if made_user:
            stack.callback(run, "userdel", FLEET_USER, check=False)
        f = Fleet(workdir, data)
        for host in HOSTS:
            f.hosts[host] = stack.enter_context(Sandbox(
                create_test_users=False, private_mount=str(data)))
        stack.callback(f.hosts[HOSTS[0]].install_rules("60-btrfsd-fleet.rules",
                                                       RULE.read_text()))
        f.start_nats()
        stack.callback(f.stop_nats)
        stack.callback(f.stop_bridges)
        for host in HOSTS:
            f.start_bridge(host)
        wait_for(lambda: _all_up(f), "every bridge to report its status")
        yield f
        for host in HOSTS:  # the bridges never crashed, whatever the tests sent
            proc = f.bridges.get(host)
            assert proc is None or proc.poll() is None, f.bridge_log(host)[-3000:]


def _all_up(f: Fleet) -> bool:
    code, data = f.ctl_json("fleet", "list")
    return code == 0 and sorted(h["host"] for h in data if h["reachable"]) == list(HOSTS)


def fs_object(sb: Sandbox) -> str:
    return "/org/btrfsd1/filesystems/" + sb.filesystems[0].uuid.replace("-", "_")


def test_calls_reach_each_host(fleet: Fleet) -> None:
    for host in HOSTS:
        reply = fleet.request(f"btrfsd.{host}.Manager.ResolvePath",
                              json.dumps({"args": [str(fleet.data)]}).encode())
        # DATA is each host's own filesystem: the call reached that host's btrfsd
        assert reply == {"result": [fs_object(fleet.hosts[host]), ""]}, reply
    # btrfsctl --host answers as btrfsctl does locally
    code, shown = fleet.ctl_json("--host", "h2", "subvolume", "show", str(fleet.data))
    assert code == 0, shown
    assert shown["id"] == 5


def test_a_fleet_wide_snapshot_reports_per_host(fleet: Fleet) -> None:
    code, report = fleet.ctl_json("--hosts", "h*", "snapshot", str(fleet.data))
    assert code == 0, report
    assert [r["host"] for r in report] == list(HOSTS)
    for r in report:
        assert r["ok"], r
        made = Path(r["result"]["path"]).relative_to(fleet.data)
        mnt = fleet.hosts[r["host"]].filesystems[0].mount_point
        # checked with btrfs-progs, on that host's own filesystem
        assert btrfs("subvolume", "show", str(mnt / made))
    human = fleet.ctl("--hosts", "h[12]", "snapshot", str(fleet.data))
    assert human.returncode == 0, human.stderr
    assert "h1" in human.stdout and "h2" in human.stdout and "h3" not in human.stdout


def test_scrub_events_reach_a_fleet_client(fleet: Fleet) -> None:
    events: list[tuple[str, dict[str, Any]]] = []

    async def go() -> tuple[int, str]:
        req = Requester(fleet.settings("admin"))
        nc = await req.connect()
        try:
            async def got(msg: Any) -> None:
                events.append((msg.subject, json.loads(msg.data)))
            await nc.subscribe("btrfsd.h2.events.>", cb=got)
            await nc.flush()
            proc = await asyncio.create_subprocess_exec(
                venv_bin("btrfsctl"), "--host", "h2", "scrub", "start", str(fleet.data),
                "--wait", env={**os.environ,
                               "BTRFSD_FLEET_CONFIG": str(fleet.workdir / "admin.toml")},
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await proc.communicate()
            deadline = time.monotonic() + 10
            while not any(s.endswith(".completed") for s, _ in events) and \
                    time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            return proc.returncode or 0, (out + err).decode()
        finally:
            await req.close()

    code, out = asyncio.run(go())
    assert code == 0, out
    assert "Scrub finished" in out
    kinds = [s.rsplit(".", 1)[1] for s, _ in events]
    assert "completed" in kinds and "job-added" in kinds, kinds
    completed = next(e for s, e in events if s.endswith(".completed"))
    assert completed["host"] == "h2" and completed["args"][0] is True
    assert completed["object"].startswith("/org/btrfsd1/jobs/")
    # and the host's status has the scrub's result
    def last_scrub() -> Any:
        mine = [f for f in fleet.status()["h2"]["filesystems"]
                if f["object"] == fs_object(fleet.hosts["h2"])]
        return mine and mine[0]["last_scrub"]
    fs = wait_for(last_scrub, "the scrub result in h2's status")
    assert fs["state"] == "completed" and fs["errors"] == 0


def test_nats_user_without_permission_is_refused_clearly(fleet: Fleet) -> None:
    before = btrfs("subvolume", "list", str(fleet.hosts["h1"].filesystems[0].mount_point))
    started = time.monotonic()
    code, err = fleet.ctl_json("--host", "h1", "snapshot", str(fleet.data), user="viewer")
    assert err["error"] == "org.btrfsd1.Fleet.Error.NotPermitted", err
    assert "btrfsd.h1.Filesystem.CreateSnapshot" in err["message"]
    assert code != 0
    # refused by the server, not waited out (the request timeout is 20 s)
    assert time.monotonic() - started < 15
    assert btrfs("subvolume", "list",
                 str(fleet.hosts["h1"].filesystems[0].mount_point)) == before
    # what the viewer may do, it can
    code, fs = fleet.ctl_json("--host", "h1", "fs", "list", user="viewer")
    assert code == 0, fs


def test_action_the_fleet_role_lacks_is_refused_by_polkit(fleet: Fleet) -> None:
    mnt = fleet.hosts["h3"].filesystems[0].mount_point
    code, made = fleet.ctl_json("--host", "h3", "snapshot", str(fleet.data))
    assert code == 0, made
    before = btrfs("subvolume", "list", str(mnt))
    code, err = fleet.ctl_json("--host", "h3", "subvolume", "delete", made["path"])
    assert err["error"] == "org.freedesktop.DBus.Error.AccessDenied", err
    assert code == 12
    assert btrfs("subvolume", "list", str(mnt)) == before


GARBAGE: list[tuple[str, bytes, str]] = [
    ("btrfsd.h1.Manager.GetFilesystems", b"{not json", "org.btrfsd1.Error.InvalidArgument"),
    ("btrfsd.h1.Manager.GetFilesystems", b"\xff\xfe", "org.btrfsd1.Error.InvalidArgument"),
    ("btrfsd.h1.Manager.GetFilesystems", b"[1, 2]", "org.btrfsd1.Error.InvalidArgument"),
    ("btrfsd.h1.Manager.GetFilesystems", b'{"args": {}}', "org.btrfsd1.Error.InvalidArgument"),
    ("btrfsd.h1.Manager.GetFilesystems", b'{"args": [], "x": 1}',
     "org.btrfsd1.Error.InvalidArgument"),
    ("btrfsd.h1.Manager.GetFilesystems", b"[" * 100000 + b"]" * 100000,
     "org.btrfsd1.Error.InvalidArgument"),
    ("btrfsd.h1.Manager.GetFilesystems", b'{"args": [{"a": {"$v": ["q", -1]}}]}',
     "org.btrfsd1.Error.InvalidArgument"),
    ("btrfsd.h1.Manager.GetFilesystems", b'{"args": [{"a": {"$v": ["ss", "x"]}}]}',
     "org.btrfsd1.Error.InvalidArgument"),
    ("btrfsd.h1.Manager.ResolvePath", b'{"args": [5]}', "org.btrfsd1.Error.InvalidArgument"),
    ("btrfsd.h1.Manager.ResolvePath", b'{"args": ["/a\\u0000b"]}',
     "org.btrfsd1.Error.InvalidArgument"),
    ("btrfsd.h1.Manager.ResolvePath", b'{"args": ["/", {}, 3]}',
     "org.btrfsd1.Error.InvalidArgument"),
    ("btrfsd.h1.Manager.ResolvePath", b'{"object": "/org/btrfsd1/x", "args": ["/"]}',
     "org.btrfsd1.Error.InvalidArgument"),
    ("btrfsd.h1.Manager.Nope", b"{}", "org.freedesktop.DBus.Error.UnknownMethod"),
    ("btrfsd.h1.Properties.Set", b"{}", "org.freedesktop.DBus.Error.UnknownMethod"),
    ("btrfsd.h1.Properties.GetAll", b'{"object": "/org/btrfsd1", "args": ["org.x"]}',
     "org.btrfsd1.Error.InvalidArgument"),
    ("btrfsd.h1.Filesystem.CreateSnapshot", b'{"object": "/etc", "args": []}',
     "org.btrfsd1.Error.InvalidArgument"),
    ("btrfsd.h1.Filesystem.CreateSnapshot",
     b'{"object": "/org/btrfsd1/filesystems/nope", "args": ["/", "", {}]}',
     "org.freedesktop.DBus.Error.UnknownObject"),
    ("btrfsd.h1.Job.Cancel", b'{"object": "/org/btrfsd1/jobs/999999", "args": []}',
     "org.freedesktop.DBus.Error.UnknownObject"),
]
# a missing object: D-Bus's name for it, whichever the bridge or the bus gives
MISSING = {"org.freedesktop.DBus.Error.UnknownObject", "org.freedesktop.DBus.Error.UnknownMethod"}


def test_garbage_gets_named_errors_and_the_bridge_stays(fleet: Fleet) -> None:
    for subject, data, name in GARBAGE:
        reply = fleet.request(subject, data)
        expected = MISSING if name in MISSING else {name}
        assert reply.get("error") in expected, (subject, data[:60], reply)
        assert isinstance(reply.get("message"), str) and reply["message"]
    # the options of a real call are checked by btrfsd itself, with its own names
    reply = fleet.request("btrfsd.h1.Manager.GetFilesystems", b'{"args": [{"bogus": true}]}')
    assert reply["error"] == "org.btrfsd1.Error.InvalidArgument", reply
    assert fleet.bridges["h1"].poll() is None, fleet.bridge_log("h1")[-3000:]
    assert "result" in fleet.request("btrfsd.h1.Manager.GetFilesystems", b"")


def test_unknown_host_answers_at_once(fleet: Fleet) -> None:
    code, err = fleet.ctl_json("--host", "nosuchhost", "fs", "list")
    assert err["error"] == "org.btrfsd1.Fleet.Error.NoResponders", err
    assert code == 14


def local_scrubs(fleet: Fleet, hosts: tuple[str, ...]) -> dict[str, str]:
    """A scrub on each host's btrfsd, run there by root over its own bus, all at once;
    the job's object path per host."""
    procs = {h: subprocess.Popen(
        [venv_bin("btrfsctl"), "--json", "scrub", "start",
         str(fleet.hosts[h].filesystems[0].mount_point), "--wait"],
        env=fleet.hosts[h].env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for h in hosts}
    jobs = {}
    for h, proc in procs.items():
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        jobs[h] = json.loads(out)["object_path"]
    return jobs


def local_running(fleet: Fleet, host: str) -> bool:
    """Whether a job runs on ``host``, asked over its own bus (NATS may be away)."""
    r = subprocess.run([venv_bin("btrfsctl"), "--json", "jobs"],
                       env=fleet.hosts[host].env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return any(j["State"] == "running" for j in json.loads(r.stdout))


def stored_completions(fleet: Fleet) -> list[tuple[int, dict[str, Any]]]:
    """Every job end in the events stream, as a fleet client reads it (direct gets)."""
    async def go() -> list[tuple[int, bytes]]:
        req = Requester(fleet.settings("admin"))
        nc = await req.connect()
        try:
            return await events.read_after(nc, protocol.event_subject("*", "completed"), 0)
        finally:
            await req.close()
    return [(seq, json.loads(data)) for seq, data in asyncio.run(go())]


def running_jobs(fleet: Fleet, host: str) -> list[str]:
    jobs = fleet.request(f"btrfsd.{host}.Manager.GetJobs", b"")["result"][0]
    return [j for j in jobs if fleet.request(
        f"btrfsd.{host}.Properties.Get",
        json.dumps({"object": j, "args": ["org.btrfsd1.Job", "State"]}).encode()
    )["result"][0] == "running"]


def test_nats_restart_loses_no_event_and_bridges_reconnect(fleet: Fleet) -> None:
    before = {seq for seq, _ in stored_completions(fleet)}
    # a client waiting for a job on h3 over NATS: it must outlive the restart (the scrub
    # is slowed down to last through it, or nearly)
    waiting = subprocess.Popen(
        [venv_bin("btrfsctl"), "--json", "--host", "h3", "scrub", "start", str(fleet.data),
         "--wait", "--limit", SLOW_SCRUB], env={**os.environ, "BTRFSD_FLEET_CONFIG": str(
             fleet.workdir / "admin.toml")}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        wait_for(lambda: running_jobs(fleet, "h3"), "the scrub on h3 to run")
        fleet.stop_nats()
        # job ends while the server is away: queued by each bridge
        down = [local_scrubs(fleet, ("h1", "h2")), local_scrubs(fleet, ("h1",))]
        # the job on h3 ends while the server is away too
        wait_for(lambda: not local_running(fleet, "h3"), "the scrub on h3 to end")
        restarted = time.time()
        fleet.start_nats()
        # one more each after the restart: once it is stored, everything queued before it
        # is too (each bridge sends in order), so nothing is left to come after this
        after = local_scrubs(fleet, ("h1", "h2"))
        expected = {h: [r[h] for r in (*down, after) if h in r] for h in ("h1", "h2")}
        out, err = waiting.communicate(timeout=60)
        assert waiting.returncode == 0, out + err
        job = json.loads(out)
        assert job["State"] == "completed", job
        expected["h3"] = [job["object_path"]]
    finally:
        if waiting.poll() is None:  # failed before it ended: no client left behind
            terminate(waiting)

    def got() -> dict[str, list[str]] | None:
        new = [e for seq, e in stored_completions(fleet) if seq not in before]
        per_host = {h: [e["object"] for e in new if e["host"] == h] for h in expected}
        last = {h: expected[h][-1] in per_host[h] for h in per_host}
        return per_host if all(last.values()) else None
    # each job end exactly once, in the order the host's jobs ended
    assert wait_for(got, "the job ends in the events stream") == expected

    def answers() -> bool:
        try:
            return all("result" in fleet.request(f"btrfsd.{h}.Manager.GetFilesystems", b"")
                       for h in HOSTS)
        except FleetCallError:
            return False
    wait_for(answers, "every bridge to answer after the restart", timeout=30)
    # the status bucket lives in JetStream's store, and every host wrote again since
    status = fleet.status()
    assert set(status) == set(HOSTS)
    assert all(status[h]["last_seen"] >= restarted for h in HOSTS), status


def test_killed_bridge_shows_unreachable(fleet: Fleet) -> None:
    fleet.kill_bridge("h3")
    killed = time.time()
    status = wait_for(lambda: not fleet.status()["h3"]["reachable"] and fleet.status()["h3"],
                      "h3 to show unreachable", timeout=10)
    assert status["summary"].startswith("unreachable since "), status
    assert status["last_seen"] <= killed
    human = fleet.ctl("fleet", "status")
    assert "unreachable since" in human.stdout
    _code, err = fleet.ctl_json("--host", "h3", "fs", "list")
    assert err["error"] == "org.btrfsd1.Fleet.Error.NoResponders", err
    # the others are untouched
    assert all(fleet.status()[h]["reachable"] for h in ("h1", "h2"))
