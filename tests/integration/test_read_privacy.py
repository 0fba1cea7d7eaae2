"""Reads show a caller no more than they could find themselves (issue 17): a subvolume
under a directory they may not search is missing for them, with the same error as a
missing path; root and the admin group (polkit's read-all) see everything."""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

from conftest import FS_IFACE, TEST_CONFIG, V, World, request, subvolume_rows
from sandbox import TEST_USER


def _paths(world: World, caller: object, **opts: object) -> set[str]:
    r = world.fs_call(caller, "ListSubvolumes", "a{sv}", opts)  # type: ignore[arg-type]
    assert r["ok"], r
    return {row[2] for row in subvolume_rows(r)}


def test_a_subvolume_behind_a_closed_directory_is_hidden(world: World) -> None:
    d = world.scratch()
    for sub in ("pub", "secret/hidden-sv", "half/inside"):
        (d / sub).parent.mkdir(parents=True, exist_ok=True)
        assert world.fs_call(world.root, "CreateSubvolume", "sa{sv}", str(d / sub), {})["ok"]
    os.chmod(d / "secret", 0o700)
    os.chmod(d / "half", 0o711)  # searchable, not listable: the name can still be found
    rel = d.name
    mine = {p for p in _paths(world, world.user) if p.startswith(rel + "/")}
    assert mine == {f"{rel}/pub", f"{rel}/half/inside"}, mine
    for caller in (world.root, world.admin):
        assert f"{rel}/secret/hidden-sv" in _paths(world, caller)

    # the kernel's own unprivileged listing agrees for that user
    r = subprocess.run([*world.sb.as_user(TEST_USER), "btrfs", "subvolume", "list",
                        str(d)], capture_output=True, text=True, env=world.sb.env)
    if r.returncode == 0:
        theirs = {line.split(" path ", 1)[1] for line in r.stdout.splitlines()}
        assert {p.rsplit("/", 1)[-1] for p in theirs} >= {"pub", "inside"}
        assert not any("hidden-sv" in p for p in theirs)

    # no existence test: hidden answers as missing does, word for word
    hidden = world.fs_call(world.user, "GetSubvolume", "sa{sv}", str(d / "secret/hidden-sv"), {})
    missing = world.fs_call(world.user, "GetSubvolume", "sa{sv}", str(d / "pub/nothing"), {})
    assert hidden["error"] == missing["error"] == "org.btrfsd1.Error.NotFound", (hidden, missing)
    assert hidden["message"] == f"{d}/secret/hidden-sv does not exist."
    r = world.manager_call(world.user, "ResolvePath", "sa{sv}", str(d / "secret/hidden-sv"), {})
    gone = world.manager_call(world.user, "ResolvePath", "sa{sv}", str(d / "secret/nothing"),
                              {})
    assert r["error"] == gone["error"] == "org.btrfsd1.Error.NotFound", (r, gone)
    assert r["message"].replace("hidden-sv", "nothing") == gone["message"]
    r = world.fs_call(world.user, "ListSubvolumes", "a{sv}",
                      {"snapshots_of": V("s", str(d / "secret/hidden-sv"))})
    assert r["error"] == "org.btrfsd1.Error.NotFound", r
    # what they can reach answers as before, and root is unaffected
    assert world.fs_call(world.user, "GetSubvolume", "sa{sv}", str(d / "half/inside"), {})["ok"]
    assert world.fs_call(world.root, "GetSubvolume", "sa{sv}", str(d / "secret/hidden-sv"),
                         {})["ok"]
    assert Path(d / "secret/hidden-sv").is_dir()


def test_one_callers_listings_are_bounded_and_others_still_served(world: World) -> None:
    # at most reads_per_caller (2) listings of one caller run at once; the rest are
    # refused with a named error at once, never queued; root is not counted
    calls = [request(world.fs_path(), FS_IFACE, "ListSubvolumes", "a{sv}", [{}])] * 12
    world.user.send(calls)
    assert world.fs_call(world.root, "ListSubvolumes", "a{sv}", {})["ok"]
    replies = world.user.receive()
    assert len(replies) == 12
    for r in replies:
        assert r["ok"] or r["error"] == "org.btrfsd1.Error.Busy", r
    assert any(r["ok"] for r in replies)


