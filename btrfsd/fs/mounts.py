"""Reading /proc/self/mountinfo: which btrfs filesystems are mounted where."""

from __future__ import annotations

import re
from dataclasses import dataclass

MOUNTINFO = "/proc/self/mountinfo"

_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    # The kernel escapes space, tab, newline and backslash as \ooo in mountinfo.
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


@dataclass(frozen=True)
class MountEntry:
    """One line of mountinfo for a btrfs mount."""

    mount_id: int
    device_number: str  # "major:minor" of the superblock; equal for all mounts of one fs
    root: str  # path inside the filesystem that is mounted (the subvolume path for btrfs)
    mount_point: str
    source: str
    options: dict[str, str]

    @property
    def subvolume_id(self) -> int | None:
        """The mounted subvolume's id from the ``subvolid=`` option, if the kernel gave it."""
        value = self.options.get("subvolid")
        return int(value) if value and value.isdigit() else None


def parse_mountinfo(text: str) -> list[MountEntry]:
    """Parse mountinfo text and return its btrfs entries, in file order.

    Malformed lines are skipped rather than raised on: the kernel's format is stable, and
    one odd line must not hide every filesystem.
    """
    entries: list[MountEntry] = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
        except ValueError:
            continue
        if len(fields) < sep + 4 or fields[sep + 1] != "btrfs":
            continue
        options: dict[str, str] = {}
        for opt in fields[sep + 3].split(","):
            key, _, value = opt.partition("=")
            options[key] = _unescape(value)
        try:
            mount_id = int(fields[0])
        except ValueError:
            continue
        entries.append(
            MountEntry(
                mount_id=mount_id,
                device_number=fields[2],
                root=_unescape(fields[3]),
                mount_point=_unescape(fields[4]),
                source=_unescape(fields[sep + 2]),
                options=options,
            )
        )
    return entries


def read_btrfs_mounts(path: str = MOUNTINFO) -> list[MountEntry]:
    """Return the btrfs mounts visible to this process.

    Raises OSError if mountinfo cannot be read.
    """
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return parse_mountinfo(f.read())
