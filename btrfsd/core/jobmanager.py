"""All jobs of the daemon: ids, one job per filesystem, control, retention, persistence,
work found in the kernel, and what happened to jobs of a previous run.

The manager knows no kind of job: each kind (core/jobkind.py) is registered by the
composition root and brings its runner, its kernel lookup and its crash clean-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

from ..constants import NO_UID
from ..errors import AlreadyRunning, BtrfsdError, Hint, HintKind, InvalidArgument, NotFound
from .filesystems import Filesystem, Registry, open_mount
from .jobkind import Adoption, JobKind, Runner
from .jobs import Job, JobRecord, JobState
from .state import PersistedState, StateStore
from .threads import in_background

log = logging.getLogger(__name__)

JobListener = Callable[[Job], None]
Found = tuple[JobKind, Adoption]


def job_running_hint(job: JobRecord) -> Hint:
    """The hint for "this job is in the way": front ends offer to wait or cancel."""
    return Hint(HintKind.JOB_RUNNING, {"job_id": job.id, "operation": job.operation})


class JobManager:
    """Creates, drives and forgets jobs; keeps their records in the state directory."""

    def __init__(self, registry: Registry, state_dir: Path, *, retention: float,
                 poll_interval: float) -> None:
        self.registry = registry
        self.store = StateStore(state_dir)
        self.retention = retention
        self.poll_interval = poll_interval
        self._kinds: dict[str, JobKind] = {}
        self._state = PersistedState()
        self._jobs: dict[int, Job] = {}
        self._runners: dict[int, Runner] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._active: dict[str, Job] = {}  # filesystem UUID -> its running/paused job
        self._added: list[JobListener] = []
        self._removed: list[JobListener] = []
        self._expiry: dict[int, asyncio.TimerHandle] = {}

    # -- kinds, listeners and lookup -------------------------------------------------------
    def register(self, kind: JobKind) -> None:
        """Make a kind of job startable. Raises ValueError for a name already taken."""
        if kind.operation in self._kinds:
            raise ValueError(f"job kind {kind.operation!r} is registered twice")
        self._kinds[kind.operation] = kind

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
        """The last finished (or interrupted) job of each kind on a filesystem."""
        return dict(self._state.last.get(fs_uuid, {}))

    # -- persistence --------------------------------------------------------------------
    def _save_soon(self) -> None:
        in_background(self.store.save(self._state))

    async def _persist(self, job: Job) -> None:
        self._state.running[job.id] = job.record()
        await self.store.save(self._state)

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
        self._active[job.filesystem] = job
        self._runners[job.id] = runner
        job.listen(self._on_change, self._on_end)
        self._announce(job)
        self._state.running[job.id] = job.record()
        self._save_soon()
        self._tasks[job.id] = asyncio.get_running_loop().create_task(self._drive(job, runner))
        log.info("job started id=%d op=%s fs=%s uid=%d external=%s", job.id, job.operation,
                 job.filesystem, job.started_by_uid, job.external)

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
                msg = "Internal error; the btrfsd log has the details."
                job.finish(JobState.FAILED, msg, error=msg)
        finally:
            self._tasks.pop(job.id, None)

    def _on_change(self, job: Job, changed: set[str]) -> None:
        # the state file must know a paused job, and what to put back after a crash
        if job.active and ("state" in changed or "undo" in changed):
            if "state" in changed:
                log.info("job %s id=%d op=%s", job.state, job.id, job.operation)
            self._state.running[job.id] = job.record()
            self._save_soon()

    def _on_end(self, job: Job) -> None:
        log.info("job ended id=%d op=%s fs=%s state=%s success=%s: %s", job.id, job.operation,
                 job.filesystem, job.state, job.success, job.message)
        if self._active.get(job.filesystem) is job:
            del self._active[job.filesystem]
        self._runners.pop(job.id, None)
        self._state.running.pop(job.id, None)
        self._state.last.setdefault(job.filesystem, {})[job.operation] = job.record()
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
    def _kind(self, operation: str) -> JobKind:
        try:
            return self._kinds[operation]
        except KeyError:
            raise InvalidArgument(f"There is no kind of job called {operation!r}.") from None

    def _check_free(self, fs: Filesystem) -> None:
        cur = self._active.get(fs.uuid)
        if cur is None:
            return
        where = fs.primary_mount.mount_point
        if cur.id not in self._jobs:  # still being prepared: it may never appear
            raise AlreadyRunning(f"A {cur.operation} job is being started on {where}; one "
                                 "job at a time runs on a filesystem.")
        raise AlreadyRunning(f"A {cur.describe()} is already on {where}; one job at a time "
                             "runs on a filesystem.", hint=job_running_hint(cur))

    async def _settle_external(self, fs: Filesystem) -> None:
        """An adopted outside operation may have just ended while its watcher has not
        looked yet; give the watcher one poll to notice before refusing a start."""
        cur = self._active.get(fs.uuid)
        task = self._tasks.get(cur.id) if cur is not None and cur.external else None
        if task is not None:
            # asyncio.wait neither raises the watcher's outcome nor swallows a
            # cancellation of this caller (wait_for with suppress did both)
            await asyncio.wait({task}, timeout=self.poll_interval + 0.5)

    def _find(self, fs: Filesystem) -> Found | None:
        """The first kind whose work the kernel runs on ``fs`` (blocking)."""
        try:
            fd = open_mount(fs)
        except BtrfsdError as e:
            log.debug("cannot look for kernel work on %s: %s", fs.uuid, e)
            return None
        try:
            for kind in self._kinds.values():
                try:
                    adoption = kind.find(fs, fd)
                except OSError as e:
                    log.debug("cannot read %s state of %s: %s", kind.operation, fs.uuid, e)
                    continue
                if adoption is not None:
                    return kind, adoption
            return None
        finally:
            os.close(fd)

    async def start(self, fs: Filesystem, uid: int, operation: str,
                    params: object = None) -> Job:
        """Start a job of the kind ``operation`` with that kind's parameters.

        Raises AlreadyRunning (a job, ours or found in the kernel, holds ``fs``),
        InvalidArgument (unknown kind, bad parameters) or what the kind's prepare raises.
        """
        kind = self._kind(operation)
        runner = kind.runner(fs, params)
        await self._settle_external(fs)
        self._check_free(fs)
        job = Job(id=self._new_id(), operation=operation, filesystem=fs.uuid,
                  started_by_uid=uid)
        job.persist_with(self._persist)
        self._active[fs.uuid] = job  # claim before the first await: no double start
        try:
            found = await asyncio.to_thread(self._find, fs)
            if found is not None:
                del self._active[fs.uuid]
                other = self._adopt(fs, *found)
                raise AlreadyRunning(
                    f"A {other.operation} started outside btrfsd is running on "
                    f"{fs.primary_mount.mount_point}; it is now followed as "
                    f"{other.describe()}.", hint=job_running_hint(other))
            await runner.prepare(job)
        except BaseException:
            if self._active.get(fs.uuid) is job:
                del self._active[fs.uuid]
            if self._state.running.pop(job.id, None) is not None:  # persisted by prepare
                self._save_soon()
            raise
        self._launch(job, runner)
        return job

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
        """Cancel a running or paused job. Raises InvalidArgument when it has ended or
        its kind cannot be cancelled."""
        await self._runner(job).cancel(job)

    # -- kernel work btrfsd did not start -----------------------------------------------
    def _adopt(self, fs: Filesystem, kind: JobKind, adoption: Adoption,
               record: JobRecord | None = None) -> Job:
        """Follow kernel work as a job: a new one (started by another tool), or with
        ``record`` the job of a previous run that the kernel still holds."""
        state = JobState.PAUSED if adoption.paused else JobState.RUNNING
        if record is None:
            job = Job(id=self._new_id(), operation=kind.operation, filesystem=fs.uuid,
                      started_by_uid=NO_UID, external=True, state=state)
        else:
            job = Job(id=record.id, operation=kind.operation, filesystem=fs.uuid,
                      started_by_uid=record.started_by_uid, start_time=record.start_time,
                      details=dict(record.details), state=state)
        self._launch(job, adoption.runner)
        return job

    async def detect(self, fs: Filesystem) -> None:
        """Adopt kernel work on ``fs`` that no job of ours covers."""
        if fs.uuid in self._active:
            return
        found = await asyncio.to_thread(self._find, fs)
        if found is not None and fs.uuid not in self._active:
            job = self._adopt(fs, *found)
            log.info("found a %s started outside btrfsd on %s; following it as job %d",
                     job.operation, fs.uuid, job.id)

    async def detect_all(self) -> None:
        for fs in self.registry.all():
            await self.detect(fs)

    # -- daemon start and stop ------------------------------------------------------------
    async def open(self) -> None:
        """Load the state; let each kind clean up after its jobs of the previous run and
        report them (or follow them, when the kernel still runs them); adopt kernel
        work."""
        self._state = await asyncio.to_thread(self.store.load)
        previous = list(self._state.running.values())
        self._state.running.clear()
        mounted = {fs.uuid: fs for fs in self.registry.all()}
        for rec in previous:
            fs = mounted.get(rec.filesystem)
            kind = self._kinds.get(rec.operation)
            adoption = None
            if kind is not None:
                try:
                    adoption = await asyncio.to_thread(kind.recover, fs, rec)
                except (OSError, BtrfsdError) as e:
                    log.warning("cannot recover %s: %s", rec.describe(), e)
            if fs is not None and kind is not None and adoption is not None:
                job = self._adopt(fs, kind, adoption, rec)
                log.info("%s of the previous run is still in the kernel; job %d is %s",
                         rec.operation, job.id, job.state)
                continue
            self._report_interrupted(rec)
        await self.store.save(self._state)
        await self.detect_all()

    def _report_interrupted(self, rec: JobRecord) -> None:
        pct = int(rec.progress * 100)
        msg = (f"btrfsd stopped while this {rec.operation} ran ({pct}% done); "
               f"it did not finish. Start it again.")
        job = Job(**{**rec.model_dump(), "state": JobState.INTERRUPTED, "message": msg,
                     "error": msg, "undo": {}, "rate": 0.0, "expected_end_time": 0.0})
        self._announce(job)
        self._state.last.setdefault(rec.filesystem, {})[rec.operation] = job.record()
        self._expire_later(job)
        log.warning("job %d (%s on %s) was interrupted by a daemon stop", rec.id,
                    rec.operation, rec.filesystem)

    async def shutdown(self) -> None:
        """Daemon stopping: each runner leaves the kernel in a state the next start
        reports; records stay in the state file so the next start sees them."""
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

