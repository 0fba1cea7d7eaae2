"""What a front end shows of subvolumes: their info joined with their qgroup usage.

Quota figures come from sysfs only (never a rescan, never a second tree walk), so a
listing of 10,000 snapshots costs one walk plus one directory read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..fs.creds import Creds
from ..fs.quota import QgroupUsage
from ..fs.subvol import SubvolumeInfo
from .filesystems import Filesystem
from .quotas import Quotas
from .subvolumes import Subvolumes


@dataclass(frozen=True)
class Listing:
    """Subvolumes (paths relative to the top level) and their usage by subvolume id
    ({} when quotas are off; a subvolume without a qgroup is missing from it)."""

    items: Sequence[SubvolumeInfo]  # a SubvolumeRows from Subvolumes
    usage: dict[int, QgroupUsage] = field(default_factory=dict)
    # equal keys, equal items (Subvolumes.list_versioned); None: not to be kept
    key: tuple[int, str] | None = None


class Inventory:
    """Reads that join subvolumes and quotas."""

    def __init__(self, subvolumes: Subvolumes, quotas: Quotas) -> None:
        self._subvolumes = subvolumes
        self._quotas = quotas

    async def list(self, fs: Filesystem, *, snapshots_of: str = "",
                   visible_to: Creds | None = None) -> Listing:
        """Every subvolume of ``fs``, or with ``snapshots_of`` (an absolute path of a
        subvolume) only its snapshots, with usage; with ``visible_to`` only what that
        caller could find by path. Raises BtrfsdError."""
        items, key = await self._subvolumes.list_versioned(fs, snapshots_of=snapshots_of,
                                                           visible_to=visible_to)
        if not fs.quota_enabled:
            return Listing(items, key=key)
        return Listing(items, await self._quotas.usage_by_subvolume(fs), key)

    async def get(self, fs: Filesystem, path: str, *, as_caller: Creds | None = None
                  ) -> tuple[SubvolumeInfo, QgroupUsage | None]:
        """One subvolume by absolute path (as ``as_caller`` could find it), and its
        usage (None without a qgroup or with quotas off). Raises BtrfsdError."""
        info = await self._subvolumes.info(fs, path, as_caller=as_caller)
        usage = await asyncio.to_thread(self._quotas.usage_of, fs, info.id)
        return info, usage
