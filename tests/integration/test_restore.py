"""RestoreFiles and Rollback on a real filesystem through the real bus and polkitd:
metadata and shared extents checked with stat, xattrs and the filesystem's used space;
bad input changes nothing; a daemon killed mid-restore leaves no half-made file."""

from __future__ import annotations

import json
import os
import stat
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import DENIED, V, World, btrfs
from sandbox import TEST_USER, LoopFs
from test_jobs import add_fs, jobs, props, remove_fs, wait_state

MiB = 1 << 20
TEMP = ".btrfsd-restore-"


@pytest.fixture(scope="module")
def rfs(world: World) -> Iterator[LoopFs]:
    fs = add_fs(world, "3G", "btrfsd-restore", 0)
    yield fs
    remove_fs(world, fs)


def call(w: World, fs: LoopFs, member: str, sig: str, *body: Any, caller: Any = None
         ) -> dict[str, Any]:
    return w.fs_call(caller or w.root, member, sig, *body, fs=fs)


def restore(w: World, fs: LoopFs, snap: Path, paths: list[str], **opts: Any
            ) -> dict[str, Any]:
    return call(w, fs, "RestoreFiles", "sasa{sv}", str(snap), paths, opts)


def restored(w: World, fs: LoopFs, snap: Path, paths: list[str], **opts: Any
             ) -> dict[str, Any]:
    r = restore(w, fs, snap, paths, **opts)
    assert r["ok"], r
    p = wait_state(w, r["body"][0], {"completed", "failed", "cancelled"}, timeout=60)
    assert p["State"] == "completed", p
    return p


def subvolume(path: Path) -> Path:
    btrfs("subvolume", "create", str(path))
    return path


def snapshot(src: Path, dest: Path, ro: bool = True) -> Path:
    btrfs("subvolume", "snapshot", *(["-r"] if ro else []), str(src), str(dest))
    return dest


def acl(uid: int) -> bytes:
    """system.posix_acl_access: owner rw, user uid r, group r, mask r, other none."""
    entries = [(0x01, 6, 0xFFFFFFFF), (0x02, 4, uid), (0x04, 4, 0xFFFFFFFF),
               (0x10, 4, 0xFFFFFFFF), (0x20, 0, 0xFFFFFFFF)]
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


def meta(p: Path, atime: bool = True) -> tuple[Any, ...]:
    """lstat fields (ns times), xattrs and link target; never follows a link (that would
    touch the link's atime)."""
    st = os.lstat(p)
    link, is_dir = stat.S_ISLNK(st.st_mode), stat.S_ISDIR(st.st_mode)
    xattrs = {} if link else {k: os.getxattr(p, k) for k in sorted(os.listxattr(p))}
    return (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns,
            st.st_atime_ns if atime and not (is_dir or link) else 0, xattrs,
            os.readlink(p) if link else None)


def tree(root: Path, atime: bool = True) -> dict[str, Any]:
    """Every entry below root with its metadata, then (files) its content (which
    moves atimes: give atime=False to compare a tree read before)."""
    metas: dict[str, Any] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            metas[str(p.relative_to(root))] = meta(p, atime)
    return {rel: (m, (root / rel).read_bytes() if stat.S_ISREG(m[0]) else None)
            for rel, m in metas.items()}


def used(mnt: Path) -> int:
    subprocess.run(["btrfs", "filesystem", "sync", str(mnt)], check=True)
    st = os.statvfs(mnt)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def listing(d: Path) -> list[str]:
    return sorted(os.listdir(d))


