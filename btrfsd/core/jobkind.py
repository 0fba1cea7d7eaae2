"""What a kind of job is, for the JobManager: how to run one, how to find one the kernel
runs that btrfsd did not start, and how to clean up after a crash.

A new operation (restore, backup send/receive, ...) is a new JobKind given to the
manager by the composition root (core/service.py); the manager itself knows no kind.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol, TypeVar

from ..errors import InvalidArgument
from .filesystems import Filesystem
from .jobs import Job, JobRecord, JobState, RateMeter

P = TypeVar("P")


class Runner(Protocol):
    """Runs one job's operation; the JobManager drives it."""

    async def prepare(self, job: Job) -> None:
        """Check and set up before the job is announced. Raises BtrfsdError."""

    async def run(self, job: Job) -> None:
        """Run until the operation ends and call job.finish(). Raises nothing but
        CancelledError (daemon shutdown); a BtrfsdError fails the job with its message."""

    async def pause(self, job: Job) -> None:
        """Pause a running job. Raises InvalidArgument when this job cannot pause."""

    async def resume(self, job: Job) -> None:
        """Resume a paused job. Raises InvalidArgument when it is not paused."""

    async def cancel(self, job: Job) -> None:
        """Stop the job for good; run() then finishes it. Raises InvalidArgument when
        this kind cannot be cancelled."""

    async def shutdown(self, job: Job) -> None:
        """The daemon is stopping: leave the kernel in a state the next start reports
        (a scrub cancelled, a balance paused)."""


@dataclass
class Adoption:
    """Work of this kind found in the kernel, and the runner that follows it."""

    runner: Runner
    paused: bool = False


class JobKind(Protocol):
    """One kind of job. ``operation`` is its public name (Job.Operation on the bus)."""

    operation: str

    def runner(self, fs: Filesystem, params: object) -> Runner:
        """A runner for a new job with this kind's parameters. Raises InvalidArgument
        when ``params`` is not this kind's parameter type."""

    def find(self, fs: Filesystem, fd: int) -> Adoption | None:
        """Work of this kind the kernel runs (or holds paused) on ``fs``, opened as
        ``fd`` (blocking); None when there is none or the kind cannot follow it."""

    def recover(self, fs: Filesystem | None, record: JobRecord) -> Adoption | None:
        """After a crash or stop: put back what ``record.undo`` lists and say whether the
        kernel still runs the job (blocking). ``fs`` is None when it is not mounted. None:
        the job is reported interrupted."""


def expect_params(params: object, kind: type[P], operation: str) -> P:
    """Return ``params`` as the kind's parameter type. Raises InvalidArgument."""
    if not isinstance(params, kind):
        raise InvalidArgument(f"A {operation} job takes {kind.__name__}, not "
                              f"{type(params).__name__}.")
    return params


class RunnerControl:
    """Pause/resume/cancel requests of one runner, and the paused wait between them.

    The runner asks the kernel to stop; this keeps what was asked, so the runner's
    loop can tell a pause from a cancel when the kernel call returns.
    """

    def __init__(self, operation: str) -> None:
        self.operation = operation
        self.cancel_requested = False
        self.pause_requested = False
        self._wake = asyncio.Event()
        self.meter = RateMeter()

    def request_pause(self, job: Job) -> None:
        """Note a pause. Raises InvalidArgument unless the job runs."""
        if job.state is not JobState.RUNNING:
            raise InvalidArgument(f"The {self.operation} is {job.state}, not running.")
        self.pause_requested = True

    def request_resume(self, job: Job) -> None:
        """Wake a paused job. Raises InvalidArgument unless it is paused."""
        if job.state is not JobState.PAUSED:
            raise InvalidArgument(f"The {self.operation} is {job.state}, not paused.")
        self._wake.set()

    def request_cancel(self, job: Job) -> bool:
        """Note a cancel; True when the job was paused (then it is woken, and the kernel
        needs no call)."""
        self.cancel_requested = True
        if job.state is JobState.PAUSED:
            self._wake.set()
            return True
        return False

    async def stay_paused(self, job: Job) -> bool:
        """Show the job paused until resumed (True: it runs again) or cancelled (False)."""
        self.pause_requested = False
        job.update(state=JobState.PAUSED, rate=0.0, expected_end_time=0.0)
        # Set only by a resume or cancel accepted while paused; cleared once taken, so
        # a request that came before this wait is not lost.
        await self._wake.wait()
        self._wake.clear()
        if self.cancel_requested:
            return False
        self.meter.reset()
        job.update(state=JobState.RUNNING)
        return True
