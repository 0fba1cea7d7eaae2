"""Putting files from a read-only snapshot back, by file descriptor (blocking; run in a
thread).

Sources are reached from the snapshot's root handle one component at a time with
O_NOFOLLOW (paths.descend): a symbolic link inside the snapshot is restored as a link,
never followed, so it cannot lead the walk out of the snapshot. Targets are made from
the target directory's descriptor.

Each path is rebuilt under a temporary name in its target directory
(``.btrfsd-restore-<job>-<n>``) and renamed into place only when complete, so every
file is either the old one or the restored one, never half-written: a cancel or failure
removes the temporary, and after a crash the next start does (``remove_leftovers``).

Data is shared with the snapshot (FICLONE: no data is read or written); only when the
kernel refuses a reflink (another filesystem) is it copied.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import secrets
import stat
import threading
import time
from dataclasses import dataclass, field

from ..errors import BtrfsdError, InvalidArgument, NotFound, from_errno
from .paths import Stuck, check_name, descend
from .rename import exchange, rename_new

FICLONE = 0x40049409
TEMP_PREFIX = ".btrfsd-restore-"
ASIDE_INFIX = ".before-restore-"
_COPY_CHUNK = 8 << 20
_DIR_RD = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_FILE_RD = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_FILE_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# a reflink is refused across filesystems (or by one without them): copy instead
_NO_REFLINK = (errno.EXDEV, errno.EOPNOTSUPP)
# Directories below a restored path (and below what a restore removes) are walked
# holding one descriptor per level: a depth bound keeps a hostile tree (a user can nest
# directories without limit) from taking the daemon's descriptors. Real trees stay far
# below it (PATH_MAX allows about 2,000 levels of one-letter names).
MAX_DEPTH = 1000
_AT_SYMLINK_NOFOLLOW = 0x100
_AT_EMPTY_PATH = 0x1000
_libc = ctypes.CDLL(None, use_errno=True)


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _check_libc(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


class Stopped(Exception):
    """The restore was asked to stop; what was made for the current path is gone."""


def temp_prefix(job_id: int) -> str:
    """Names of one job's temporaries start with this."""
    return f"{TEMP_PREFIX}{job_id}-"


def split_relative(path: str) -> list[str]:
    """Components of a path relative to a snapshot's root. Raises InvalidArgument for
    ``..``, ``.``, NUL bytes and bad names."""
    if "\0" in path:
        raise InvalidArgument("A path to restore contains a NUL byte.")
    parts = [p for p in path.split("/") if p]
    for part in parts:
        if part in (".", ".."):
            raise InvalidArgument(f"The path {path!r} contains '{part}'; give a path inside "
                                  "the snapshot without '.' or '..'.")
        check_name(part)
    return parts


def _special(st: os.stat_result) -> bool:
    return not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)
                or stat.S_ISLNK(st.st_mode))


def _kind(st: os.stat_result) -> str:
    m = st.st_mode
    return ("device" if stat.S_ISBLK(m) or stat.S_ISCHR(m) else "FIFO" if stat.S_ISFIFO(m)
            else "socket" if stat.S_ISSOCK(m) else "special file")


@dataclass
class Source:
    """One path of a snapshot to restore, open as a handle of its directory."""

    shown: str  # the path relative to the snapshot, for messages
    parent_fd: int  # O_PATH handle of its directory in the snapshot (owned)
    name: str
    st: os.stat_result
    files: int = 0  # every entry made (files, links, directories)
    size: int = 0  # bytes of regular files
    allocated: int = 0  # bytes they occupy (what a copy would need)

    def close(self) -> None:
        if self.parent_fd >= 0:
            os.close(self.parent_fd)
            self.parent_fd = -1


