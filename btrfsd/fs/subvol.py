"""Subvolume and snapshot operations through libbtrfsutil (blocking; call from a thread).

Every function raises only BtrfsdError subclasses, with the kernel's errno mapped to a
named error and a message that says what failed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple, TypeVar

import btrfsutil

from ..constants import TOP_LEVEL_SUBVOLUME_ID
from ..errors import BtrfsdError, Busy, NotBtrfs, NotFound, from_errno
from . import destroy, libbtrfsutil, treesearch
from .info import SubvolumeInfo as SubvolumeInfo
from .ioctl import fs_info
from .paths import WALK_FLAGS, Resolved, Stuck, descend
from .treesearch import format_uuid

# Inode number of every subvolume's root directory (BTRFS_FIRST_FREE_OBJECTID).
SUBVOLUME_ROOT_INO = 256
# btrfs_root_item.flags bit for a read-only subvolume (BTRFS_ROOT_SUBVOL_RDONLY).
ROOT_SUBVOL_RDONLY = 1
# A directory reached by a walk, reopened from its handle for ioctls (never blocking).
_OPEN_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NONBLOCK | os.O_CLOEXEC
# What a walk meets when a name it was given now means something else.
_MOVED = (errno.ENOENT, errno.ELOOP, errno.ENOTDIR)
# Nesting deeper than this is a loop, not a filesystem (root backrefs cannot loop).
_MAX_DEPTH = 4096

T = TypeVar("T")


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


def list_all(fd: int, earlier: treesearch.RootScan | None = None) -> treesearch.RootScan:
    """Every subvolume of the filesystem holding ``fd`` (paths from the top level), by id
    (``.items``): ``earlier`` itself when it is still exact (treesearch.unchanged: a
    search of the leaves changed since it was made), else a new listing that decodes
    only what changed since ``earlier``.

    One TREE_SEARCH_V2 stream, like btrfs-progs; about twice as fast as libbtrfsutil's
    iterator at 10,000 snapshots (docs/benchmarks.md). Raises BtrfsdError.
    """
    if earlier is not None and treesearch.unchanged(fd, earlier):
        return earlier
    return treesearch.list_subvolumes(fd, earlier)


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


def open_dir_beneath(top_fd: int, rel_path: str) -> int | None:
    """Open (O_RDONLY) the directory ``rel_path`` below the directory open as ``top_fd``.

    Every component is opened with O_PATH|O_NOFOLLOW|O_DIRECTORY from the one before, so
    a symbolic link anywhere on the way is never followed: however names are swapped
    meanwhile, what is reached lies below ``top_fd`` (callers check what it is: a mount
    point on the way is crossed as in any walk). Returns an fd the caller closes,
    or None when a component is missing, a link or not a directory (moved or replaced).
    Raises BtrfsdError for other failures.
    """
    parts = rel_path.split("/") if rel_path else []
    if any(p in ("", ".", "..") for p in parts):
        return None  # not a path the kernel reports; never walk it
    try:
        cur = descend(top_fd, parts)
    except Stuck as e:
        if e.error.errno in _MOVED:
            return None
        code = e.error.errno or 0
        raise from_errno(code, f"Cannot open {rel_path}: {os.strerror(code)}.") from e.error
    try:
        # "." from the handle: the directory that was reached, whatever its name is now
        return _reopen_dir(cur, rel_path)
    finally:
        os.close(cur)


def _reopen_dir(handle: int, shown: str) -> int | None:
    """The directory an O_PATH handle names, opened for ioctls; None when it is gone.
    Raises BtrfsdError for other failures."""
    try:
        return os.open(".", _OPEN_DIR_FLAGS, dir_fd=handle)
    except OSError as e:
        if e.errno in _MOVED:
            return None
        code = e.errno or 0
        raise from_errno(code, f"Cannot open {shown}: {os.strerror(code)}.") from e


def open_nested(top_fd: int, expect: SubvolumeInfo) -> int | None:
    """Open the nested subvolume ``expect`` (its ``path`` relative to the subvolume open
    as ``top_fd``) without following links (open_dir_beneath), and only if what is there
    is still that subvolume: its root directory, with the id and UUID listed.

    Returns an fd the caller closes, or None when something else is there now.
    Raises BtrfsdError.
    """
    fd = open_dir_beneath(top_fd, expect.path)
    if fd is None:
        return None
    try:
        same = os.fstat(fd).st_ino == SUBVOLUME_ROOT_INO and _identity(
            btrfsutil.subvolume_info(fd)) == (expect.id, expect.uuid)
    except OSError as e:
        os.close(fd)
        code = e.errno or 0
        raise from_errno(code, f"Cannot read subvolume {expect.path}: {os.strerror(code)}.") from e
    if same:
        return fd
    os.close(fd)
    return None


def _identity(info: btrfsutil.SubvolumeInfo) -> tuple[int, str]:
    return info.id, format_uuid(info.uuid)


def _current(fd: int, subvolume_id: int, shown: str) -> btrfsutil.SubvolumeInfo | None:
    """The kernel's record of ``subvolume_id`` now (None: it is gone). Raises BtrfsdError."""
    try:
        return btrfsutil.subvolume_info(fd, subvolume_id)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return None
        code = e.errno or 0
        raise from_errno(code, f"Cannot read subvolume {shown}: {os.strerror(code)}.") from e


