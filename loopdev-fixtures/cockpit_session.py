"""Serve the Cockpit page (cockpit/) against a sandbox's bus, as one user, on 127.0.0.1.

Debian 12's ``cockpit-ws --local-session=cockpit-bridge`` starts a bridge without a
login, as the user cockpit-ws runs as (here: a sandbox test user through setpriv), so the
page's D-Bus calls reach btrfsd as that user and polkit decides. The bridge's system bus
is the sandbox's (``DBUS_SYSTEM_BUS_ADDRESS``), and it finds the page through
``XDG_DATA_DIRS`` (a copy in ``<dir>/cockpit/btrfsd/``), so nothing is installed under
/usr. The bridge would start a session dbus-daemon and an ssh-agent that outlive it;
pointing ``DBUS_SESSION_BUS_ADDRESS`` and ``SSH_AUTH_SOCK`` at nothing keeps it from
doing so, and every process that carries this session's marker in its environment is
ended on exit all the same.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PAGE_SRC = REPO / "cockpit"
COCKPIT_WS = "/usr/lib/cockpit/cockpit-ws"
MARK = "BTRFSD_COCKPIT_SESSION"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def available() -> str:
    """'' when cockpit-ws and cockpit-bridge are installed, else what is missing."""
    missing = [p for p in (COCKPIT_WS, "/usr/bin/cockpit-bridge") if not os.path.exists(p)]
    return ", ".join(missing)


@dataclass
class CockpitSession:
    """``with CockpitSession(sb, user) as cs: cs.url`` — the page, served as ``user``."""

    sb: Any  # sandbox.Sandbox (not imported: this module is loaded beside it)
    user: str
    port: int = 0
    page: Path = PAGE_SRC
    _proc: subprocess.Popen[bytes] | None = None
    _token: str = field(default_factory=lambda: secrets.token_hex(8))
    _root: Path | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base}/cockpit/@localhost/btrfsd/index.html"

    def __enter__(self) -> CockpitSession:
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self) -> None:
        pw = pwd.getpwnam(self.user)
        self.port = self.port or free_port()
        root = self.sb.workdir / f"cockpit-{self.user}-{self._token}"
        self._root = root
        xdg = root / "share"
        shutil.copytree(self.page, xdg / "cockpit" / "btrfsd")
        home, runtime = root / "home", root / "run"
        for d in (home, runtime):
            d.mkdir(parents=True)
            os.chown(d, pw.pw_uid, pw.pw_gid)
            os.chmod(d, 0o700)
        subprocess.run(["chmod", "-R", "a+rX", str(xdg)], check=True)
        os.chmod(root, 0o755)
        env = dict(self.sb.env)
        env.update({
            "XDG_DATA_DIRS": f"{xdg}:/usr/local/share:/usr/share",
            "HOME": str(home), "USER": self.user, "LOGNAME": self.user,
            "XDG_RUNTIME_DIR": str(runtime),
            "DBUS_SESSION_BUS_ADDRESS": f"unix:path={runtime}/no-session-bus",
            "SSH_AUTH_SOCK": f"{runtime}/no-ssh-agent",
            "LANG": "C.UTF-8", MARK: self._token,
        })
        log = open(root / "cockpit-ws.log", "ab")  # noqa: SIM115
        self._proc = subprocess.Popen(
            [*self.sb.as_user(self.user), COCKPIT_WS, "--no-tls",
             "--local-session=cockpit-bridge", "-p", str(self.port), "-a", "127.0.0.1"],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 15
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"cockpit-ws exited with {self._proc.returncode}: {self.log()}")
            with contextlib.suppress(OSError), urllib.request.urlopen(self.url, timeout=2) as r:
                if r.status == 200:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"cockpit-ws did not serve {self.url}: {self.log()}")
            time.sleep(0.1)

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log(self) -> str:
        try:
            return (self._root / "cockpit-ws.log").read_text(errors="replace")[-3000:]  # type: ignore[operator]
        except (OSError, TypeError):
            return ""

    def __exit__(self, *exc: object) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        kill_marked(f"{MARK}={self._token}")


def kill_marked(marker: str) -> None:
    """SIGKILL every process whose environment holds ``marker`` (this session's bridge and
    anything it started, wherever it was reparented)."""
    needle = marker.encode() + b"\0"
    for _ in range(20):
        found = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if needle in (d / "environ").read_bytes() + b"\0":
                    found.append(int(d.name))
        found = [p for p in found if p != os.getpid()]
        if not found:
            return
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