def open_source(snap_fd: int, parts: list[str], shown: str) -> Source:
    """The entry ``parts`` below the snapshot root open as ``snap_fd``, never following a
    link on the way (a link at the end is the entry itself). Raises InvalidArgument (a
    link or non-directory on the way), NotFound."""
    try:
        parent = descend(snap_fd, parts[:-1])
    except Stuck as e:
        if e.error.errno == errno.ENOENT:
            raise NotFound(f"{shown} is not in the snapshot.") from None
        if e.error.errno in (errno.ELOOP, errno.ENOTDIR):
            raise InvalidArgument(
                f"{shown} goes through a symbolic link or a non-directory inside the "
                "snapshot; btrfsd never follows links there. Give the real path, or "
                "restore the link itself.") from None
        raise from_errno(e.error.errno or 0, f"Cannot open {shown} in the snapshot: "
                         f"{os.strerror(e.error.errno or 0)}.") from None
    try:
        st = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
    except OSError as e:
        os.close(parent)
        if e.errno == errno.ENOENT:
            raise NotFound(f"{shown} is not in the snapshot.") from None
        raise from_errno(e.errno or 0, f"Cannot read {shown} in the snapshot: "
                         f"{os.strerror(e.errno or 0)}.") from None
    return Source(shown, parent, parts[-1], st)


def measure(src: Source, dev: int) -> None:
    """Count what ``src`` holds (entries, bytes) and refuse what cannot be restored
    before anything changes. Raises InvalidArgument naming a device, FIFO or socket, or
    a mount inside the snapshot."""
    def account(st: os.stat_result, shown: str) -> None:
        if _special(st):
            raise InvalidArgument(f"{shown} is a {_kind(st)}; btrfsd restores files, "
                                  "directories and symbolic links only.")
        if st.st_dev != dev:
            raise InvalidArgument(f"{shown} is on another mount inside the snapshot.")
        src.files += 1
        if stat.S_ISREG(st.st_mode):
            src.size += st.st_size
            src.allocated += st.st_blocks * 512

    account(src.st, src.shown)
    if not stat.S_ISDIR(src.st.st_mode):
        return
    # one descriptor and one listing per level: a directory of 100,000 subdirectories
    # takes no more descriptors than one with two
    top, names = _open_listed(src.parent_fd, src.name)
    stack = [(top, src.shown, names)]
    try:
        while stack:
            fd, shown, names = stack[-1]
            if not names:
                stack.pop()
                os.close(fd)
                continue
            name = names.pop()
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            account(st, f"{shown}/{name}")
            if stat.S_ISDIR(st.st_mode):
                if len(stack) >= MAX_DEPTH:
                    raise InvalidArgument(f"{src.shown} holds directories more than "
                                          f"{MAX_DEPTH} levels deep; btrfsd does not "
                                          "restore trees that deep.")
                child, child_names = _open_listed(fd, name)
                stack.append((child, f"{shown}/{name}", child_names))
    finally:
        for fd, _, _ in stack:
            os.close(fd)


def _open_listed(dir_fd: int, name: str) -> tuple[int, list[str]]:
    """The directory ``name`` open (never through a link, never blocking) and its
    entries. Raises OSError."""
    fd = os.open(name, _DIR_RD, dir_fd=dir_fd)
    try:
        return fd, os.listdir(fd)
    except BaseException:
        os.close(fd)
        raise


