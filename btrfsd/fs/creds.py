"""Filesystem access with a caller's identity, for one thread at a time.

btrfsd runs as root, so anything it looks up by path it can see. A read answered for an
unprivileged caller must show no more than that caller could find: this sets the calling
thread's filesystem uid, gid and groups to the caller's while a lookup runs, so the
kernel itself judges every permission (modes, ACLs, and what root-only capabilities
would bypass: changing the fsuid from 0 drops CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH and
the other file capabilities from the thread's effective set; changing it back restores
them).

Linux keeps credentials per thread, and ``setfsuid``/``setfsgid`` change only the calling
thread. glibc's ``setgroups`` changes every thread of the process, so the raw system call
is used for groups. Use only from a worker thread (blocking code), never on the event
loop's thread.
"""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

# setgroups(2) by number: the glibc wrapper would apply it to every thread
_SYS_SETGROUPS = {"x86_64": 116, "aarch64": 159, "ppc64le": 81, "s390x": 206}
_libc = ctypes.CDLL(None, use_errno=True)
_libc.setfsuid.argtypes = [ctypes.c_uint]
_libc.setfsgid.argtypes = [ctypes.c_uint]


@dataclass(frozen=True)
class Creds:
    """Whose filesystem view: uid, primary gid and supplementary groups."""

    uid: int
    gid: int
    groups: tuple[int, ...] = ()

    @property
    def is_root(self) -> bool:
        return self.uid == 0


def _setgroups(groups: list[int]) -> None:
    nr = _SYS_SETGROUPS.get(platform.machine())
    if nr is None:
        raise OSError(0, f"no setgroups system call number known for {platform.machine()}")
    arr = (ctypes.c_uint * max(len(groups), 1))(*groups)
    if _libc.syscall(nr, ctypes.c_size_t(len(groups)), arr) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


_QUERY = 0xFFFFFFFF  # an id set*fsid refuses: the call only reports the current one


def _fs_ids() -> tuple[int, int]:
    return _libc.setfsuid(_QUERY), _libc.setfsgid(_QUERY)


def _set_fs_ids(uid: int, gid: int) -> None:
    # set*fsid report no error; reading the value back says whether it took
    _libc.setfsgid(gid)
    _libc.setfsuid(uid)
    if _fs_ids() != (uid, gid):
        raise OSError(0, f"cannot take the filesystem identity {uid}:{gid}")


@contextmanager
def acting_as(creds: Creds | None) -> Iterator[None]:
    """Run the body's file lookups with ``creds`` (None or root: unchanged), in this
    thread only. Raises OSError when the identity cannot be taken (nothing is then
    changed) or cannot be given back (then this thread stays restricted: it fails
    closed, never open)."""
    if creds is None or creds.is_root:
        yield
        return
    own_groups = os.getgroups()
    own_uid, own_gid = _fs_ids()
    _setgroups(list(creds.groups))
    try:
        _set_fs_ids(creds.uid, creds.gid)
    except OSError:
        _set_fs_ids(own_uid, own_gid)
        _setgroups(own_groups)
        raise
    try:
        yield
    finally:
        _set_fs_ids(own_uid, own_gid)
        _setgroups(own_groups)