def subvolume_info_by_id(fd: int, subvolume_id: int) -> SubvolumeInfo:
    """The subvolume ``subvolume_id`` of the filesystem holding ``fd`` (path from the top
    level). Raises NotFound when there is none, BtrfsdError."""
    shown = f"with id {subvolume_id}"
    info = _current(fd, subvolume_id, shown)
    if info is None:
        raise NotFound(f"There is no subvolume with id {subvolume_id}.")
    rel = "" if subvolume_id == TOP_LEVEL_SUBVOLUME_ID else kernel_call(
        f"Cannot find the path of the subvolume {shown}", btrfsutil.subvolume_path, fd,
        subvolume_id)
    return _from_info(rel, info)


# Why a recursive delete leaves a nested subvolume alone (it never chases one).
_GONE = "gone"  # deleted by someone else meanwhile: nothing left to do
_MOVED_AWAY = "not where it was listed (moved, or a symbolic link on the way)"
_REPLACED = "replaced by another subvolume"
_OUTSIDE = "moved out of the subvolume being deleted"


def _whereabouts(fd: int, nested: SubvolumeInfo, top_id: int, shown: str) -> str | None:
    """None while ``nested`` is still the subvolume listed and still inside ``top_id``
    (its root backrefs lead there); otherwise why it is left alone. Raises BtrfsdError."""
    info = _current(fd, nested.id, shown)
    if info is None:
        return _GONE
    if format_uuid(info.uuid) != nested.uuid:
        return _REPLACED
    for _ in range(_MAX_DEPTH):
        if info.parent_id == top_id:
            return None
        if info.parent_id <= TOP_LEVEL_SUBVOLUME_ID:
            return _OUTSIDE
        info = _current(fd, info.parent_id, shown)
        if info is None:
            return _OUTSIDE
    return _OUTSIDE


class Skipped(NamedTuple):
    """A nested subvolume a recursive delete left alone, and why."""

    path: str  # absolute, as it was listed
    why: str


def _set_read_only_nested(top_fd: int, top_path: str, nested: SubvolumeInfo,
                          read_only: bool) -> bool:
    """Set or clear the read-only flag of ``nested``, reached by open_nested. False when
    it is not there any more. Raises BtrfsdError."""
    nfd = open_nested(top_fd, nested)
    if nfd is None:
        return False
    try:
        set_read_only(nfd, f"{top_path}/{nested.path}", read_only)
    finally:
        os.close(nfd)
    return True


