"""Scrub as a job kind: one thread per device, progress polled, pause by checkpoint.

The kernel has no scrub pause. As btrfs-progs does for `scrub cancel` + `scrub resume`,
pausing cancels the device scrubs and keeps each device's last physical position and
counters; resuming starts each unfinished device again from its position.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass

from ..errors import BtrfsdError, Failed, InvalidArgument
from ..fs import ioctl, sysfs
from ..fs import scrub as kscrub
from ..units import format_bytes
from .filesystems import Filesystem, open_mount
from .jobkind import Adoption, RunnerControl, expect_params
from .jobs import Job, JobRecord, JobState, RateMeter
from .threads import in_own_thread

log = logging.getLogger(__name__)

OPERATION = "scrub"

# Counters shown in Job.Details (last_physical is a position, not a result).
DETAIL_COUNTERS = tuple(c for c in kscrub.COUNTERS if c != "last_physical")
ERROR_COUNTERS = ("read_errors", "csum_errors", "verify_errors", "super_errors")


def summary(p: kscrub.ScrubProgress) -> str:
    """One sentence about a scrub's findings."""
    checked = format_bytes(p.bytes_scrubbed)
    if p.error_count == 0:
        return f"{checked} checked, no errors found."
    kinds = ", ".join(f"{getattr(p, c)} {c.removesuffix('_errors')}" for c in ERROR_COUNTERS
                      if getattr(p, c))
    return (f"{checked} checked, {p.error_count} errors found ({kinds}): "
            f"{p.corrected_errors} corrected, {p.uncorrectable_errors} uncorrectable. "
            "Check the kernel log (dmesg) for the affected files.")


@dataclass(frozen=True)
class ScrubParams:
    readonly: bool = False  # report errors without repairing them
    limit: int = 0  # bytes/s per device; 0 keeps the current limit


def _put_back_limits(fsid: str, undo: dict[str, int]) -> dict[str, int]:
    """Write back saved speed limits (blocking); return those that could not be."""
    left = {}
    for devid, value in undo.items():
        try:
            kscrub.write_speed_limit(fsid, int(devid), value)
        except OSError as e:
            log.warning("cannot restore scrub speed limit fs=%s devid=%s value=%d: %s",
                        fsid, devid, value, e)
            left[devid] = value
    return left


class ScrubKind:
    """Scrub jobs: started by btrfsd, or found running (started by `btrfs scrub`)."""

    operation = OPERATION

    def __init__(self, poll_interval: float) -> None:
        self.poll_interval = poll_interval

    def runner(self, fs: Filesystem, params: object) -> ScrubRunner:
        p = expect_params(params, ScrubParams, OPERATION)
        return ScrubRunner(fs, readonly=p.readonly, limit=p.limit,
                           poll_interval=self.poll_interval)

    def find(self, fs: Filesystem, fd: int) -> Adoption | None:
        for devid in sysfs.device_ids(fs.uuid):
            if kscrub.scrub_progress(fd, devid) is not None:
                return Adoption(ScrubRunner(fs, poll_interval=self.poll_interval,
                                            external=True))
        return None

    def recover(self, fs: Filesystem | None, record: JobRecord) -> Adoption | None:
        """A scrub never outlives btrfsd (the kernel ends it with our thread): put the
        speed limits back and report it interrupted."""
        if fs is not None and record.undo:
            _put_back_limits(fs.uuid, record.undo)
        return None


