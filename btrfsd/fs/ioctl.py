"""Btrfs ioctl numbers and the FS_INFO call (blocking; call from a thread)."""

from __future__ import annotations

import fcntl
import struct
import uuid
from dataclasses import dataclass

BTRFS_IOCTL_MAGIC = 0x94
_IOC_WRITE = 1
_IOC_READ = 2


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (BTRFS_IOCTL_MAGIC << 8) | nr


def ior(nr: int, size: int) -> int:
    """_IOR(BTRFS_IOCTL_MAGIC, nr, size)."""
    return _ioc(_IOC_READ, nr, size)


def iow(nr: int, size: int) -> int:
    """_IOW(BTRFS_IOCTL_MAGIC, nr, size)."""
    return _ioc(_IOC_WRITE, nr, size)


def iowr(nr: int, size: int) -> int:
    """_IOWR(BTRFS_IOCTL_MAGIC, nr, size)."""
    return _ioc(_IOC_READ | _IOC_WRITE, nr, size)


# struct btrfs_ioctl_fs_info_args: max_id, num_devices, fsid[16], nodesize, sectorsize,
# clone_alignment, csum_type(u16), csum_size(u16), flags, generation, metadata_uuid[16],
# reserved[944]; 1024 bytes in all.
_FS_INFO = struct.Struct("=QQ16sIIIHHQQ16s944x")
BTRFS_IOC_FS_INFO = ior(31, _FS_INFO.size)


@dataclass(frozen=True)
class FsInfo:
    """What BTRFS_IOC_FS_INFO reports about a mounted filesystem."""

    fsid: str
    num_devices: int
    max_device_id: int
    nodesize: int
    sectorsize: int


def fs_info(fd: int) -> FsInfo:
    """Return FS_INFO for the btrfs filesystem holding the open ``fd``.

    Raises OSError (ENOTTY when the fd is not on btrfs).
    """
    buf = bytearray(_FS_INFO.size)
    fcntl.ioctl(fd, BTRFS_IOC_FS_INFO, buf, True)
    max_id, num_devices, fsid, nodesize, sectorsize, *_ = (
        _FS_INFO.unpack(buf)
    )
    return FsInfo(
        fsid=str(uuid.UUID(bytes=fsid)),
        num_devices=num_devices,
        max_device_id=max_id,
        nodesize=nodesize,
        sectorsize=sectorsize,
    )