def test_a_caller_past_their_share_of_time_is_refused_and_others_still_served(
        world: World) -> None:
    # a share so small that one listing (a few ms: polkit's check alone is one) makes
    # the next wait far over 5 s, so it is refused, saying when to ask again
    # (top-level keys go before TEST_CONFIG's [quota_alerts] table)
    world.sb.config = "read_share = 0.0001\nread_burst = 0.0001\n" + TEST_CONFIG
    world.sb.restart_daemon()
    try:
        assert world.fs_call(world.user, "ListSubvolumes", "a{sv}", {})["ok"]
        r = world.fs_call(world.user, "ListSubvolumes", "a{sv}", {})
        assert r.get("error") == "org.btrfsd1.Error.Busy", r
        assert "more than their share" in r["message"] and "ask again in" in r["message"], r
        # cheap reads are not rationed; another caller and root are not affected
        assert world.manager_call(world.user, "GetFilesystems", "a{sv}", {})["ok"]
        assert world.fs_call(world.admin, "ListSubvolumes", "a{sv}", {})["ok"]
        for _ in range(3):
            assert world.fs_call(world.root, "ListSubvolumes", "a{sv}", {})["ok"]
    finally:
        world.sb.config = TEST_CONFIG
        world.sb.restart_daemon()


def test_schedules_of_hidden_subvolumes_are_hidden(world: World) -> None:
    d = world.scratch()
    (d / "closed").mkdir(mode=0o700)
    for sub in ("open-sv", "closed/hidden-sv"):
        assert world.fs_call(world.root, "CreateSubvolume", "sa{sv}", str(d / sub), {})["ok"]
    names = {"priv-open": d / "open-sv", "priv-hidden": d / "closed/hidden-sv"}
    try:
        for name, sv in names.items():
            r = world.manager_call(world.root, "SetSchedule", "sa{sv}a{sv}", name,
                                   {"subvolume": V("s", str(sv)), "every": V("t", 3600),
                                    "keep_last": V("u", 3)}, {})
            assert r["ok"], r
            assert world.manager_call(world.root, "RunSchedule", "sa{sv}", name, {})["ok"]
        seen = world.manager_call(world.user, "GetSchedules", "a{sv}", {})["body"][0]
        assert "priv-open" in seen and "priv-hidden" not in seen, seen
        assert "priv-hidden" in world.manager_call(world.admin, "GetSchedules", "a{sv}",
                                                   {})["body"][0]
        r = world.manager_call(world.user, "ExplainSchedule", "sa{sv}", "priv-hidden", {})
        missing = world.manager_call(world.user, "ExplainSchedule", "sa{sv}", "nope", {})
        assert r["error"] == missing["error"] == "org.btrfsd1.Error.NotFound", (r, missing)
        # the schedule is theirs to see, its snapshots are not: they sit in the default
        # place, .snapshots, which btrfsd makes 0750 root (the user cannot look in)
        r = world.manager_call(world.user, "ExplainSchedule", "sa{sv}", "priv-open", {})
        assert r["ok"] and r["body"][0] == [], r
        r = world.manager_call(world.root, "ExplainSchedule", "sa{sv}", "priv-open", {})
        assert r["ok"] and len(r["body"][0]) == 1, r
    finally:
        for name in names:
            world.manager_call(world.root, "RemoveSchedule", "sa{sv}", name, {})


def test_what_the_user_owns_they_see_also_behind_their_own_closed_directory(
        world: World) -> None:
    uid = pwd.getpwnam(TEST_USER).pw_uid
    d = world.scratch()
    home = d / "home-u"
    assert world.fs_call(world.root, "CreateSubvolume", "sa{sv}", str(home), {})["ok"]
    os.chown(home, uid, -1)
    os.chmod(home, 0o700)  # theirs, closed to everyone else
    assert world.fs_call(world.root, "CreateSubvolume", "sa{sv}", str(home / "inner"), {})["ok"]
    # root's snapshot of their home into the default place: .snapshots is root's, 0750
    r = world.fs_call(world.root, "CreateSnapshot", "ssa{sv}", str(home), "", {})
    assert r["ok"], r
    rel = d.name
    mine = {p for p in _paths(world, world.user) if p.startswith(rel + "/")}
    assert mine == {f"{rel}/home-u", f"{rel}/home-u/inner"}, mine
    # as the kernel's own listing for that user: the snapshot's directory is not theirs
    r2 = subprocess.run([*world.sb.as_user(TEST_USER), "btrfs", "subvolume", "list", "-o",
                         str(home)], capture_output=True, text=True, env=world.sb.env)
    if r2.returncode == 0:
        assert not any(".snapshots" in line for line in r2.stdout.splitlines())
    assert world.fs_call(world.user, "GetSubvolume", "sa{sv}", str(home / "inner"), {})["ok"]
