"""Keep snapshot deletion with full qgroups from stalling for hours.

With full qgroups the kernel accounts every shared block of a dropped snapshot; measured
here, each deleted snapshot then costs ~20 s of cleaner time (drop_subtree_threshold 3,
the default). With the threshold at 0 the cleaner skips that accounting and only marks
the qgroups inconsistent: the same deletes drain in seconds, and one rescan afterwards
makes the numbers right again. btrfsd does exactly that around its own deletes: lower the
threshold, wait for the cleaner, rescan (as a job), put the threshold back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from ..constants import ROOT_UID
from ..errors import AlreadyRunning, BtrfsdError
from ..fs import quota as kquota
from ..fs import subvol
from .filesystems import Filesystem, open_mount
from .jobmanager import JobManager
from .jobs import JobState
from .rescan_runner import OPERATION as RESCAN

log = logging.getLogger(__name__)

FAST_THRESHOLD = 0
POLL = 1.0  # seconds between looks at the cleaner's queue


class FastDelete:
    """Lowers drop_subtree_threshold around deletes and rescans when the cleaner is done."""

    def __init__(self, jobs: JobManager, *, enabled: bool = True) -> None:
        self.jobs = jobs
        self.enabled = enabled
        self._saved: dict[str, int] = {}  # fs uuid -> threshold to put back
        self._followers: dict[str, asyncio.Task[None]] = {}

    def _lower(self, fs: Filesystem) -> None:
        if kquota.quota_mode(fs.uuid) != "qgroup" or fs.uuid in self._saved:
            return
        current = kquota.drop_subtree_threshold(fs.uuid)
        if current is None or current == FAST_THRESHOLD:
            return
        kquota.set_drop_subtree_threshold(fs.uuid, FAST_THRESHOLD)
        self._saved[fs.uuid] = current
        log.info("full qgroups: drop_subtree_threshold %d -> %d for deletes fs=%s", current,
                 FAST_THRESHOLD, fs.uuid)

    async def before_delete(self, fs: Filesystem) -> None:
        """Call before deleting subvolumes of ``fs``. Never raises: a delete must not fail
        for this (it would only be slower)."""
        if not self.enabled:
            return
        try:
            await asyncio.to_thread(self._lower, fs)
        except OSError as e:
            log.warning("cannot lower drop_subtree_threshold fs=%s: %s", fs.uuid, e)

    def after_delete(self, fs: Filesystem) -> None:
        """Call after a delete (also a failed one): follow the cleaner, then rescan and
        restore the threshold (background)."""
        if fs.uuid not in self._saved or fs.uuid in self._followers:
            return
        task = asyncio.get_running_loop().create_task(self._follow(fs))
        self._followers[fs.uuid] = task

    def _pending(self, fs: Filesystem) -> int:
        fd = open_mount(fs)
        try:
            return len(subvol.pending_deletions(fd))
        finally:
            os.close(fd)

    async def _follow(self, fs: Filesystem) -> None:
        try:
            while await asyncio.to_thread(self._pending, fs):
                await asyncio.sleep(POLL)
            while kquota.inconsistent(fs.uuid) and kquota.quota_mode(fs.uuid) == "qgroup":
                try:
                    job = await self.jobs.start(fs, ROOT_UID, RESCAN)
                except AlreadyRunning:
                    await asyncio.sleep(POLL * 5)  # a scrub or balance first; try again
                    continue
                log.info("cleaner done; rescanning quotas as job %d fs=%s", job.id, fs.uuid)
                while job.state is JobState.RUNNING:
                    await asyncio.sleep(POLL)
                break
        except (BtrfsdError, OSError) as e:
            log.warning("after deletes on fs=%s: %s (usage stays inconsistent until a quota "
                        "rescan)", fs.uuid, e)
        finally:
            self._followers.pop(fs.uuid, None)
            saved = self._saved.pop(fs.uuid, None)
            if saved is not None and kquota.quota_mode(fs.uuid):
                try:
                    await asyncio.to_thread(kquota.set_drop_subtree_threshold, fs.uuid, saved)
                except OSError as e:
                    log.warning("cannot restore drop_subtree_threshold fs=%s: %s", fs.uuid, e)

    async def shutdown(self) -> None:
        """Put thresholds back; a rescan left undone shows as inconsistent usage."""
        for task in list(self._followers.values()):
            task.cancel()
        for task in list(self._followers.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task
