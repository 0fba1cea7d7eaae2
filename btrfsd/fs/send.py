"""BTRFS_IOC_SEND (blocking; call from a worker thread): ``send`` writes a snapshot's
stream to any fd (a backup's pipe, fs/receive.py), and ``changed_paths`` asks the kernel
what changed between two read-only snapshots (the no-file-data flag, the old snapshot as
its parent), read as it is written.

The ioctl writes the whole stream into a pipe before it returns, so it runs in a thread
of its own while this one reads the other end and parses it (fs/sendstream.py) into
changed paths (fs/changes.py). Type and size come from an lstat of each path in the
snapshot it is in, reached component by component without following a link
(paths.descend): both are read-only, so what is found is what the stream described.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import os
import stat
import struct
import threading
from collections.abc import Sequence

from ..errors import from_errno
from .changes import DELETED, DIR, FILE, OTHER, SYMLINK, Change, ChangeTracker
from .ioctl import iow
from .paths import Stuck, descend
from .sendstream import StreamReader

# struct btrfs_ioctl_send_args: send_fd (s64), clone_sources_count, clone_sources
# (pointer), parent_root, flags (u64 each), version (u32), reserved[28]
_SEND_ARGS = struct.Struct("=qQQQQI28x")
BTRFS_IOC_SEND = iow(38, _SEND_ARGS.size)
SEND_FLAG_NO_FILE_DATA = 0x1
_PIPE_SIZE = 1 << 20
_READ_SIZE = 1 << 20


def send(snap_fd: int, out_fd: int, *, parent_root: int = 0,
         clone_roots: Sequence[int] = (), flags: int = 0) -> None:
    """Write the send stream of the read-only snapshot open as ``snap_fd`` to ``out_fd``
    (a pipe or file; the kernel writes until the stream ends, so a pipe needs a reader).
    ``parent_root``: the subvolume id of a snapshot the receiving side has (0: a full
    stream); ``clone_roots``: ids whose extents the stream may refer to. Raises OSError
    (EPIPE when the reader went away)."""
    roots = array.array("Q", clone_roots)
    pointer = roots.buffer_info()[0] if roots else 0
    args = _SEND_ARGS.pack(out_fd, len(roots), pointer, parent_root, flags, 0)
    fcntl.ioctl(snap_fd, BTRFS_IOC_SEND, args)


def _send(new_fd: int, parent_root: int, write_fd: int, failure: list[OSError]) -> None:
    try:
        send(new_fd, write_fd, parent_root=parent_root, flags=SEND_FLAG_NO_FILE_DATA)
    except OSError as e:
        failure.append(e)
    finally:
        os.close(write_fd)  # the reader sees the end


def changed_paths(old_fd: int, old_id: int, new_fd: int) -> list[Change]:
    """What changed from the read-only snapshot ``old_id`` (its root open as ``old_fd``)
    to the read-only snapshot open as ``new_fd`` (a snapshot of the same subvolume,
    newer), sorted by path, with type and size. Raises BtrfsdError (BadStream for a
    stream it cannot read, the kernel's error named otherwise)."""
    tracker = ChangeTracker()
    # no crc check: the stream comes from the kernel through a pipe nobody else holds
    reader = StreamReader(tracker.apply, verify=False)
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    failure: list[OSError] = []
    try:
        with contextlib.suppress(OSError):  # the default size works, in more steps
            fcntl.fcntl(read_fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        sender = threading.Thread(target=_send, args=(new_fd, old_id, write_fd, failure),
                                  name="btrfs-send", daemon=True)
        sender.start()
    except BaseException:
        os.close(write_fd)
        os.close(read_fd)
        raise
    try:
        while chunk := os.read(read_fd, _READ_SIZE):
            reader.feed(chunk)
    except BaseException:
        # the kernel's next write fails (EPIPE) and the ioctl returns
        os.close(read_fd)
        read_fd = -1
        sender.join()
        raise
    finally:
        if read_fd >= 0:
            os.close(read_fd)
    sender.join()
    if failure:
        code = failure[0].errno or 0
        raise from_errno(code, f"The kernel could not compare the snapshots: "
                               f"{os.strerror(code)}.")
    reader.finish()
    rows = tracker.changes()
    _describe(rows, old_fd, new_fd)
    return rows


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return FILE
    if stat.S_ISDIR(mode):
        return DIR
    if stat.S_ISLNK(mode):
        return SYMLINK
    return OTHER


class _Dirs:
    """Handles of directories below one snapshot root, the last one kept (changed paths
    come sorted, so neighbours share it)."""

    def __init__(self, top: int) -> None:
        self.top = top
        self.key: str | None = None
        self.fd = -1

    def lstat(self, path: str) -> os.stat_result | None:
        head, _, name = path.rpartition("/")
        if head != self.key:
            self.close()
            try:
                self.fd = descend(self.top, head.split("/") if head else [])
            except Stuck:
                return None
            self.key = head
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except OSError:
            return None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        self.fd, self.key = -1, None


def _describe(rows: list[Change], old_fd: int, new_fd: int) -> None:
    """Fill in type and size: a deleted path as it was in the old snapshot, others as
    they are in the new one (0 for directories, whose size says nothing)."""
    old, new = _Dirs(old_fd), _Dirs(new_fd)
    try:
        for row in rows:
            st = (old if row.change == DELETED else new).lstat(row.path)
            if st is None:
                continue
            row.type = _kind(st.st_mode)
            row.size = st.st_size if row.type in (FILE, SYMLINK) else 0
    finally:
        old.close()
        new.close()
