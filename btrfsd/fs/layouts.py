"""Recognise other snapshot tools' layouts inside a subvolume (blocking; call from a thread).

btrfsd's default snapshot place, ``<subvolume>/.snapshots``, is also snapper's (always a
subvolume there) and a common btrbk ``snapshot_dir``. These checks let the caller pick a
place of its own instead of dropping a stranger among another tool's snapshots
(docs/coexistence.md).

Everything works on an open directory fd: no symbolic link is followed, nothing but
directories is opened (a FIFO could block an open), and a scan reads a bounded number of
entries so a huge directory cannot slow a snapshot down.
"""

from __future__ import annotations

import os
import re
import stat
from typing import Final

from .subvol import is_subvolume

# Where btrfsd's default snapshots go when ``.snapshots`` belongs to another tool, and,
# once it exists, always (so a place, once chosen, does not move back and forth).
BTRFSD_SNAPSHOT_DIR: Final = ".btrfsd-snapshots"
# At most this many entries of a ``.snapshots`` directory are looked at. Another tool's
# entries are usually among the first (btrfs lists a directory in creation order).
SCAN_LIMIT: Final = 64

# snapper: one directory per snapshot, named by its number, holding info.xml and the
# ``snapshot`` subvolume.
SNAPPER_INFO: Final = "info.xml"
_SNAPPER_NUMBER = re.compile(r"[0-9]+")
# btrbk: ``<subvolume name>.<timestamp>[_N]`` with timestamp_format short (YYYYMMDD),
# long (YYYYMMDDThhmm) or long-iso (YYYYMMDDThhmmss+hhmm). btrfsd's own names
# (20261122T043000Z[-N]) have no ``<name>.`` prefix and never match.
_BTRBK_NAME = re.compile(r".+\.[0-9]{8}(T[0-9]{4}([0-9]{2}[+-][0-9]{4})?)?(_[0-9]+)?")

_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_PATH_FLAGS: Final = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    """lstat one name in an open directory; None if it does not exist. Raises OSError."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _is_snapper_entry(dir_fd: int, name: str) -> bool:
    """True if ``name`` (a directory in ``dir_fd``) is a snapper numbered directory."""
    if not _SNAPPER_NUMBER.fullmatch(name):
        return False
    try:
        fd = os.open(name, _PATH_FLAGS, dir_fd=dir_fd)
    except OSError:
        return False  # gone, or swapped for a link since the listing: not evidence
    try:
        st = lstat_at(fd, SNAPPER_INFO)
    except OSError:
        return False
    finally:
        os.close(fd)
    return st is not None and stat.S_ISREG(st.st_mode)


def foreign_owner(parent_fd: int, name: str, limit: int = SCAN_LIMIT) -> str | None:
    """Say which other tool a snapshot directory ``name`` in ``parent_fd`` belongs to.

    Returns "subvolume" when it is a subvolume (snapper's layout; btrfsd only ever makes a
    plain directory there), "snapper" or "btrbk" when one of its first ``limit`` entries
    is such a tool's snapshot, and None when it is missing, is not a real directory (the
    caller refuses that itself), or shows nothing foreign.

    Raises OSError when the directory exists but cannot be examined.
    """
    st = lstat_at(parent_fd, name)
    if st is None or not stat.S_ISDIR(st.st_mode):
        return None
    if is_subvolume(st):
        return "subvolume"
    fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    try:
        # scandir works on a duplicate of fd and closes only that; d_type answers
        # is_dir without a stat, and stopping early keeps the read bounded.
        with os.scandir(fd) as entries:
            for seen, entry in enumerate(entries):
                if seen >= limit:
                    break
                if not entry.is_dir(follow_symlinks=False):
                    continue
                if _is_snapper_entry(fd, entry.name):
                    return "snapper"
                if _BTRBK_NAME.fullmatch(entry.name):
                    return "btrbk"
    finally:
        os.close(fd)
    return None
