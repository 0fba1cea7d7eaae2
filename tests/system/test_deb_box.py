"""The Debian package in a booted Debian 12 with systemd as PID 1 (issue 16): installed
with apt as an administrator would, its maintainer scripts enable and start the unit,
D-Bus activation goes through systemd, ``systemctl enable --now`` works, and remove and
purge behave as Debian expects (purge: the box's file list is as before the install).

The box starts clean (scripts/systemd-box) with nothing of btrfsd in it; the package is
the one ``scripts/dev deb`` builds (cached by the source tree's hash). The tests run in
file order; remove and purge come last. ``close()`` powers the box off (its changes live
in an overlay in memory), whatever failed.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Iterator

import pytest
from systembox import MNT, REPO, UNIT, USER, Box, missing_prerequisite

sys.path.insert(0, str(REPO / "tests" / "package"))
from debpkg import UNIT_DIR, build_deb, verify_units

pytestmark = pytest.mark.system

BOX_NAME = "btrfsd-debtest"
# the box's file list for the purge check: what a package or its scripts could leave,
# not apt's and dpkg's own records, caches and logs, nor systemd's runtime state files
LIST_FILES = ("find /usr /etc /var/lib -xdev -path /var/lib/dpkg -prune -o -path "
              "/var/lib/apt -prune -o -path /var/lib/systemd/timers -prune -o -path "
              "/var/lib/systemd/catalog -prune -o -print | sort")


class DebBox(Box):
    """The box, the package copied in, and the box's file list before the install."""

    def __init__(self) -> None:
        super().__init__(name=BOX_NAME, from_repo=False)
        self.deb = ""  # the package's path inside the box
        self.before: list[str] = []

    def out(self, script: str, user: str | None = None) -> str:
        """stdout of a script that must succeed in the box (AssertionError if not)."""
        return self.sh(script, user=user, check=True).stdout


@pytest.fixture(scope="module")
def box() -> Iterator[DebBox]:
    reason = missing_prerequisite()
    if reason:
        pytest.skip(reason)
    deb, _ = build_deb()
    b = DebBox()
    try:
        b.open()
        b.deb = b.tool("cp", str(deb)).stdout.strip()
        b.before = b.out(LIST_FILES).splitlines()
        yield b
    finally:
        b.close()


def test_install_enables_and_starts_the_unit(box: DebBox) -> None:
    # polkitd running before the install: it must learn the new actions by itself
    box.out("systemctl start polkit.service")
    r = box.sh(f"DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
               f"{shlex.quote(box.deb)}", timeout=300)
    assert r.returncode == 0, f"apt-get install failed:\n{r.stdout}{r.stderr}"
    assert box.out(f"systemctl is-enabled {UNIT}").strip() == "enabled"
    assert box.prop("ActiveState") == "active", box.journal()
    assert box.prop("ExecMainPath") == "/usr/bin/btrfsd" or \
        "/usr/bin/btrfsd" in box.prop("ExecStart")
    # the alias D-Bus activation asks systemd for (dbus-org.btrfsd1.service)
    assert box.out("systemctl show -P Id dbus-org.btrfsd1.service").strip() == UNIT
    assert "org.btrfsd1.read" in box.out("pkaction --action-id org.btrfsd1.read")


def test_shipped_units_verify_under_systemd(box: DebBox) -> None:
    problems = verify_units(UNIT_DIR, sh=box.sh)
    assert not problems, "systemd-analyze verify in the box:\n" + "\n".join(problems)


def test_btrfsctl_through_the_installed_service(box: DebBox) -> None:
    for user in (None, USER):  # root, and an unprivileged user polkit lets read
        out = box.out("btrfsctl --no-ask --json fs list", user=user)
        assert any(MNT in fs["MountPoints"] for fs in json.loads(out)), out
    assert "subvolume" in box.out("btrfsctl --help")
    box.out(f"btrfsctl --no-ask subvolume create {MNT}/from-deb")
    assert box.out(f"stat -c %i {MNT}/from-deb").strip() == "256"


def test_dbus_activation_through_systemd(box: DebBox) -> None:
    box.out(f"systemctl stop {UNIT}")
    assert box.prop("ActiveState") == "inactive"
    box.out("busctl call org.btrfsd1 /org/btrfsd1 org.freedesktop.DBus.Peer Ping")
    assert box.prop("ActiveState") == "active", box.journal()
    pid = box.main_pid()
    assert box.out(f"tr '\\0' ' ' < /proc/{pid}/cmdline").split()[:2] == \
        ["/usr/lib/btrfsd/bin/python", "/usr/bin/btrfsd"]


def test_enable_now_as_the_readme_says(box: DebBox) -> None:
    box.out(f"systemctl disable --now {UNIT}")
    assert box.sh(f"systemctl is-enabled {UNIT}").stdout.strip() == "disabled"
    assert box.prop("ActiveState") == "inactive"
    box.out("systemctl enable --now btrfsd")
    assert box.out(f"systemctl is-enabled {UNIT}").strip() == "enabled"
    assert box.prop("ActiveState") == "active", box.journal()
    box.out("btrfsctl --no-ask fs list")


def test_remove_stops_it_and_keeps_configuration_and_state(box: DebBox) -> None:
    box.out(f"btrfsctl --no-ask schedule set pkg {MNT}/from-deb --every 1h --hourly 2")
    r = box.sh("DEBIAN_FRONTEND=noninteractive apt-get remove -y btrfsd", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert box.prop("ActiveState") in ("inactive", ""), box.journal()
    assert box.sh("pgrep -f '[/]usr/bin/btrfsd'").returncode != 0, "btrfsd still runs"
    box.out("test -f /etc/btrfsd/btrfsd.toml && test -s /etc/btrfsd/schedules.json "
            "&& test -d /var/lib/btrfsd")
    box.out("! test -e /usr/bin/btrfsd && ! test -e /usr/lib/btrfsd")
    # the bus forgot the activation file (dbus' dpkg trigger reloaded it)
    r = box.sh("busctl call org.btrfsd1 /org/btrfsd1 org.freedesktop.DBus.Peer Ping")
    assert r.returncode != 0 and "not" in r.stderr.lower(), r.stdout + r.stderr


def test_purge_leaves_the_box_as_before(box: DebBox) -> None:
    r = box.sh("DEBIAN_FRONTEND=noninteractive apt-get purge -y btrfsd", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    after = box.out(LIST_FILES).splitlines()
    added = sorted(set(after) - set(box.before))
    removed = sorted(set(box.before) - set(after))
    assert not added and not removed, f"left behind: {added[:40]}\nmissing: {removed[:40]}"
