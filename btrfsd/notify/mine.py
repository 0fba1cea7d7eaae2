"""Whose alert it is: the agent shows a user only what is theirs, and learns nothing
btrfsd would not tell them.

- **Admins** (polkit grants ``org.btrfsd1.read-all``; root, the admin group in the
  example rule): every quota alert and every failed job; btrfsd shows them everything.
- **Everyone else**: a quota alert is theirs when btrfsd lists its qgroup to them in
  GetQuotaUsage (asked as them: only subvolumes they could reach by path) *and* the
  subvolume's top directory belongs to them (stat as them, on the path btrfsd gave,
  under a mount point of that filesystem). QuotaWarning's own path is not used: it is
  empty for what not every user could reach, and the qgroup id is enough. A job is theirs
  when they started it (StartedByUid); job objects name no subvolume.

Nothing here reads what the user could not read anyway: btrfsd's replies are per caller,
mountinfo and stat run with the user's own rights.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..names import from_bus


@dataclass(frozen=True)
class QuotaSubject:
    """A qgroup alert the user is to see: where (path or qgroup name) and its mount."""

    where: str
    mount: str


def _unescape(field: str) -> str:
    """mountinfo's octal escapes (\\040 for a space) undone."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_roots(mountinfo: str, mount_points: list[str]) -> list[tuple[str, str]]:
    """(subvolume path mounted, mount point) for each of ``mount_points``, from
    /proc/self/mountinfo text; the subvolume path is relative to the top level."""
    wanted = set(mount_points)
    found = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4 and (point := _unescape(fields[4])) in wanted:
            found.append((_unescape(fields[3]).strip("/"), point))
    return found


def absolute(rel: str, roots: list[tuple[str, str]]) -> tuple[str, str] | None:
    """(absolute path, mount point) of subvolume path ``rel`` (relative to the top level)
    through the mount whose root holds it most closely; None when no mount shows it."""
    best: tuple[int, str, str] | None = None
    for root, point in roots:
        if root == "" or rel == root or rel.startswith(root + "/"):
            rest = rel[len(root):].lstrip("/")
            path = str(Path(point) / rest) if rest else point
            if best is None or len(root) > best[0]:
                best = (len(root), path, point)
    return (best[1], best[2]) if best else None


def read_mountinfo() -> str:
    """This process's mount table ('' when unreadable)."""
    try:
        return Path("/proc/self/mountinfo").read_text()
    except OSError:
        return ""


def quota_subject(qgroupid: int, rows: list[list[object]], mount_points: list[str],
                  admin: bool, uid: int, mountinfo: str) -> QuotaSubject | None:
    """Decide (see the module's docstring) from GetQuotaUsage's rows as this user saw
    them; None: not theirs, say nothing. Raises nothing."""
    row = next((r for r in rows if r[0] == qgroupid), None)
    if row is None:
        return None  # btrfsd does not show it to this user
    rel = from_bus(str(row[1]))
    roots = mount_roots(mountinfo, mount_points)
    found = absolute(rel, roots) if rel else None
    path, mount = found if found else (None, mount_points[0] if mount_points else "")
    name = path or f"qgroup {qgroupid >> 48}/{qgroupid & ((1 << 48) - 1)}"
    if admin:
        return QuotaSubject(name, mount)
    if path is None:
        return None
    try:
        owner = os.lstat(path).st_uid
    except OSError:
        return None
    return QuotaSubject(path, mount) if owner == uid else None


def job_is_mine(started_by: int, admin: bool, uid: int) -> bool:
    """A finished job concerns admins and whoever started it."""
    return admin or started_by == uid
