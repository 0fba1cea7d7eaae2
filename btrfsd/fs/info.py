"""What the kernel says about one subvolume (fs/subvol.py and fs/treesearch.py make it)."""

from __future__ import annotations

from typing import NamedTuple


class SubvolumeInfo(NamedTuple):
    """A subvolume as reported by the kernel; ``path`` is relative to the top level.

    A NamedTuple, not a dataclass: listings build 10,000 of these, and a tuple is made
    several times faster (docs/benchmarks.md).
    """

    id: int
    parent_id: int
    path: str
    uuid: str
    parent_uuid: str
    received_uuid: str
    generation: int
    ctime: float
    otime: float
    read_only: bool

    @property
    def is_snapshot(self) -> bool:
        return bool(self.parent_uuid)
