"""Subvolume and snapshot operations through libbtrfsutil (blocking; call from a thread).

Every function raises only BtrfsdError subclasses, with the kernel's errno mapped to a
named error and a message that says what failed.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterator
from typing import NamedTuple, TypeVar

import btrfsutil

from ..constants import TOP_LEVEL_SUBVOLUME_ID
from ..errors import BtrfsdError, NotBtrfs, from_errno
from . import libbtrfsutil, treesearch
from .ioctl import fs_info
from .paths import Resolved
from .treesearch import format_uuid

# Inode number of every subvolume's root directory (BTRFS_FIRST_FREE_OBJECTID).
SUBVOLUME_ROOT_INO = 256
# btrfs_root_item.flags bit for a read-only subvolume (BTRFS_ROOT_SUBVOL_RDONLY).
ROOT_SUBVOL_RDONLY = 1

T = TypeVar("T")


class SubvolumeInfo(NamedTuple):
    """A subvolume as reported by the kernel; ``path`` is relative to the top level.

    A NamedTuple, not a dataclass: listings build 10,000 of these, and a tuple is made
    several times faster (docs/benchmarks.md).
    """

    id: int
    parent_id: int
    path: str
    uuid: str
    parent_uuid: str
    received_uuid: str
    generation: int
    ctime: float
    otime: float
    read_only: bool

    @property
    def is_snapshot(self) -> bool:
        return bool(self.parent_uuid)


def _from_info(path: str, info: btrfsutil.SubvolumeInfo) -> SubvolumeInfo:
    return SubvolumeInfo(
        id=info.id,
        parent_id=info.parent_id,
        path=path,
        uuid=format_uuid(info.uuid),
        parent_uuid=format_uuid(info.parent_uuid),
        received_uuid=format_uuid(info.received_uuid),
        generation=info.generation,
        ctime=info.ctime,
        otime=info.otime,
        read_only=bool(info.flags & ROOT_SUBVOL_RDONLY),
    )


def kernel_call(what: str, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    """Run one kernel call, turning OSError into the matching named BtrfsdError.

    Raises BtrfsdError whose message starts with ``what``.
    """
    try:
        return fn(*args, **kwargs)
    except OSError as e:
        code = e.errno or 0
        raise from_errno(code, f"{what}: {os.strerror(code)}.") from e


def fsid_of(fd: int, path: str) -> str:
    """Return the fsid of the btrfs filesystem holding ``fd``.

    Raises NotBtrfs when ``path`` is on another kind of filesystem.
    """
    try:
        return fs_info(fd).fsid
    except OSError as e:
        raise NotBtrfs(f"{path} is not on a btrfs filesystem.") from e


def pending_deletions(fd: int) -> list[int]:
    """Ids of deleted subvolumes the kernel's cleaner has not freed yet. Raises OSError."""
    return list(btrfsutil.deleted_subvolumes(fd))


def sync(fd: int) -> None:
    """Commit the filesystem's current transaction (BTRFS_IOC_SYNC). Raises OSError."""
    libbtrfsutil.sync(fd)


def is_subvolume(st: os.stat_result) -> bool:
    """True if an lstat result is a subvolume's root directory."""
    return stat.S_ISDIR(st.st_mode) and st.st_ino == SUBVOLUME_ROOT_INO


def subvolume_info(fd: int, path: str) -> SubvolumeInfo:
    """Return the info of the subvolume whose root directory is open as ``fd``.

    Raises BtrfsdError.
    """
    info = kernel_call(f"Cannot read subvolume {path}", btrfsutil.subvolume_info, fd)
    rel = "" if info.id == TOP_LEVEL_SUBVOLUME_ID else kernel_call(
        f"Cannot find the path of {path}", btrfsutil.subvolume_path, fd
    )
    return _from_info(rel, info)


def containing_subvolume(fd: int, path: str) -> SubvolumeInfo:
    """Return the subvolume that contains the file or directory open as ``fd``.

    Raises BtrfsdError.
    """
    sid = kernel_call(f"Cannot find the subvolume of {path}", btrfsutil.subvolume_id, fd)
    info = kernel_call(f"Cannot read the subvolume of {path}", btrfsutil.subvolume_info, fd, sid)
    rel = "" if sid == TOP_LEVEL_SUBVOLUME_ID else kernel_call(
        f"Cannot find the subvolume path of {path}", btrfsutil.subvolume_path, fd, sid
    )
    return _from_info(rel, info)


def iter_subvolumes(fd: int, *, top: int = 0, post_order: bool = False) -> Iterator[SubvolumeInfo]:
    """Yield the subvolumes below ``top`` (0: the subvolume of ``fd``).

    Paths are relative to ``top``. Raises BtrfsdError.
    """
    try:
        with btrfsutil.SubvolumeIterator(fd, top=top, info=True, post_order=post_order) as it:
            for path, info in it:
                yield _from_info(path, info)
    except OSError as e:
        code = e.errno or 0
        raise from_errno(code, f"Cannot list subvolumes: {os.strerror(code)}.") from e