class ScrubRunner:
    """Runs (or, with ``external``, watches) the scrub of one filesystem."""

    def __init__(self, fs: Filesystem, *, readonly: bool = False, limit: int = 0,
                 poll_interval: float = 0.5, external: bool = False) -> None:
        self.fs = fs
        self.readonly = readonly
        self.limit = limit
        self.poll_interval = poll_interval
        self.external = external
        self._fd = -1
        self._devids: list[int] = []
        self._base: dict[int, kscrub.ScrubProgress] = {}  # counters of ended segments
        self._start: dict[int, int] = {}  # physical offset to (re)start each device at
        self._done: set[int] = set()
        self._errors: list[str] = []
        self._stopping = False  # daemon shutdown: leave the job unfinished
        self._control = RunnerControl(OPERATION)

    # -- set-up (blocking parts in threads) -----------------------------------------
    def _size_blocking(self) -> tuple[int, dict[str, int]]:
        """Open and size the work; with a speed limit, check the kernel has one and read
        the limits in force (to put back). Returns the bytes to scrub and those limits."""
        self._fd = open_mount(self.fs)
        try:
            self._devids = sysfs.device_ids(self.fs.uuid)
            total = ioctl.bytes_to_scrub(self._fd)
            saved: dict[str, int] = {}
            if self.limit:
                for devid in self._devids:
                    if not kscrub.speed_limit_supported(self.fs.uuid, devid):
                        raise InvalidArgument("This kernel has no scrub speed limit "
                                              "(needs Linux 5.14); start without a limit.")
                    saved[str(devid)] = kscrub.read_speed_limit(self.fs.uuid, devid)
            return total, saved
        except (OSError, BtrfsdError) as e:
            self._close()
            if isinstance(e, OSError):
                raise Failed(f"Cannot prepare the scrub of {self.fs.uuid}: {e}.") from None
            raise

    def _limit_blocking(self, saved: dict[str, int]) -> None:
        """Set the speed limit on every device; on a failure put back what was set."""
        try:
            for devid in self._devids:
                kscrub.write_speed_limit(self.fs.uuid, devid, self.limit)
        except OSError as e:
            _put_back_limits(self.fs.uuid, saved)
            self._close()
            raise Failed(f"Cannot set the scrub speed limit of {self.fs.uuid}: {e}.") from None

    async def prepare(self, job: Job) -> None:
        """Open the filesystem, size the work, apply the speed limit: the limits in
        force are in the state file (job.persist) before any is changed, so a crash in
        between still puts them back at the next start.

        Raises InvalidArgument (no speed limit support) or Failed.
        """
        total, saved = await asyncio.to_thread(self._size_blocking)
        job.update(bytes_total=total, undo=saved,
                   details={**job.details, "readonly": self.readonly, "limit": self.limit,
                            "devices": len(self._devids)})
        if saved:
            await job.persist()
            await asyncio.to_thread(self._limit_blocking, saved)

    async def _put_back(self, job: Job) -> None:
        if job.undo:
            left = await asyncio.to_thread(_put_back_limits, self.fs.uuid, dict(job.undo))
            job.update(undo=left)

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # -- progress ---------------------------------------------------------------------
    def _read_progress(self) -> tuple[kscrub.ScrubProgress, bool]:
        """Sum of ended segments plus the running ones; and whether any device runs."""
        total = kscrub.ScrubProgress()
        for p in self._base.values():
            total = total + p
        running = False
        for devid in self._devids:
            if devid in self._done and not self.external:
                continue
            try:
                current = kscrub.scrub_progress(self._fd, devid)
            except OSError:
                current = None
            if current is not None:
                running = True
                total = total + current
        return total, running

    def _publish(self, job: Job, p: kscrub.ScrubProgress) -> None:
        now = time.time()
        done = p.bytes_scrubbed
        total = max(job.bytes_total, done)
        rate = self._control.meter.add(now, done)
        job.update(
            bytes_done=done, bytes_total=total,
            # 1.0 only when finished: the total is an estimate from space usage.
            progress=min(done / total, 0.999) if total else 0.0,
            rate=rate, expected_end_time=RateMeter.expected_end(now, done, total, rate),
            details={**job.details, **{c: getattr(p, c) for c in DETAIL_COUNTERS}},
        )

    async def _poll(self, job: Job) -> bool:
        p, running = await asyncio.to_thread(self._read_progress)
        self._publish(job, p)
        return running

    # -- running ----------------------------------------------------------------------
    async def _segment(self, job: Job) -> None:
        """Scrub every unfinished device until each ends, is cancelled or fails."""
        tasks = {
            asyncio.ensure_future(in_own_thread(
                f"scrub-{devid}", kscrub.scrub_device, self._fd, devid,
                self._start.get(devid, 0), self.readonly)): devid
            for devid in self._devids if devid not in self._done
        }
        pending = set(tasks)
        while pending:
            finished, pending = await asyncio.wait(pending, timeout=self.poll_interval)
            for t in finished:
                devid = tasks[t]
                base = self._base.get(devid, kscrub.ScrubProgress())
                try:
                    result = t.result()
                except kscrub.ScrubStopped as e:
                    self._base[devid] = base + e.progress
                    if e.progress.last_physical:
                        self._start[devid] = e.progress.last_physical
                    continue
                except OSError as e:
                    self._done.add(devid)
                    self._errors.append(f"device {devid}: {os.strerror(e.errno or 0)}")
                    log.error("scrub failed fs=%s devid=%d: %s", self.fs.uuid, devid, e)
                    continue
                self._base[devid] = base + result
                self._done.add(devid)
            if pending:
                await self._poll(job)
        await self._poll(job)

    async def _watch_external(self, job: Job) -> None:
        while await self._poll(job):
            if self._control.cancel_requested:
                await asyncio.to_thread(kscrub.scrub_cancel, self._fd)
            await asyncio.sleep(self.poll_interval)
        if self._control.cancel_requested:
            job.finish(JobState.CANCELLED, "Scrub cancelled.")
        else:
            job.finish(JobState.COMPLETED, "The scrub started outside btrfsd has ended; its "
                       "final counters are as last seen.", success=True)

    async def _until_all_done(self, job: Job) -> bool:
        """Scrub segments until every device is done (True), or the job ended or the
        daemon stops (False)."""
        control = self._control
        while True:
            await self._segment(job)
            if self._stopping:
                return False
            unfinished = [d for d in self._devids if d not in self._done]
            if control.cancel_requested:
                job.finish(JobState.CANCELLED, "Scrub cancelled; "
                           f"{format_bytes(job.bytes_done)} had been checked.")
                return False
            if not unfinished:
                return True
            if not control.pause_requested:  # stopped, but not by us
                job.finish(JobState.CANCELLED, "Scrub cancelled outside btrfsd (btrfs "
                           "scrub cancel, or the filesystem was unmounted) after "
                           f"{format_bytes(job.bytes_done)}.")
                return False
            if not await control.stay_paused(job):
                job.finish(JobState.CANCELLED, "Scrub cancelled while paused.")
                return False

    async def run(self, job: Job) -> None:
        """Run the scrub to its end (see Runner.run)."""
        if self._fd < 0:
            await self.prepare(job)
        try:
            if self.external:
                await self._watch_external(job)
                return
            if not await self._until_all_done(job):
                return
            final, _ = await asyncio.to_thread(self._read_progress)
            if self._errors:
                job.finish(JobState.FAILED, "Scrub failed: " + "; ".join(self._errors),
                           error="; ".join(self._errors))
                return
            healthy = final.error_count <= final.corrected_errors
            job.finish(JobState.COMPLETED, "Scrub finished: " + summary(final), success=healthy)
        finally:
            if not job.active:
                await self._put_back(job)
                self._close()

    async def pause(self, job: Job) -> None:
        """Pause by cancelling with a checkpoint. Raises InvalidArgument."""
        if self.external:
            raise InvalidArgument("This scrub was started outside btrfsd and cannot be paused "
                                  "here; cancel it, or use the tool that started it.")
        self._control.request_pause(job)
        await asyncio.to_thread(kscrub.scrub_cancel, self._fd)

    async def resume(self, job: Job) -> None:
        """Resume from the checkpoint. Raises InvalidArgument when not paused."""
        self._control.request_resume(job)

    async def cancel(self, job: Job) -> None:
        """Cancel the scrub (running or paused)."""
        if not self._control.request_cancel(job) and self._fd >= 0:
            await asyncio.to_thread(kscrub.scrub_cancel, self._fd)

    async def shutdown(self, job: Job) -> None:
        """Daemon stopping: cancel the kernel scrub (the next start reports the job as
        interrupted) and put the speed limits back. A scrub btrfsd did not start is left
        running."""
        self._stopping = True
        if self._fd >= 0 and not self.external:
            await asyncio.to_thread(kscrub.scrub_cancel, self._fd)
        await self._put_back(job)