@pytest.fixture(scope="module")
def setup(rfs: LoopFs) -> dict[str, Path]:
    """A subvolume with a tree of every kind of entry, its read-only snapshot, then the
    live tree changed."""
    sv = subvolume(rfs.mount_point / "home")
    d = sv / "docs"
    d.mkdir()
    (d / "sub").mkdir()
    big = d / "big"
    with open(big, "wb") as f:
        f.write(os.urandom(MiB) * 64)
    small = d / "sub" / "note"
    small.write_text("the original\n")
    os.chown(small, 1234, 5678)
    os.chmod(small, 0o640)
    os.setxattr(small, "user.colour", b"blue")
    os.setxattr(small, "system.posix_acl_access", acl(4321))
    os.utime(small, ns=(1_600_000_000_123_456_789, 1_500_000_000_987_654_321))
    os.symlink("/etc/passwd", d / "link")
    os.symlink("/etc", sv / "etclink")
    os.mkfifo(sv / "fifo")
    (sv / "plain").write_text("plain original\n")
    os.chmod(d, 0o750)
    snaps = sv / ".snapshots"
    snaps.mkdir()
    snap = snapshot(sv, snaps / "one")
    # the present: changed, replaced, gone
    small.write_text("changed\n")
    os.chmod(small, 0o666)
    (d / "link").unlink()
    (sv / "plain").write_text("plain changed\n")
    return {"sv": sv, "snap": snap}


# -- restore ------------------------------------------------------------------------------
def test_restore_keeps_metadata_shares_extents_and_moves_the_present_aside(
        world: World, rfs: LoopFs, setup: dict[str, Path]) -> None:
    sv, snap = setup["sv"], setup["snap"]
    before_used = used(rfs.mount_point)
    p = restored(world, rfs, snap, ["docs"])
    after_used = used(rfs.mount_point)
    assert after_used - before_used < 8 * MiB, "64 MiB restored should share extents"
    assert tree(sv / "docs") == tree(snap / "docs")
    assert meta(sv / "docs") == meta(snap / "docs")
    assert (sv / "docs" / "link").is_symlink()
    aside = [n for n in listing(sv) if n.startswith("docs.before-restore-")]
    assert len(aside) == 1, listing(sv)
    assert (sv / aside[0] / "sub" / "note").read_text() == "changed\n"
    assert not [n for n in listing(sv) if n.startswith(TEMP)]
    assert p["Details"]["files_done"] == p["Details"]["files_total"] == 5
    assert p["BytesDone"] == p["BytesTotal"] == 64 * MiB + len("the original\n")


def test_restore_a_file_by_absolute_path_moves_it_aside_or_overwrites(
        world: World, rfs: LoopFs, setup: dict[str, Path]) -> None:
    sv, snap = setup["sv"], setup["snap"]
    restored(world, rfs, snap, [str(snap / "plain")])
    assert (sv / "plain").read_text() == "plain original\n"
    aside = [n for n in listing(sv) if n.startswith("plain.before-restore-")]
    assert [(sv / n).read_text() for n in aside] == ["plain changed\n"]
    (sv / "plain").write_text("again\n")
    restored(world, rfs, snap, ["plain"], overwrite=V("b", True))
    assert (sv / "plain").read_text() == "plain original\n"
    assert len([n for n in listing(sv) if n.startswith("plain.before-restore-")]) == 1


def test_restore_a_link_as_a_link_and_under_a_destination(
        world: World, rfs: LoopFs, setup: dict[str, Path]) -> None:
    sv, snap = setup["sv"], setup["snap"]
    dest = sv / "out"
    dest.mkdir()
    restored(world, rfs, snap, ["etclink", "docs/sub/note"], destination=V("s", str(dest)))
    assert os.readlink(dest / "etclink") == "/etc"
    assert meta(dest / "note") == meta(snap / "docs" / "sub" / "note")


def _refused(w: World, fs: LoopFs, watch: list[Path], error: str, snap: Path,
             paths: list[str], **opts: Any) -> None:
    before = [tree(d, atime=False) for d in watch]
    for caller in (w.root, w.user):
        r = call(w, fs, "RestoreFiles", "sasa{sv}", str(snap), paths, opts, caller=caller)
        assert not r["ok"], r
        if caller is w.root:
            assert r["error"] == f"org.btrfsd1.Error.{error}", r
        else:
            assert r["error"] in DENIED, r
    assert [tree(d, atime=False) for d in watch] == before


