"""Subvolume and snapshot methods do what they say (checked with btrfs-progs)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import V, World, btrfs, subvolume_rows

from btrfsd.bus.options import SUBVOLUME_FIELDS


def _ro(p: Path) -> bool:
    return "ro=true" in btrfs("property", "get", "-ts", str(p), "ro")


def test_list_matches_btrfs_progs(world: World) -> None:
    d = world.scratch()
    for n in ("a", "b"):
        assert world.fs_call(world.root, "CreateSubvolume", "sa{sv}", str(d / n), {})["ok"]
    r = world.fs_call(world.root, "ListSubvolumes", "a{sv}", {})
    ours = {(row[0], row[2]) for row in subvolume_rows(r)}
    theirs = set()
    for line in btrfs("subvolume", "list", str(world.mnt)).splitlines():
        parts = line.split()
        theirs.add((int(parts[1]), parts[-1]))
    assert ours == theirs


def test_get_subvolume_fields(world: World) -> None:
    d = world.scratch()
    world.fs_call(world.root, "CreateSubvolume", "sa{sv}", str(d / "s"), {})
    r = world.fs_call(world.root, "CreateSnapshot", "ssa{sv}", str(d / "s"), str(d / "snap"), {})
    assert r["ok"], r
    info = world.fs_call(world.root, "GetSubvolume", "sa{sv}", str(d / "snap"), {})["body"][0]
    src = world.fs_call(world.root, "GetSubvolume", "sa{sv}", str(d / "s"), {})["body"][0]
    assert info["is_snapshot"] and info["read_only"]
    assert info["parent_uuid"] == src["uuid"]
    assert info["path"] == f"{d.name}/snap"
    shown = btrfs("subvolume", "show", str(d / "snap"))
    assert src["uuid"] in shown and str(info["id"]) in shown


def test_default_snapshot_place_and_name(world: World) -> None:
    d = world.scratch()
    world.fs_call(world.root, "CreateSubvolume", "sa{sv}", str(d / "home"), {})
    first = world.fs_call(world.root, "CreateSnapshot", "ssa{sv}", str(d / "home"), "", {})
    second = world.fs_call(world.root, "CreateSnapshot", "ssa{sv}", str(d / "home"), "", {})
    p1, p2 = Path(first["body"][0]), Path(second["body"][0])
    assert p1.parent == d / "home" / ".snapshots" == p2.parent
    assert p1.name < p2.name  # sortable, unique within one second too
    assert _ro(p1) and _ro(p2)
    r = world.fs_call(world.root, "ListSubvolumes", "a{sv}",
                      {"snapshots_of": V("s", str(d / "home"))})
    assert sorted(row[2] for row in subvolume_rows(r)) == sorted(
        f"{d.name}/home/.snapshots/{p.name}" for p in (p1, p2))


def test_listing_only_some_columns(world: World) -> None:
    """`columns`: the named columns as in the full reply, the others empty; a reply kept
    for one set of columns is never sent for another (bus/marshalled.py)."""
    d = world.scratch()
    world.fs_call(world.root, "CreateSubvolume", "sa{sv}", str(d / "c"), {})
    world.fs_call(world.root, "CreateSnapshot", "ssa{sv}", str(d / "c"), "", {})
    opts = {"snapshots_of": V("s", str(d / "c"))}
    wanted = ["path", "otime", "read_only"]
    for _ in range(2):  # the second of each may be a kept reply
        full = world.fs_call(world.root, "ListSubvolumes", "a{sv}", opts)["body"][0]
        some = world.fs_call(world.root, "ListSubvolumes", "a{sv}",
                             {**opts, "columns": V("as", wanted)})["body"][0]
        assert len(full[0]) == 1 and len(some) == len(full) == len(SUBVOLUME_FIELDS)
        for name, whole, part in zip(SUBVOLUME_FIELDS, full, some, strict=True):
            assert part == (whole if name in wanted else [])


def test_writable_snapshot(world: World) -> None:
    d = world.scratch()
    world.fs_call(world.root, "CreateSubvolume", "sa{sv}", str(d / "s"), {})
    r = world.fs_call(world.root, "CreateSnapshot", "ssa{sv}", str(d / "s"), str(d / "w"),
                      {"read_only": V("b", False)})
    assert r["ok"] and not _ro(d / "w")


def test_recursive_read_only_snapshot_and_delete(world: World) -> None:
    d = world.scratch()
    for p in ("top", "top/n1", "top/n1/n2"):
        assert world.fs_call(world.root, "CreateSubvolume", "sa{sv}", str(d / p), {})["ok"]
    r = world.fs_call(world.root, "CreateSnapshot", "ssa{sv}", str(d / "top"), str(d / "snap"),
                      {"recursive": V("b", True)})
    assert r["ok"], r
    for p in ("snap", "snap/n1", "snap/n1/n2"):
        assert _ro(d / p), p
    # A read-only parent with nested subvolumes: the kernel alone would say EROFS.
    r = world.fs_call(world.root, "DeleteSubvolume", "sa{sv}", str(d / "snap"),
                      {"recursive": V("b", True)})
    assert r["ok"], r
    assert not (d / "snap").exists()
    assert (d / "top/n1/n2").exists()


def test_set_read_only_both_ways(world: World) -> None:
    d = world.scratch()
    world.fs_call(world.root, "CreateSubvolume", "sa{sv}", str(d / "s"), {})
    assert world.fs_call(world.root, "SetReadOnly", "sba{sv}", str(d / "s"), True, {})["ok"]
    assert _ro(d / "s")
    assert world.fs_call(world.root, "SetReadOnly", "sba{sv}", str(d / "s"), False, {})["ok"]
    assert not _ro(d / "s")


def test_resolve_path(world: World) -> None:
    d = world.scratch()
    world.fs_call(world.root, "CreateSubvolume", "sa{sv}", str(d / "s"), {})
    (d / "s" / "file").write_text("x")
    r = world.manager_call(world.root, "ResolvePath", "sa{sv}", str(d / "s" / "file"), {})
    assert r["body"] == [world.fs_path(), f"{d.name}/s"]
    (d / "s" / "plain").mkdir()
    r = world.manager_call(world.root, "ResolvePath", "sa{sv}", str(d / "s" / "plain"), {})
    assert r["body"] == [world.fs_path(), f"{d.name}/s"]
    r = world.manager_call(world.root, "ResolvePath", "sa{sv}", str(d), {})
    assert r["body"] == [world.fs_path(), ""]
    other = world.sb.filesystems[1]
    r = world.manager_call(world.root, "ResolvePath", "sa{sv}", str(other.mount_point), {})
    assert r["body"] == [world.fs_path(other), ""]


def test_filesystem_properties(world: World) -> None:
    r = world.root.call(world.fs_path(), "org.freedesktop.DBus.Properties", "GetAll", "s",
                        ["org.btrfsd1.Filesystem"])
    props = r["body"][0]
    assert props["Uuid"] == world.fs.uuid
    assert props["MountPoints"] == [str(world.mnt)]
    assert props["Devices"] == [world.fs.device]
    assert props["Label"] == "btrfsd-test0"
    assert props["TotalBytes"] > 0 and props["FreeBytes"] <= props["TotalBytes"]
    assert props["DefaultSubvolumeId"] == 5
    assert props["QuotaEnabled"] is False


def test_list_matches_libbtrfsutil(world: World) -> None:
    """The tree-search listing agrees with libbtrfsutil's iterator, nested dirs included."""
    import os
    import uuid

    import btrfsutil

    d = world.scratch()
    (d / "x" / "y").mkdir(parents=True)
    for p in ("x/y/s1", "x/y/s1/s2"):
        assert world.fs_call(world.root, "CreateSubvolume", "sa{sv}", str(d / p), {})["ok"]
    assert world.fs_call(world.root, "CreateSnapshot", "ssa{sv}", str(d / "x/y/s1"),
                         str(d / "snap"), {})["ok"]
    rows = subvolume_rows(world.fs_call(world.root, "ListSubvolumes", "a{sv}", {}))
    ours = sorted((r[0], r[1], r[2], r[3], r[4], r[6], r[9]) for r in rows)
    fd = os.open(world.mnt, os.O_RDONLY)
    try:
        theirs = sorted(
            (i.id, i.parent_id, p, str(uuid.UUID(bytes=i.uuid)),
             str(uuid.UUID(bytes=i.parent_uuid)) if any(i.parent_uuid) else "",
             i.generation, bool(i.flags & 1))
            for p, i in btrfsutil.SubvolumeIterator(fd, top=5, info=True))
    finally:
        os.close(fd)
    assert ours == theirs


