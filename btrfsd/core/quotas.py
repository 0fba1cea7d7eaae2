"""Quota use cases: enable (full or simple), disable, limits, usage. Async; kernel work
runs in threads; raises only BtrfsdError."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from dataclasses import dataclass

from .. import constants
from ..errors import BtrfsdError, Failed, Hint, HintKind, InvalidArgument, NotFound, from_errno
from ..fs import quota as kquota
from ..fs import subvol
from ..units import format_bytes, qgroupid
from .filesystems import Filesystem, open_mount
from .subvolumes import Creds, Subvolumes, reachable_in

log = logging.getLogger(__name__)

# Full qgroups cost ~0.5 ms per existing snapshot on every snapshot create, and each
# deleted snapshot ~20 s of cleaner time (measured: docs/quotas.md). Above this many
# snapshots btrfsd asks for force=true before enabling them.
MANY_SNAPSHOTS = 100
MIN_LIMIT = 1 << 20  # a limit under 1 MiB makes a subvolume unusable: refuse it as a typo
MAX_LIMIT = 1 << 62  # 4 EiB: larger than any btrfs; bigger values are garbage


@dataclass(frozen=True)
class QuotaReport:
    """Quota state of a filesystem and every qgroup's usage (as of the last commit)."""

    mode: str  # 'qgroup', 'squota', or '' when off
    inconsistent: bool
    qgroups: list[tuple[kquota.QgroupUsage, str]]  # usage, subvolume path ('' if none)


def quotas_off(fs: Filesystem, what: str) -> InvalidArgument:
    """The error for "quotas are off", hinting to enable them."""
    return InvalidArgument(f"Quotas are off on this filesystem; {what}.",
                           hint=Hint(HintKind.ENABLE_QUOTA, {"filesystem": fs.uuid}))


def _quota_error(fs: Filesystem, e: OSError, what: str) -> BtrfsdError:
    if e.errno == errno.ENOTCONN:
        return quotas_off(fs, what.lower())
    if e.errno == errno.EINPROGRESS:
        return from_errno(e.errno, f"{what}: a quota rescan is running; wait for it.")
    return from_errno(e.errno or 0, f"{what}: {os.strerror(e.errno or 0)}.")


def check_limit(name: str, value: int) -> None:
    """Raise InvalidArgument for a limit that is neither 0 (none) nor a sane size."""
    if value and not MIN_LIMIT <= value <= MAX_LIMIT:
        raise InvalidArgument(
            f"A {name} limit of {value} bytes is not sensible: give 0 for no limit or a "
            f"size from {format_bytes(MIN_LIMIT)} to {format_bytes(MAX_LIMIT)}.")


