"""A Job: one long-running operation (scrub, balance, quota rescan, ...) with state,
progress and listeners.

One model: ``JobRecord`` holds every field a job has, and is what the state file keeps;
``Job`` is that record alive, with listeners. A job's fields change only through
``Job.update`` (and ``Job.finish``, which calls it), on the event loop: listeners (the
bus adapter, the manager's persistence) hear every change and nothing else changes it.
Nothing here touches the kernel or a front end.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, PrivateAttr

DetailValue = bool | int | float | str


class JobState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # btrfsd stopped or was killed while the job ran (reported after the restart).
    INTERRUPTED = "interrupted"


ACTIVE_STATES = frozenset({JobState.RUNNING, JobState.PAUSED})


class JobRecord(BaseModel):
    """Every field of a job; also what the state file keeps, so a restart can report it."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: int
    operation: str  # the job kind's name: "scrub", "balance", "quota-rescan", ...
    filesystem: str  # UUID
    started_by_uid: int
    state: JobState = JobState.RUNNING
    start_time: float = Field(default_factory=time.time)
    end_time: float = 0.0
    progress: float = 0.0
    bytes_done: int = 0
    bytes_total: int = 0
    rate: float = 0.0
    expected_end_time: float = 0.0
    message: str = ""
    error: str = ""
    success: bool = False
    # started outside btrfsd (another tool); btrfsd only follows it
    external: bool = False
    details: dict[str, DetailValue] = Field(default_factory=dict)
    # Settings the job changed that must be put back, also after a crash; the job kind's
    # own keys (a scrub: speed limit per device id). Older state files called it
    # restore_speed_limits.
    undo: dict[str, int] = Field(
        default_factory=dict, validation_alias=AliasChoices("undo", "restore_speed_limits"),
        # written under the old name: a btrfsd rolled back to 0.1 still puts limits back
        serialization_alias="restore_speed_limits")

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def describe(self) -> str:
        """A short description for logs and messages: kind, id, state, who started it."""
        owner = "outside btrfsd" if self.external else f"by uid {self.started_by_uid}"
        return f"{self.operation} job {self.id} ({self.state}, started {owner})"


_FIELDS = frozenset(JobRecord.model_fields)

ChangeListener = Callable[["Job", set[str]], None]
EndListener = Callable[["Job"], None]


class Job(JobRecord):
    """A job alive: its record plus listeners. Change it only with update()/finish()."""

    _on_change: list[ChangeListener] = PrivateAttr(default_factory=list)
    _on_end: list[EndListener] = PrivateAttr(default_factory=list)
    _updating: bool = PrivateAttr(default=False)
    _persist: Callable[[Job], Awaitable[None]] | None = PrivateAttr(default=None)

    def __setattr__(self, name: str, value: Any) -> None:
        # One way in: a field set elsewhere would skip the listeners (and the state file).
        if name in _FIELDS and not self._updating:
            raise AttributeError(f"Job.{name} changes only through Job.update()")
        super().__setattr__(name, value)

    @classmethod
    def from_record(cls, record: JobRecord) -> Job:
        """A live job with the fields of ``record`` (copied)."""
        return cls.model_validate(record.model_dump())

    def listen(self, on_change: ChangeListener | None = None,
               on_end: EndListener | None = None) -> None:
        """Hear which fields changed after each update, and the end of the job."""
        if on_change is not None:
            self._on_change.append(on_change)
        if on_end is not None:
            self._on_end.append(on_end)

    def unlisten(self, on_change: ChangeListener | None = None,
                 on_end: EndListener | None = None) -> None:
        """Stop hearing (listeners that were never added are ignored)."""
        if on_change in self._on_change:
            self._on_change.remove(on_change)
        if on_end in self._on_end:
            self._on_end.remove(on_end)

    def persist_with(self, save: Callable[[Job], Awaitable[None]]) -> None:
        """Set how ``persist()`` writes this job's record (the JobManager does)."""
        self._persist = save

    async def persist(self) -> None:
        """Wait until the state file holds this job's record as it is now: for a runner
        about to change a setting it must put back after a crash (``undo``). Raises
        nothing (a failed write is logged by the store)."""
        if self._persist is not None:
            await self._persist(self)

    def update(self, **changes: Any) -> None:
        """Set fields and tell listeners which ones changed (only those that did).

        Call it on the event loop only (listeners emit bus signals). Raises RuntimeError
        from a worker thread, AttributeError for a field a job does not have.
        """
        asyncio.get_running_loop()  # raises RuntimeError in a worker thread
        changed = set()
        self._updating = True
        try:
            for name, value in changes.items():
                if name not in _FIELDS:
                    raise AttributeError(f"a job has no field {name!r}")
                if getattr(self, name) != value:
                    setattr(self, name, value)
                    changed.add(name)
        finally:
            self._updating = False
        if changed:
            for listener in list(self._on_change):
                listener(self, changed)

    def finish(self, state: JobState, message: str, *, success: bool = False,
               error: str = "") -> None:
        """Enter a terminal state and tell listeners (change first, then end)."""
        end: dict[str, Any] = {"state": state, "message": message, "error": error,
                               "success": success, "end_time": time.time(), "rate": 0.0,
                               "expected_end_time": 0.0}
        if state is JobState.COMPLETED:
            end["progress"] = 1.0
        self.update(**end)
        for listener in list(self._on_end):
            listener(self)

    def record(self) -> JobRecord:
        """A copy of the fields, detached from the live job (for the state file)."""
        return JobRecord.model_validate(self.model_dump())


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

