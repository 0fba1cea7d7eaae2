"""Balance as a job: BALANCE_V2 in its own thread, progress polled, pause/resume/cancel by
BALANCE_CTL and the resume flag."""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import os
import time
from collections.abc import Callable

from ..errors import InvalidArgument
from ..fs import balance as kbalance
from .filesystems import Filesystem, open_mount
from .jobs import Job, JobState, RateMeter
from .threads import in_own_thread

log = logging.getLogger(__name__)


def failure_message(e: OSError) -> str:
    """Say why a balance failed and what to do."""
    if e.errno == errno.ENOSPC:
        return ("Balance ran out of space: btrfs needs unallocated space to move chunks. "
                "Free some space, or start with a low usage filter (e.g. --data-usage 5).")
    if e.errno == errno.EINPROGRESS:
        return ("Another exclusive operation (balance, device add/remove, resize) is running "
                "on this filesystem; wait for it to finish.")
    return f"Balance failed: {os.strerror(e.errno or 0)}."


def _chunks(n: object) -> str:
    return "1 chunk" if n == 1 else f"{n} chunks"


class BalanceRunner:
    """Runs one balance; can also take over a balance found in the kernel (``adopt``)."""

    def __init__(self, fs: Filesystem, data: kbalance.TypeFilter | None,
                 metadata: kbalance.TypeFilter | None, *, poll_interval: float = 0.5,
                 adopt: kbalance.BalanceStatus | None = None) -> None:
        self.fs = fs
        self.data = data
        self.metadata = metadata
        self.poll_interval = poll_interval
        self.adopt = adopt
        self._fd = -1
        self._base_completed = 0  # chunks completed before the last pause
        self._pause_requested = False
        self._cancel_requested = False
        self._wake = asyncio.Event()
        self._meter = RateMeter()

    async def prepare(self, job: Job) -> None:
        """Open the filesystem. Raises BtrfsdError."""
        self._fd = await asyncio.to_thread(open_mount, self.fs)
        for name, f in (("data", self.data), ("metadata", self.metadata)):
            if f is not None:
                if f.usage is not None:
                    job.details[f"{name}_usage"] = f.usage
                if f.limit is not None:
                    job.details[f"{name}_limit"] = f.limit

    def _publish(self, job: Job, st: kbalance.BalanceStatus) -> None:
        now = time.time()
        done = self._base_completed + st.completed
        expected = self._base_completed + max(st.expected, st.completed)
        rate = self._meter.add(now, done)
        job.update(
            progress=min(done / expected, 0.999) if expected else 0.0,
            expected_end_time=RateMeter.expected_end(now, done, expected, rate),
            details={**job.details, "chunks_expected": expected, "chunks_completed": done,
                     "chunks_considered": st.considered},
        )

    async def _poll(self, job: Job) -> kbalance.BalanceStatus | None:
        st = await asyncio.to_thread(kbalance.balance_progress, self._fd)
        if st is not None:
            self._publish(job, st)
        return st

    async def _run_call(self, job: Job, call: Callable[[], kbalance.BalanceStatus]) -> None:
        """Run a blocking start/resume, polling meanwhile; raise what it raises."""
        fut = asyncio.ensure_future(in_own_thread("balance", call))
        while True:
            done, _ = await asyncio.wait({fut}, timeout=self.poll_interval)
            if done:
                st = fut.result()
                self._publish(job, st)
                return
            await self._poll(job)

    async def _watch(self, job: Job) -> bool:
        """Follow a balance running in the kernel without our thread (one found at start
        or started by another tool). True when it paused, False when it ended."""
        while True:
            st = await self._poll(job)
            if st is None:
                return False
            if not st.running:
                return True
            await asyncio.sleep(self.poll_interval)

    async def _wait_while_paused(self, job: Job) -> bool:
        """Sit paused until resume or cancel; True to resume."""
        job.update(state=JobState.PAUSED, expected_end_time=0.0)
        self._wake.clear()
        await self._wake.wait()
        if self._cancel_requested:
            return False
        self._meter.reset()
        job.update(state=JobState.RUNNING)
        return True

    async def _stay_paused(self, job: Job) -> bool:
        """Sit paused until resume (True) or cancel: then drop the kernel's paused balance
        and finish the job as cancelled (False)."""
        if await self._wait_while_paused(job):
            return True
        await asyncio.to_thread(kbalance.balance_control, self._fd, kbalance.CTL_CANCEL)
        job.finish(JobState.CANCELLED, "Balance cancelled while paused.")
        return False

    async def run(self, job: Job) -> None:
        """Run the balance to its end (see Runner.run)."""
        if self._fd < 0:
            await self.prepare(job)
        try:
            await self._run(job)
        finally:
            if not job.active and self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    async def _run(self, job: Job) -> None:
        fd = self._fd
        call: Callable[[], kbalance.BalanceStatus] = functools.partial(
            kbalance.balance_start, fd, self.data, self.metadata)
        if self.adopt is not None:
            paused = not self.adopt.running or await self._watch(job)
            if not paused:
                if self._cancel_requested:
                    job.finish(JobState.CANCELLED, "Balance cancelled.")
                else:
                    job.finish(JobState.COMPLETED, "The balance found running has ended "
                               "(started outside btrfsd: its result is not known).",
                               success=True)
                return
            self._base_completed += self.adopt.completed
            if not await self._stay_paused(job):
                return
            call = functools.partial(kbalance.balance_resume, fd)
        while True:
            try:
                await self._run_call(job, call)
            except kbalance.BalanceStopped as e:
                if self._cancel_requested or not e.paused:
                    job.finish(JobState.CANCELLED, "Balance cancelled after "
                               f"{_chunks(job.details.get('chunks_completed', 0))} moved.")
                    return
                self._base_completed += e.status.completed
                if not await self._stay_paused(job):
                    return
                call = functools.partial(kbalance.balance_resume, fd)
                continue
            except OSError as e:
                log.warning("balance failed fs=%s: %s", self.fs.uuid, e)
                msg = failure_message(e)
                job.finish(JobState.FAILED, msg, error=msg)
                return
            moved = job.details.get("chunks_completed", 0)
            job.finish(JobState.COMPLETED, f"Balance finished: {_chunks(moved)} moved.",
                       success=True)
            return

    async def pause(self, job: Job) -> None:
        """Ask the kernel to pause after the current chunk. Raises InvalidArgument."""
        if job.state is not JobState.RUNNING:
            raise InvalidArgument(f"The balance is {job.state}, not running.")
        self._pause_requested = True
        if not await asyncio.to_thread(kbalance.balance_control, self._fd, kbalance.CTL_PAUSE):
            raise InvalidArgument("The balance is no longer running.")

    async def resume(self, job: Job) -> None:
        """Resume a paused balance. Raises InvalidArgument when not paused."""
        if job.state is not JobState.PAUSED:
            raise InvalidArgument(f"The balance is {job.state}, not paused.")
        self._wake.set()

    async def cancel(self, job: Job) -> None:
        """Cancel (after the current chunk), running or paused."""
        self._cancel_requested = True
        if job.state is JobState.PAUSED:
            self._wake.set()
        else:
            await asyncio.to_thread(kbalance.balance_control, self._fd, kbalance.CTL_CANCEL)

    async def shutdown(self, job: Job) -> None:
        """Daemon stopping: pause a running balance. The kernel keeps it (even across a
        remount), and the next start offers it as a paused job to resume or cancel."""
        if job.state is JobState.RUNNING and self._fd >= 0:
            await asyncio.to_thread(kbalance.balance_control, self._fd, kbalance.CTL_PAUSE)
