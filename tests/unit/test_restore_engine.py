"""fs/restore.py on a plain directory tree (no btrfs here: the reflink is refused, so
the copy fallback runs), and core/lineage.py: which subvolume a snapshot belongs to."""

from __future__ import annotations

import os
import resource
import stat
from pathlib import Path

import pytest

from btrfsd.core.lineage import belongs_to, live_of
from btrfsd.errors import InvalidArgument, NotFound
from btrfsd.fs import restore as fr
from btrfsd.fs.info import SubvolumeInfo


def _meta(p: Path) -> tuple[object, ...]:
    st = os.lstat(p)
    link = stat.S_ISLNK(st.st_mode)
    xattrs = {} if link else {k: os.getxattr(p, k) for k in os.listxattr(p)}
    return st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, xattrs


@pytest.fixture
def snap(tmp_path: Path) -> Path:
    root = tmp_path / "snap"
    (root / "d" / "sub").mkdir(parents=True)
    f = root / "d" / "sub" / "f"
    f.write_bytes(b"x" * 100_000)
    os.chmod(f, 0o640)
    os.setxattr(f, "user.colour", b"blue")
    os.utime(f, ns=(1_600_000_000_000_000_001, 1_500_000_000_000_000_002))
    os.symlink("/etc", root / "d" / "link")
    os.utime(root / "d", ns=(1, 2))
    return root


def _source(root: Path, rel: str) -> fr.Source:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        src = fr.open_source(fd, fr.split_relative(rel), rel)
    finally:
        os.close(fd)
    fr.measure(src, os.stat(root).st_dev)
    return src


def _target(d: Path, name: str) -> fr.Target:
    return fr.Target(os.open(d, os.O_RDONLY | os.O_DIRECTORY), str(d), name)


def test_a_tree_is_rebuilt_with_its_metadata_and_the_present_moved_aside(
        snap: Path, tmp_path: Path) -> None:
    live = tmp_path / "live"
    (live / "d").mkdir(parents=True)
    (live / "d" / "mine").write_text("present")
    src, t = _source(snap, "d"), _target(live, "d")
    c = fr.Copier(7, "20260101T000000Z", overwrite=False)
    try:
        c.restore(src, t)
    finally:
        src.close()
        t.close()
    assert src.files == 4 and src.size == 100_000
    assert c.files_done == 4 and c.bytes_copied == 100_000  # no reflinks on this fs
    assert (live / "d" / "sub" / "f").read_bytes() == b"x" * 100_000
    assert _meta(live / "d" / "sub" / "f") == _meta(snap / "d" / "sub" / "f")
    assert os.readlink(live / "d" / "link") == "/etc"
    assert os.stat(live / "d").st_mtime_ns == 2
    assert (live / "d.before-restore-20260101T000000Z" / "mine").read_text() == "present"
    assert sorted(os.listdir(live)) == ["d", "d.before-restore-20260101T000000Z"]


def test_a_file_is_replaced_atomically_with_overwrite(snap: Path, tmp_path: Path) -> None:
    live = tmp_path / "live"
    live.mkdir()
    (live / "f").write_text("present")
    src, t = _source(snap, "d/sub/f"), _target(live, "f")
    try:
        fr.Copier(1, "T", overwrite=True).restore(src, t)
    finally:
        src.close()
        t.close()
    assert os.listdir(live) == ["f"] and (live / "f").stat().st_size == 100_000


def test_a_stop_leaves_the_present_and_no_temporary(snap: Path, tmp_path: Path) -> None:
    live = tmp_path / "live"
    (live / "d").mkdir(parents=True)
    src, t = _source(snap, "d"), _target(live, "d")
    c = fr.Copier(3, "T", overwrite=True)
    c.stop.set()
    try:
        with pytest.raises(fr.Stopped):
            c.restore(src, t)
    finally:
        src.close()
        t.close()
    assert os.listdir(live) == ["d"] and os.listdir(live / "d") == []


def test_leftovers_of_one_job_are_removed(tmp_path: Path) -> None:
    (tmp_path / ".btrfsd-restore-5-0" / "x").mkdir(parents=True)
    (tmp_path / ".btrfsd-restore-5-1").write_text("half")
    (tmp_path / ".btrfsd-restore-6-0").write_text("another job's")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert fr.remove_leftovers(fd, 5) == 2
    finally:
        os.close(fd)
    assert os.listdir(tmp_path) == [".btrfsd-restore-6-0"]