def test_other_callers_are_answered_while_a_snapshot_flushes(world: World) -> None:
    """A snapshot first flushes the source's dirty data (hundreds of ms here). That kernel
    call must not hold up the daemon: libbtrfsutil's Python binding keeps the GIL, which
    froze the event loop for the whole call. Checked by order, not by time: another
    caller's reply must come back while the snapshot is still in flight."""
    d = world.scratch()
    src = d / "src"
    assert world.fs_call(world.root, "CreateSubvolume", "sa{sv}", str(src), {})["ok"]
    try:
        for attempt, mib in enumerate((128, 256, 384)):
            with open(src / "big", "wb") as f:  # dirty pages, no fsync: the snapshot flushes
                for _ in range(mib):
                    f.write(os.urandom(1 << 20))
            world.root.send([world.fs_request("CreateSnapshot", "ssa{sv}", str(src),
                                              str(d / f"snap{attempt}"), {}, timed=True)])
            time.sleep(0.05)  # let the snapshot reach its kernel call
            # the admin (read-all): an unprivileged user's listing walks directories
            # with their identity and may rightly wait for the kernel's lock on the
            # directory the snapshot is made in; this test is about the daemon's loop
            other = world.admin.batch([world.fs_request("ListSubvolumes", "a{sv}", {},
                                                        timed=True)])[0]
            snap = world.root.receive()[0]
            assert snap["ok"] and other["ok"], (snap, other)
            if snap["done"] < other["sent"]:
                continue  # the flush was over before the other call went out: more data
            late = other["done"] - snap["done"]
            assert late < 0, f"ListSubvolumes waited for the snapshot (answered {late:.3f} s after)"
            return
        pytest.fail("every snapshot finished within 50 ms; the check could not be made")
    finally:  # give the space back: the image is shared by the whole session
        for sub in [*d.glob("snap*"), src]:
            assert world.fs_call(world.root, "DeleteSubvolume", "sa{sv}", str(sub), {})["ok"]
