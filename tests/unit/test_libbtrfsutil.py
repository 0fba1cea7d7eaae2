"""The ctypes calls into libbtrfsutil report failures as OSError with the kernel's errno.

Their success paths need btrfs and are covered by the integration tests.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from btrfsd.fs import libbtrfsutil
from btrfsd.fs.ioctl import fs_info


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


def test_failures_are_oserrors_with_the_kernels_errno(plain_dir: int, tmp_path: Path) -> None:
    # ENOTTY: the kernel's answer to a btrfs ioctl elsewhere; EINVAL: libbtrfsutil's own
    # "not btrfs" when it looks up the subvolume id first.
    for expected, call in (
            (errno.ENOTTY, lambda: libbtrfsutil.create_subvolume(plain_dir, "x")),
            (errno.ENOTTY, lambda: libbtrfsutil.create_snapshot(plain_dir, plain_dir, "y")),
            (errno.ENOTTY, lambda: libbtrfsutil.delete_subvolume(plain_dir, "x")),
            (errno.ENOTTY, lambda: libbtrfsutil.set_read_only(plain_dir, True)),
            (errno.EINVAL, lambda: libbtrfsutil.set_default_subvolume(plain_dir)),
            (errno.ENOTTY, lambda: libbtrfsutil.sync(plain_dir))):
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno == expected, e.value
    assert list(tmp_path.iterdir()) == []


def test_a_library_error_without_errno_says_what_libbtrfsutil_found() -> None:
    """A failure libbtrfsutil found itself (no syscall failed) must not report the errno
    an earlier call left behind, but libbtrfsutil's own description."""
    ctypes.set_errno(errno.ENOENT)  # as an earlier failed call leaves it
    with pytest.raises(OSError) as e:
        libbtrfsutil._call(lambda: 3)  # BTRFS_UTIL_ERROR_INVALID_ARGUMENT, errno untouched
    assert e.value.errno == errno.EINVAL
    assert "Invalid argument" in str(e.value)
