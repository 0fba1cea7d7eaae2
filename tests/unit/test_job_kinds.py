"""A new kind of job plugs into the JobManager without touching it: a toy kind here gets
ids, the one-job-per-filesystem rule, pause/resume/cancel, persistence, retention and
crash recovery from the manager alone."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from btrfsd.core.filesystems import Filesystem, Registry
from btrfsd.core.jobkind import Adoption, RunnerControl, expect_params
from btrfsd.core.jobmanager import JobManager
from btrfsd.core.jobs import Job, JobRecord, JobState
from btrfsd.core.state import StateStore
from btrfsd.errors import AlreadyRunning, HintKind, InvalidArgument
from btrfsd.fs.mounts import MountEntry


class ToyParams:
    def __init__(self, steps: int) -> None:
        self.steps = steps


class ToyRunner:
    """Counts steps; pausable and cancellable through the shared RunnerControl."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.control = RunnerControl("toy")
        self.go = asyncio.Event()  # the test lets each step happen

    async def prepare(self, job: Job) -> None:
        job.update(details={"steps": self.steps}, undo={"setting": 1})

    async def run(self, job: Job) -> None:
        for i in range(self.steps):
            await self.go.wait()
            self.go.clear()
            if self.control.cancel_requested:
                job.finish(JobState.CANCELLED, "Toy cancelled.")
                return
            if self.control.pause_requested and not await self.control.stay_paused(job):
                job.finish(JobState.CANCELLED, "Toy cancelled while paused.")
                return
            job.update(progress=(i + 1) / self.steps)
        job.finish(JobState.COMPLETED, "Toy done.", success=True)

    async def pause(self, job: Job) -> None:
        self.control.request_pause(job)
        self.go.set()

    async def resume(self, job: Job) -> None:
        self.control.request_resume(job)

    async def cancel(self, job: Job) -> None:
        if not self.control.request_cancel(job):
            self.go.set()

    async def shutdown(self, job: Job) -> None:
        pass


class ToyKind:
    operation = "toy"

    def __init__(self) -> None:
        self.runners: list[ToyRunner] = []
        self.recovered: list[JobRecord] = []

    def runner(self, fs: Filesystem, params: object) -> ToyRunner:
        r = ToyRunner(expect_params(params, ToyParams, self.operation).steps)
        self.runners.append(r)
        return r

    def find(self, fs: Filesystem, fd: int) -> Adoption | None:
        return None

    def recover(self, fs: Filesystem | None, record: JobRecord) -> Adoption | None:
        self.recovered.append(record)
        return None


def _fs(tmp_path: Path) -> Filesystem:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    entry = MountEntry(mount_id=1, device_number="0:1", root="/", mount_point=str(mnt),
                       source="/dev/toy", options={})
    return Filesystem(uuid="toy-fs", mounts=[entry])


