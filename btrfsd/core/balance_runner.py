"""Balance as a job kind: BALANCE_V2 in its own thread, progress polled,
pause/resume/cancel by BALANCE_CTL and the resume flag."""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import InvalidArgument
from ..fs import balance as kbalance
from ..fs.balance import TypeFilter
from .filesystems import Filesystem, open_mount
from .jobkind import Adoption, RunnerControl, expect_params
from .jobs import Job, JobRecord, JobState, RateMeter
from .threads import in_own_thread

log = logging.getLogger(__name__)

OPERATION = "balance"


@dataclass(frozen=True)
class BalanceParams:
    """Which chunks to balance: per type a filter, None to leave the type alone."""

    data: TypeFilter | None = None
    metadata: TypeFilter | None = None

    @classmethod
    def filtered(cls, *, data_usage: int | None = None, metadata_usage: int | None = None,
                 limit: int | None = None, full: bool = False) -> BalanceParams:
        """btrfsmaintenance-style filters: usage percent per type, at most ``limit``
        chunks per type; ``full`` balances every chunk of both types. Raises
        InvalidArgument when neither a usage filter nor ``full`` is given (a full
        balance can take hours: it must be asked for)."""
        if data_usage is None and metadata_usage is None and not full:
            raise InvalidArgument("Give a data and/or metadata usage filter, or ask for a "
                                  "full balance.")
        whole = TypeFilter(limit=limit) if full else None
        data = TypeFilter(usage=data_usage, limit=limit) if data_usage is not None else whole
        meta = (TypeFilter(usage=metadata_usage, limit=limit) if metadata_usage is not None
                else whole)
        return cls(data, meta)


class BalanceKind:
    """Balance jobs: started by btrfsd, found in the kernel (another tool's, or ours
    from before a restart: the kernel keeps a paused balance)."""

    operation = OPERATION

    def __init__(self, poll_interval: float) -> None:
        self.poll_interval = poll_interval

    def runner(self, fs: Filesystem, params: object) -> BalanceRunner:
        p = expect_params(params, BalanceParams, OPERATION)
        return BalanceRunner(fs, p.data, p.metadata, poll_interval=self.poll_interval)

    def find(self, fs: Filesystem, fd: int) -> Adoption | None:
        st = kbalance.balance_progress(fd)
        if st is None:
            return None
        return Adoption(BalanceRunner(fs, None, None, poll_interval=self.poll_interval,
                                      adopt=st), paused=not st.running)

    def recover(self, fs: Filesystem | None, record: JobRecord) -> Adoption | None:
        """A balance paused at shutdown stays in the kernel: follow it again."""
        if fs is None:
            return None
        fd = open_mount(fs)
        try:
            return self.find(fs, fd)
        finally:
            os.close(fd)


def failure_message(e: OSError) -> str:
    """Say why a balance failed and what to do."""
    if e.errno == errno.ENOSPC:
        return ("Balance ran out of space: btrfs needs unallocated space to move chunks. "
                "Free some space, or start with a low data usage filter (5%, say).")
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
        self._control = RunnerControl(OPERATION)

    async def prepare(self, job: Job) -> None:
        """Open the filesystem. Raises BtrfsdError."""
        self._fd = await asyncio.to_thread(open_mount, self.fs)
        details = dict(job.details)
        for name, f in (("data", self.data), ("metadata", self.metadata)):
            if f is not None:
                if f.usage is not None:
                    details[f"{name}_usage"] = f.usage
                if f.limit is not None:
                    details[f"{name}_limit"] = f.limit
        job.update(details=details)

    def _publish(self, job: Job, st: kbalance.BalanceStatus) -> None:
        now = time.time()
        done = self._base_completed + st.completed
        expected = self._base_completed + max(st.expected, st.completed)
        rate = self._control.meter.add(now, done)
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

    async def _stay_paused(self, job: Job) -> bool:
        """Sit paused until resume (True) or cancel: then drop the kernel's paused balance
        and finish the job as cancelled (False)."""
        if await self._control.stay_paused(job):
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
                if self._control.cancel_requested:
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
                if self._control.cancel_requested or not e.paused:
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
        self._control.request_pause(job)
        if not await asyncio.to_thread(kbalance.balance_control, self._fd, kbalance.CTL_PAUSE):
            raise InvalidArgument("The balance is no longer running.")

    async def resume(self, job: Job) -> None:
        """Resume a paused balance. Raises InvalidArgument when not paused."""
        self._control.request_resume(job)

    async def cancel(self, job: Job) -> None:
        """Cancel (after the current chunk), running or paused."""
        if not self._control.request_cancel(job):
            await asyncio.to_thread(kbalance.balance_control, self._fd, kbalance.CTL_CANCEL)

    async def shutdown(self, job: Job) -> None:
        """Daemon stopping: pause a running balance. The kernel keeps it (even across a
        remount), and the next start offers it as a paused job to resume or cancel."""
        if job.state is JobState.RUNNING and self._fd >= 0:
            await asyncio.to_thread(kbalance.balance_control, self._fd, kbalance.CTL_PAUSE)
