"""Own objects (issue 19, item 6): with only the -own actions, a user acts where their
file permissions allow, judged by the kernel with their identity; never on others'."""

from __future__ import annotations

import os
import pwd
import time

from conftest import World, btrfs
from sandbox import TEST_USER

GRANT_OWN = """
polkit.addRule(function(action, subject) {
    if (subject.user == "USER" && /^org\\.btrfsd1\\..*-own$/.test(action.id)) {
        return polkit.Result.YES;
    }
});
""".replace("USER", TEST_USER)
DENIED = "org.freedesktop.DBus.Error.AccessDenied"


def _subvolumes(world: World) -> set[str]:
    return {line.split(" path ", 1)[1]
            for line in btrfs("subvolume", "list", str(world.mnt)).splitlines()}


def test_own_actions_reach_exactly_what_file_permissions_allow(world: World) -> None:
    uid = pwd.getpwnam(TEST_USER).pw_uid
    d = world.scratch()
    mine = d / "mine"
    mine.mkdir()
    os.chown(mine, uid, -1)
    theirs = d / "theirs-sv"  # root's subvolume in root's directory
    btrfs("subvolume", "create", str(theirs))
    remove = world.sb.install_rules("40-btrfsd-test-own.rules", GRANT_OWN)
    try:
        deadline = time.monotonic() + 10
        while True:  # polkitd picks the rules up within a moment
            r = world.fs_call(world.user, "CreateSubvolume", "sa{sv}", str(mine / "sv"), {})
            if r["ok"] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert r["ok"], r
        assert (mine / "sv").stat().st_uid == uid  # made as the user, as the kernel does
        r = world.fs_call(world.user, "CreateSnapshot", "ssa{sv}", str(mine / "sv"),
                          str(mine / "snap"), {})
        assert r["ok"], r
        before = _subvolumes(world)
        # not where they may not write, not of what they do not own
        for call in (
            ("CreateSubvolume", "sa{sv}", str(d / "nope"), {}),
            ("CreateSnapshot", "ssa{sv}", str(theirs), str(mine / "stolen"), {}),
            ("DeleteSubvolume", "sa{sv}", str(theirs), {}),
        ):
            r = world.fs_call(world.user, *call)
            assert not r["ok"] and r["error"] == DENIED, (call, r)
        assert _subvolumes(world) == before
        # a subvolume of root's in the user's own directory: writable, but not theirs
        btrfs("subvolume", "create", str(mine / "roots"))
        r = world.fs_call(world.user, "DeleteSubvolume", "sa{sv}", str(mine / "roots"), {})
        assert not r["ok"] and r["error"] == DENIED and "not to you" in r["message"], r
        r = world.fs_call(world.user, "DeleteSubvolume", "sa{sv}", str(mine / "snap"), {})
        assert r["ok"], r
        assert not (mine / "snap").exists()
    finally:
        remove()
