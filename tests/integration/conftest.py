"""Fixtures with real parts: see loopdev-fixtures/sandbox.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "loopdev-fixtures"))
from sandbox import TEST_ADMIN, TEST_USER, LoopFs, Sandbox

WORKER_SRC = Path(__file__).with_name("caller_worker.py")
TEST_CONFIG = "[quota_alerts]\ninterval = 0.3\n"
FS_IFACE = "org.btrfsd1.Filesystem"
MANAGER_IFACE = "org.btrfsd1.Manager"
DENIED = {"org.freedesktop.DBus.Error.AccessDenied",
          "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


def V(sig: str, value: Any) -> dict[str, Any]:
    """A Variant in the worker's JSON encoding."""
    return {"$v": [sig, value]}


def request(path: str, iface: str, member: str, sig: str = "", body: list[Any] | None = None,
            interactive: bool = False, dest: str = "org.btrfsd1",
            timed: bool = False) -> dict[str, Any]:
    """One call in the caller worker's JSON form (see caller_worker.py)."""
    return {"path": path, "iface": iface, "member": member, "sig": sig, "body": body or [],
            "interactive": interactive, "dest": dest, "timed": timed}


class Caller:
    """A long-lived D-Bus client process running as one user."""

    def __init__(self, sb: Sandbox, user: str | None) -> None:
        worker = sb.workdir / "caller_worker.py"
        if not worker.exists():
            shutil.copyfile(WORKER_SRC, worker)
            os.chmod(worker, 0o644)
        prefix = sb.as_user(user) if user else []
        self.user = user or "root"
        self.proc = subprocess.Popen([*prefix, sys.executable, str(worker)], env=sb.env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     cwd=sb.workdir)
        ready = self._read()
        self.unique_name = ready["ready"]

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"caller worker for {self.user} died")
        return json.loads(line)  # type: ignore[no-any-return]

    def send(self, calls: list[dict[str, Any]]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"calls": calls}) + "\n")
        self.proc.stdin.flush()

    def receive(self) -> list[dict[str, Any]]:
        return self._read()["results"]  # type: ignore[no-any-return]

    def batch(self, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.send(calls)
        return self.receive()

    def call(self, path: str, iface: str, member: str, sig: str = "", body: list[Any] | None = None,
             interactive: bool = False, dest: str = "org.btrfsd1") -> dict[str, Any]:
        return self.batch([request(path, iface, member, sig, body, interactive, dest)])[0]

    def subscribe(self, rule: str) -> None:
        """Start collecting signals matching a D-Bus match rule."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"subscribe": rule}) + "\n")
        self.proc.stdin.flush()
        self._read()

    def signals(self) -> list[dict[str, Any]]:
        """Signals collected since the last call (and forget them)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"signals": True}) + "\n")
        self.proc.stdin.flush()
        return self._read()["results"]  # type: ignore[no-any-return]

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(10)


class World:
    """The sandbox plus callers and helpers the tests share."""

    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb
        self.root = Caller(sb, None)
        self.user = Caller(sb, TEST_USER)
        self.admin = Caller(sb, TEST_ADMIN)

    @property
    def fs(self) -> LoopFs:
        return self.sb.filesystems[0]

    @property
    def mnt(self) -> Path:
        return self.fs.mount_point

    def fs_path(self, fs: LoopFs | None = None) -> str:
        return "/org/btrfsd1/filesystems/" + (fs or self.fs).uuid.replace("-", "_")

    def fs_call(self, caller: Caller, member: str, sig: str, *body: Any,
                fs: LoopFs | None = None, interactive: bool = False) -> dict[str, Any]:
        return caller.call(self.fs_path(fs), FS_IFACE, member, sig, list(body), interactive)

    def fs_request(self, member: str, sig: str, *body: Any, timed: bool = False
                   ) -> dict[str, Any]:
        """A Filesystem call on the test filesystem for Caller.send/batch."""
        return request(self.fs_path(), FS_IFACE, member, sig, list(body), timed=timed)

    def manager_call(self, caller: Caller, member: str, sig: str, *body: Any) -> dict[str, Any]:
        return caller.call("/org/btrfsd1", MANAGER_IFACE, member, sig, list(body))

    def scratch(self) -> Path:
        """A fresh plain directory on the test filesystem for one test's objects."""
        d = self.mnt / f"t-{uuid.uuid4().hex[:8]}"
        d.mkdir()
        return d

    def close(self) -> None:
        for c in (self.root, self.user, self.admin):
            c.close()


def subvolume_rows(reply: dict[str, Any]) -> list[tuple[Any, ...]]:
    """ListSubvolumes' reply (columns) as one tuple per subvolume."""
    assert reply["ok"], reply
    return list(zip(*reply["body"][0], strict=True))


def btrfs(*args: str) -> str:
    """Run btrfs-progs (the independent check of what the daemon did)."""
    return subprocess.run(["btrfs", *args], check=True, capture_output=True, text=True).stdout


def qgroups(mnt: Path) -> str:
    """btrfs qgroup show with raw numbers and limits ('off' when quotas are off).

    Commits first: the numbers change at commits, which must not fall between two reads.
    """
    subprocess.run(["btrfs", "filesystem", "sync", str(mnt)], check=True,
                   stdout=subprocess.DEVNULL)
    r = subprocess.run(["btrfs", "qgroup", "show", "-re", "--raw", str(mnt)],
                       capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else "off"


def fs_state(mnt: Path) -> tuple[str, str, str, str]:
    """Everything a method could change, as btrfs-progs reports it."""
    return (
        btrfs("subvolume", "list", "-a", "-p", "-u", "-q", "-R", str(mnt)),
        btrfs("subvolume", "list", "-r", str(mnt)),
        btrfs("subvolume", "get-default", str(mnt)),
        qgroups(mnt),
    )


@pytest.fixture(scope="session")
def world() -> Iterator[World]:
    if os.geteuid() != 0:
        pytest.skip("integration tests need root (loop devices, polkitd, test users)")
    # quick quota alert passes so tests see alerts within a second
    with Sandbox(config=TEST_CONFIG) as sb:
        sb.add_filesystem(label="btrfsd-other")  # for cross-filesystem cases
        w = World(sb)
        try:
            yield w
        finally:
            w.close()
            if os.environ.get("BTRFSD_TEST_SHOW_LOG"):
                print(sb.daemon_log())


@pytest.fixture(autouse=True)
def daemon_stays_up(request: pytest.FixtureRequest) -> Iterator[None]:
    """After every integration test the daemon must still be alive and answering."""
    yield
    if "world" in request.fixturenames:
        w: World = request.getfixturevalue("world")
        assert w.sb.alive("btrfsd"), w.sb.daemon_log()[-3000:]
        r = w.manager_call(w.root, "GetFilesystems", "a{sv}", {})
        assert r["ok"], r
