"""polkit on real parts: the bus starts polkitd for btrfsd's first check (as under
systemd, where polkit.service only starts by D-Bus activation)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import World
from sandbox import POLKIT_NAME, POLKITD

ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied"
CHALLENGE = "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired"
UNREACHABLE = "PolicyKit is not reachable"


@pytest.fixture
def polkitd_stopped(world: World) -> Iterator[World]:
    """The sandbox's polkitd stopped for the test; afterwards activation is withdrawn, a
    polkitd the bus started is gone and the sandbox's own runs again, as other tests
    expect."""
    world.sb.stop("polkitd")
    assert not world.sb.has_owner(POLKIT_NAME)
    try:
        yield world
    finally:
        world.sb.withdraw_polkit_activation()
        if not world.sb.alive("polkitd"):
            world.sb.start_polkitd()


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_text().rstrip("\0").split("\0")


def test_the_bus_starts_polkitd_for_the_first_check(polkitd_stopped: World) -> None:
    w = polkitd_stopped
    sb = w.sb
    # Without activation nobody can start it: only root is served.
    r = w.fs_call(w.user, "ListSubvolumes", "a{sv}", {})
    assert not r["ok"] and UNREACHABLE in r["message"], r

    sb.offer_polkit_activation()
    started = time.monotonic()
    r = w.fs_call(w.user, "ListSubvolumes", "a{sv}", {})
    took = time.monotonic() - started
    assert r["ok"], r  # polkit's real answer: reading is allowed for everyone
    assert took < 10, took
    pid = sb.owner_pid(POLKIT_NAME)
    assert pid is not None
    assert _cmdline(pid)[0] == POLKITD
    assert not sb.alive("polkitd")  # not the sandbox's: the bus started this one

    # A denied caller now hears polkit's answer (a challenge for auth_admin), and the
    # example rules' admin group is granted: the same polkitd decides both.
    d = w.scratch()
    r = w.fs_call(w.user, "CreateSubvolume", "sa{sv}", str(d / "u"), {})
    assert not r["ok"] and r["error"] == CHALLENGE, r
    assert UNREACHABLE not in r["message"]
    r = w.fs_call(w.admin, "CreateSubvolume", "sa{sv}", str(d / "a"), {})
    assert r["ok"], r
    assert not (d / "u").exists()
    assert sb.owner_pid(POLKIT_NAME) == pid  # one activation served them all

    sb.withdraw_polkit_activation()
    assert not sb.has_owner(POLKIT_NAME)
    r = w.fs_call(w.user, "ListSubvolumes", "a{sv}", {})
    assert not r["ok"] and UNREACHABLE in r["message"], r


def test_polkitd_that_fails_to_start_leaves_root_alone(polkitd_stopped: World) -> None:
    """The bus's spawn error counts as "polkit unreachable": root is still served."""
    w = polkitd_stopped
    w.sb.offer_polkit_activation(exec_line="/bin/false")
    d = w.scratch()
    r = w.fs_call(w.user, "CreateSubvolume", "sa{sv}", str(d / "u"), {})
    assert not r["ok"] and r["error"] == ACCESS_DENIED and UNREACHABLE in r["message"], r
    r = w.fs_call(w.root, "CreateSubvolume", "sa{sv}", str(d / "r"), {})
    assert r["ok"], r
    assert "org.freedesktop.DBus.Error.Spawn." in w.sb.daemon_log()
    assert not (d / "u").exists()
