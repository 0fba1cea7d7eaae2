"""Safe path resolution: walk a caller's path component by component without following
symbolic links, and hand out file descriptors so later calls act on what was checked.

Rule (documented in docs/api.md): a path must be absolute and canonical. Components
``.`` and ``..`` are refused and so is a symbolic link anywhere in the path, because a
privileged daemon that follows a caller's link can be steered outside the filesystem the
caller was allowed to touch.

Each path is opened once: every component with ``O_PATH|O_NOFOLLOW`` (which never
blocks, whatever the inode is), its type judged by ``fstat`` on that descriptor, and the
object reopened *from the descriptor*, never by its name again. A caller who swaps a
directory for a FIFO between the check and the open therefore gets the directory that
was checked (or a clear error), never a worker thread blocked in ``open()`` on a FIFO.
The walk holds one directory descriptor at a time, so a deep path needs no more
descriptors than a short one.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import BtrfsdError, InvalidArgument, NotFound, from_errno
from .creds import Creds, acting_as

NAME_MAX = 255
# a directory on the way: a handle only, never through a symbolic link
WALK_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# the last component: any type (a link, a FIFO...) is opened as a handle, not followed
_TARGET_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


def check_name(name: str) -> str:
    """Check one path component against btrfs' name rules and return it.

    Raises InvalidArgument for empty names, ``.``/``..``, ``/`` or NUL inside, or more
    than 255 bytes of UTF-8.
    """
    if not name:
        raise InvalidArgument("The name is empty; give a name for the new subvolume.")
    if name in (".", ".."):
        raise InvalidArgument(f"'{name}' is not a valid name.")
    if "/" in name or "\0" in name:
        raise InvalidArgument(f"The name {name!r} contains '/' or a NUL byte.")
    if len(name.encode("utf-8", "surrogateescape")) > NAME_MAX:
        raise InvalidArgument(f"The name is longer than {NAME_MAX} bytes.")
    return name


def split_path(path: str) -> list[str]:
    """Split an absolute path into components, refusing what a safe walk cannot take.

    Raises InvalidArgument for empty, relative, NUL-containing paths and ``.``/``..``.
    """
    if not isinstance(path, str) or not path:
        raise InvalidArgument("The path is empty; give an absolute path.")
    if "\0" in path:
        raise InvalidArgument("The path contains a NUL byte.")
    if not path.startswith("/"):
        raise InvalidArgument(f"The path {path!r} is relative; give an absolute path.")
    parts = [p for p in path.split("/") if p]
    for part in parts:
        if part in (".", ".."):
            raise InvalidArgument(
                f"The path {path!r} contains '{part}'; give the canonical absolute path."
            )
        check_name(part)
    return parts


@dataclass
class Resolved:
    """A path walked safely. Owns file descriptors: use as a context manager.

    ``parent_fd`` is an O_PATH descriptor of the containing directory (None for "/"),
    ``name`` the last component, ``target_fd`` an O_PATH descriptor of the object itself
    and ``st`` its fstat result (both None when it does not exist).
    """

    path: str
    parent_fd: int | None
    name: str
    st: os.stat_result | None
    target_fd: int | None = None
    _fds: list[int] = field(default_factory=list)
    _parent_rd: int | None = None

    def __enter__(self) -> Resolved:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every descriptor this resolution holds."""
        self._parent_rd = None
        while self._fds:
            os.close(self._fds.pop())

    @property
    def exists(self) -> bool:
        return self.st is not None

    def open(self, flags: int = os.O_RDONLY) -> int:
        """Open the object that was checked, from its descriptor (never by name again,
        never following a link, never blocking); the fd is closed with this.

        Raises NotFound (it does not exist), InvalidArgument (not a directory or regular
        file: a FIFO, socket or device is never opened).
        """
        if self.target_fd is None or self.st is None:
            raise NotFound(f"{self.path} does not exist.")
        try:
            if stat.S_ISDIR(self.st.st_mode):
                # "." from the O_PATH handle is the same directory, whatever its name
                # points to now
                fd = os.open(".", flags | os.O_DIRECTORY | os.O_NONBLOCK | os.O_CLOEXEC,
                             dir_fd=self.target_fd)
            elif stat.S_ISREG(self.st.st_mode):
                fd = os.open(f"/proc/self/fd/{self.target_fd}",
                             flags | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
            else:
                raise InvalidArgument(
                    f"{self.path} is not a directory or a regular file (a FIFO, socket or "
                    "device); btrfsd does not open those.")
        except OSError as e:
            raise _walk_error(e, self.path) from e
        self._fds.append(fd)
        return fd

    def open_created(self) -> int:
        """Open what a call made at this path after the walk found nothing there (a new
        snapshot): its name is opened once, from the parent's handle, as in the walk;
        then as ``open()``. Raises NotFound, InvalidArgument."""
        if self.target_fd is None and self.parent_fd is not None:
            target = _open_target(self.parent_fd, self.name, self.path)
            if target is not None:
                self._fds.append(target)
                self.target_fd, self.st = target, os.fstat(target)
        return self.open()

    def open_parent(self) -> int:
        """Open the checked containing directory for ioctls (once; later calls return the
        same fd, closed with this). Calls given this fd and ``name`` act on what was
        checked: a rename or symlink swap after the check cannot redirect them.

        Raises NotFound, InvalidArgument.
        """
        if self._parent_rd is not None:
            return self._parent_rd
        if self.parent_fd is None:
            fd = self.open()
        else:
            try:
                fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC,
                             dir_fd=self.parent_fd)
            except OSError as e:
                raise _walk_error(e, self.path) from e
            self._fds.append(fd)
        self._parent_rd = fd
        return fd