def test_bad_input_is_refused_and_changes_nothing(world: World, rfs: LoopFs,
                                                 setup: dict[str, Path]) -> None:
    sv, snap = setup["sv"], setup["snap"]
    other = world.sb.filesystems[1].mount_point
    watch = [sv / "docs", sv / "out" if (sv / "out").exists() else sv / "docs"]
    _refused(world, rfs, watch, "InvalidArgument", snap, ["docs/../plain"])
    _refused(world, rfs, watch, "InvalidArgument", snap, [str(sv / "plain")])
    _refused(world, rfs, watch, "InvalidArgument", snap, ["etclink/passwd"])
    _refused(world, rfs, watch, "InvalidArgument", snap, ["fifo"])
    _refused(world, rfs, watch, "InvalidArgument", sv, ["plain"])  # writable source
    _refused(world, rfs, watch, "InvalidArgument", snap, ["docs"],
             destination=V("s", str(other)), overwrite=V("b", True))
    _refused(world, rfs, watch, "NotFound", snap, ["nothing-here"])
    # a snapshot of the other filesystem, asked of this one
    osv = subvolume(other / f"osv-{os.getpid()}")
    osnap = snapshot(osv, other / f"osnap-{os.getpid()}")
    try:
        _refused(world, rfs, watch, "InvalidArgument", osnap, ["x"])
    finally:
        btrfs("subvolume", "delete", str(osnap), str(osv))


def test_no_space_names_the_target_and_changes_nothing(world: World, rfs: LoopFs) -> None:
    sv = subvolume(rfs.mount_point / "bulky")
    subprocess.run(["fallocate", "-l", "1200M", str(sv / "huge")], check=True)
    snap = snapshot(sv, rfs.mount_point / "bulky-snap")
    other = world.sb.filesystems[1].mount_point
    dest = other / f"into-{os.getpid()}"
    dest.mkdir()
    try:
        r = restore(world, rfs, snap, ["huge"], destination=V("s", str(dest)))
        assert r["error"] == "org.btrfsd1.Error.NoSpace" and str(dest) in r["message"], r
        assert listing(dest) == []
    finally:
        dest.rmdir()


# what a user does in a directory of theirs that an admin restores into: the temporary
# names a job id predicts, made first (a FIFO, a link to /etc, a directory), and a tree
# nested deeper than any walk may recurse
_HOSTILE = r"""
import os, sys
top, depth = sys.argv[1], int(sys.argv[2])
for job in range(1, 400) if not os.path.lexists(f"{top}/.btrfsd-restore-1-0") else ():
    for n, make in enumerate((os.mkfifo, lambda p: os.symlink("/etc", p), os.mkdir)):
        make(f"{top}/.btrfsd-restore-{job}-{n}")
fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
for name in sys.argv[3:]:
    cur = os.dup(fd)
    for _ in range(depth):
        os.mkdir(name, dir_fd=cur)
        nxt = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=cur)
        os.close(cur)
        cur = nxt
    os.close(cur)
"""