def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    """lstat of ``name`` in ``dir_fd``; None when missing. Raises OSError."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def holds_other_mounts(dir_fd: int, name: str) -> bool:
    """Whether the directory ``name`` is, or holds, a subvolume or mount point of its
    own (a replace would have to delete it: refused). Raises InvalidArgument for a
    tree deeper than MAX_DEPTH (it cannot be checked with bounded descriptors),
    OSError."""
    top, names = _open_listed(dir_fd, name)
    st = os.fstat(top)
    dev = st.st_dev
    if st.st_ino == 256:  # a subvolume's root directory
        os.close(top)
        return True
    stack = [(top, names)]
    try:
        while stack:
            fd, names = stack[-1]
            if not names:
                stack.pop()
                os.close(fd)
                continue
            child = names.pop()
            cst = os.stat(child, dir_fd=fd, follow_symlinks=False)
            if not stat.S_ISDIR(cst.st_mode):
                continue
            if cst.st_dev != dev or cst.st_ino == 256:
                return True
            if len(stack) >= MAX_DEPTH:
                raise InvalidArgument(f"{name} holds directories more than {MAX_DEPTH} "
                                      "levels deep; btrfsd does not overwrite it. Restore "
                                      "without overwrite (it is moved aside).")
            stack.append(_open_listed(fd, child))
    finally:
        for fd, _ in stack:
            os.close(fd)
    return False


def _open_checked(dir_fd: int, name: str, st: os.stat_result) -> tuple[int, list[str]]:
    """The directory ``name`` open and listed; refused (EBUSY) when it is no longer the
    one ``st`` describes (swapped meanwhile). Raises OSError."""
    fd, names = _open_listed(dir_fd, name)
    now = os.fstat(fd)
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        raise OSError(errno.EBUSY, f"{name} changed while it was removed")
    return fd, names


def remove_tree(dir_fd: int, name: str) -> None:
    """Remove ``name`` in ``dir_fd`` (a whole tree for a directory), by descriptors,
    never following a link, without recursion and with at most MAX_DEPTH descriptors
    (a deeper directory is first moved up into the tree's top). Missing is fine.
    Raises OSError (also when a directory is swapped while it is emptied)."""
    st = lstat_at(dir_fd, name)
    if st is None:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dir_fd)
        return
    top, names = _open_checked(dir_fd, name, st)
    # (descriptor, its name, entries left); the parent of stack[i] is stack[i-1]
    stack: list[tuple[int, str, list[str]]] = [(top, name, names)]
    moved = 0
    try:
        while stack:
            fd, dname, names = stack[-1]
            if not names:
                stack.pop()
                os.close(fd)
                os.rmdir(dname, dir_fd=stack[-1][0] if stack else dir_fd)
                continue
            child = names.pop()
            cst = lstat_at(fd, child)
            if cst is None:
                continue
            if not stat.S_ISDIR(cst.st_mode):
                os.unlink(child, dir_fd=fd)
            elif len(stack) >= MAX_DEPTH:
                # too deep to hold a descriptor per level: up into the top, emptied later
                while True:
                    moved += 1
                    up = f".btrfsd-deep-{moved}"
                    try:
                        rename_new(fd, child, top, up)
                        break
                    except FileExistsError:
                        continue
                stack[0][2].append(up)
            else:
                cfd, cnames = _open_checked(fd, child, cst)
                stack.append((cfd, child, cnames))
    finally:
        for fd, _, _ in stack:
            os.close(fd)


def remove_leftovers(dir_fd: int, job_id: int) -> int:
    """Remove one job's temporaries from a target directory (after a crash); return how
    many there were. In a sticky directory (/tmp-like) an entry of another user is left
    alone: root deleting it would bypass the sticky rule. Raises OSError."""
    prefix = temp_prefix(job_id)
    dir_st = os.fstat(dir_fd)
    sticky = bool(dir_st.st_mode & stat.S_ISVTX)
    gone = 0
    for name in os.listdir(dir_fd):
        if not name.startswith(prefix):
            continue
        st = lstat_at(dir_fd, name)
        if st is None or (sticky and st.st_uid not in (0, dir_st.st_uid)):
            continue
        remove_tree(dir_fd, name)
        gone += 1
    return gone


def aside_name(dir_fd: int, name: str, stamp: str) -> str:
    """A free name ``NAME.before-restore-<stamp>[-n]`` for what is moved aside.
    Raises InvalidArgument when it would be too long, OSError."""
    base = f"{name}{ASIDE_INFIX}{stamp}"
    candidate, n = base, 0
    while lstat_at(dir_fd, candidate) is not None:
        n += 1
        candidate = f"{base}-{n}"
    if len(os.fsencode(candidate)) > 255:
        raise InvalidArgument(f"{name} has too long a name to be moved aside; restore it "
                              "with overwrite or under a destination.")
    return candidate


@dataclass
class Target:
    """Where one source goes: a directory (open, owned) and the name in it."""

    dir_fd: int
    dir_shown: str  # absolute path of the directory, for messages and crash clean-up
    name: str
    reflink: bool = True  # same filesystem as the snapshot
    existing: os.stat_result | None = None

    def close(self) -> None:
        if self.dir_fd >= 0:
            os.close(self.dir_fd)
            self.dir_fd = -1


@dataclass
class Copier:
    """Restores sources one after the other; counters are read by the event loop while
    it runs (plain ints, written by this thread only)."""

    job_id: int
    stamp: str
    overwrite: bool
    stop: threading.Event = field(default_factory=threading.Event)
    files_done: int = 0
    bytes_done: int = 0
    bytes_copied: int = 0  # not shared (the reflink was refused)
    moved_aside: int = 0
    replaced: int = 0
    # what is in place (a path counts once it is renamed into place)
    placed_files: int = 0
    placed_bytes: int = 0
    _n: int = 0
    # the temporary was made by this copier: only then is it removed on a failure (a
    # name someone else made first is not ours to delete)
    _created: bool = False

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise Stopped

    def restore(self, src: Source, target: Target) -> None:
        """Rebuild ``src`` under a temporary name in the target directory and put it in
        place. Raises Stopped, InvalidArgument, OSError (the temporary is gone then)."""
        self._check_stop()
        # unguessable: in a directory others may write to (sticky /tmp-like, a user's
        # home) a name made there first would otherwise block the restore
        tmp = f"{temp_prefix(self.job_id)}{self._n}-{secrets.token_hex(6)}"
        self._n += 1
        self._created = False
        try:
            self._make(src.parent_fd, src.name, src.st, target.dir_fd, tmp, target.reflink)
            self._check_stop()
            self._place(target, tmp)
            self.placed_files += src.files
            self.placed_bytes += src.size
        except BaseException:
            if self._created:
                with contextlib.suppress(OSError):  # else the next start removes it
                    remove_tree(target.dir_fd, tmp)
            raise

    def _place(self, t: Target, tmp: str) -> None:
        fd, name = t.dir_fd, t.name
        existing = lstat_at(fd, name)
        if existing is None:
            rename_new(fd, tmp, fd, name)
        elif self.overwrite:
            # the old one takes the temporary's name in the same step, then goes
            exchange(fd, tmp, name)
            remove_tree(fd, tmp)
            self.replaced += 1
        else:
            aside = aside_name(fd, name, self.stamp)
            new_is_dir = stat.S_ISDIR(os.stat(tmp, dir_fd=fd, follow_symlinks=False).st_mode)
            if not stat.S_ISDIR(existing.st_mode) and not new_is_dir:
                # a second name for the old file, then an atomic replace: the name
                # never stops existing
                os.link(name, aside, src_dir_fd=fd, dst_dir_fd=fd, follow_symlinks=False)
                os.rename(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
            else:
                rename_new(fd, name, fd, aside)
                rename_new(fd, tmp, fd, name)
            self.moved_aside += 1

    def _make(self, src_dir: int, name: str, st: os.stat_result, dst_dir: int,
              dst_name: str, reflink: bool) -> None:
        if not stat.S_ISDIR(st.st_mode):
            self._leaf(src_dir, name, st, dst_dir, dst_name, reflink)
            return
        os.mkdir(dst_name, 0o700, dir_fd=dst_dir)  # nobody else enters while it fills
        self._created = True
        stack: list[tuple[int, int, list[str], os.stat_result]] = []
        try:
            s = os.open(name, _DIR_RD, dir_fd=src_dir)
            try:
                d = _open_made_dir(dst_dir, dst_name)
            except OSError:
                os.close(s)
                raise
            stack.append((s, d, sorted(os.listdir(s), reverse=True), st))
            self.files_done += 1
            while stack:
                s, d, names, dst = stack[-1]
                if not names:
                    _metadata(s, d, dst)  # after the children: they change its times
                    stack.pop()
                    os.close(s)
                    os.close(d)
                    continue
                child = names.pop()
                self._check_stop()
                cst = os.stat(child, dir_fd=s, follow_symlinks=False)
                if stat.S_ISDIR(cst.st_mode):
                    if len(stack) >= MAX_DEPTH:  # the snapshot's owner made it writable
                        raise InvalidArgument(f"{name} holds directories more than "
                                              f"{MAX_DEPTH} levels deep.")
                    os.mkdir(child, 0o700, dir_fd=d)
                    cs = os.open(child, _DIR_RD, dir_fd=s)
                    try:
                        cd = os.open(child, _DIR_RD, dir_fd=d)
                    except OSError:
                        os.close(cs)
                        raise
                    stack.append((cs, cd, sorted(os.listdir(cs), reverse=True), cst))
                    self.files_done += 1
                else:
                    self._leaf(s, child, cst, d, child, reflink)
        finally:
            for s, d, _, _ in stack:
                os.close(s)
                os.close(d)

    def _leaf(self, src_dir: int, name: str, st: os.stat_result, dst_dir: int,
              dst_name: str, reflink: bool) -> None:
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(name, dir_fd=src_dir), dst_name, dir_fd=dst_dir)
            self._created = True
            _link_metadata(dst_dir, dst_name, st)
        elif stat.S_ISREG(st.st_mode):
            s = os.open(name, _FILE_RD, dir_fd=src_dir)
            try:
                d = os.open(dst_name, _FILE_NEW, 0o600, dir_fd=dst_dir)
                self._created = True
                try:
                    self._data(s, d, st.st_size, reflink)
                    _metadata(s, d, st)
                finally:
                    os.close(d)
            finally:
                os.close(s)
        else:  # the snapshot is read-only: measure() already refused these
            raise InvalidArgument(f"{name} is a {_kind(st)}; btrfsd does not restore it.")
        self.files_done += 1

    def _data(self, s: int, d: int, size: int, reflink: bool) -> None:
        if reflink:
            try:
                fcntl.ioctl(d, FICLONE, s)
                self.bytes_done += size
                return
            except OSError as e:
                if e.errno not in _NO_REFLINK:
                    raise
        offset = 0
        while True:
            self._check_stop()
            n = os.sendfile(d, s, offset, _COPY_CHUNK)
            if n == 0:
                break
            offset += n
            self.bytes_done += n
            self.bytes_copied += n


def _open_made_dir(dir_fd: int, name: str) -> int:
    """Open the directory just made as ``name``, refusing (EBUSY) one that is not
    btrfsd's own, empty and closed to others: the target directory may be writable by
    a user, who could put a directory of theirs at the name between mkdir and open and
    then steer the writes into it. Raises OSError."""
    fd = os.open(name, _DIR_RD, dir_fd=dir_fd)
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or st.st_mode & 0o077 or os.listdir(fd):
        os.close(fd)
        raise OSError(errno.EBUSY, f"{name} was replaced while it was made")
    return fd


def _link_metadata(dir_fd: int, name: str, st: os.stat_result) -> None:
    """Owner and times of the symbolic link just made as ``name``, set through a
    handle of the link: by name, a user who can write to the directory could swap the
    link for a hard link to a file of their choice and have root chown it. Raises
    OSError (EBUSY when the name no longer holds btrfsd's link)."""
    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        now = os.fstat(fd)
        if not stat.S_ISLNK(now.st_mode) or now.st_uid != os.geteuid():
            raise OSError(errno.EBUSY, f"{name} was replaced while it was made")
        _check_libc(_libc.fchownat(fd, b"", ctypes.c_uint(st.st_uid),
                                   ctypes.c_uint(st.st_gid),
                                   _AT_EMPTY_PATH | _AT_SYMLINK_NOFOLLOW), "chown")
        times = (_Timespec * 2)(_Timespec(*divmod(st.st_atime_ns, 10**9)),
                                _Timespec(*divmod(st.st_mtime_ns, 10**9)))
        _check_libc(_libc.utimensat(fd, b"", times, _AT_EMPTY_PATH), "utime")
    finally:
        os.close(fd)


def _metadata(s: int, d: int, st: os.stat_result) -> None:
    """Owner, mode, extended attributes (ACLs among them) and times of the source open
    as ``s`` onto ``d``. Order matters: a chown clears set-id bits and file
    capabilities, and every change but utime moves the times."""
    os.fchown(d, st.st_uid, st.st_gid)
    os.fchmod(d, stat.S_IMODE(st.st_mode))
    wanted = set(os.listxattr(s))
    for key in os.listxattr(d):  # e.g. an ACL inherited from the target directory
        if key not in wanted:
            os.removexattr(d, key)
    for key in wanted:
        os.setxattr(d, key, os.getxattr(s, key))
    os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns))


def stamp(when: float | None = None) -> str:
    """The time in names of what is moved aside (UTC, sortable)."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(when))


def explain(e: OSError, what: str) -> BtrfsdError:
    """A named error for a failed restore step."""
    return from_errno(e.errno or 0, f"{what}: {os.strerror(e.errno or 0)}.")
