"""Readers for /sys/fs/btrfs/<fsid>/ (cheap, but still kernel calls: use from a thread)."""

from __future__ import annotations

import os

SYSFS_BTRFS = "/sys/fs/btrfs"


def fs_dir(fsid: str) -> str:
    """Return the sysfs directory of a filesystem."""
    return os.path.join(SYSFS_BTRFS, fsid)


def read_label(fsid: str) -> str:
    """Return the filesystem label ('' if none or unreadable)."""
    try:
        # a label is bytes: any of them may be there (names.py says how they are shown)
        with open(os.path.join(fs_dir(fsid), "label"), encoding="utf-8",
                  errors="surrogateescape") as f:
            return f.read().strip()
    except OSError:
        return ""


def device_names(fsid: str) -> list[str]:
    """Return the block device names (``loop0``, ``dm-1``) of a filesystem's devices."""
    try:
        return sorted(os.listdir(os.path.join(fs_dir(fsid), "devices")))
    except OSError:
        return []


def device_to_fsid() -> dict[str, str]:
    """Map block device name (``loop0``) to the fsid of the mounted btrfs using it.

    Lets the registry identify mounts without opening their mount points.
    """
    result: dict[str, str] = {}
    try:
        fsids = os.listdir(SYSFS_BTRFS)
    except OSError:
        return result
    for fsid in fsids:
        for dev in device_names(fsid):
            result[dev] = fsid
    return result


def quota_mode(fsid: str) -> str:
    """'qgroup' (full), 'squota' (simple) or '' when quotas are off."""
    qgroups = os.path.join(fs_dir(fsid), "qgroups")
    try:
        with open(os.path.join(qgroups, "mode"), encoding="ascii") as f:
            return f.read().strip()
    except FileNotFoundError:
        return ""
    except OSError:  # older kernels: no mode file, only the directory
        return "qgroup" if os.path.isdir(qgroups) else ""


# The id of a filesystem's first (often only) device.
FIRST_DEVID = 1


def device_ids(fsid: str) -> list[int]:
    """Return the device ids of a filesystem (from devinfo/), ascending; the first
    device's id alone on kernels without devinfo/."""
    try:
        names = os.listdir(os.path.join(fs_dir(fsid), "devinfo"))
    except OSError:
        return [FIRST_DEVID]
    return sorted(int(n) for n in names if n.isdigit()) or [FIRST_DEVID]