def _walk_error(e: OSError, path: str, hidden: bool = False) -> BtrfsdError:
    # For a caller the walk acts as (``hidden``), what they may not search does not exist
    # for them: the same error and words as a missing name, so no existence test.
    if e.errno == errno.ENOENT or (hidden and e.errno == errno.EACCES):
        return NotFound(f"{path} does not exist.")
    if e.errno in (errno.ELOOP, errno.ENOTDIR):
        return InvalidArgument(
            f"{path} goes through a symbolic link or a non-directory; give the real path."
        )
    return from_errno(e.errno or 0, f"Cannot open {path}: {os.strerror(e.errno or 0)}.")


def _open_target(dir_fd: int, name: str, path: str, hidden: bool = False) -> int | None:
    """O_PATH handle of ``name`` in ``dir_fd`` (None when missing). Raises BtrfsdError."""
    try:
        return os.open(name, _TARGET_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as e:
        if hidden and e.errno == errno.EACCES:
            return None
        raise _walk_error(e, path) from e


def resolve(path: str, *, must_exist: bool = True, as_caller: Creds | None = None
            ) -> Resolved:
    """Walk ``path`` from / without following links; return the open parent and the
    object's own handle. With ``as_caller`` the walk runs with that caller's filesystem
    identity (fs/creds.py): what they may not search is missing for them.

    Raises InvalidArgument (bad form, a symlink on the way or at the end), NotFound (a
    missing directory on the way, or a missing target when ``must_exist``).
    """
    parts = split_path(path)
    with acting_as(as_caller):
        return _walk(parts, must_exist, hidden=as_caller is not None and not as_caller.is_root)


class Stuck(Exception):
    """``descend`` could not open component number ``depth`` (``error`` says why)."""

    def __init__(self, depth: int, error: OSError) -> None:
        super().__init__(depth, error)
        self.depth = depth
        self.error = error


def descend(dir_fd: int, parts: Sequence[str]) -> int:
    """An O_PATH handle of the directory ``parts`` leads to from ``dir_fd``: each
    component opened from the one before with WALK_FLAGS, so no symbolic link is ever
    followed, and one handle held at a time (a 1,500-level path needs no 1,500 fds).
    ``dir_fd`` stays the caller's; the handle returned is a new one (a duplicate of
    ``dir_fd`` for no parts) that the caller closes. Raises Stuck."""
    cur = os.dup(dir_fd)
    for depth, part in enumerate(parts):
        try:
            nxt = os.open(part, WALK_FLAGS, dir_fd=cur)
        except OSError as e:
            os.close(cur)
            raise Stuck(depth, e) from e
        os.close(cur)
        cur = nxt
    return cur


def _walk(parts: list[str], must_exist: bool, *, hidden: bool) -> Resolved:
    canonical = "/" + "/".join(parts)
    fds: list[int] = []
    try:
        root = os.open("/", WALK_FLAGS)
        try:
            fd = descend(root, parts[:-1])
        except Stuck as e:
            walked = "/" + "/".join(parts[:e.depth + 1])
            raise _walk_error(e.error, walked, hidden) from e.error
        finally:
            os.close(root)
        fds.append(fd)
        if not parts:
            res = Resolved(canonical, None, "", os.fstat(fd), target_fd=fd, _fds=fds)
            fds = []
            return res
        name = parts[-1]
        target = _open_target(fd, name, canonical, hidden)
        if target is not None:
            fds.append(target)
        st = os.fstat(target) if target is not None else None
        if st is None and must_exist:
            raise NotFound(f"{canonical} does not exist.")
        if st is not None and stat.S_ISLNK(st.st_mode):
            raise InvalidArgument(
                f"{canonical} is a symbolic link; give the path it points to instead."
            )
        res = Resolved(canonical, fd, name, st, target_fd=target, _fds=fds)
        fds = []
        return res
    finally:
        for leftover in fds:
            os.close(leftover)


def reachable(paths: list[str], creds: Creds, *, names_exist: bool = False) -> list[bool]:
    """For each absolute path, whether ``creds`` could find it: every directory on the
    way searchable by them, walked without following a link (blocking). Each parent
    directory is walked and judged once, however many names it holds. With
    ``names_exist`` (the paths come from the kernel's own listing) a name in a searchable
    directory counts as found without a lookup of its own: one system call per
    directory, not per name. Raises nothing for a path that is bad or missing (it is
    simply not reachable); OSError when the identity cannot be taken."""
    found: list[bool] = []
    parents: dict[str, tuple[int | None, bool]] = {}
    with acting_as(creds):
        try:
            for path in paths:
                parent, _, name = path.rpartition("/")
                if parent not in parents:
                    parents[parent] = _judge_parent(parent)
                fd, searchable = parents[parent]
                if fd is None or not name or not searchable:
                    found.append(False)
                elif names_exist:
                    found.append(True)
                else:
                    try:
                        os.stat(name, dir_fd=fd, follow_symlinks=False)
                        found.append(True)
                    except OSError:
                        found.append(False)
        finally:
            for fd, _ in parents.values():
                if fd is not None:
                    os.close(fd)
    return found


def _judge_parent(parent: str) -> tuple[int | None, bool]:
    """The directory's handle (None: not reachable) and whether names in it can be
    looked up (search permission: looking up "." in it needs exactly that)."""
    fd = _parent_handle(parent)
    if fd is None:
        return None, False
    try:
        os.stat(".", dir_fd=fd, follow_symlinks=False)
    except OSError:
        return fd, False
    return fd, True


def _parent_handle(parent: str) -> int | None:
    """An O_PATH handle of a directory walked as the current identity, or None."""
    try:
        parts = split_path(parent or "/")
        res = _walk(parts, True, hidden=True)
    except BtrfsdError:
        return None
    try:
        if res.target_fd is None or res.st is None or not stat.S_ISDIR(res.st.st_mode):
            return None
        return os.dup(res.target_fd)
    finally:
        res.close()
