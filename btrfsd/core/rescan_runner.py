"""Quota rescan as a job kind: QUOTA_RESCAN starts it in the kernel, RESCAN_STATUS
follows it."""

from __future__ import annotations

import asyncio
import errno
import logging
import os

from ..errors import InvalidArgument, from_errno
from ..fs import quota as kquota
from .filesystems import Filesystem, open_mount
from .jobkind import Adoption
from .jobs import Job, JobRecord, JobState
from .quotas import quotas_off

log = logging.getLogger(__name__)

OPERATION = "quota-rescan"


class RescanKind:
    """Quota rescans. One found running is not adopted: starting one follows it."""

    operation = OPERATION

    def __init__(self, poll_interval: float) -> None:
        self.poll_interval = poll_interval

    def runner(self, fs: Filesystem, params: object) -> RescanRunner:
        return RescanRunner(fs, poll_interval=self.poll_interval)

    def find(self, fs: Filesystem, fd: int) -> Adoption | None:
        return None

    def recover(self, fs: Filesystem | None, record: JobRecord) -> Adoption | None:
        return None  # the kernel finishes a rescan on its own; nothing to put back


class RescanRunner:
    """Recounts every qgroup from the extent tree (full qgroups only)."""

    def __init__(self, fs: Filesystem, *, poll_interval: float = 0.5) -> None:
        self.fs = fs
        self.poll_interval = poll_interval
        self._fd = -1

    def _prepare_blocking(self) -> None:
        mode = kquota.quota_mode(self.fs.uuid)
        if not mode:
            raise quotas_off(self.fs, "there is nothing to rescan")
        if mode == "squota":
            raise InvalidArgument("Simple quotas are never rescanned: they count only what "
                                  "was written after they were enabled.")
        self._fd = open_mount(self.fs)
        try:
            kquota.rescan_start(self._fd)
        except OSError as e:
            if e.errno != errno.EINPROGRESS:  # one already runs (e.g. after enabling): follow it
                os.close(self._fd)
                self._fd = -1
                raise from_errno(e.errno or 0, "Cannot start a quota rescan: "
                                 f"{os.strerror(e.errno or 0)}.") from None

    async def prepare(self, job: Job) -> None:
        """Start the rescan in the kernel. Raises InvalidArgument (quotas off or simple)."""
        await asyncio.to_thread(self._prepare_blocking)

    async def run(self, job: Job) -> None:
        """Follow the rescan to its end (see Runner.run)."""
        try:
            while True:
                try:
                    position = await asyncio.to_thread(kquota.rescan_status, self._fd)
                except OSError as e:
                    msg = f"Cannot follow the quota rescan: {os.strerror(e.errno or 0)}."
                    job.finish(JobState.FAILED, msg, error=msg)
                    return
                if position is None:
                    break
                job.update(details={**job.details, "position": position})
                await asyncio.sleep(self.poll_interval)
            if not kquota.quota_mode(self.fs.uuid):
                job.finish(JobState.CANCELLED, "Quotas were disabled during the rescan.")
            else:
                job.finish(JobState.COMPLETED, "Quota rescan finished; usage numbers are "
                           "exact again.", success=True)
        finally:
            if not job.active and self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    async def pause(self, job: Job) -> None:
        raise InvalidArgument("A quota rescan cannot be paused.")

    async def resume(self, job: Job) -> None:
        raise InvalidArgument("A quota rescan cannot be paused or resumed.")

    async def cancel(self, job: Job) -> None:
        raise InvalidArgument("The kernel cannot cancel a quota rescan (disabling quotas "
                              "stops it); it usually takes seconds to minutes.")

    async def shutdown(self, job: Job) -> None:
        """Nothing to do: the kernel finishes the rescan on its own."""
