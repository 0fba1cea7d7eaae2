"""The Debian package for the tests: built by ``scripts/dev deb`` (the same function a
developer runs; cached by a hash of the source tree, so only a changed tree rebuilds), and
what the tests need to look at an installed copy.

tests/package installs it into this machine; tests/system/test_deb_box.py into a booted
systemd box. Both hold /tmp/btrfsd-integration.lock (the suite runs under it), since the
dpkg database, /usr/share/polkit-1/actions and loop devices are the machine's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "btrfsd"
UNITS = ("btrfsd.service", "btrfsd-schedule@.service", "btrfsd-schedule@.timer",
         "btrfsd-fleet.service")
UNIT_DIR = "/lib/systemd/system"  # debhelper 13 on Debian 12 (no /usr merge of units yet)
USER_UNIT = "/usr/lib/systemd/user/btrfsd-notify.service"
AUTOSTART = "/etc/xdg/autostart/btrfsd-notify.desktop"
# Everything the package installs outside its venv, with the mode each must have.
FILES = {
    "/usr/share/dbus-1/system.d/org.btrfsd1.conf": 0o644,
    "/usr/share/dbus-1/system-services/org.btrfsd1.service": 0o644,
    "/usr/share/polkit-1/actions/org.btrfsd1.policy": 0o644,
    "/usr/share/doc/btrfsd/examples/50-btrfsd-admin.rules.example": 0o644,
    "/usr/share/dbus-1/interfaces/org.btrfsd1.Manager.xml": 0o644,
    "/usr/share/dbus-1/interfaces/org.btrfsd1.Filesystem.xml": 0o644,
    "/usr/share/dbus-1/interfaces/org.btrfsd1.Job.xml": 0o644,
    "/usr/share/man/man8/btrfsd.8.gz": 0o644,
    "/usr/share/man/man8/btrfsctl.8.gz": 0o644,
    "/usr/share/man/man1/btrfsd-notify.1.gz": 0o644,
    "/usr/share/man/man8/btrfsd-fleet.8.gz": 0o644,
    # the fleet bridge (docs/fleet.md): its user, its rule and configurations as examples
    "/usr/lib/sysusers.d/btrfsd.conf": 0o644,
    "/usr/share/doc/btrfsd/examples/60-btrfsd-fleet.rules.example": 0o644,
    "/usr/share/doc/btrfsd/examples/fleet/nats-server.conf": 0o644,
    "/usr/share/bash-completion/completions/btrfsctl": 0o644,
    "/usr/share/doc/btrfsd/copyright": 0o644,
    "/etc/btrfsd/btrfsd.toml": 0o644,
    **{f"/usr/share/cockpit/btrfsd/{f}": 0o644
       for f in ("manifest.json", "index.html", "btrfsd.js", "btrfsd.css")},
    "/usr/lib/btrfsd/bin/btrfsd": 0o755,
    "/usr/lib/btrfsd/bin/btrfsctl": 0o755,
    "/usr/lib/btrfsd/bin/btrfsd-notify": 0o755,
    "/usr/lib/btrfsd/bin/btrfsd-fleet": 0o755,
    **{f"{UNIT_DIR}/{u}": 0o644 for u in UNITS},
    # the desktop agent (docs/front-ends.md): a user unit, not enabled, and autostart
    USER_UNIT: 0o644,
    AUTOSTART: 0o644,
}
COMMANDS = {"/usr/bin/btrfsd": "/usr/lib/btrfsd/bin/btrfsd",
            "/usr/bin/btrfsctl": "/usr/lib/btrfsd/bin/btrfsctl",
            "/usr/bin/btrfsd-notify": "/usr/lib/btrfsd/bin/btrfsd-notify",
            "/usr/bin/btrfsd-fleet": "/usr/lib/btrfsd/bin/btrfsd-fleet"}
FLEET_USER = "btrfsd-fleet"  # made by the package (sysusers), kept by purge as Debian does
# every file under /etc is a conffile (kept on remove, gone on purge)
CONFFILES = sorted(["/etc/btrfsd/btrfsd.toml", AUTOSTART])
# Left by a removed (not purged) package; gone after a purge.
CONFIG_DIR = Path("/etc/btrfsd")
STATE_DIR = Path("/var/lib/btrfsd")


def build_deb() -> tuple[Path, float]:
    """The package's path and how long ``scripts/dev deb`` took (a few seconds when the
    cached build is current). Raises RuntimeError with the build's output if it fails."""
    start = time.monotonic()
    r = subprocess.run([str(REPO / "scripts" / "dev"), "deb"], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, timeout=900)
    took = time.monotonic() - start
    if r.returncode != 0:
        raise RuntimeError(f"scripts/dev deb failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    deb = Path(r.stdout.strip().splitlines()[-1])
    if not deb.is_file():
        raise RuntimeError(f"scripts/dev deb named no package: {r.stdout}{r.stderr}")
    return deb, took


def is_installed(root_cmd: tuple[str, ...] = ()) -> str:
    """dpkg's status of the package ('' when dpkg does not know it). ``root_cmd`` runs
    dpkg-query elsewhere (the box's exec). Raises nothing."""
    r = subprocess.run([*root_cmd, "dpkg-query", "-W", "-f", "${Status}", PACKAGE],
                       capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else ""


def verify_units(unit_dir: str,
                 sh: Callable[[str], subprocess.CompletedProcess[str]] | None = None
                 ) -> list[str]:
    """``systemd-analyze verify`` of every shipped unit in ``unit_dir`` (templates as an
    instance, copied under a scratch name beside each other); returns one complaint per
    unit that is not clean (exit code or any output). ``sh`` runs the shell script
    elsewhere (the box's); default here. Raises nothing."""
    script = (
        "set -e; d=$(mktemp -d); trap 'rm -rf $d' EXIT; "
        f"cp {unit_dir}/btrfsd-schedule@.service $d/btrfsd-schedule@check.service; "
        f"cp {unit_dir}/btrfsd-schedule@.timer $d/btrfsd-schedule@check.timer; "
        "for u in " + f"{unit_dir}/btrfsd.service $d/btrfsd-schedule@check.service "
        "$d/btrfsd-schedule@check.timer; do "
        "out=$(systemd-analyze verify $u 2>&1) || { echo \"$u: exit $?: $out\"; continue; }; "
        "[ -z \"$out\" ] || echo \"$u: $out\"; done")
    if sh is None:
        r = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
    else:
        r = sh(script)
    problems = [line for line in r.stdout.splitlines() if line.strip()]
    if r.returncode != 0:
        problems.append(f"verify script exit {r.returncode}: {r.stderr}")
    return problems


class SavedFile:
    """A machine file the package also installs (the integration sandbox puts the same
    polkit policy there): copied aside now, put back as it was by ``restore()``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._dir = Path(tempfile.mkdtemp(prefix="btrfsd-saved-"))
        self._copy: Path | None = None
        if path.exists():
            self._copy = self._dir / path.name
            shutil.copy2(path, self._copy)

    def restore(self) -> None:
        """Put the file back (or remove it if there was none). Raises OSError."""
        if self._copy is not None:
            shutil.copy2(self._copy, self.path)
        else:
            self.path.unlink(missing_ok=True)

    def discard(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)


# What a dpkg run changes on its own, whichever package: its database, caches, logs.
FILE_LIST_ROOTS = ("/usr", "/etc", "/var/lib", "/opt")
FILE_LIST_SKIP = ("/var/lib/dpkg/", "/var/cache/", "/var/log/")


def file_list() -> set[str]:
    """Every path below the roots a package installs or its scripts write to (not the
    dpkg database). Raises OSError if a root cannot be walked."""
    paths: set[str] = set()
    for root in FILE_LIST_ROOTS:
        for dirpath, dirnames, filenames in os.walk(root):
            if any((dirpath + "/").startswith(s) for s in FILE_LIST_SKIP):
                dirnames[:] = []
                continue
            paths.update(os.path.join(dirpath, n) for n in dirnames + filenames)
    return paths
