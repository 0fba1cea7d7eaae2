"""A Job: one long-running operation (scrub, balance) with state, progress and listeners.

The runner of the operation updates the job; listeners (the bus adapter) hear which
fields changed and when the job ended. Nothing here touches the kernel or D-Bus.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from ..constants import JOBS_PATH
from .state import DetailValue, JobRecord

# StartedByUid of an operation btrfsd did not start (the btrfs CLI, say).
UNKNOWN_UID = 2**32 - 1


class JobState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # btrfsd stopped or was killed while the job ran (reported after the restart).
    INTERRUPTED = "interrupted"


ACTIVE_STATES = frozenset({JobState.RUNNING, JobState.PAUSED})


class Operation(StrEnum):
    SCRUB = "scrub"
    BALANCE = "balance"
    QUOTA_RESCAN = "quota-rescan"


def job_path(job_id: int) -> str:
    """The bus object path of a job (stable: ids are never reused, see JobManager)."""
    return f"{JOBS_PATH}/{job_id}"


ChangeListener = Callable[["Job", set[str]], None]
EndListener = Callable[["Job"], None]


@dataclass(eq=False)
class Job:
    """State of one operation. Mutate only through update() and finish()."""

    id: int
    operation: Operation
    fs_uuid: str
    started_by_uid: int
    start_time: float = field(default_factory=time.time)
    state: JobState = JobState.RUNNING
    progress: float = 0.0
    bytes_done: int = 0
    bytes_total: int = 0
    rate: float = 0.0
    expected_end_time: float = 0.0
    end_time: float = 0.0
    error: str = ""
    message: str = ""
    success: bool = False
    external: bool = False
    details: dict[str, DetailValue] = field(default_factory=dict)
    restore_speed_limits: dict[int, int] = field(default_factory=dict)
    on_change: list[ChangeListener] = field(default_factory=list, repr=False)
    on_end: list[EndListener] = field(default_factory=list, repr=False)

    @property
    def path(self) -> str:
        return job_path(self.id)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def describe(self) -> str:
        owner = "outside btrfsd" if self.external else f"by uid {self.started_by_uid}"
        return f"{self.operation} job {self.id} ({self.path}, {self.state}, started {owner})"

    def update(self, **changes: Any) -> None:
        """Set fields and tell listeners which ones changed (only those that did)."""
        changed = set()
        for name, value in changes.items():
            if getattr(self, name) != value:
                setattr(self, name, value)
                changed.add(name)
        if changed:
            for listener in list(self.on_change):
                listener(self, changed)

    def finish(self, state: JobState, message: str, *, success: bool = False,
               error: str = "") -> None:
        """Enter a terminal state and tell listeners (change first, then end)."""
        end = {"state": state, "message": message, "error": error, "success": success,
               "end_time": time.time(), "rate": 0.0, "expected_end_time": 0.0}
        if state is JobState.COMPLETED:
            end["progress"] = 1.0
        self.update(**end)
        for listener in list(self.on_end):
            listener(self)

    def record(self) -> JobRecord:
        return JobRecord(
            id=self.id, operation=str(self.operation), filesystem=self.fs_uuid,
            state=str(self.state), started_by_uid=self.started_by_uid,
            start_time=self.start_time, end_time=self.end_time, progress=self.progress,
            bytes_done=self.bytes_done, bytes_total=self.bytes_total, message=self.message,
            error=self.error, details=dict(self.details),
            restore_speed_limits=dict(self.restore_speed_limits),
        )


class RateMeter:
    """Rate and expected end from the recent past (a sliding window), not from the start:
    a scrub slows down on a busy disk and the estimate should follow."""

    def __init__(self, window: float = 20.0) -> None:
        self.window = window
        self._points: deque[tuple[float, float]] = deque()

    def reset(self) -> None:
        self._points.clear()

    def add(self, now: float, done: float) -> float:
        """Record ``done`` units at time ``now``; return units per second (0 unknown)."""
        self._points.append((now, done))
        while len(self._points) > 2 and now - self._points[0][0] > self.window:
            self._points.popleft()
        t0, d0 = self._points[0]
        if now - t0 <= 0 or done < d0:
            return 0.0
        return (done - d0) / (now - t0)

    @staticmethod
    def expected_end(now: float, done: float, total: float, rate: float) -> float:
        """Seconds-since-epoch estimate of the end; 0 when unknown."""
        if rate <= 0 or total <= 0:
            return 0.0
        return now + max(total - done, 0.0) / rate


class Runner(Protocol):
    """Runs one job's operation; the JobManager drives it."""

    async def prepare(self, job: Job) -> None:
        """Check and set up before the job is announced. Raises BtrfsdError."""

    async def run(self, job: Job) -> None:
        """Run until the operation ends and call job.finish(). Raises nothing but
        CancelledError (daemon shutdown)."""

    async def pause(self, job: Job) -> None:
        """Pause a running job. Raises InvalidArgument when this job cannot pause."""

    async def resume(self, job: Job) -> None:
        """Resume a paused job. Raises InvalidArgument when it is not paused."""

    async def cancel(self, job: Job) -> None:
        """Stop the job for good; run() then finishes it as cancelled."""

    async def shutdown(self, job: Job) -> None:
        """The daemon is stopping: leave the kernel in a state the next start reports
        (scrub cancelled, balance paused)."""
