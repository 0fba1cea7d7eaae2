"""btrfsd installed for real in a Debian 12 box booted with systemd as PID 1.

``scripts/systemd-box`` (systemd-nspawn) boots the box; this module makes a loop-mounted
btrfs image on the host, binds it into the box at /srv/btrfs, installs btrfsd's unit, D-Bus
policy, activation file and polkit actions where a package would put them, and binds the
host's venv (``BTRFSD_VENV``, default /opt/btrfsd-venv, built by ``scripts/dev`` with
Debian's /usr/bin/python3, the same Python 3.11 as the box's) read-only at the same path,
with /usr/bin/btrfsd and /usr/bin/btrfsctl linked to it. Then btrfsd runs as systemd starts
it: D-Bus activation, the unit's whole sandbox, polkit with logind beside it.

Everything is undone by ``close()``: the box is powered off (its changes live in an
overlay in memory), the image unmounted, its loop device detached and removed.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "loopdev-fixtures"))
from sandbox import LoopFs  # noqa: E402

BOX_TOOL = REPO / "scripts" / "systemd-box"
BOX_NAME = "btrfsd-systest"  # not the tool's default: a developer's own box can stay up
MNT = "/srv/btrfs"  # where the image is mounted inside the box
USER = "btrfsd-boxuser"  # an unprivileged user inside the box
UNIT = "btrfsd.service"

INSTALL = {  # repository file -> where a package installs it
    "systemd-units/btrfsd.service": "/usr/lib/systemd/system/btrfsd.service",
    "dbus-policy/org.btrfsd1.conf": "/usr/share/dbus-1/system.d/org.btrfsd1.conf",
    "dbus-policy/org.btrfsd1.service": "/usr/share/dbus-1/system-services/org.btrfsd1.service",
    "polkit-actions/org.btrfsd1.policy": "/usr/share/polkit-1/actions/org.btrfsd1.policy",
}


def venv_path() -> Path:
    return Path(os.environ.get("BTRFSD_VENV", "/opt/btrfsd-venv"))


def missing_prerequisite() -> str | None:
    """Why this machine cannot boot the box at all (None: it can). Only what nspawn itself
    needs; the tool installs debootstrap and systemd-container when they are missing."""
    if sys.platform != "linux":
        return "systemd-nspawn needs Linux"
    if os.geteuid() != 0:
        return "booting a systemd-nspawn box needs root"
    if not Path("/sys/fs/cgroup").is_dir():
        return "no cgroup file system at /sys/fs/cgroup (systemd in the box needs one)"
    if not Path("/usr/bin/apt-get").exists():
        return "the box tool builds its root with Debian's debootstrap (no apt-get here)"
    return None


def remove_stale_images(keep: Path) -> None:
    """Unmount and detach what a killed run left (its box is down by now). Runs hold
    /tmp/btrfsd-integration.lock, so no other run of this test owns one of these."""
    for work in Path(tempfile.gettempdir()).glob("btrfsd-systest-*"):
        if work == keep or not work.is_dir():
            continue
        fs = LoopFs(work / "img", work / "mnt")
        loops = subprocess.run(["losetup", "-j", str(fs.image)], capture_output=True,
                               text=True).stdout.split()
        fs.device = loops[0].rstrip(":") if loops else ""
        fs.destroy()
        with contextlib.suppress(OSError):
            fs.mount_point.rmdir()
            work.rmdir()


class Box:
    """The booted box with btrfsd installed (see the module's docstring). With
    ``from_repo=False`` nothing of btrfsd is put in (test_deb_box.py installs the .deb)
    and no venv is needed; ``name`` is the box's (BOX_NAME)."""

    def __init__(self, name: str = BOX_NAME, from_repo: bool = True) -> None:
        self.venv = venv_path()
        self.from_repo = from_repo
        self.workdir = Path(tempfile.mkdtemp(prefix="btrfsd-systest-"))
        os.chmod(self.workdir, 0o755)
        self.fs = LoopFs(self.workdir / "img", self.workdir / "mnt")
        self.env = {**os.environ, "BOX_NAME": name}
        self.boot_seconds = 0.0

    # -- the box tool ------------------------------------------------------------------
    def tool(self, *args: str, check: bool = True,
             timeout: float = 600) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([str(BOX_TOOL), *args], env=self.env, capture_output=True,
                           text=True, stdin=subprocess.DEVNULL, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"systemd-box {shlex.join(args)} failed ({r.returncode}):\n"
                               f"{r.stdout}{r.stderr}")
        return r

    def sh(self, script: str, *, user: str | None = None, check: bool = False,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a shell script inside the box, as root or as ``user`` (runuser)."""
        argv = ["exec", "sh", "-c", script]
        if user:
            argv = ["exec", "runuser", "-u", user, "--", "sh", "-c", script]
        r = self.tool(*argv, check=False, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"in the box: {script}\nexit {r.returncode}\n"
                                 f"{r.stdout}{r.stderr}{self.journal()}")
        return r

    def ctl(self, *args: str, user: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """btrfsctl inside the box (on the box's real system bus), --no-ask."""
        return self.sh(shlex.join(["btrfsctl", "--no-ask", *args]), user=user, timeout=timeout)

    def journal(self, lines: int = 60) -> str:
        r = self.tool("exec", "journalctl", "-u", UNIT, "-o", "cat", "--no-pager",
                      "-n", str(lines), check=False)
        return f"\n--- journalctl -u {UNIT} (last {lines} lines) ---\n{r.stdout}{r.stderr}"

    # -- set-up and tear-down -----------------------------------------------------------
    def open(self) -> None:
        """Boot the box (and install btrfsd from the repository unless ``from_repo`` is
        false). Raises RuntimeError if the venv is unusable or the box does not boot."""
        py = self.venv / "bin" / "python"
        if self.from_repo and not py.exists():
            raise RuntimeError(f"no venv at {self.venv} (scripts/dev builds it; BTRFSD_VENV)")
        if self.from_repo and Path(os.path.realpath(py)).parent != Path("/usr/bin"):
            raise RuntimeError(f"{self.venv} was not made with Debian's /usr/bin/python3: the "
                               "box cannot run it (its python3 is /usr/bin/python3)")
        self.tool("down", check=False)  # a box left by an interrupted run
        remove_stale_images(keep=self.workdir)
        self.fs.create("1G", label="btrfsd-systest")
        start = time.monotonic()
        venv_bind = ["--bind-ro", f"{self.venv}:{self.venv}"] if self.from_repo else []
        self.tool("up", "--bind", f"{self.fs.mount_point}:{MNT}", *venv_bind)
        self.boot_seconds = time.monotonic() - start
        if not self.from_repo:
            self.sh(f"useradd -m -s /bin/sh {USER}", check=True)
            return
        for src, dest in INSTALL.items():
            inside = self.tool("cp", str(REPO / src)).stdout.strip()
            self.sh(f"install -D -m 0644 {inside} {dest}", check=True)
        self.sh(f"ln -sf {self.venv}/bin/btrfsd /usr/bin/btrfsd && "
                f"ln -sf {self.venv}/bin/btrfsctl /usr/bin/btrfsctl && "
                "systemctl daemon-reload && systemctl reload dbus && "
                f"useradd -m -s /bin/sh {USER}", check=True)
        # polkitd is static in Debian (D-Bus activation starts it). It is started here so
        # these tests do not hang on how btrfsd gets it started (the [Unit] section's
        # Wants=polkit.service, bus activation): that is tested with that wiring.
        self.sh("systemctl start polkit.service", check=True)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.tool("down", check=False)
        self.fs.destroy()
        with contextlib.suppress(OSError):
            for p in (self.fs.mount_point, self.workdir):
                p.rmdir()

    # -- facts about the running service ----------------------------------------------
    def main_pid(self) -> int:
        r = self.sh(f"systemctl show -P MainPID {UNIT}", check=True)
        return int(r.stdout.strip() or 0)

    def prop(self, name: str) -> str:
        return self.sh(f"systemctl show -P {name} {UNIT}", check=True).stdout.strip()

    def own_log(self) -> str:
        """What btrfsd itself logged (not systemd's lines about the unit)."""
        return self.sh(f"journalctl -u {UNIT} SYSLOG_IDENTIFIER=btrfsd -o cat --no-pager",
                       check=True).stdout

    def wait_log(self, text: str, timeout: float = 10.0) -> bool:
        """True once ``text`` is in btrfsd's own log (the journal may lag a little)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.own_log():
                return True
            time.sleep(0.2)
        return False
