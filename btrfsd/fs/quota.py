"""Quota groups by ioctl (enable, disable, limits, rescan, removal) and usage from sysfs.

Blocking; call from a thread. Usage numbers come from /sys/fs/btrfs/<fsid>/qgroups/, which
the kernel updates at each transaction commit: never from a rescan on a read path.
"""

from __future__ import annotations

import fcntl
import os
import struct
from dataclasses import dataclass

from ..units import qgroupid
from . import sysfs
from .ioctl import BTRFS_IOCTL_MAGIC, ior, iow, iowr

_QUOTA_CTL = struct.Struct("=QQ")  # cmd, status
BTRFS_IOC_QUOTA_CTL = iowr(40, _QUOTA_CTL.size)
QUOTA_CTL_ENABLE = 1
QUOTA_CTL_DISABLE = 2
QUOTA_CTL_ENABLE_SIMPLE = 4

_QGROUP_CREATE = struct.Struct("=QQ")  # create (1) or remove (0), qgroupid
BTRFS_IOC_QGROUP_CREATE = iow(42, _QGROUP_CREATE.size)

# qgroupid, then struct btrfs_qgroup_limit: flags, max_rfer, max_excl, rsv_rfer, rsv_excl
_QGROUP_LIMIT = struct.Struct("=QQQQQQ")
BTRFS_IOC_QGROUP_LIMIT = ior(43, _QGROUP_LIMIT.size)  # _IOR in linux/btrfs.h, though it writes
LIMIT_MAX_RFER = 1
LIMIT_MAX_EXCL = 2
CLEAR_LIMIT = 2**64 - 1  # the kernel's value for "no limit"

_RESCAN = struct.Struct("=QQ48x")  # flags, progress, reserved[6]
BTRFS_IOC_QUOTA_RESCAN = iow(44, _RESCAN.size)
BTRFS_IOC_QUOTA_RESCAN_STATUS = ior(45, _RESCAN.size)
BTRFS_IOC_QUOTA_RESCAN_WAIT = (BTRFS_IOCTL_MAGIC << 8) | 46  # _IO: no argument



def quota_ctl(fd: int, cmd: int) -> None:
    """Enable (full or simple) or disable quotas. Raises OSError (EINVAL: simple quotas
    unsupported; EINPROGRESS: a rescan runs)."""
    fcntl.ioctl(fd, BTRFS_IOC_QUOTA_CTL, bytearray(_QUOTA_CTL.pack(cmd, 0)), True)


def set_limit(fd: int, qid: int, *, referenced: int | None, exclusive: int | None) -> None:
    """Set (or with CLEAR_LIMIT clear) the referenced and/or exclusive limit of a qgroup;
    None leaves that limit as it is. ``fd`` must be on the filesystem. Raises OSError
    (ENOENT: no such qgroup; ENOTCONN: quotas are off)."""
    flags = (LIMIT_MAX_RFER if referenced is not None else 0) | (
        LIMIT_MAX_EXCL if exclusive is not None else 0)
    buf = bytearray(_QGROUP_LIMIT.pack(qid, flags, referenced or 0, exclusive or 0, 0, 0))
    fcntl.ioctl(fd, BTRFS_IOC_QGROUP_LIMIT, buf, True)


def remove_qgroup(fd: int, qid: int) -> None:
    """Remove a qgroup (one left behind by a deleted subvolume). Raises OSError (EBUSY:
    still in use or holding usage; ENOENT: gone already)."""
    fcntl.ioctl(fd, BTRFS_IOC_QGROUP_CREATE, bytearray(_QGROUP_CREATE.pack(0, qid)), True)


def rescan_start(fd: int) -> None:
    """Start a quota rescan in the background. Raises OSError (EINPROGRESS: one runs;
    ENOTCONN: quotas are off; EINVAL: simple quotas need none)."""
    fcntl.ioctl(fd, BTRFS_IOC_QUOTA_RESCAN, bytearray(_RESCAN.size), True)


