"""Names that are not UTF-8 (any user can make one): every read still works for everyone,
paths from replies can be handed back, and a filesystem with such a label is served
(issue 19, "bytes in, bytes out"; the rule is in btrfsd/names.py and docs/api.md)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from conftest import FS_IFACE, V, World, request, subvolume_rows
from test_cli import CTL, ctl
from test_jobs import remove_fs, wait_for_fs

BAD = b"bad\xffname"


def _bus(raw: bytes) -> str:
    """The bus form of a path (docs/api.md): bad bytes as \\xNN, backslashes doubled."""
    return raw.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")


def _delete_after(raw: bytes) -> None:
    # other tests compare whole listings with btrfs-progs' output: leave no odd name
    subprocess.run(["btrfs", "-q", "subvolume", "delete", raw], check=False,
                   capture_output=True)


def test_a_name_that_is_not_utf8_breaks_no_read(world: World) -> None:
    d = world.scratch()
    raw = os.fsencode(d) + b"/" + BAD
    subprocess.run(["btrfs", "-q", "subvolume", "create", raw], check=True)
    try:
        _check_odd_name(world, d, raw)
    finally:
        _delete_after(raw)


def _check_odd_name(world: World, d: Path, raw: bytes) -> None:
    bus = _bus(raw)
    assert "\\xff" in bus
    for caller in (world.root, world.user):
        r = world.fs_call(caller, "ListSubvolumes", "a{sv}", {})
        assert r["ok"], r
        assert any(row[2].endswith("bad\\xffname") for row in subvolume_rows(r))
    r = world.fs_call(world.user, "GetSubvolume", "sa{sv}", bus, {})
    assert r["ok"] and r["body"][0]["path"].endswith("bad\\xffname"), r
    r = world.manager_call(world.user, "ResolvePath", "sa{sv}", bus + "/", {})
    assert r["ok"] and r["body"][1].endswith("bad\\xffname"), r
    # a path taken from a reply acts on the same object, both ways
    snap_raw = os.fsencode(d) + b"/snap\xfe\\x41"
    r = world.fs_call(world.root, "CreateSnapshot", "ssa{sv}", bus, _bus(snap_raw), {})
    assert r["ok"] and r["body"][0] == _bus(snap_raw), r
    assert os.path.isdir(snap_raw) and os.stat(snap_raw).st_ino == 256
    r = world.fs_call(world.root, "ListSubvolumes", "a{sv}", {"snapshots_of": V("s", bus)})
    assert r["ok"], r
    assert [row[2].rsplit("/", 1)[-1] for row in subvolume_rows(r)] == ["snap\\xfe\\\\x41"]
    r = world.fs_call(world.root, "DeleteSubvolume", "sa{sv}", _bus(snap_raw), {})
    assert r["ok"], r
    assert not os.path.exists(snap_raw)
    # btrfsctl takes the name from its argv and prints JSON that parses
    r = subprocess.run([CTL, "--json", "subvolume", "show", raw],
                       env=world.sb.env, capture_output=True, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["path"].endswith("bad\\xffname")
    r2 = ctl(world, "--json", "subvolume", "list", str(d))
    assert r2.returncode == 0 and "bad\\\\xffname" in r2.stdout, r2.stderr


def test_a_filesystem_labelled_with_a_bad_byte_is_served(world: World) -> None:
    fs = world.sb.add_filesystem("300M", os.fsdecode(b"lab\xffel"))
    try:
        wait_for_fs(world, fs)
        r = world.user.batch([request(world.fs_path(fs), "org.freedesktop.DBus.Properties",
                                      "GetAll", "s", [FS_IFACE])])[0]
        assert r["ok"] and r["body"][0]["Label"] == "lab\\xffel", r
        r = world.manager_call(world.user, "GetFilesystems", "a{sv}", {})
        assert r["ok"] and world.fs_path(fs) in r["body"][0]
    finally:
        remove_fs(world, fs)


def test_names_come_back_from_a_listing_path(world: World) -> None:
    # a listing path (relative to the top level) joined to a mount point is a path
    d = world.scratch()
    raw = os.fsencode(d) + b"/x\\y"
    subprocess.run(["btrfs", "-q", "subvolume", "create", raw], check=True)
    r = world.fs_call(world.root, "ListSubvolumes", "a{sv}", {})
    try:
        rel = next(row[2] for row in subvolume_rows(r) if row[2].endswith("x\\\\y"))
        full = _bus(os.fsencode(world.mnt)) + "/" + rel
        r = world.fs_call(world.root, "GetSubvolume", "sa{sv}", full, {})
        assert r["ok"] and r["body"][0]["path"] == rel, r
    finally:
        _delete_after(raw)