def delete_subvolume(fd: int, path: str, top: SubvolumeInfo,
                     nested: Sequence[SubvolumeInfo] = ()) -> list[Skipped]:
    """Delete the subvolume ``top`` (open as ``fd``, found at ``path``), and first the
    ``nested`` ones listed below it (iter_subvolumes order: parents before children).

    Everything is deleted by id (destroy.py), never by a path walked again, so no rename
    or symbolic link can redirect a delete. A nested subvolume that is no longer the one
    listed or no longer inside ``top`` is left alone, never chased. Read-only parents are
    made writable first (the kernel cannot unlink a child from a read-only subvolume),
    on fds reached without following any link and checked by id and UUID; if the delete
    then fails, they are made read-only again.

    Returns the nested subvolumes left alone when ``top`` could be deleted all the same
    (they had moved out). Raises Busy naming them when they kept ``top`` from being
    deleted, BtrfsdError for any other failure.
    """
    parents = {n.parent_id for n in nested}
    skipped: list[Skipped] = []
    cleared: list[SubvolumeInfo] = []
    try:
        now = _current(fd, top.id, path)
        if top.id in parents and now is not None and now.flags & ROOT_SUBVOL_RDONLY:
            set_read_only(fd, path, False)
            cleared.append(top)
        for n in nested:
            shown = f"{path}/{n.path}"
            now = _current(fd, n.id, shown) if n.id in parents else None
            if now is None or not now.flags & ROOT_SUBVOL_RDONLY:
                continue
            if _set_read_only_nested(fd, path, n, False):
                cleared.append(n)
            elif (why := _whereabouts(fd, n, top.id, shown)) != _GONE:
                skipped.append(Skipped(shown, why or _MOVED_AWAY))
        left = {s.path for s in skipped}
        for n in reversed(nested):  # children before their parents
            shown = f"{path}/{n.path}"
            if shown in left:
                continue
            why = _whereabouts(fd, n, top.id, shown)
            if why is not None:
                if why != _GONE:
                    skipped.append(Skipped(shown, why))
                continue
            try:
                destroy.destroy_by_id(fd, n.id)
            except OSError as e:
                if e.errno == errno.ENOENT:
                    continue  # deleted by someone else meanwhile
                if skipped and e.errno in (errno.ENOTEMPTY, errno.EROFS):
                    continue  # held by one left alone: the top's failure names that one
                code = e.errno or 0
                raise from_errno(code, f"Cannot delete subvolume {shown}: "
                                       f"{os.strerror(code)}.") from e
        try:
            destroy.destroy_by_id(fd, top.id)
        except OSError as e:
            code = e.errno or 0
            if skipped and code == errno.ENOTEMPTY:
                raise Busy(
                    f"Cannot delete subvolume {path}: nested "
                    + "; ".join(f"{s.path} ({s.why})" for s in skipped)
                    + ". btrfsd does not follow a nested subvolume elsewhere; delete it "
                    "where it is now, then try again.") from e
            raise from_errno(code, f"Cannot delete subvolume {path}: {os.strerror(code)}.") from e
    except BtrfsdError:
        _restore_read_only(fd, path, top, cleared)
        raise
    return skipped


def _restore_read_only(fd: int, path: str, top: SubvolumeInfo,
                       cleared: list[SubvolumeInfo]) -> None:
    """Make read-only again what a failed delete made writable (where it still is)."""
    for n in reversed(cleared):
        # The delete's own error is what the caller needs; these would only hide it.
        with contextlib.suppress(BtrfsdError):
            if n is top:
                set_read_only(fd, path, True)
            else:
                _set_read_only_nested(fd, path, n, True)


