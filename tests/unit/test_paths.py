"""Safe path resolution, on a real (tmp) directory tree."""

import os
from pathlib import Path

import pytest

from btrfsd.errors import InvalidArgument, NotFound
from btrfsd.fs.paths import check_name, resolve, split_path


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "a\0b", "x" * 256, "é" * 128])
def test_bad_names(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        check_name(bad)


def test_good_names() -> None:
    assert check_name("x" * 255) == "x" * 255
    assert check_name("2026-11-22 snap") == "2026-11-22 snap"


@pytest.mark.parametrize("bad", ["", "rel/path", "/a/../b", "/a/./b", "/a\0"])
def test_bad_paths(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        split_path(bad)


def test_trailing_and_double_slashes_fold() -> None:
    assert split_path("//a//b/") == ["a", "b"]


def test_resolve_refuses_symlinks(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    with pytest.raises(InvalidArgument, match="symbolic link"):
        resolve(str(tmp_path / "link" / "x"), must_exist=False)
    with pytest.raises(InvalidArgument, match="symbolic link"):
        resolve(str(tmp_path / "link"))


def test_resolve_missing(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        resolve(str(tmp_path / "nope"))
    with pytest.raises(NotFound):
        resolve(str(tmp_path / "no" / "such"), must_exist=False)
    with resolve(str(tmp_path / "new"), must_exist=False) as res:
        assert not res.exists and res.name == "new"


def test_open_parent_pins_the_checked_directory(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with resolve(str(tmp_path / "d" / "x"), must_exist=False) as res:
        # swap the directory for a symlink after the check: the fd still names the old one
        os.rename(tmp_path / "d", tmp_path / "moved")
        os.symlink("/etc", tmp_path / "d")
        fd = os.open(res.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600,
                     dir_fd=res.open_parent())
        os.close(fd)
        assert res.open_parent() == res.open_parent()  # one descriptor, reused
    assert (tmp_path / "moved" / "x").exists()
    assert not os.path.exists("/etc/x")


def test_fds_are_closed(tmp_path: Path) -> None:
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        with resolve(str(tmp_path)) as res:
            res.open()
    assert len(os.listdir("/proc/self/fd")) == before
