"""All jobs of the daemon: starting, one per filesystem, control, retention, persistence,
and what happened to jobs of a previous run."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import AlreadyRunning, BtrfsdError, InvalidArgument, NotFound
from ..fs import balance as kbalance
from ..fs import scrub as kscrub
from ..fs import sysfs
from .balance_runner import BalanceRunner
from .filesystems import Filesystem, Registry, open_mount
from .jobs import UNKNOWN_UID, Job, JobState, Operation, Runner
from .rescan_runner import RescanRunner
from .scrub_runner import ScrubRunner
from .state import JobRecord, PersistedState, StateStore
from .threads import in_background

log = logging.getLogger(__name__)

JobListener = Callable[[Job], None]


@dataclass(frozen=True)
class KernelActivity:
    """A scrub or balance the kernel runs (or holds paused) on a filesystem."""

    operation: Operation
    balance: kbalance.BalanceStatus | None = None


def kernel_activity(fs: Filesystem) -> KernelActivity | None:
    """What scrub/balance the kernel has on ``fs`` (blocking). Raises BtrfsdError."""
    fd = open_mount(fs)
    try:
        st = kbalance.balance_progress(fd)
        if st is not None:
            return KernelActivity(Operation.BALANCE, st)
        for devid in sysfs.device_ids(fs.uuid) or [1]:
            if kscrub.scrub_progress(fd, devid) is not None:
                return KernelActivity(Operation.SCRUB)
        return None
    except OSError as e:
        log.debug("cannot read scrub/balance state of %s: %s", fs.uuid, e)
        return None
    finally:
        os.close(fd)


class JobManager:
    """Creates, drives and forgets jobs; keeps their records in the state directory."""

    def __init__(self, registry: Registry, state_dir: Path, *, retention: float,
                 poll_interval: float) -> None:
        self.registry = registry
        self.store = StateStore(state_dir)
        self.retention = retention
        self.poll_interval = poll_interval
        self._state = PersistedState()
        self._jobs: dict[int, Job] = {}
        self._runners: dict[int, Runner] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._active: dict[str, Job] = {}  # filesystem UUID -> its running/paused job
        self._added: list[JobListener] = []
        self._removed: list[JobListener] = []
        self._expiry: dict[int, asyncio.TimerHandle] = {}

    # -- listeners and lookup -----------------------------------------------------------
    def add_listeners(self, added: JobListener, removed: JobListener) -> None:
        """Hear about jobs appearing (before they change) and being forgotten."""
        self._added.append(added)
        self._removed.append(removed)

    def jobs(self) -> list[Job]:
        return [self._jobs[i] for i in sorted(self._jobs)]

    def get(self, job_id: int) -> Job:
        """Return a job by id. Raises NotFound."""
        try:
            return self._jobs[job_id]
        except KeyError:
            raise NotFound(f"There is no job {job_id} (finished jobs are forgotten after "
                           f"{int(self.retention)} s).") from None

    def last_results(self, fs_uuid: str) -> dict[str, JobRecord]:
        """The last finished (or interrupted) job of each operation on a filesystem."""
        return dict(self._state.last.get(fs_uuid, {}))

    # -- persistence --------------------------------------------------------------------
    def _save_soon(self) -> None:
        in_background(self.store.save(self._state))

    def _new_id(self) -> int:
        # Ids (and so object paths) are never reused, even across restarts.
        job_id = self._state.next_job_id
        self._state.next_job_id += 1
        return job_id

    # -- lifecycle of one job -------------------------------------------------------------
    def _announce(self, job: Job) -> None:
        self._jobs[job.id] = job
        for listener in self._added:
            listener(job)

    def _launch(self, job: Job, runner: Runner) -> None:
        self._active[job.fs_uuid] = job
        self._runners[job.id] = runner
        job.on_change.append(self._on_change)
        job.on_end.append(self._on_end)
        self._announce(job)
        self._state.running[job.id] = job.record()
        self._save_soon()
        self._tasks[job.id] = asyncio.get_running_loop().create_task(self._drive(job, runner))
        log.info("job started id=%d op=%s fs=%s uid=%d external=%s", job.id, job.operation,
                 job.fs_uuid, job.started_by_uid, job.external)

    async def _drive(self, job: Job, runner: Runner) -> None:
        try:
            await runner.run(job)
        except asyncio.CancelledError:
            raise
        except BtrfsdError as e:
            if job.active:
                job.finish(JobState.FAILED, e.message, error=e.message)
        except Exception:
            log.exception("job %d failed with an internal error", job.id)
            if job.active:
                msg = "Internal error; the btrfsd log (journalctl -u btrfsd) has the details."
                job.finish(JobState.FAILED, msg, error=msg)
        finally:
            self._tasks.pop(job.id, None)

    def _on_change(self, job: Job, changed: set[str]) -> None:
        if "state" in changed and job.active:
            log.info("job %s id=%d op=%s", job.state, job.id, job.operation)
            self._state.running[job.id] = job.record()
            self._save_soon()

    def _on_end(self, job: Job) -> None:
        log.info("job ended id=%d op=%s fs=%s state=%s success=%s: %s", job.id, job.operation,
                 job.fs_uuid, job.state, job.success, job.message)
        if self._active.get(job.fs_uuid) is job:
            del self._active[job.fs_uuid]
        self._runners.pop(job.id, None)
        self._state.running.pop(job.id, None)
        self._state.last.setdefault(job.fs_uuid, {})[str(job.operation)] = job.record()
        self._save_soon()
        self._expire_later(job)

    def _expire_later(self, job: Job) -> None:
        loop = asyncio.get_running_loop()
        self._expiry[job.id] = loop.call_later(self.retention, self._forget, job.id)

    def _forget(self, job_id: int) -> None:
        self._expiry.pop(job_id, None)
        job = self._jobs.pop(job_id, None)
        if job is not None:
            for listener in self._removed:
                listener(job)

    # -- starting -----------------------------------------------------------------------
    def _check_free(self, fs: Filesystem) -> None:
        cur = self._active.get(fs.uuid)
        if cur is not None:
            raise AlreadyRunning(
                f"A {cur.describe()} is already on {fs.primary_mount.mount_point}; only one "
                "scrub or balance per filesystem runs at a time. Wait for it or cancel it.")

    async def _settle_external(self, fs: Filesystem) -> None:
        """An adopted outside operation may have just ended while its watcher has not
        looked yet; give the watcher one poll to notice before refusing a start."""
        cur = self._active.get(fs.uuid)
        task = self._tasks.get(cur.id) if cur is not None and cur.external else None
        if task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(task), self.poll_interval + 0.5)

    async def _start(self, fs: Filesystem, uid: int, operation: Operation,
                     runner: Runner) -> Job:
        await self._settle_external(fs)
        self._check_free(fs)
        job = Job(id=self._new_id(), operation=operation, fs_uuid=fs.uuid, started_by_uid=uid)
        self._active[fs.uuid] = job  # claim before the first await: no double start
        try:
            found = await asyncio.to_thread(kernel_activity, fs)
            if found is not None:
                del self._active[fs.uuid]
                other = self._adopt(fs, found)
                raise AlreadyRunning(
                    f"A {found.operation} started outside btrfsd is running on "
                    f"{fs.primary_mount.mount_point}; it is now shown as {other.describe()}.")
            await runner.prepare(job)
        except BaseException:
            if self._active.get(fs.uuid) is job:
                del self._active[fs.uuid]
            raise
        self._launch(job, runner)
        return job

    async def start_scrub(self, fs: Filesystem, uid: int, *, readonly: bool,
                          limit: int) -> Job:
        """Start a scrub of every device of ``fs``.

        Raises AlreadyRunning, InvalidArgument (speed limit unsupported), Failed.
        """
        runner = ScrubRunner(fs, readonly=readonly, limit=limit,
                             poll_interval=self.poll_interval)
        return await self._start(fs, uid, Operation.SCRUB, runner)

    async def start_balance(self, fs: Filesystem, uid: int, *,
                            data: kbalance.TypeFilter | None,
                            metadata: kbalance.TypeFilter | None) -> Job:
        """Start a balance of the chosen chunk types. Raises AlreadyRunning, Failed."""
        runner = BalanceRunner(fs, data, metadata, poll_interval=self.poll_interval)
        return await self._start(fs, uid, Operation.BALANCE, runner)

    async def start_quota_rescan(self, fs: Filesystem, uid: int) -> Job:
        """Start a quota rescan. Raises AlreadyRunning, InvalidArgument (quotas off or
        simple)."""
        runner = RescanRunner(fs, poll_interval=self.poll_interval)
        return await self._start(fs, uid, Operation.QUOTA_RESCAN, runner)

    # -- control ------------------------------------------------------------------------
    def _runner(self, job: Job) -> Runner:
        runner = self._runners.get(job.id)
        if runner is None or not job.active:
            raise InvalidArgument(f"The {job.operation} job {job.id} has ended ({job.state}); "
                                  "there is nothing to control.")
        return runner

    async def pause(self, job: Job) -> None:
        """Pause a running job. Raises InvalidArgument (not running, cannot pause)."""
        await self._runner(job).pause(job)

    async def resume(self, job: Job) -> None:
        """Resume a paused job. Raises InvalidArgument (not paused)."""
        await self._runner(job).resume(job)

    async def cancel(self, job: Job) -> None:
        """Cancel a running or paused job. Raises InvalidArgument when it has ended."""
        await self._runner(job).cancel(job)

    # -- kernel operations btrfsd did not start -------------------------------------------
    def _adopt(self, fs: Filesystem, found: KernelActivity, record: JobRecord | None = None,
               ) -> Job:
        job = Job(id=record.id if record else self._new_id(), operation=found.operation,
                  fs_uuid=fs.uuid, started_by_uid=record.started_by_uid if record else
                  UNKNOWN_UID, external=record is None)
        if record is not None:
            job.start_time = record.start_time
            job.details = dict(record.details)
        runner: Runner
        if found.operation is Operation.BALANCE:
            runner = BalanceRunner(fs, None, None, poll_interval=self.poll_interval,
                                   adopt=found.balance)
            if found.balance is not None and not found.balance.running:
                job.state = JobState.PAUSED
        else:
            runner = ScrubRunner(fs, poll_interval=self.poll_interval, external=True)
        self._launch(job, runner)
        return job

    async def detect(self, fs: Filesystem) -> None:
        """Adopt a scrub or balance running on ``fs`` that no job of ours covers."""
        if fs.uuid in self._active:
            return
        try:
            found = await asyncio.to_thread(kernel_activity, fs)
        except BtrfsdError:
            return
        if found is not None and fs.uuid not in self._active:
            job = self._adopt(fs, found)
            log.info("found a %s started outside btrfsd on %s; following it as job %d",
                     found.operation, fs.uuid, job.id)

    async def detect_all(self) -> None:
        for fs in self.registry.all():
            await self.detect(fs)

    # -- daemon start and stop ------------------------------------------------------------
    async def start(self) -> None:
        """Load the state; report jobs of the previous run; adopt kernel operations."""
        self._state = await asyncio.to_thread(self.store.load)
        previous = list(self._state.running.values())
        self._state.running.clear()
        mounted = {fs.uuid: fs for fs in self.registry.all()}
        for rec in previous:
            fs = mounted.get(rec.filesystem)
            if fs is not None and rec.restore_speed_limits:
                await asyncio.to_thread(_restore_limits, fs.uuid, rec.restore_speed_limits)
            found = await asyncio.to_thread(kernel_activity, fs) if fs else None
            if (fs is not None and found is not None and found.operation == rec.operation
                    and found.operation is Operation.BALANCE):
                job = self._adopt(fs, found, rec)
                log.info("balance of the previous run is still in the kernel; job %d is %s",
                         job.id, job.state)
                continue
            self._report_interrupted(rec)
        await self.store.save(self._state)
        await self.detect_all()

    def _report_interrupted(self, rec: JobRecord) -> None:
        job = Job(id=rec.id, operation=Operation(rec.operation), fs_uuid=rec.filesystem,
                  started_by_uid=rec.started_by_uid, start_time=rec.start_time,
                  progress=rec.progress, bytes_done=rec.bytes_done,
                  bytes_total=rec.bytes_total, details=dict(rec.details))
        pct = int(rec.progress * 100)
        msg = (f"btrfsd stopped while this {rec.operation} ran ({pct}% done); "
               f"it did not finish. Start it again.")
        job.state, job.message, job.error = JobState.INTERRUPTED, msg, msg
        self._announce(job)
        self._state.last.setdefault(rec.filesystem, {})[rec.operation] = job.record()
        self._expire_later(job)
        log.warning("job %d (%s on %s) was interrupted by a daemon stop", rec.id,
                    rec.operation, rec.filesystem)

    async def shutdown(self) -> None:
        """Daemon stopping: scrubs are cancelled, balances paused; records stay in the
        state file so the next start reports them."""
        for job_id, task in list(self._tasks.items()):
            job = self._jobs[job_id]
            runner = self._runners.get(job_id)
            if runner is not None and job.active:
                try:
                    await runner.shutdown(job)
                except (OSError, BtrfsdError) as e:
                    log.warning("cannot stop job %d cleanly: %s", job_id, e)
                self._state.running[job_id] = job.record()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for handle in self._expiry.values():
            handle.cancel()
        await self.store.save(self._state)


def _restore_limits(fsid: str, limits: dict[int, int]) -> None:
    for devid, value in limits.items():
        try:
            kscrub.write_speed_limit(fsid, devid, value)
        except OSError as e:
            log.warning("cannot restore scrub speed limit fs=%s devid=%d: %s", fsid, devid, e)
