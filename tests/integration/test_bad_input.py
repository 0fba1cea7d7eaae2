"""Bad input gets a named error, changes nothing, and the daemon answers the next call."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import V, World, btrfs, fs_state

E = "org.btrfsd1.Error."
Call = Callable[[World, Path], dict[str, Any]]


def create(path: str) -> Call:
    return lambda w, d: w.fs_call(w.root, "CreateSubvolume", "sa{sv}", path.format(d=d), {})


def snapshot(src: str, dst: str, **opts: Any) -> Call:
    return lambda w, d: w.fs_call(w.root, "CreateSnapshot", "ssa{sv}", src.format(d=d),
                                  dst.format(d=d), opts)


def delete(path: str, **opts: Any) -> Call:
    return lambda w, d: w.fs_call(w.root, "DeleteSubvolume", "sa{sv}", path.format(d=d), opts)


def set_ro(path: str) -> Call:
    return lambda w, d: w.fs_call(w.root, "SetReadOnly", "sba{sv}", path.format(d=d), True, {})


def restore(snap: str, paths: list[str], **opts: Any) -> Call:
    return lambda w, d: w.fs_call(w.root, "RestoreFiles", "sasa{sv}", snap.format(d=d),
                                  paths, opts)


def rollback(target: str, snap: str) -> Call:
    return lambda w, d: w.fs_call(w.root, "Rollback", "ssa{sv}",
                                  target.format(d=d, mnt=w.mnt), snap.format(d=d), {})


CASES: dict[str, tuple[Call, str]] = {
    "relative path": (create("relative/x"), E + "InvalidArgument"),
    "dot-dot escape": (create("{d}/../../../etc/evil"), E + "InvalidArgument"),
    "dot component": (create("{d}/./x"), E + "InvalidArgument"),
    "outside any btrfs": (create("/run/btrfsd-test-nope"), E + "NotBtrfs"),
    "symlink on the way": (create("{d}/link-out/x"), E + "InvalidArgument"),
    "symlink as target": (set_ro("{d}/link-in"), E + "InvalidArgument"),
    "symlink as snapshot source": (snapshot("{d}/link-in", "{d}/s2"), E + "InvalidArgument"),
    "symlink as snapshot dest dir": (snapshot("{d}/sv", "{d}/link-out/s"), E + "InvalidArgument"),
    "name too long": (create("{d}/" + "n" * 256), E + "InvalidArgument"),
    "empty path": (create(""), E + "InvalidArgument"),
    "empty snapshot source": (snapshot("", "{d}/s"), E + "InvalidArgument"),
    "missing parent": (create("{d}/no/such"), E + "NotFound"),
    "unknown option": (delete("{d}/sv", bogus=V("b", True)), E + "InvalidArgument"),
    "wrong option type": (delete("{d}/sv", recursive=V("s", "yes")), E + "InvalidArgument"),
    "wrong option type int": (snapshot("{d}/sv", "{d}/s", read_only=V("i", 1)),
                              E + "InvalidArgument"),
    "existing destination": (snapshot("{d}/sv", "{d}/plain"), E + "AlreadyExists"),
    "existing subvolume": (create("{d}/sv"), E + "AlreadyExists"),
    "delete a plain directory": (delete("{d}/plain"), E + "InvalidArgument"),
    "delete a file": (delete("{d}/file"), E + "InvalidArgument"),
    "delete top level": (lambda w, d: w.fs_call(w.root, "DeleteSubvolume", "sa{sv}",
                                                str(w.mnt), {}), E + "InvalidArgument"),
    "delete with nested, not recursive": (delete("{d}/sv"), E + "Busy"),
    "delete the mounted subvolume": (delete("{d}/mounted"), E + "Busy"),
    "snapshot of a non-subvolume": (snapshot("{d}/plain", "{d}/s"), E + "InvalidArgument"),
    "recursive snapshot inside its source": (
        snapshot("{d}/sv", "{d}/sv/inner", recursive=V("b", True)), E + "InvalidArgument"),
    "recursive snapshot without destination": (
        snapshot("{d}/sv", "", recursive=V("b", True)), E + "InvalidArgument"),
    "path on another filesystem": (
        lambda w, d: w.fs_call(w.root, "CreateSubvolume", "sa{sv}",
                               str(w.sb.filesystems[1].mount_point / "x"), {}),
        E + "InvalidArgument"),
    "top level read-only": (lambda w, d: w.fs_call(w.root, "SetReadOnly", "sba{sv}",
                                                   str(w.mnt), True, {}), E + "InvalidArgument"),
    "restore from a plain directory": (restore("{d}/plain", ["x"]), E + "InvalidArgument"),
    "restore from a writable subvolume": (restore("{d}/sv", ["nested"]),
                                          E + "InvalidArgument"),
    "restore through a symlink": (restore("{d}/link-in", ["nested"]), E + "InvalidArgument"),
    "restore with an unknown option": (restore("{d}/sv", ["x"], bogus=V("b", True)),
                                       E + "InvalidArgument"),
    "rollback of the top level": (rollback("{mnt}", "{d}/sv"), E + "InvalidArgument"),
    "rollback of a plain directory": (rollback("{d}/plain", "{d}/sv"), E + "InvalidArgument"),
    "rollback onto a subvolume that is no snapshot of it": (
        rollback("{d}/mounted", "{d}/sv"), E + "InvalidArgument"),
    "explain of no backup": (
        lambda w, d: w.manager_call(w.root, "ExplainBackup", "sa{sv}", "no-such", {}),
        E + "NotFound"),
    "explain with an unknown option": (
        lambda w, d: w.manager_call(w.root, "ExplainBackup", "sa{sv}", "no-such",
                                    {"bogus": V("b", True)}), E + "InvalidArgument"),
    "backup restore of no backup": (
        lambda w, d: w.manager_call(w.root, "RestoreBackup", "sssa{sv}", "no-such", "c",
                                    str(d / "plain"), {}), E + "NotFound"),
    "backup restore with an unknown option": (
        lambda w, d: w.manager_call(w.root, "RestoreBackup", "sssa{sv}", "no-such", "c",
                                    str(d / "plain"), {"bogus": V("b", True)}),
        E + "InvalidArgument"),
    "schedule with no such backup": (
        lambda w, d: w.manager_call(w.root, "SetSchedule", "sa{sv}a{sv}", "bad-bk",
                                    {"subvolume": V("s", str(d / "sv")),
                                     "every": V("t", 3600), "keep_last": V("u", 1),
                                     "backup": V("s", "no-such")}, {}),
        E + "InvalidArgument"),
    "listing an unknown column": (
        lambda w, d: w.fs_call(w.root, "ListSubvolumes", "a{sv}",
                               {"columns": V("as", ["path", "size"])}),
        E + "InvalidArgument"),
    "unknown filesystem object": (
        lambda w, d: w.root.call("/org/btrfsd1/filesystems/nope", "org.btrfsd1.Filesystem",
                                 "ListSubvolumes", "a{sv}", [{}]),
        "org.freedesktop.DBus.Error.UnknownMethod"),
    "wrong signature": (
        lambda w, d: w.root.call(w.fs_path(), "org.btrfsd1.Filesystem", "CreateSubvolume",
                                 "s", [str(d / "x")]),
        "org.freedesktop.DBus.Error.UnknownMethod"),
}


@pytest.fixture(scope="module")
def bad_dir(world: World) -> Any:
    """A directory with every trap the cases need; the mount is removed afterwards."""
    d = world.scratch()
    btrfs("subvolume", "create", str(d / "sv"))
    btrfs("subvolume", "create", str(d / "sv" / "nested"))
    btrfs("subvolume", "create", str(d / "mounted"))
    (d / "plain").mkdir()
    (d / "file").write_text("x")
    os.symlink("/tmp", d / "link-out")
    os.symlink(str(d / "sv"), d / "link-in")
    extra = world.sb.workdir / "extra-mount"
    extra.mkdir()
    subprocess.run(["mount", "-t", "btrfs", "-o", f"subvol={d.name}/mounted",
                    world.fs.device, str(extra)], check=True)
    world.sb.wait_for_name("org.btrfsd1")
    try:
        yield d
    finally:
        subprocess.run(["umount", str(extra)], check=False)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(world: World, bad_dir: Path, name: str) -> None:
    call, expected = CASES[name]
    # commit what earlier tests left pending (atime updates of directories they read,
    # written at the next commit, move a subvolume's generation), so that only this
    # call's changes could show
    os.sync()
    before = [fs_state(fs.mount_point) for fs in world.sb.filesystems]
    listing = sorted(os.listdir(bad_dir))
    r = call(world, bad_dir)
    assert not r["ok"], r
    assert r["error"] == expected, r
    assert r["message"] and "Traceback" not in r["message"]
    assert [fs_state(fs.mount_point) for fs in world.sb.filesystems] == before
    assert sorted(os.listdir(bad_dir)) == listing
