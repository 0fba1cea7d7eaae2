"""btrfsd-notify against a real notification server (issue 12, part 2).

As the unprivileged test user: Xvfb, a private session bus, dunst on it, and the agent
connected to that session bus and to the sandbox's system bus. The user's subvolume
fills past its limit: one notification appears in dunst (checked through dunstctl and
its history), offering the "Show details" action; invoking the action runs the
configured command. Someone else's subvolume filling up shows nothing to this user, and
the same crossing reported again (btrfsd restarted without its alert state) is not
repeated. And the real polkitd tells the agent who is an admin (read-all).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import btrfsutil
import pytest
from conftest import World
from sandbox import TEST_ADMIN, TEST_USER, LoopFs, venv_bin
from test_jobs import add_fs, ok, remove_fs
from test_quota import MiB, enable, set_limit


@dataclass
class Session:
    """A desktop session of the test user: Xvfb, session bus, dunst, btrfsd-notify."""

    world: World
    home: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def spawn(self, argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([*self.world.sb.as_user(TEST_USER), *argv], env=self.env,
                                stdin=subprocess.DEVNULL, cwd=self.home, **kw)
        self.procs.append(proc)
        return proc

    def run(self, *argv: str) -> str:
        return subprocess.run([*self.world.sb.as_user(TEST_USER), *argv], env=self.env,
                              capture_output=True, text=True, check=True, timeout=10).stdout

    def displayed(self) -> int:
        return int(self.run("dunstctl", "count", "displayed").strip())

    def history(self) -> list[dict[str, Any]]:
        data = json.loads(self.run("dunstctl", "history"))["data"][0]
        return [{k: v["data"] for k, v in entry.items()} for entry in data]

    def agent_log(self) -> str:
        try:
            return (self.home / "agent.log").read_text()
        except OSError:
            return ""

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def wait_for(cond: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := cond():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def session(world: World) -> Iterator[Session]:
    for tool in ("Xvfb", "dunst", "dunstctl"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: scripts/dev installs dunst and xvfb")
    user = pwd.getpwnam(TEST_USER)
    home = world.sb.workdir / "desktop"
    home.mkdir(mode=0o700)
    os.chown(home, user.pw_uid, user.pw_gid)
    s = Session(world, home)
    s.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
             "XDG_RUNTIME_DIR": str(home), "DBUS_SYSTEM_BUS_ADDRESS": world.sb.address,
             "LANG": "C.UTF-8"}
    try:
        # Xvfb picks a free display and writes its number to the pipe
        read_fd, write_fd = os.pipe()
        s.spawn(["Xvfb", "-displayfd", str(write_fd), "-nolisten", "tcp", "-screen", "0",
                 "800x600x24"], pass_fds=(write_fd,), stderr=subprocess.DEVNULL)
        os.close(write_fd)
        with os.fdopen(read_fd) as f:
            display = f.readline().strip()
        assert display, "Xvfb did not start"
        s.env["DISPLAY"] = f":{display}"
        socket = home / "session-bus"
        s.spawn(["dbus-daemon", "--session", f"--address=unix:path={socket}", "--nofork"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(socket.exists, "the session bus")
        s.env["DBUS_SESSION_BUS_ADDRESS"] = f"unix:path={socket}"
        (home / "dunstrc").write_text("[global]\n    history_length = 100\n")
        s.spawn(["dunst", "-config", str(home / "dunstrc")], stderr=subprocess.DEVNULL)
        wait_for(lambda: subprocess.run(
            [*world.sb.as_user(TEST_USER), "dunstctl", "count"], env=s.env,
            capture_output=True).returncode == 0, "dunst on the session bus")
        # the action's command records what it was asked to open
        opened = home / "opened"
        command = f"sh -c 'echo \"$0 $1\" > {opened}' {{kind}} {{mount}}"
        with open(home / "agent.log", "wb") as log:
            s.spawn([venv_bin("btrfsd-notify"), "--settle", "0.3", "--log-level", "debug",
                     "--open-command", command], stderr=log)
        wait_for(lambda: "watching btrfsd" in s.agent_log(), "the agent to start")
        yield s
    finally:
        s.close()
        if os.environ.get("BTRFSD_TEST_SHOW_LOG"):
            print(s.agent_log())


@pytest.fixture
def qfs(world: World) -> Iterator[LoopFs]:
    fs = add_fs(world, "1G", "btrfsd-notify", 0)
    yield fs
    remove_fs(world, fs)


def fill_as(world: World, user: str | None, path: Path) -> None:
    """Write into ``path`` as ``user`` until the qgroup limit refuses, then commit."""
    prefix = world.sb.as_user(user) if user else []
    r = subprocess.run([*prefix, "dd", "if=/dev/urandom", f"of={path}", "bs=1M", "count=60",
                        "status=none"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "quota exceeded" in r.stderr.lower(), r.stderr
    subprocess.run(["sync", "-f", str(path.parent)], check=True)


def test_quota_alert_reaches_the_desktop_once_with_its_action(world: World, qfs: LoopFs,
                                                              session: Session) -> None:
    enable(world, qfs)
    user = pwd.getpwnam(TEST_USER)
    mine = qfs.mount_point / "tuser-home"
    theirs = qfs.mount_point / "shared"
    for sv in (mine, theirs):
        btrfsutil.create_subvolume(str(sv))
        os.chmod(sv, 0o755)
        ok(set_limit(world, qfs, sv, 20 * MiB))
    os.chown(mine, user.pw_uid, user.pw_gid)

    # someone else's subvolume (reachable, so btrfsd names it): not this user's alert
    fill_as(world, None, theirs / "data")
    wait_for(lambda: "is not this user's" in session.agent_log(), "the agent to decide")
    assert session.displayed() == 0 and session.history() == [], session.agent_log()

    fill_as(world, TEST_USER, mine / "data")
    wait_for(session.displayed, "a notification", timeout=10)
    time.sleep(1.0)  # the rest of that pass, merged into the one notification
    assert session.displayed() == 1, session.agent_log()

    # the action is offered and runs the configured command
    session.run("dunstctl", "action", "0")
    opened = session.home / "opened"
    wait_for(opened.exists, "the action's command")
    assert opened.read_text().strip() == f"quota {qfs.mount_point}"

    session.run("dunstctl", "close-all")
    history = session.history()
    assert len(history) == 1, history
    (note,) = history
    assert note["appname"] == "btrfsd"
    assert note["summary"] == f"{mine} is full", note
    assert "20.0 MiB" in note["body"]
    assert note["default_action_name"] == "default"

    # the same crossing again: btrfsd restarted without its alert state fires it anew;
    # the agent does not repeat it
    (world.sb.state_dir / "quota-alerts.json").unlink(missing_ok=True)
    world.sb.restart_daemon()
    wait_for(lambda: "repeats one shown" in session.agent_log(), "the alert again")
    time.sleep(1.0)
    assert session.displayed() == 0 and len(session.history()) == 1, session.agent_log()


SEES_EVERYTHING = """
import asyncio, time
from dbus_fast import BusType
from dbus_fast.aio import MessageBus
from btrfsd.notify.sysbus import Btrfsd

async def main():
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    print(await Btrfsd(bus, clock=time.monotonic).sees_everything())

asyncio.run(main())
"""


@pytest.mark.parametrize("user,admin", [(TEST_USER, False), (TEST_ADMIN, True)])
def test_the_agent_learns_from_polkit_who_is_an_admin(world: World, user: str,
                                                     admin: bool) -> None:
    # the real polkitd answers an unprivileged process about itself (read-all: the
    # admin group's rule grants it, anyone else would need a password: not an admin)
    r = subprocess.run([*world.sb.as_user(user), sys.executable, "-c", SEES_EVERYTHING],
                       env=world.sb.env, capture_output=True, text=True, timeout=30,
                       cwd="/")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(admin), r.stderr