def test_a_users_directory_neither_blocks_nor_steers_a_restore_into_it(
        world: World, rfs: LoopFs) -> None:
    sv = subvolume(rfs.mount_point / "hostile")
    home = sv / "u"
    (home / "work").mkdir(parents=True)
    (home / "work" / "a.txt").write_text("mine\n")
    uid = int(subprocess.run(["id", "-u", TEST_USER], capture_output=True, text=True,
                             check=True).stdout)
    for p in (home, home / "work", home / "work" / "a.txt"):
        os.chown(p, uid, uid)
    user = [*world.sb.as_user(TEST_USER), sys.executable, "-c", _HOSTILE]
    subprocess.run([*user, str(home), "1100", "deep"], check=True)
    snap = snapshot(sv, rfs.mount_point / "hostile-snap")
    subprocess.run(["rm", "-rf", str(home / "work"), str(home / "deep")], check=True)
    subprocess.run([*user, str(home), "1100", "work"], check=True)
    made = {n for n in listing(home) if n.startswith(TEMP)}
    # the user's deep tree: too deep to check for subvolumes before an overwrite; moved
    # aside otherwise
    r = restore(world, rfs, snap, ["u/work"], overwrite=V("b", True))
    assert r["error"] == "org.btrfsd1.Error.InvalidArgument" and "deep" in r["message"], r
    restored(world, rfs, snap, ["u/work"])
    assert tree(home / "work") == tree(snap / "u" / "work")
    assert len([n for n in listing(home) if n.startswith("work.before-restore-")]) == 1
    assert {n for n in listing(home) if n.startswith(TEMP)} == made
    assert os.readlink(home / ".btrfsd-restore-1-1") == "/etc"
    r = restore(world, rfs, snap, ["u/deep"])
    assert r["error"] == "org.btrfsd1.Error.InvalidArgument" and "deep" in r["message"], r
    assert not (home / "deep").exists()


@pytest.fixture(scope="module")
def many(rfs: LoopFs) -> dict[str, Path]:
    """20,000 files in a snapshot; half of them changed since: a restore of seconds."""
    sv = subvolume(rfs.mount_point / "many")
    d = sv / "d"
    d.mkdir()
    for i in range(20000):
        (d / f"f{i}").write_bytes(b"old")
    snap = snapshot(sv, rfs.mount_point / "many-snap")
    for i in range(0, 20000, 2):
        (d / f"f{i}").write_bytes(b"new")
    return {"sv": sv, "snap": snap}


def _old_or_restored(sv: Path, snap: Path, present: dict[str, Any], state: str) -> None:
    assert not [n for n in listing(sv) if n.startswith(TEMP)], listing(sv)
    now = tree(sv / "d", atime=False)
    if state == "completed":
        assert now == tree(snap / "d", atime=False)
    else:
        assert now == present, f"a {state} restore changed the target"
        assert not [n for n in listing(sv) if ".before-restore-" in n]


def test_cancel_leaves_every_file_old_or_restored_and_no_rollback_meanwhile(
        world: World, rfs: LoopFs, many: dict[str, Path]) -> None:
    sv, snap = many["sv"], many["snap"]
    present = tree(sv / "d", atime=False)
    path = restore(world, rfs, snap, ["d"])["body"][0]
    r = call(world, rfs, "Rollback", "ssa{sv}", str(sv), str(snap), {})
    # 20,000 files take seconds: the restore runs; a rollback would swap its target away
    assert r["error"] == "org.btrfsd1.Error.AlreadyRunning", r
    r = world.root.call(path, "org.btrfsd1.Job", "Cancel", "a{sv}", [{}])
    assert r["ok"] or "has ended" in r.get("message", ""), r
    p = wait_state(world, path, {"cancelled", "completed", "failed"})
    assert p["State"] in ("cancelled", "completed"), p
    _old_or_restored(sv, snap, present, p["State"])


def test_killed_daemon_mid_restore_leaves_every_file_old_or_restored(
        world: World, rfs: LoopFs, many: dict[str, Path]) -> None:
    sv, snap = many["sv"], many["snap"]
    present = tree(sv / "d", atime=False)
    path = restore(world, rfs, snap, ["d"])["body"][0]
    world.sb.kill_daemon()
    world.sb.start_daemon()
    p = props(world, path)
    assert p["State"] in ("interrupted", "completed"), p
    if p["State"] == "interrupted":
        assert "stopped while this restore ran" in p["Message"]
    _old_or_restored(sv, snap, present, p["State"])
    assert path in jobs(world)


def test_restore_to_another_filesystem_copies(world: World, rfs: LoopFs,
                                              setup: dict[str, Path]) -> None:
    snap = setup["snap"]
    dest = world.sb.filesystems[1].mount_point / f"copied-{os.getpid()}"
    dest.mkdir()
    try:
        p = restored(world, rfs, snap, ["docs/sub/note"], destination=V("s", str(dest)))
        assert p["Details"]["bytes_copied"] == len("the original\n")
        assert meta(dest / "note") == meta(snap / "docs" / "sub" / "note")
    finally:
        subprocess.run(["rm", "-rf", str(dest)], check=True)