@pytest.mark.parametrize("bad", ["../x", "a/../b", "./a", "a\0b"])
def test_paths_leaving_the_snapshot_are_refused(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        fr.split_relative(bad)


def test_links_on_the_way_and_special_files_are_refused(snap: Path) -> None:
    with pytest.raises(InvalidArgument, match="symbolic link"):
        _source(snap, "d/link/passwd")
    os.mkfifo(snap / "d" / "fifo")
    with pytest.raises(InvalidArgument, match="FIFO"):
        _source(snap, "d")
    with pytest.raises(NotFound):
        _source(snap, "nothing")


def _sv(uuid: str, parent: str = "", ro: bool = False) -> SubvolumeInfo:
    return SubvolumeInfo(0, 5, uuid, uuid, parent, "", 0, 0.0, 0.0, ro)


def test_snapshots_belong_to_the_subvolume_also_after_rollbacks() -> None:
    # "app" was rolled back to s1: the old one is kept read-only, the live one is a
    # writable snapshot of s1; s1 and s2 were taken of the old one
    old = _sv("old", ro=True)
    s1, s2 = _sv("s1", "old", ro=True), _sv("s2", "old", ro=True)
    live = _sv("live", "s1")
    items = [old, s1, s2, live]
    assert live_of(s2, items) == live
    assert belongs_to(s2, live, items) and belongs_to(s1, live, items)
    assert not belongs_to(live, live, items)
    assert not belongs_to(_sv("x", "other", ro=True), live, items)
    with pytest.raises(InvalidArgument):
        live_of(old, items)  # not a snapshot
    with pytest.raises(NotFound):
        live_of(_sv("y", "gone", ro=True), items)


def test_a_temporary_name_someone_else_made_neither_blocks_nor_is_removed(
        snap: Path, tmp_path: Path) -> None:
    # job ids are public: a user of a shared directory could make the name first
    live = tmp_path / "live"
    live.mkdir()
    for n in range(3):
        (live / f".btrfsd-restore-4-{n}").write_text("not btrfsd's")
    src, t = _source(snap, "d"), _target(live, "d")
    try:
        fr.Copier(4, "T", overwrite=False).restore(src, t)
    finally:
        src.close()
        t.close()
    assert sorted(os.listdir(live)) == [*(f".btrfsd-restore-4-{n}" for n in range(3)), "d"]
    assert (live / ".btrfsd-restore-4-0").read_text() == "not btrfsd's"


def _restore(snap: Path, rel: str, live: Path, overwrite: bool = False) -> fr.Copier:
    src, t = _source(snap, rel), _target(live, rel.rsplit("/", 1)[-1])
    c = fr.Copier(9, "T", overwrite=overwrite)
    try:
        c.restore(src, t)
    finally:
        src.close()
        t.close()
    return c


def test_a_link_swapped_for_a_hard_link_gets_no_chown(snap: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch
                                                      ) -> None:
    # the target directory is a user's: between the link's creation and its chown they
    # put a hard link to a file of their choice at the temporary name
    if os.geteuid() != 0:
        pytest.skip("needs root (chown)")
    os.lchown(snap / "d" / "link", 4242, 4242)
    live, victim = tmp_path / "live", tmp_path / "victim"
    live.mkdir()
    victim.write_text("root's")
    real = os.symlink

    def swap(src: str, dst: str, *, dir_fd: int | None = None, **kw: object) -> None:
        real(src, dst, dir_fd=dir_fd)
        if dst.startswith(fr.TEMP_PREFIX):
            os.unlink(dst, dir_fd=dir_fd)
            os.link(victim, dst, dst_dir_fd=dir_fd)

    monkeypatch.setattr(fr.os, "symlink", swap)
    with pytest.raises(OSError):
        _restore(snap, "d/link", live)
    assert os.stat(victim).st_uid == 0


def test_a_directory_put_at_the_temporary_name_gets_nothing(
        snap: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # between mkdir and open of the temporary the user puts their own directory there
    live, theirs = tmp_path / "live", tmp_path / "live" / "theirs"
    theirs.mkdir(parents=True, mode=0o777)
    os.chmod(theirs, 0o777)
    real = os.mkdir

    def swap(path: str, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
        real(path, mode, dir_fd=dir_fd)
        if path.startswith(fr.TEMP_PREFIX):
            os.rename(path, "ours", src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            os.rename("theirs", path, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)

    monkeypatch.setattr(fr.os, "mkdir", swap)
    with pytest.raises(OSError):
        _restore(snap, "d", live)
    monkeypatch.undo()
    assert not any(os.listdir(live / n) for n in os.listdir(live) if n != "ours")


def _deep(top: Path, depth: int) -> None:
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            nxt = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        os.close(os.open("f", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd))
    finally:
        os.close(fd)


def test_deep_trees_are_removed_without_recursion_and_refused_for_restore(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a user can nest directories without limit: crash clean-up (at the next start)
    # and overwrite must still remove them, a restore refuses them
    _deep(tmp_path / ".btrfsd-restore-5-0-x", 1500)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(InvalidArgument, match="levels deep"):
            fr.holds_other_mounts(fd, ".btrfsd-restore-5-0-x")
        assert fr.remove_leftovers(fd, 5) == 1
        assert os.listdir(tmp_path) == []
        _deep(tmp_path / "snap", fr.MAX_DEPTH + 1)
        with pytest.raises(InvalidArgument, match="levels deep"):
            _source(tmp_path, "snap")
        monkeypatch.setattr(fr, "MAX_DEPTH", 7)  # the moves up, on a small tree
        fr.remove_tree(fd, "snap")
        assert os.listdir(tmp_path) == []
    finally:
        os.close(fd)


def test_wide_trees_take_one_descriptor_per_level(tmp_path: Path) -> None:
    snap = tmp_path / "snap"
    for n in range(300):
        (snap / "wide" / f"{n}" / "x").mkdir(parents=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fd = os.open(snap, os.O_RDONLY | os.O_DIRECTORY)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 60,
                                                hard))
    try:
        src = _source(snap, "wide")
        src.close()
        assert src.files == 601
        assert not fr.holds_other_mounts(fd, "wide")
        fr.remove_tree(fd, "wide")
        assert os.listdir(snap) == []
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        os.close(fd)


def test_leftovers_of_other_users_in_a_sticky_directory_stay(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (chown)")
    os.chmod(tmp_path, 0o1777)
    (tmp_path / ".btrfsd-restore-5-0").write_text("someone's")
    os.chown(tmp_path / ".btrfsd-restore-5-0", 4242, 4242)
    (tmp_path / ".btrfsd-restore-5-1").write_text("ours")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert fr.remove_leftovers(fd, 5) == 1
    finally:
        os.close(fd)
    assert os.listdir(tmp_path) == [".btrfsd-restore-5-0"]
