"""polkit on real parts: the bus starts polkitd for btrfsd's first check (as under
systemd, where polkit.service only starts by D-Bus activation), and polkit is told what
a call is about (details a rule can read with action.lookup)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import V, World, btrfs
from sandbox import POLKIT_NAME, POLKITD, TEST_USER

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


# -- details -------------------------------------------------------------------------------
# The test user may delete a subvolume named "allowed" on the test filesystem, or the one
# whose name holds a newline (escaped in the detail); any other delete is refused outright
# (NO, not the defaults' challenge), which shows the rule ran and read the path.
DETAIL_RULES = """
polkit.addRule(function(action, subject) {
    if (action.id != "org.btrfsd1.subvolume-delete" || subject.user != USER) {
        return polkit.Result.NOT_HANDLED;
    }
    var path = action.lookup("path");
    if (action.lookup("filesystem") == UUID && action.lookup("mount_point") == MNT &&
        (/\\/allowed$/.test(path) || path == ODD)) {
        return polkit.Result.YES;
    }
    return polkit.Result.NO;
});
"""


def _rules(w: World, odd: str) -> str:
    values = {"USER": TEST_USER, "UUID": w.fs.uuid, "MNT": str(w.mnt), "ODD": odd}
    text = DETAIL_RULES
    for key, value in values.items():
        text = text.replace(key, json.dumps(value))  # a JS string literal
    return text


def _delete(w: World, path: Path) -> dict[str, Any]:
    return w.fs_call(w.user, "DeleteSubvolume", "sa{sv}", str(path), {})


def test_polkit_rules_decide_on_the_path_being_deleted(world: World) -> None:
    w = world
    d = w.scratch()
    for name in ("allowed", "other", "odd\nname", "allowed-not"):
        btrfs("subvolume", "create", str(d / name))
    escaped = f"{d}/odd\\u000aname"
    remove = w.sb.install_rules("30-btrfsd-test-details.rules", _rules(w, escaped))
    try:
        deadline = time.monotonic() + 10
        while True:  # polkitd picks up new rules within a moment
            # a doubled slash reaches the rule as the single path the daemon acts on
            r = _delete(w, Path(f"{d}//allowed/"))
            if r["ok"] or time.monotonic() > deadline:
                break
            assert r["error"] == CHALLENGE, r  # the defaults, until the rule is loaded
            time.sleep(0.1)
        assert r["ok"], r
        assert not (d / "allowed").exists()

        for name in ("other", "allowed-not"):
            r = _delete(w, d / name)
            assert not r["ok"] and r["error"] == ACCESS_DENIED, r
            assert (d / name).exists()
        # the same name on another filesystem: the rule sees another UUID and mount
        elsewhere = w.sb.filesystems[1]
        other = elsewhere.mount_point / f"t-{d.name}" / "allowed"
        other.parent.mkdir()
        btrfs("subvolume", "create", str(other))
        try:
            r = w.fs_call(w.user, "DeleteSubvolume", "sa{sv}", str(other), {}, fs=elsewhere)
            assert not r["ok"] and r["error"] == ACCESS_DENIED, r
            assert other.exists()
        finally:
            btrfs("subvolume", "delete", str(other))
            other.parent.rmdir()

        r = _delete(w, d / "odd\nname")  # the rule matched the escaped newline
        assert r["ok"], r
        assert not (d / "odd\nname").exists()
    finally:
        remove()


# -- reads run while polkit is asked --------------------------------------------------------
# The test user is refused every read.
READ_RULES = """
polkit.addRule(function(action, subject) {
    if (action.id == "org.btrfsd1.read" && subject.user == THE_USER) {
        return polkit.Result.NO;
    }
    return polkit.Result.NOT_HANDLED;
});
"""


def test_a_refused_read_gets_the_refusal_and_nothing_of_the_read(world: World) -> None:
    """Reads run while polkit is asked (bus/auth.py _while_asking). A caller polkit
    refuses gets AccessDenied, never the read's result nor its own error (NotFound for
    a path that is not there), whichever ends first; root and callers polkit allows are
    served as before, and the daemon goes on."""
    w = world
    d = w.scratch()
    btrfs("subvolume", "create", str(d / "sv"))
    btrfs("subvolume", "snapshot", "-r", str(d / "sv"), str(d / "snap"))
    text = READ_RULES.replace("THE_USER", json.dumps(TEST_USER))
    remove = w.sb.install_rules("30-btrfsd-test-reads.rules", text)
    try:
        deadline = time.monotonic() + 10
        while True:  # polkitd picks up new rules within a moment
            r = w.fs_call(w.user, "ListSubvolumes", "a{sv}", {})
            if not r["ok"] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert not r["ok"], "the rule was not loaded"
        reads: list[tuple[str, str, tuple[Any, ...]]] = [
            ("ListSubvolumes", "a{sv}", ({},)),
            ("ListSubvolumes", "a{sv}", ({"snapshots_of": V("s", str(d / "sv"))},)),
            ("ListSubvolumes", "a{sv}", ({"snapshots_of": V("s", str(d / "gone"))},)),
            ("GetSubvolume", "sa{sv}", (str(d / "sv"), {})),
            ("GetSubvolume", "sa{sv}", (str(d / "gone"), {})),
            ("GetQuotaUsage", "a{sv}", ({},)),
        ]
        for member, sig, body in reads:
            r = w.fs_call(w.user, member, sig, *body)
            assert not r["ok"] and r["error"] == ACCESS_DENIED, (member, body, r)
            assert "org.btrfsd1.read" in r["message"], r
            r = w.fs_call(w.admin, member, sig, *body)  # not refused: the defaults
            assert r["ok"] or r["error"] == "org.btrfsd1.Error.NotFound", (member, body, r)
        r = w.manager_call(w.user, "GetFilesystems", "a{sv}", {})
        assert not r["ok"] and r["error"] == ACCESS_DENIED, r
        r = w.fs_call(w.root, "GetSubvolume", "sa{sv}", str(d / "sv"), {})
        assert r["ok"], r
        r = w.fs_call(w.root, "GetSubvolume", "sa{sv}", str(d / "gone"), {})
        assert not r["ok"] and r["error"] == "org.btrfsd1.Error.NotFound", r
    finally:
        remove()
    deadline = time.monotonic() + 10
    while True:  # the rule gone: the defaults again (reading is allowed for everyone)
        r = w.fs_call(w.user, "GetSubvolume", "sa{sv}", str(d / "sv"), {})
        if r["ok"] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert r["ok"], r
    r = w.fs_call(w.user, "GetSubvolume", "sa{sv}", str(d / "gone"), {})
    assert not r["ok"] and r["error"] == "org.btrfsd1.Error.NotFound", r
    assert w.sb.alive("btrfsd")
