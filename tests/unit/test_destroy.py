"""Delete by id: the ioctl's struct as linux/btrfs.h lays it out, and the walk below a
subvolume that never follows a link (issue 19, item 2). Success paths need btrfs and are
covered by tests/integration/test_recursive_races.py."""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from btrfsd.fs import destroy, subvol
from btrfsd.fs.ioctl import fs_info


def test_vol_args_v2_has_the_kernels_layout() -> None:
    # struct btrfs_ioctl_vol_args_v2: fd s64 @0, transid u64 @8, flags u64 @16,
    # union { size, qgroup_inherit | unused[4] } @24 (32 bytes), union { name[4040] |
    # devid | subvolid } @56: 4096 bytes (checked against offsetof() with gcc here).
    assert destroy._VOL_ARGS_V2.size == 4096
    assert destroy.BTRFS_SUBVOL_NAME_MAX + 1 == 4040
    # _IOW(0x94, 63, struct btrfs_ioctl_vol_args_v2) as in linux/btrfs.h
    assert destroy.BTRFS_IOC_SNAP_DESTROY_V2 == 0x5000943F
    assert destroy.BTRFS_SUBVOL_SPEC_BY_ID == 1 << 4
    raw = destroy._VOL_ARGS_V2.pack(-1, 2, destroy.BTRFS_SUBVOL_SPEC_BY_ID, 0x1234)
    assert struct.unpack_from("=q", raw, 0) == (-1,)
    assert struct.unpack_from("=Q", raw, 16) == (1 << 4,)
    assert raw[24:56] == bytes(32)
    assert struct.unpack_from("=Q", raw, 56) == (0x1234,)
    assert raw[64:] == bytes(4096 - 64)


@pytest.fixture
def plain_dir(tmp_path: Path) -> Iterator[int]:
    """An open directory on a filesystem that is not btrfs."""
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fs_info(fd)
        except OSError:
            yield fd
        else:
            pytest.skip("the temporary directory is on btrfs")
    finally:
        os.close(fd)


def test_destroy_by_id_refuses_the_filesystems_own_trees_and_other_filesystems(
        plain_dir: int) -> None:
    for sid in (0, 5, 255):
        with pytest.raises(OSError) as e:
            destroy.destroy_by_id(plain_dir, sid)
        assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:
        destroy.destroy_by_id(plain_dir, 256)
    assert e.value.errno == errno.ENOTTY


def test_the_walk_below_never_follows_a_link(tmp_path: Path) -> None:
    top, outside = tmp_path / "top", tmp_path / "outside"
    (top / "a" / "n").mkdir(parents=True)
    (outside / "n").mkdir(parents=True)
    (top / "b").symlink_to(outside)
    (top / "a" / "l").symlink_to(top / "a" / "n")
    (top / "f").write_text("x")
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        reached = subvol.open_dir_beneath(fd, "a/n")
        assert reached is not None
        try:
            assert os.fstat(reached).st_ino == os.stat(top / "a" / "n").st_ino
        finally:
            os.close(reached)
        for path in ("b/n", "b", "a/l", "f", "f/x", "missing/n", "a/../a/n", "a//n", "./a"):
            assert subvol.open_dir_beneath(fd, path) is None, path
        same = subvol.open_dir_beneath(fd, "")
        assert same is not None
        os.close(same)
    finally:
        os.close(fd)


def test_a_plain_directory_is_never_taken_for_a_nested_subvolume(tmp_path: Path) -> None:
    (tmp_path / "a" / "n").mkdir(parents=True)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    expect = subvol.SubvolumeInfo(257, 256, "a/n", "u", "", "", 0, 0.0, 0.0, False)
    try:
        assert subvol.open_nested(fd, expect) is None
    finally:
        os.close(fd)