async def _until(cond: object, what: str) -> None:
    for _ in range(200):
        if callable(cond) and cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_new_kind_runs_with_the_managers_rules(tmp_path: Path) -> None:
    fs = _fs(tmp_path)
    manager = JobManager(Registry(), tmp_path / "state", retention=0.2, poll_interval=0.05)
    kind = ToyKind()
    manager.register(kind)
    added: list[Job] = []
    removed: list[Job] = []
    manager.add_listeners(added.append, removed.append)
    await manager.open()

    with pytest.raises(InvalidArgument):
        await manager.start(fs, 1000, "toy", "not ToyParams")
    with pytest.raises(InvalidArgument):
        await manager.start(fs, 1000, "no-such-kind")
    job = await manager.start(fs, 1000, "toy", ToyParams(3))
    runner = kind.runners[-1]
    assert added == [job] and job.details == {"steps": 3}
    with pytest.raises(AlreadyRunning) as busy:
        await manager.start(fs, 0, "toy", ToyParams(1))
    assert busy.value.hint is not None and busy.value.hint.kind is HintKind.JOB_RUNNING
    assert busy.value.hint.facts == {"job_id": job.id, "operation": "toy"}

    runner.go.set()
    await _until(lambda: job.progress > 0.3, "the first step")
    await manager.pause(job)
    await _until(lambda: job.state is JobState.PAUSED, "the pause")
    # the state file knows the paused job and what to put back
    saved = StateStore(tmp_path / "state")
    await _until(lambda: saved.load().running.get(job.id) is not None
                 and saved.load().running[job.id].state is JobState.PAUSED, "the save")
    assert saved.load().running[job.id].undo == {"setting": 1}
    await manager.resume(job)
    await _until(lambda: job.state is JobState.RUNNING, "the resume")
    await manager.cancel(job)
    await _until(lambda: not job.active, "the cancel")
    assert job.state is JobState.CANCELLED and manager.last_results(fs.uuid)["toy"].id == job.id
    with pytest.raises(InvalidArgument, match="has ended"):
        await manager.pause(job)
    await _until(lambda: removed == [job], "retention to forget it")

    # a second job gets a new id; ids are never reused
    second = await manager.start(fs, 0, "toy", ToyParams(1))
    assert second.id == job.id + 1
    kind.runners[-1].go.set()
    await _until(lambda: second.state is JobState.COMPLETED, "the second job")
    await manager.shutdown()


async def test_a_crash_is_recovered_by_the_kind_and_reported(tmp_path: Path) -> None:
    fs = _fs(tmp_path)
    first = JobManager(Registry(), tmp_path / "state", retention=60, poll_interval=0.05)
    first.register(ToyKind())
    await first.open()
    job = await first.start(fs, 1000, "toy", ToyParams(5))
    await _until(lambda: StateStore(tmp_path / "state").load().running, "the save")
    # the daemon dies here: no shutdown; a record of an unknown kind is there too
    store = StateStore(tmp_path / "state")
    state = store.load()
    state.running[99] = JobRecord(id=99, operation="from-the-future", filesystem=fs.uuid,
                                  started_by_uid=0)
    await store.save(state)

    second = JobManager(Registry(), tmp_path / "state", retention=60, poll_interval=0.05)
    kind = ToyKind()
    second.register(kind)
    await second.open()
    assert [r.id for r in kind.recovered] == [job.id]
    assert kind.recovered[0].undo == {"setting": 1}  # the kind gets what to put back
    states = {j.id: j.state for j in second.jobs()}
    assert states == {job.id: JobState.INTERRUPTED, 99: JobState.INTERRUPTED}
    assert not store.load().running
    await second.shutdown()
    await first.shutdown()  # ends the "dead" daemon's task, which still waits


class PersistingRunner(ToyRunner):
    """Records what the state file held when the setting would have been changed."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__(1)
        self.state_dir = state_dir
        self.saw: dict[str, int] | None = None

    async def prepare(self, job: Job) -> None:
        job.update(undo={"limit": 7})
        await job.persist()
        rec = StateStore(self.state_dir).load().running.get(job.id)
        self.saw = rec.undo if rec is not None else None
        raise InvalidArgument("changed my mind")


async def test_a_runner_can_persist_what_to_put_back_before_changing_it(
        tmp_path: Path) -> None:
    fs = _fs(tmp_path)
    manager = JobManager(Registry(), tmp_path / "state", retention=60, poll_interval=0.05)
    runner = PersistingRunner(tmp_path / "state")

    class Kind(ToyKind):
        def runner(self, fs: Filesystem, params: object) -> ToyRunner:
            return runner

    manager.register(Kind())
    await manager.open()
    with pytest.raises(InvalidArgument):
        await manager.start(fs, 0, "toy", ToyParams(1))
    assert runner.saw == {"limit": 7}  # on disk before the change
    await _until(lambda: not StateStore(tmp_path / "state").load().running,
                 "a failed start to leave no record")
    await manager.shutdown()
