"""Delete a subvolume by its id (BTRFS_IOC_SNAP_DESTROY_V2 with BTRFS_SUBVOL_SPEC_BY_ID).

A delete by name acts on whatever the name means when the kernel looks it up; a delete by
id acts on exactly the subvolume that was checked, wherever it is now, and never walks a
path: no symbolic link, rename or swap can point it elsewhere. The kernel finds the
subvolume's own parent directory and name from its root backref, so the fd given only
names the filesystem (and the mount that must be writable). Linux >= 5.7.

Blocking (call from a thread); fcntl.ioctl releases the GIL while the kernel works.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct

from .ioctl import iow

# struct btrfs_ioctl_vol_args_v2 (linux/btrfs.h): __s64 fd; __u64 transid; __u64 flags;
# union { struct { __u64 size; struct btrfs_qgroup_inherit *qgroup_inherit; };
# __u64 unused[4]; }; union { char name[BTRFS_SUBVOL_NAME_MAX + 1]; __u64 devid;
# __u64 subvolid; }: 8 + 8 + 8 + 32 + 4040 = 4096 bytes. The subvolid is the first u64
# of the last union; the rest of it stays zero.
BTRFS_SUBVOL_NAME_MAX = 4039
_VOL_ARGS_V2 = struct.Struct(f"=qQQ32xQ{BTRFS_SUBVOL_NAME_MAX + 1 - 8}x")
BTRFS_IOC_SNAP_DESTROY_V2 = iow(63, _VOL_ARGS_V2.size)
BTRFS_SUBVOL_SPEC_BY_ID = 1 << 4
# Ids below BTRFS_FIRST_FREE_OBJECTID are the filesystem's own trees; the kernel refuses
# them with EINVAL, and so does this module before asking.
FIRST_FREE_OBJECTID = 256


def destroy_by_id(fd: int, subvolume_id: int) -> None:
    """Delete the subvolume ``subvolume_id`` of the filesystem holding the open ``fd``.

    It must have no nested subvolumes (ENOTEMPTY), its parent subvolume must be writable
    (EROFS) and it must not be the default subvolume (EPERM). Raises OSError (ENOENT: no
    such subvolume; EINVAL: not a subvolume id; ENOTTY: ``fd`` is not on btrfs;
    EOPNOTSUPP: a kernel older than 5.7).
    """
    if subvolume_id < FIRST_FREE_OBJECTID:
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
    buf = bytearray(_VOL_ARGS_V2.pack(0, 0, BTRFS_SUBVOL_SPEC_BY_ID, subvolume_id))
    fcntl.ioctl(fd, BTRFS_IOC_SNAP_DESTROY_V2, buf, True)