def list_all(fd: int) -> list[SubvolumeInfo]:
    """Every subvolume of the filesystem holding ``fd`` (paths from the top level), by id.

    One TREE_SEARCH_V2 stream, like btrfs-progs; about twice as fast as libbtrfsutil's
    iterator at 10,000 snapshots (docs/benchmarks.md). Raises BtrfsdError.
    """
    return list(map(SubvolumeInfo._make, treesearch.list_subvolumes(fd)))


def create_subvolume(target: Resolved) -> None:
    """Create a subvolume at a resolved, non-existing path. Raises BtrfsdError."""
    kernel_call(f"Cannot create subvolume {target.path}", libbtrfsutil.create_subvolume,
                target.open_parent(), target.name)


def set_read_only(fd: int, path: str, read_only: bool) -> None:
    """Set or clear the read-only flag of the subvolume open as ``fd``. Raises BtrfsdError."""
    kernel_call(
        f"Cannot change the read-only flag of {path}",
        libbtrfsutil.set_read_only,
        fd,
        read_only,
    )


def create_snapshot(source_fd: int, source_path: str, dest: Resolved, *, read_only: bool,
                    recursive: bool) -> None:
    """Snapshot the subvolume open as ``source_fd`` to the resolved ``dest``.

    A recursive read-only snapshot is made writable and then set read-only bottom-up
    (the kernel refuses both flags at once); if any step fails, everything made is
    deleted again so no half-made snapshot is left. Raises BtrfsdError.
    """
    what = f"Cannot snapshot {source_path} to {dest.path}"
    if not recursive:
        kernel_call(what, libbtrfsutil.create_snapshot, source_fd, dest.open_parent(),
                    dest.name, read_only=read_only)
        return
    try:
        kernel_call(what, libbtrfsutil.create_snapshot, source_fd, dest.open_parent(),
                    dest.name, recursive=True)
        if read_only:
            fd = dest.open_created()
            for nested in list(iter_subvolumes(fd, post_order=True)):
                nfd = os.open(nested.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                try:
                    set_read_only(nfd, f"{dest.path}/{nested.path}", True)
                finally:
                    os.close(nfd)
            set_read_only(fd, dest.path, True)
    except (BtrfsdError, OSError) as e:
        _remove_partial(dest)
        if isinstance(e, BtrfsdError):
            raise
        raise from_errno(e.errno or 0, f"{what}: {os.strerror(e.errno or 0)}.") from e


def _remove_partial(dest: Resolved) -> None:
    """Delete what a failed recursive snapshot left at ``dest`` (it did not exist before)."""
    try:
        st = os.stat(dest.name, dir_fd=dest.parent_fd, follow_symlinks=False)
    except OSError:
        return
    if not is_subvolume(st):
        return
    # The original error is what the caller needs; this one would only hide it.
    with contextlib.suppress(BtrfsdError):
        delete_subvolume(dest, recursive=True)


def delete_subvolume(target: Resolved, *, recursive: bool) -> None:
    """Delete the subvolume at ``target`` (and, if ``recursive``, those nested in it).

    Read-only subvolumes that contain nested ones are made writable first, since the kernel
    cannot unlink a child from a read-only parent. Raises BtrfsdError.
    """
    if recursive:
        # the target may be one this call made (a failed recursive snapshot's remains)
        fd = target.open_created()
        top = subvolume_info(fd, target.path)
        nested = list(iter_subvolumes(fd))
        parents = {n.parent_id for n in nested}
        if top.id in parents and top.read_only:
            set_read_only(fd, target.path, False)
        for n in nested:
            if n.id in parents and n.read_only:
                nfd = os.open(n.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                try:
                    set_read_only(nfd, f"{target.path}/{n.path}", False)
                finally:
                    os.close(nfd)
    kernel_call(
        f"Cannot delete subvolume {target.path}",
        libbtrfsutil.delete_subvolume,
        target.open_parent(),
        target.name,
        recursive=recursive,
    )


def default_subvolume_id(fd: int) -> int:
    """Return the default subvolume id of the filesystem holding ``fd``. Raises BtrfsdError."""
    return int(
        kernel_call("Cannot read the default subvolume", btrfsutil.get_default_subvolume, fd)
    )


def set_default_subvolume(fd: int, path: str) -> None:
    """Make the subvolume open as ``fd`` the filesystem's default. Raises BtrfsdError."""
    kernel_call(
        f"Cannot make {path} the default subvolume", libbtrfsutil.set_default_subvolume, fd
    )
