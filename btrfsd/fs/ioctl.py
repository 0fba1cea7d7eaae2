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


_FS_INFO_FLAG_GENERATION = 1 << 1
_FS_INFO_FLAGS_AT = struct.calcsize("=QQ16sIIIHH")


def fs_generation(fd: int) -> int | None:
    """The id of the running transaction of the filesystem holding ``fd`` (the last
    committed one when none runs): anything changed from now on gets at least this
    generation. None when the kernel cannot say (BTRFS_FS_INFO_FLAG_GENERATION, Linux
    5.10). Raises OSError."""
    buf = bytearray(_FS_INFO.size)
    struct.pack_into("=Q", buf, _FS_INFO_FLAGS_AT, _FS_INFO_FLAG_GENERATION)
    fcntl.ioctl(fd, BTRFS_IOC_FS_INFO, buf, True)
    flags, generation = struct.unpack_from("=QQ", buf, _FS_INFO_FLAGS_AT)
    return generation if flags & _FS_INFO_FLAG_GENERATION else None


# struct btrfs_ioctl_space_args: space_slots, total_spaces, then space_slots entries of
# struct btrfs_ioctl_space_info (flags, total_bytes, used_bytes).
_SPACE_HEAD = struct.Struct("=QQ")
_SPACE_ITEM = struct.Struct("=QQQ")
BTRFS_IOC_SPACE_INFO = iowr(20, _SPACE_HEAD.size)
_SPACE_SLOTS = 32  # a filesystem has a handful of (type, profile) pairs
BLOCK_GROUP_GLOBAL_RSV = 1 << 49
# Profiles that store several full copies of each block, and how many.
_COPIES = {1 << 4: 2, 1 << 5: 2, 1 << 6: 2, 1 << 9: 3, 1 << 10: 4}  # RAID1 DUP RAID10 C3 C4


def space_info(fd: int) -> list[tuple[int, int, int]]:
    """Return (flags, total_bytes, used_bytes) per block group type and profile.

    Raises OSError.
    """
    buf = bytearray(_SPACE_HEAD.size + _SPACE_SLOTS * _SPACE_ITEM.size)
    _SPACE_HEAD.pack_into(buf, 0, _SPACE_SLOTS, 0)
    fcntl.ioctl(fd, BTRFS_IOC_SPACE_INFO, buf, True)
    _slots, count = _SPACE_HEAD.unpack_from(buf)
    return [_SPACE_ITEM.unpack_from(buf, _SPACE_HEAD.size + i * _SPACE_ITEM.size)
            for i in range(min(count, _SPACE_SLOTS))]


def bytes_to_scrub(fd: int) -> int:
    """Used bytes counted once per stored copy: what a full scrub reads. Raises OSError."""
    total = 0
    for flags, _size, used in space_info(fd):
        if flags & BLOCK_GROUP_GLOBAL_RSV:
            continue
        copies = next((n for bit, n in _COPIES.items() if flags & bit), 1)
        total += used * copies
    return total