# -- rollback -----------------------------------------------------------------------------
def _schedule(w: World, sv: Path) -> str:
    name = f"rb-{os.getpid()}"
    r = w.manager_call(w.root, "SetSchedule", "sa{sv}a{sv}", name,
                       {"subvolume": V("s", str(sv)), "every": V("t", 3600),
                        "keep_last": V("u", 5)}, {})
    assert r["ok"], r
    return name


def _explained(w: World, name: str) -> set[str]:
    r = w.manager_call(w.root, "ExplainSchedule", "sa{sv}", name, {})
    assert r["ok"], r
    return {row[0] for row in r["body"][0]}


def test_rollback_swaps_in_place_keeps_the_old_state_and_schedules_follow(
        world: World, rfs: LoopFs) -> None:
    sv = subvolume(rfs.mount_point / "app")
    (sv / "version").write_text("1\n")
    name = _schedule(world, sv)
    try:
        r = world.manager_call(world.root, "RunSchedule", "sa{sv}", name, {})
        assert r["ok"], r
        first = r["body"][0]["snapshot"]
        (sv / "version").write_text("2\n")
        before_uuid = btrfs("subvolume", "show", str(sv))
        r = call(world, rfs, "Rollback", "ssa{sv}", str(sv), first, {})
        assert r["ok"], r
        saved = Path(r["body"][0])
        assert (sv / "version").read_text() == "1\n"
        assert (saved / "version").read_text() == "2\n"
        assert saved.parent == sv / ".snapshots"
        assert "ro=true" in btrfs("property", "get", "-ts", str(saved), "ro")
        assert Path(first).exists(), "the snapshot stays next to the subvolume"
        assert btrfs("subvolume", "show", str(sv)) != before_uuid
        assert not [n for n in listing(sv.parent) if n.startswith(".btrfsd-rollback-")]
        assert first in _explained(world, name), "the schedule lost its snapshot"
        # again, to the same snapshot (taken before the first rollback)
        (sv / "version").write_text("3\n")
        r = call(world, rfs, "Rollback", "ssa{sv}", str(sv), first, {})
        assert r["ok"], r
        assert (sv / "version").read_text() == "1\n"
        assert first in _explained(world, name)
    finally:
        world.manager_call(world.root, "RemoveSchedule", "sa{sv}", name, {})


def test_rollback_makes_no_read_only_snapshot_writable_where_users_reach_it(
        world: World, rfs: LoopFs) -> None:
    # review finding: a user who reaches a snapshot while it is writable for its move
    # opens files in it and writes through them after it is read-only again
    sv = subvolume(rfs.mount_point / "shared")
    (sv / "f").write_text("1\n")
    closed = sv / "closed"
    closed.mkdir(mode=0o750)
    (sv / "open").mkdir(mode=0o755)
    in_closed = snapshot(sv, closed / "s1")
    in_open = snapshot(sv, sv / "open" / "s2")
    uuid_open = btrfs("subvolume", "show", str(in_open)).split("UUID:")[1].split()[0]
    (sv / "f").write_text("2\n")
    r = call(world, rfs, "Rollback", "ssa{sv}", str(sv), str(in_closed), {})
    assert r["ok"], r
    saved = Path(r["body"][0])
    assert (sv / "f").read_text() == "1\n"
    # the one only root can reach moved along, read-only again
    assert "ro=true" in btrfs("property", "get", "-ts", str(in_closed), "ro")
    # the one users can reach stayed, never made writable, in the kept state
    kept = saved / "open" / "s2"
    assert "ro=true" in btrfs("property", "get", "-ts", str(kept), "ro")
    assert uuid_open in btrfs("subvolume", "show", str(kept))
    assert not [n for n in listing(sv / "open") if n == "s2"] or not (
        sv / "open" / "s2").is_dir() or not any((sv / "open" / "s2").iterdir())