def rescan_status(fd: int) -> int | None:
    """The position of a running rescan (an extent-tree key objectid), None if none runs.

    Raises OSError.
    """
    buf = bytearray(_RESCAN.size)
    fcntl.ioctl(fd, BTRFS_IOC_QUOTA_RESCAN_STATUS, buf, True)
    flags, progress = _RESCAN.unpack(buf)
    return progress if flags else None


@dataclass(frozen=True)
class QgroupUsage:
    """One qgroup's usage and limits (0 = no limit), as of the last commit."""

    level: int
    subvolume_id: int
    referenced: int
    exclusive: int
    max_referenced: int
    max_exclusive: int

    @property
    def qgroupid(self) -> int:
        return qgroupid(self.level, self.subvolume_id)

    @property
    def limited(self) -> bool:
        return bool(self.max_referenced or self.max_exclusive)


def _qgroups_dir(fsid: str) -> str:
    return os.path.join(sysfs.fs_dir(fsid), "qgroups")


def _read_int(path: str) -> int:
    with open(path, encoding="ascii") as f:
        return int(f.read().strip() or 0)


quota_mode = sysfs.quota_mode


def inconsistent(fsid: str) -> bool:
    """True when the kernel says the qgroup numbers need a rescan to be right."""
    try:
        return _read_int(os.path.join(_qgroups_dir(fsid), "inconsistent")) != 0
    except (OSError, ValueError):
        return False


def simple_quota_supported() -> bool:
    """Whether this kernel offers simple quotas (squota, Linux 6.7 and newer)."""
    return os.path.exists(os.path.join(sysfs.SYSFS_BTRFS, "features", "simple_quota"))


def read_usage(fsid: str) -> list[QgroupUsage]:
    """Every qgroup of the filesystem from sysfs, sorted by (level, id). [] when quotas
    are off. Limits the kernel reports as 0 mean none."""
    try:
        dfd = os.open(_qgroups_dir(fsid), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        result = []
        for name in os.listdir(dfd):
            level, sep, sid = name.partition("_")
            if sep and level.isdigit() and sid.isdigit():
                q = _read_qgroup_at(dfd, name, int(level), int(sid))
                if q is not None:
                    result.append(q)
    finally:
        os.close(dfd)
    return sorted(result, key=lambda q: (q.level, q.subvolume_id))


def _int_at(dfd: int, name: str) -> int:
    # os.open/os.read: a thousand qgroups are four thousand small files to read
    fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dfd)
    try:
        return int(os.read(fd, 64) or b"0")
    finally:
        os.close(fd)


def _read_qgroup_at(dfd: int, name: str, level: int, sid: int) -> QgroupUsage | None:
    try:
        return QgroupUsage(
            level=level, subvolume_id=sid,
            referenced=_int_at(dfd, f"{name}/referenced"),
            exclusive=_int_at(dfd, f"{name}/exclusive"),
            max_referenced=_int_at(dfd, f"{name}/max_referenced"),
            max_exclusive=_int_at(dfd, f"{name}/max_exclusive"),
        )
    except (OSError, ValueError):
        return None  # no such qgroup, or removed while reading


def read_qgroup(fsid: str, level: int, subvolume_id: int) -> QgroupUsage | None:
    """One qgroup's usage from sysfs; None when it does not exist (or quotas are off)."""
    try:
        dfd = os.open(_qgroups_dir(fsid), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return _read_qgroup_at(dfd, f"{level}_{subvolume_id}", level, subvolume_id)
    finally:
        os.close(dfd)


def drop_subtree_threshold(fsid: str) -> int | None:
    """The qgroup drop_subtree_threshold (None when quotas are off or the kernel lacks it)."""
    try:
        return _read_int(os.path.join(_qgroups_dir(fsid), "drop_subtree_threshold"))
    except (OSError, ValueError):
        return None


def set_drop_subtree_threshold(fsid: str, level: int) -> None:
    """Set drop_subtree_threshold (0-8). Raises OSError."""
    with open(os.path.join(_qgroups_dir(fsid), "drop_subtree_threshold"), "w",
              encoding="ascii") as f:
        f.write(str(level))
