"""libbtrfsutil's calls that wait on the kernel, through ctypes so they release the GIL.

The ``btrfsutil`` Python binding never releases the GIL (libbtrfsutil/python/*.c has no
Py_BEGIN_ALLOW_THREADS), so a snapshot running in a worker thread froze the daemon's
event loop for the whole call: 250-370 ms with 300 MiB of dirty data to flush, during
which no other caller was answered and no job progress was sent (measured, see
docs/benchmarks.md). ctypes releases the GIL around a foreign call, so the same
libbtrfsutil functions called this way leave the loop running. The binding stays for
the short reads (subvolume info, paths, the nested-subvolume iterator).

libbtrfsutil's recursive snapshot and delete are not offered here: they re-walk the
paths of nested subvolumes with ``openat`` that follows symbolic links, so a user who
swaps a directory on the way for a link steers root's work to another subvolume (issue
19). subvol.py does that work itself, by id, on fds reached without following links.

Every function here is blocking (call it from a thread) and raises OSError with the
errno libbtrfsutil left behind.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable
from typing import Any

# From btrfsutil.h (libbtrfsutil 1.2, Debian 12; unchanged since 1.0).
CREATE_SNAPSHOT_READ_ONLY = 1 << 1

_c_int, _c_char_p, _c_void_p = ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p
_SIGNATURES: dict[str, list[Any]] = {
    "btrfs_util_create_subvolume_fd": [_c_int, _c_char_p, _c_int, _c_void_p, _c_void_p],
    "btrfs_util_create_snapshot_fd2": [_c_int, _c_int, _c_char_p, _c_int, _c_void_p, _c_void_p],
    "btrfs_util_delete_subvolume_fd": [_c_int, _c_char_p, _c_int],
    "btrfs_util_set_subvolume_read_only_fd": [_c_int, ctypes.c_bool],
    "btrfs_util_set_default_subvolume_fd": [_c_int, ctypes.c_uint64],
    "btrfs_util_sync_fd": [_c_int],
}


def _load() -> ctypes.CDLL:
    lib = ctypes.CDLL("libbtrfsutil.so.1", use_errno=True)
    for name, argtypes in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes = argtypes
        fn.restype = _c_int
    lib.btrfs_util_strerror.argtypes = [_c_int]
    lib.btrfs_util_strerror.restype = _c_char_p
    return lib


_lib = _load()


def _call(fn: Callable[..., int], *args: object) -> None:
    ctypes.set_errno(0)
    if (err := fn(*args)) == 0:
        return
    code = ctypes.get_errno()
    if code == 0:
        # libbtrfsutil found the problem itself (no syscall failed): say what it was.
        text = _lib.btrfs_util_strerror(err) or b"libbtrfsutil error"
        raise OSError(errno.EINVAL, text.decode())
    raise OSError(code, os.strerror(code))


def create_subvolume(parent_fd: int, name: str) -> None:
    """Create an empty subvolume ``name`` in the directory open as ``parent_fd``.

    Raises OSError.
    """
    _call(_lib.btrfs_util_create_subvolume_fd, parent_fd, os.fsencode(name), 0, None, None)


def create_snapshot(source_fd: int, parent_fd: int, name: str, *,
                    read_only: bool = False) -> None:
    """Snapshot the subvolume open as ``source_fd`` (not the ones nested in it) to
    ``name`` in ``parent_fd``. Raises OSError.
    """
    flags = CREATE_SNAPSHOT_READ_ONLY if read_only else 0
    _call(_lib.btrfs_util_create_snapshot_fd2, source_fd, parent_fd, os.fsencode(name), flags,
          None, None)


def delete_subvolume(parent_fd: int, name: str) -> None:
    """Delete the subvolume ``name`` in ``parent_fd`` (it must hold no nested ones).

    btrfsd deletes by id (destroy.py); this stays for callers that hold a checked parent.
    Raises OSError.
    """
    _call(_lib.btrfs_util_delete_subvolume_fd, parent_fd, os.fsencode(name), 0)


def set_read_only(fd: int, read_only: bool) -> None:
    """Set or clear the read-only flag of the subvolume open as ``fd``. Raises OSError."""
    _call(_lib.btrfs_util_set_subvolume_read_only_fd, fd, read_only)


def set_default_subvolume(fd: int) -> None:
    """Make the subvolume open as ``fd`` its filesystem's default. Raises OSError."""
    _call(_lib.btrfs_util_set_default_subvolume_fd, fd, 0)


def sync(fd: int) -> None:
    """Commit the current transaction of the filesystem holding ``fd``. Raises OSError."""
    _call(_lib.btrfs_util_sync_fd, fd)
