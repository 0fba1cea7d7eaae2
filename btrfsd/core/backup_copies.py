"""The copies in a backup's target directory: which are complete, listing them, removing
an unfinished one, and what the target's retention decides about each (blocking listing
and removal; call from a worker thread).

A subvolume in a target directory is a copy only when it is read-only and carries a
received_uuid (``btrfs receive`` sets both last); anything else is an unfinished receive.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import tzinfo

from ..fs import subvol
from ..fs.info import SubvolumeInfo
from .retention import Candidate, Decision, Limits, decide

log = logging.getLogger(__name__)

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
PARENT = "parent"  # the reason the newest copy is kept: the next incremental needs it


def complete(info: SubvolumeInfo) -> bool:
    """A finished receive: read-only with a received_uuid (set last by btrfs receive)."""
    return info.read_only and bool(info.received_uuid)


def target_copies(dir_fd: int, shown: str) -> dict[str, SubvolumeInfo]:
    """The subvolumes directly in the directory open as ``dir_fd``, by name (blocking).
    Raises OSError, BtrfsdError."""
    found: dict[str, SubvolumeInfo] = {}
    # a new open file each time: btrfs lists only the entries a directory file held when
    # it was opened (its last index), even after a rewind on older kernels
    listing = os.open(".", DIR_FLAGS, dir_fd=dir_fd)
    try:
        with os.scandir(listing) as entries:
            names = [e.name for e in entries if e.is_dir(follow_symlinks=False)
                     and subvol.is_subvolume(e.stat(follow_symlinks=False))]
    finally:
        os.close(listing)
    for name in names:
        try:
            fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
        except OSError:
            continue  # gone meanwhile
        try:
            found[name] = subvol.subvolume_info(fd, f"{shown}/{name}")
        finally:
            os.close(fd)
    return found


def remove_partial(dir_fd: int, name: str, shown: str) -> bool:
    """Delete ``name`` in the directory open as ``dir_fd`` if it is an unfinished receive
    (a subvolume that is not read-only or has no received_uuid); True when it did
    (blocking). Raises BtrfsdError."""
    try:
        fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if not subvol.is_subvolume(st):
            return False
        info = subvol.subvolume_info(fd, shown)
        if complete(info):
            return False
        nested = list(subvol.iter_subvolumes(fd))
        subvol.delete_subvolume(fd, shown, info, nested)
    finally:
        os.close(fd)
    log.info("removed the unfinished copy %s", shown)
    return True


@dataclass(frozen=True)
class Judged:
    """A complete copy and the target's retention decision about it."""

    name: str
    info: SubvolumeInfo
    decision: Decision  # its reasons include PARENT for the newest copy


def judge(copies: dict[str, SubvolumeInfo], limits: Limits, now: float,
          tz: tzinfo | None, newest: SubvolumeInfo | None = None) -> list[Judged]:
    """The target's retention over its complete copies (created = the copy's otime),
    youngest first. ``newest`` (default: the copy received last, the highest id) is the
    next incremental's parent and always kept. Raises nothing."""
    done = {n: c for n, c in copies.items() if complete(c)}
    if newest is not None:
        done[newest.path.rpartition("/")[2]] = newest
    if not done:
        return []
    parent = newest if newest is not None else max(done.values(), key=lambda c: c.id)
    by_uuid = {c.uuid: (n, c) for n, c in done.items()}
    # youngest first by id too: copies received within one second share an otime, and
    # the one received first must count as the first of its period
    ordered = sorted(done.values(), key=lambda c: c.id, reverse=True)
    judged = []
    for d in decide([Candidate(c.uuid, c.otime) for c in ordered], limits, now, tz):
        if d.candidate.key == parent.uuid:
            d.reasons.append(PARENT)
        name, info = by_uuid[d.candidate.key]
        judged.append(Judged(name, info, d))
    return judged
