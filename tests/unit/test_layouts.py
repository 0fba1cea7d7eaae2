"""Recognising other tools' snapshot layouts, on a plain (tmp) directory tree.

Subvolume cases need btrfs: tests/integration/test_coexist.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from btrfsd.fs.layouts import foreign_owner


@pytest.fixture
def top(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield tmp_path, fd
    finally:
        os.close(fd)


def test_missing_and_empty_are_not_foreign(top: tuple[Path, int]) -> None:
    path, fd = top
    assert foreign_owner(fd, ".snapshots") is None
    (path / ".snapshots").mkdir()
    assert foreign_owner(fd, ".snapshots") is None


def test_btrfsd_own_names_are_not_foreign(top: tuple[Path, int]) -> None:
    path, fd = top
    for name in ("20261122T043000Z", "20261122T043000Z-1", "20261122T043001Z"):
        (path / ".snapshots" / name).mkdir(parents=True)
    assert foreign_owner(fd, ".snapshots") is None


def test_snapper_numbered_directory(top: tuple[Path, int]) -> None:
    path, fd = top
    (path / ".snapshots" / "1").mkdir(parents=True)
    assert foreign_owner(fd, ".snapshots") is None  # a bare number is not enough
    (path / ".snapshots" / "1" / "info.xml").write_text("<snapshot/>")
    assert foreign_owner(fd, ".snapshots") == "snapper"


def test_snapper_info_xml_must_be_a_real_file(top: tuple[Path, int]) -> None:
    path, fd = top
    (path / "elsewhere").mkdir()
    (path / "elsewhere" / "info.xml").write_text("x")
    (path / ".snapshots" / "2").mkdir(parents=True)
    os.symlink(path / "elsewhere" / "info.xml", path / ".snapshots" / "2" / "info.xml")
    os.symlink(path / "elsewhere", path / ".snapshots" / "3")  # a linked "numbered dir"
    assert foreign_owner(fd, ".snapshots") is None


@pytest.mark.parametrize("name", ["home.20240101", "home.20240101T1200",
                                  "root.20240101T120000+0100", "data.20240101_1",
                                  "@home.20240101T1200_2"])
def test_btrbk_names(top: tuple[Path, int], name: str) -> None:
    path, fd = top
    (path / ".snapshots" / name).mkdir(parents=True)
    assert foreign_owner(fd, ".snapshots") == "btrbk"


@pytest.mark.parametrize("name", ["home.2024010", ".20240101", "home.20240101T12", "notes.txt"])
def test_not_btrbk_names(top: tuple[Path, int], name: str) -> None:
    path, fd = top
    (path / ".snapshots" / name).mkdir(parents=True)
    assert foreign_owner(fd, ".snapshots") is None


def test_files_and_links_with_foreign_names_do_not_count(top: tuple[Path, int]) -> None:
    path, fd = top
    (path / ".snapshots").mkdir()
    (path / ".snapshots" / "home.20240101").write_text("a file, not a snapshot")
    (path / "real").mkdir()
    os.symlink(path / "real", path / ".snapshots" / "home.20240102")
    assert foreign_owner(fd, ".snapshots") is None


def test_non_directories_are_left_to_the_caller(top: tuple[Path, int]) -> None:
    path, fd = top
    (path / "target").mkdir()
    (path / "target" / "home.20240101").mkdir()
    os.symlink(path / "target", path / ".snapshots")
    assert foreign_owner(fd, ".snapshots") is None  # never followed
    os.unlink(path / ".snapshots")
    os.mkfifo(path / ".snapshots")
    assert foreign_owner(fd, ".snapshots") is None  # never opened (would block)


def test_scan_is_bounded(top: tuple[Path, int]) -> None:
    path, fd = top
    snaps = path / ".snapshots"
    snaps.mkdir()
    for i in range(10):
        (snaps / f"20260101T0000{i:02d}Z").mkdir()
    (snaps / "home.20240101").mkdir()
    # Which entries come first depends on the filesystem's listing order.
    first = [e.name for e in os.scandir(snaps)]
    limit = first.index("home.20240101")
    assert foreign_owner(fd, ".snapshots", limit=limit) is None
    assert foreign_owner(fd, ".snapshots", limit=limit + 1) == "btrbk"


def test_directory_fd_stays_usable(top: tuple[Path, int]) -> None:
    path, fd = top
    (path / ".snapshots" / "x").mkdir(parents=True)
    foreign_owner(fd, ".snapshots")
    assert os.stat(".snapshots", dir_fd=fd).st_ino == (path / ".snapshots").stat().st_ino