class Quotas:
    """Quota operations on the filesystems btrfsd serves."""

    def __init__(self, subvolumes: Subvolumes) -> None:
        self._subvolumes = subvolumes

    # -- enable / disable -------------------------------------------------------------
    def _enable(self, fs: Filesystem, simple: bool, force: bool) -> str:
        fd = open_mount(fs)
        try:
            mode = kquota.quota_mode(fs.uuid)
            wanted = "squota" if simple else "qgroup"
            if mode == wanted:
                return f"Quotas are already on ({_mode_name(mode)})."
            if mode:
                raise InvalidArgument(
                    f"Quotas are on in {_mode_name(mode)} mode; disable them first to "
                    f"switch to {_mode_name(wanted)} mode.")
            if simple and not kquota.simple_quota_supported():
                raise InvalidArgument("This kernel has no simple quotas (they need Linux "
                                      "6.7); enable full quotas instead.")
            note = ""
            if not simple:
                snapshots = sum(1 for s in self._subvolumes.listed(fs, fd) if s.parent_uuid)
                better = (" Simple quotas (--simple) avoid this cost."
                          if kquota.simple_quota_supported() else "")
                cost = ("full qgroups make each snapshot create slower by about 0.5 ms per "
                        "existing snapshot and each snapshot delete cost seconds of "
                        "background work")
                if snapshots >= MANY_SNAPSHOTS and not force:
                    raise InvalidArgument(
                        f"This filesystem has {snapshots} snapshots: {cost} (here about "
                        f"{snapshots * 0.5 / 1000:.1f} s more per snapshot).{better} Pass "
                        "force to enable full quotas anyway.")
                if better:
                    note = f"Note: {cost}.{better}"
            try:
                kquota.quota_ctl(fd, kquota.QUOTA_CTL_ENABLE_SIMPLE if simple
                                 else kquota.QUOTA_CTL_ENABLE)
            except OSError as e:
                raise _quota_error(fs, e, "Cannot enable quotas") from None
            return note
        finally:
            os.close(fd)

    async def enable(self, fs: Filesystem, *, simple: bool, force: bool = False) -> str:
        """Turn quotas on (simple: squota mode). Returns a note for the user ('' if none).

        Raises InvalidArgument (other mode on, unsupported, many snapshots without force).
        """
        note = await asyncio.to_thread(self._enable, fs, simple, force)
        fs.quota_mode = "squota" if simple else "qgroup"
        log.info("quotas enabled fs=%s mode=%s", fs.uuid, "squota" if simple else "qgroup")
        return note

    def _disable(self, fs: Filesystem) -> None:
        fd = open_mount(fs)
        try:
            if not kquota.quota_mode(fs.uuid):
                return
            kquota.quota_ctl(fd, kquota.QUOTA_CTL_DISABLE)
        except OSError as e:
            raise _quota_error(fs, e, "Cannot disable quotas") from None
        finally:
            os.close(fd)

    async def disable(self, fs: Filesystem) -> None:
        """Turn quotas off (limits are forgotten). Raises BtrfsdError."""
        await asyncio.to_thread(self._disable, fs)
        fs.quota_mode = ""
        log.info("quotas disabled fs=%s", fs.uuid)

    # -- limits ---------------------------------------------------------------------------
    async def set_limit(self, fs: Filesystem, path: str, *, referenced: int,
                        exclusive: int) -> int:
        """Set both limits of a subvolume's qgroup (0 = none). Returns the subvolume id.

        Raises InvalidArgument (not a subvolume, quotas off, absurd size), NotFound.
        """
        check_limit("referenced", referenced)
        check_limit("exclusive", exclusive)
        info = await self._subvolumes.info(fs, path)
        await asyncio.to_thread(self._set_limit, fs, info.id, referenced, exclusive)
        log.info("quota limit set path=%s subvolume=%d referenced=%d exclusive=%d fs=%s",
                 path, info.id, referenced, exclusive, fs.uuid)
        return info.id

    def _set_limit(self, fs: Filesystem, sid: int, referenced: int, exclusive: int) -> None:
        if not kquota.quota_mode(fs.uuid):
            raise quotas_off(fs, "enable them before setting limits")
        fd = open_mount(fs)
        try:
            kquota.set_limit(fd, qgroupid(0, sid),
                             referenced=referenced or kquota.CLEAR_LIMIT,
                             exclusive=exclusive or kquota.CLEAR_LIMIT)
        except OSError as e:
            if e.errno == errno.ENOENT:
                raise NotFound(f"Subvolume {sid} has no qgroup (was it made while quotas "
                               "were off? a rescan creates it).") from None
            raise _quota_error(fs, e, "Cannot set the limit") from None
        finally:
            os.close(fd)

    # -- usage ------------------------------------------------------------------------------
    def _report(self, fs: Filesystem, sync: bool, visible_to: Creds | None) -> QuotaReport:
        mode = kquota.quota_mode(fs.uuid)
        if not mode:
            return QuotaReport("", False, [])
        fd = open_mount(fs)
        try:
            if sync:  # commit, so the numbers include what was just written
                subvol.kernel_call("Cannot sync", subvol.sync, fd)
            paths = {s.id: s.path for s in self._subvolumes.listed(fs, fd)}
        finally:
            os.close(fd)
        paths[constants.TOP_LEVEL_SUBVOLUME_ID] = "/"
        usage = kquota.read_usage(fs.uuid)
        if visible_to is not None and not visible_to.is_root:
            # a subvolume's row only where the caller could find the subvolume
            ids = list(paths)
            found = reachable_in(fs, [paths[i] for i in ids], visible_to)
            hidden = {i for i, ok in zip(ids, found, strict=True) if not ok}
            usage = [q for q in usage if q.level != 0 or q.subvolume_id not in hidden]
        return QuotaReport(mode, kquota.inconsistent(fs.uuid),
                           [(q, paths.get(q.subvolume_id, "") if q.level == 0 else "")
                            for q in usage])

    async def report(self, fs: Filesystem, *, sync: bool = False,
                     visible_to: Creds | None = None) -> QuotaReport:
        """Quota mode, consistency and usage of every qgroup (sysfs; never a rescan);
        with ``visible_to`` a subvolume's row only where that caller could find it.

        Raises BtrfsdError.
        """
        try:
            return await asyncio.to_thread(self._report, fs, sync, visible_to)
        except OSError as e:
            raise Failed(f"Cannot read quota usage: {e}.") from None

    def _remove_stale(self, fs: Filesystem, candidates: list[int]) -> list[int]:
        fd = open_mount(fs)
        try:
            pending = set(subvol.pending_deletions(fd))
            alive = {s.id for s in self._subvolumes.listed(fs, fd)}
            removed = []
            for sid in candidates:
                if sid in pending or sid in alive or sid == constants.TOP_LEVEL_SUBVOLUME_ID:
                    continue  # the cleaner is still at it, or it came back meanwhile
                try:
                    kquota.remove_qgroup(fd, qgroupid(0, sid))
                    removed.append(sid)
                except OSError as e:  # busy (still holds usage) or gone: try next pass
                    log.debug("cannot remove qgroup 0/%d fs=%s: %s", sid, fs.uuid, e)
            return removed
        finally:
            os.close(fd)

    async def remove_stale(self, fs: Filesystem, candidates: list[int]) -> list[int]:
        """Remove level-0 qgroups whose subvolume is gone (and freed), so they do not pile
        up on kernels that keep them. Returns the subvolume ids removed. Never raises."""
        try:
            removed = await asyncio.to_thread(self._remove_stale, fs, candidates)
        except (OSError, BtrfsdError) as e:
            log.warning("cannot clean up qgroups fs=%s: %s", fs.uuid, e)
            return []
        if removed:
            log.info("removed qgroups of deleted subvolumes fs=%s ids=%s", fs.uuid, removed)
        return removed

    async def usage_by_subvolume(self, fs: Filesystem) -> dict[int, kquota.QgroupUsage]:
        """Every subvolume's own (level 0) qgroup by subvolume id, from sysfs only: for
        callers that already have the subvolume list. {} when quotas are off."""
        usage = await asyncio.to_thread(kquota.read_usage, fs.uuid)
        return {q.subvolume_id: q for q in usage if q.level == 0}

    def usage_of(self, fs: Filesystem, subvolume_id: int) -> kquota.QgroupUsage | None:
        """One subvolume's qgroup (blocking; None when quotas are off or it has none)."""
        return kquota.read_qgroup(fs.uuid, 0, subvolume_id)


def _mode_name(mode: str) -> str:
    return {"squota": "simple", "qgroup": "full"}.get(mode, mode)