def test_rollback_of_a_mounted_subvolume_sets_a_new_default(world: World,
                                                           rfs: LoopFs) -> None:
    sv = subvolume(rfs.mount_point / "root")
    (sv / "os").write_text("good\n")
    snap = snapshot(sv, rfs.mount_point / "root-good")
    (sv / "os").write_text("broken\n")
    where = world.sb.workdir / "rootmnt"
    where.mkdir(exist_ok=True)
    subprocess.run(["mount", "-o", "subvol=/root", rfs.device, str(where)], check=True)
    try:
        deadline = time.monotonic() + 15
        while len(props_fs(world, rfs)["MountPoints"]) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        r = call(world, rfs, "Rollback", "ssa{sv}", str(sv), str(snap), {})
        assert r["ok"], r
        saved = Path(r["body"][0])
        assert (saved / "os").read_text() == "broken\n"
        assert (where / "os").read_text() == "broken\n", "a mounted one is not swapped"
        default = btrfs("subvolume", "get-default", str(rfs.mount_point))
        assert "root/.snapshots/" in default and "-rollback" in default, default
        new = sv / ".snapshots" / default.split("/")[-1].strip()
        assert (new / "os").read_text() == "good\n"
        log = world.sb.daemon_log()
        assert "takes effect at the next mount or boot" in log and "subvol=" in log
    finally:
        subprocess.run(["umount", str(where)], check=True)
        btrfs("subvolume", "set-default", "5", str(rfs.mount_point))


def props_fs(w: World, fs: LoopFs) -> dict[str, Any]:
    r = w.root.call(w.fs_path(fs), "org.freedesktop.DBus.Properties", "GetAll", "s",
                    ["org.btrfsd1.Filesystem"])
    assert r["ok"], r
    return r["body"][0]  # type: ignore[no-any-return]


def test_rollback_bad_input(world: World, rfs: LoopFs) -> None:
    a = subvolume(rfs.mount_point / "ra")
    b = subvolume(rfs.mount_point / "rb")
    sa = snapshot(a, rfs.mount_point / "ra-snap")
    sa2 = snapshot(sa, rfs.mount_point / "ra-snap2")
    sb = snapshot(b, rfs.mount_point / "rb-snap")
    # top level, itself, a read-only target, a snapshot of another subvolume
    cases = [(rfs.mount_point, sa), (a, a), (sa, sa2), (a, sb)]
    for target, snap in cases:
        before = btrfs("subvolume", "list", "-u", "-q", str(rfs.mount_point))
        for caller in (world.root, world.user):
            r = call(world, rfs, "Rollback", "ssa{sv}", str(target), str(snap), {},
                     caller=caller)
            assert not r["ok"], (target, snap, r)
            if caller is world.root:
                assert r["error"] == "org.btrfsd1.Error.InvalidArgument", (target, snap, r)
            else:
                assert r["error"] in DENIED, r
        assert btrfs("subvolume", "list", "-u", "-q", str(rfs.mount_point)) == before


# -- btrfsctl -----------------------------------------------------------------------------
def test_btrfsctl_restore_and_rollback(world: World, rfs: LoopFs) -> None:
    from test_cli import ctl

    sv = subvolume(rfs.mount_point / "cli")
    (sv / "f").write_text("old\n")
    snap = snapshot(sv, rfs.mount_point / "cli-snap")
    (sv / "f").write_text("new\n")
    r = ctl(world, "restore", str(snap), "f", "--overwrite", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["State"] == "completed"
    assert (sv / "f").read_text() == "old\n"
    (sv / "f").write_text("newer\n")
    r = ctl(world, "rollback", str(sv), str(snap))
    assert r.returncode == 0, r.stderr
    assert "kept as" in r.stdout and (sv / "f").read_text() == "old\n"
