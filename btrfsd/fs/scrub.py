"""Scrub by ioctl: start (blocking, one call per device), progress, cancel, speed limit.

BTRFS_IOC_SCRUB runs until the device is scrubbed or the scrub is cancelled, so callers
run it in a thread per device. SCRUB_PROGRESS may be called from another thread meanwhile.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from dataclasses import dataclass, fields

from . import sysfs
from .ioctl import BTRFS_IOCTL_MAGIC, iowr

# struct btrfs_scrub_progress: 15 u64 counters, in this order.
COUNTERS: tuple[str, ...] = (
    "data_extents_scrubbed", "tree_extents_scrubbed", "data_bytes_scrubbed",
    "tree_bytes_scrubbed", "read_errors", "csum_errors", "verify_errors", "no_csum",
    "csum_discards", "super_errors", "malloc_errors", "uncorrectable_errors",
    "corrected_errors", "last_physical", "unverified_errors",
)
# struct btrfs_ioctl_scrub_args: devid, start, end, flags, progress, padding to 1024 bytes.
_ARGS = struct.Struct("=4Q15Q" + f"{1024 - 32 - 15 * 8}x")
BTRFS_IOC_SCRUB = iowr(27, _ARGS.size)
BTRFS_IOC_SCRUB_CANCEL = (BTRFS_IOCTL_MAGIC << 8) | 28  # _IO: no argument
BTRFS_IOC_SCRUB_PROGRESS = iowr(29, _ARGS.size)
SCRUB_READONLY = 1
_ALL = 2**64 - 1


@dataclass(frozen=True)
class ScrubProgress:
    """Counters of one device's scrub (or a sum over devices)."""

    data_extents_scrubbed: int = 0
    tree_extents_scrubbed: int = 0
    data_bytes_scrubbed: int = 0
    tree_bytes_scrubbed: int = 0
    read_errors: int = 0
    csum_errors: int = 0
    verify_errors: int = 0
    no_csum: int = 0
    csum_discards: int = 0
    super_errors: int = 0
    malloc_errors: int = 0
    uncorrectable_errors: int = 0
    corrected_errors: int = 0
    last_physical: int = 0
    unverified_errors: int = 0

    @property
    def bytes_scrubbed(self) -> int:
        return self.data_bytes_scrubbed + self.tree_bytes_scrubbed

    @property
    def error_count(self) -> int:
        """Errors found (read, checksum, verify, super); corrected ones included."""
        return self.read_errors + self.csum_errors + self.verify_errors + self.super_errors

    def __add__(self, other: ScrubProgress) -> ScrubProgress:
        # last_physical is a position on one device, not a count: keep the larger.
        values = {f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        values["last_physical"] = max(self.last_physical, other.last_physical)
        return ScrubProgress(**values)


def _unpack(buf: bytes | bytearray) -> ScrubProgress:
    values = _ARGS.unpack(buf)[4:]
    return ScrubProgress(**dict(zip(COUNTERS, values, strict=True)))


def scrub_device(fd: int, devid: int, start: int = 0, readonly: bool = False) -> ScrubProgress:
    """Scrub one device from physical offset ``start`` to its end; blocks until done.

    Returns the device's final counters. Raises ScrubStopped (carrying the counters so
    far) when cancelled, OSError for other failures (EINPROGRESS: a scrub of this device
    is already running; ENODEV: no such device).
    """
    buf = bytearray(_ARGS.pack(devid, start, _ALL, SCRUB_READONLY if readonly else 0,
                               *([0] * 15)))
    try:
        fcntl.ioctl(fd, BTRFS_IOC_SCRUB, buf, True)
    except OSError as e:
        if e.errno == errno.ECANCELED:
            # The kernel copies the counters out on cancel too: keep them for a resume.
            raise ScrubStopped(_unpack(buf)) from None
        raise
    return _unpack(buf)


class ScrubStopped(Exception):
    """A device's scrub was cancelled; ``progress`` holds its counters up to then."""

    def __init__(self, progress: ScrubProgress) -> None:
        super().__init__("scrub cancelled")
        self.progress = progress


def scrub_progress(fd: int, devid: int) -> ScrubProgress | None:
    """Counters of the scrub running on a device, or None when none runs (blocking).

    Raises OSError for failures other than "not running".
    """
    buf = bytearray(_ARGS.pack(devid, 0, 0, 0, *([0] * 15)))
    try:
        fcntl.ioctl(fd, BTRFS_IOC_SCRUB_PROGRESS, buf, True)
    except OSError as e:
        if e.errno in (errno.ENOTCONN, errno.ENODEV):
            return None
        raise
    return _unpack(buf)


def scrub_cancel(fd: int) -> bool:
    """Cancel the filesystem's running scrub; False when none was running.

    Raises OSError for other failures.
    """
    try:
        fcntl.ioctl(fd, BTRFS_IOC_SCRUB_CANCEL)
    except OSError as e:
        if e.errno == errno.ENOTCONN:
            return False
        raise
    return True


def _speed_file(fsid: str, devid: int) -> str:
    return os.path.join(sysfs.fs_dir(fsid), "devinfo", str(devid), "scrub_speed_max")


def speed_limit_supported(fsid: str, devid: int) -> bool:
    """True when the kernel has a per-device scrub speed limit (5.14 and newer)."""
    return os.path.exists(_speed_file(fsid, devid))


def read_speed_limit(fsid: str, devid: int) -> int:
    """The device's scrub speed limit in bytes/s (0: none). Raises OSError."""
    with open(_speed_file(fsid, devid), encoding="ascii") as f:
        return int(f.read().strip() or 0)


def write_speed_limit(fsid: str, devid: int, bytes_per_second: int) -> None:
    """Set the device's scrub speed limit in bytes/s (0: none). Raises OSError."""
    with open(_speed_file(fsid, devid), "w", encoding="ascii") as f:
        f.write(str(bytes_per_second))