def create_snapshot(source_fd: int, source_path: str, dest: Resolved, *, read_only: bool,
                    recursive: bool) -> None:
    """Snapshot the subvolume open as ``source_fd`` to the resolved ``dest``.

    A recursive snapshot is made here, not by libbtrfsutil (whose recursion opens child
    paths following links): the source, then each nested subvolume, each reached from
    the source's fd without following links and checked by id and UUID, into the place
    its empty stand-in holds in the new snapshot, reached the same way. A read-only one
    is made writable and set read-only bottom-up (the kernel refuses both flags at
    once). If any step fails, everything made is deleted again, by id, so no half-made
    snapshot is left. Raises BtrfsdError (Busy when a nested subvolume moved meanwhile).
    """
    what = f"Cannot snapshot {source_path} to {dest.path}"
    if not recursive:
        kernel_call(what, libbtrfsutil.create_snapshot, source_fd, dest.open_parent(),
                    dest.name, read_only=read_only)
        return
    source = subvolume_info(source_fd, source_path)
    nested = list(iter_subvolumes(source_fd))
    kernel_call(what, libbtrfsutil.create_snapshot, source_fd, dest.open_parent(), dest.name)
    made: SubvolumeInfo | None = None
    children: list[SubvolumeInfo] = []
    fd = -1
    try:
        try:
            fd = dest.open_created()
            made = _made(fd, "", source.uuid)
        except BtrfsdError as e:
            raise Busy(f"{what}: the new snapshot was moved or replaced before it was "
                       f"complete ({e.message}); btrfsd left it alone.") from e
        if made is None:
            raise Busy(f"{what}: the new snapshot was moved or replaced before it was "
                       "complete; btrfsd left it alone.")
        for n in nested:
            children.append(_snapshot_nested(source_fd, source_path, fd, dest.path, n, what))
        if read_only:
            for c in reversed(children):  # children first: bottom-up
                if not _set_read_only_nested(fd, dest.path, c, True):
                    raise Busy(f"{what}: {dest.path}/{c.path} was moved before it could be "
                               "made read-only.")
            set_read_only(fd, dest.path, True)
    except (BtrfsdError, OSError) as e:
        err = e if isinstance(e, BtrfsdError) else from_errno(
            e.errno or 0, f"{what}: {os.strerror(e.errno or 0)}.")
        if made is not None:
            try:
                moved = delete_subvolume(fd, dest.path, made, children)
            except BtrfsdError as left:
                raise type(err)(f"{err.message} What was made could not be removed again: "
                                f"{left.message}", hint=err.hint) from e
            if moved:
                raise type(err)(f"{err.message} Nested snapshots moved out of it were left "
                                f"alone: {', '.join(m.path for m in moved)}.",
                                hint=err.hint) from e
        if err is e:
            raise
        raise err from e


def _made(fd: int, rel: str, parent_uuid: str) -> SubvolumeInfo | None:
    """The subvolume open as ``fd`` if it is a snapshot of ``parent_uuid`` (the one just
    made), else None. Raises BtrfsdError."""
    try:
        if os.fstat(fd).st_ino != SUBVOLUME_ROOT_INO:
            return None
        info = btrfsutil.subvolume_info(fd)
    except OSError as e:
        code = e.errno or 0
        raise from_errno(code, f"Cannot read the new snapshot: {os.strerror(code)}.") from e
    return _from_info(rel, info) if format_uuid(info.parent_uuid) == parent_uuid else None


def _snapshot_nested(source_fd: int, source_path: str, fd: int, dest_path: str,
                     nested: SubvolumeInfo, what: str) -> SubvolumeInfo:
    """Snapshot ``nested`` (below the source open as ``source_fd``) into its place in the
    new snapshot open as ``fd``; return what was made. Raises BtrfsdError (Busy when
    something moved meanwhile)."""
    src_fd = open_nested(source_fd, nested)
    if src_fd is None:
        raise Busy(f"{what}: the nested subvolume {source_path}/{nested.path} moved while "
                   "the snapshot was made; btrfsd does not follow it. Try again.")
    try:
        parent_rel, _, name = nested.path.rpartition("/")
        pfd = open_dir_beneath(fd, parent_rel)
        if pfd is None:
            raise Busy(f"{what}: {dest_path}/{parent_rel} moved while the snapshot was "
                       "made. Try again.")
        try:
            # the parent's snapshot holds an empty directory where the nested one was
            try:
                os.rmdir(name, dir_fd=pfd)
            except OSError as e:
                raise Busy(f"{what}: the place of {dest_path}/{nested.path} changed while "
                           f"the snapshot was made ({os.strerror(e.errno or 0)}). "
                           "Try again.") from e
            kernel_call(what, libbtrfsutil.create_snapshot, src_fd, pfd, name)
            try:
                cfd = os.open(name, WALK_FLAGS, dir_fd=pfd)
                try:
                    child_fd = os.open(".", _OPEN_DIR_FLAGS, dir_fd=cfd)
                finally:
                    os.close(cfd)
            except OSError as e:
                raise Busy(f"{what}: {dest_path}/{nested.path} moved right after it was "
                           "made. Try again.") from e
            try:
                child = _made(child_fd, nested.path, nested.uuid)
            finally:
                os.close(child_fd)
            if child is None:
                raise Busy(f"{what}: {dest_path}/{nested.path} was replaced right after it "
                           "was made. Try again.")
            return child
        finally:
            os.close(pfd)
    finally:
        os.close(src_fd)


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
