"""Scheduled snapshots: schedules (validated, stored atomically), which snapshot each
schedule made (by UUID, so renames cannot confuse it), running a schedule, and cleanup by
the retention rules in retention.py.

Schedules live in ``<config_dir>/schedules.json``; snapshot records and last runs in
``<state_dir>/snapshots.json``, with the changes since it was last written in
``snapshots.journal`` beside it (journal.py: a run appends one line instead of writing
every record again). The clock is injectable so tests can live through weeks.

A run decides about its schedule's snapshots with a Timeline (retention.py) kept per
schedule and filesystem, which looks only at the snapshots a change can affect: a run
costs the same with 10 snapshots as with 1,000. Explaining and dry runs decide over all.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path
from typing import Protocol

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ..errors import AlreadyExists, BtrfsdError, Hint, HintKind, InvalidArgument, NotFound
from .filesystems import Filesystem
from .journal import Entry, Journal
from .retention import Candidate, Decision, Limits, Timeline, decide
from .state import load_model, validation_problems, write_atomic
from .subvolumes import Creds, Subvolumes

log = logging.getLogger(__name__)

SCHEDULES_FILE = "schedules.json"
RECORDS_FILE = "snapshots.json"
JOURNAL_FILE = "snapshots.journal"
# The journal is folded into the records file once it has this many lines, or as many as
# there are records if more: a fold writes every record, so it comes at most once per
# that many changes (constant cost per change), and reading it back never takes longer
# than reading the records file.
JOURNAL_LINES = 1000
MAX_COUNT = 10_000  # more periods than this is a typo, not a policy
YEAR = 366 * 86400


class KeptCounts(BaseModel):
    """The retention rules by count (retention.py): how many hours, days, ... keep their
    first snapshot, and how many of the newest are kept. Schedules and backups share them."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    hourly: int = Field(default=0, ge=0, le=MAX_COUNT)
    daily: int = Field(default=0, ge=0, le=MAX_COUNT)
    weekly: int = Field(default=0, ge=0, le=MAX_COUNT)
    monthly: int = Field(default=0, ge=0, le=MAX_COUNT)
    yearly: int = Field(default=0, ge=0, le=MAX_COUNT)
    keep_last: int = Field(default=0, ge=0, le=MAX_COUNT)

    def keeps_by_count(self) -> bool:
        return bool(self.hourly or self.daily or self.weekly or self.monthly or self.yearly
                    or self.keep_last)

    def limits(self) -> Limits:
        return Limits(hourly=self.hourly, daily=self.daily, weekly=self.weekly,
                      monthly=self.monthly, yearly=self.yearly, keep_last=self.keep_last)


class Schedule(KeptCounts):
    """One timeline: snapshot ``subvolume`` every ``every`` seconds and keep per limits."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    subvolume: str = Field(pattern=r"^/")
    every: int = Field(ge=60, le=YEAR)  # seconds; sub-hourly works
    min_age: int = Field(default=0, ge=0, le=10 * YEAR)  # seconds
    # "btrfsd": the daemon's timer fires it; "systemd": only btrfsd-schedule@NAME.timer
    # (RunSchedule) does, so the two never both take snapshots
    timer: str = Field(default="btrfsd", pattern="^(btrfsd|systemd)$")
    # a backup (backups.py) of the same subvolume started after each snapshot, sending it
    backup: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

    @field_validator("backup", mode="before")
    @classmethod
    def _no_backup(cls, value: object) -> object:
        return None if value == "" else value  # D-Bus has no None: '' says none

    @model_validator(mode="after")
    def _keeps_something(self) -> Schedule:
        if not (self.keeps_by_count() or self.min_age):
            raise ValueError("it keeps nothing: give hourly/daily/weekly/monthly/yearly, "
                             "keep_last or min_age (or every snapshot is deleted at once)")
        return self

    def limits(self) -> Limits:
        # dataclasses.replace: "replace" is also set()'s keyword
        return dataclasses.replace(super().limits(), min_age=self.min_age)


class ScheduleFile(BaseModel):
    # extra keys are dropped: older files also held maintenance plans (now maintenance.py's)
    model_config = ConfigDict(extra="ignore")

    version: int = 1
    schedules: dict[str, Schedule] = Field(default_factory=dict)


class SnapshotRecord(BaseModel):
    """What btrfsd knows about a snapshot a schedule made (keyed by its UUID)."""

    schedule: str
    filesystem: str
    created: float
    important: bool = False
    description: str = ""


class RecordFile(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: int = 1
    snapshots: dict[str, SnapshotRecord] = Field(default_factory=dict)  # uuid -> record
    last_run: dict[str, float] = Field(default_factory=dict)  # schedule -> time
    # the number of the last journal entry in this file: later ones are not (a crash
    # between writing this file and emptying the journal leaves older ones there)
    journal: int = 0


class _JournalEntry(BaseModel):
    """A line of the records' journal: records set (whole) or forgotten, last runs."""

    model_config = ConfigDict(extra="ignore")

    set: dict[str, SnapshotRecord] = Field(default_factory=dict)
    forget: list[str] = Field(default_factory=list)
    runs: dict[str, float] = Field(default_factory=dict)


@dataclass
class Planned:
    """A snapshot of a schedule and what cleanup would do with it."""

    uuid: str
    path: str  # absolute as found now, for people: cleanup deletes by id and UUID
    record: SnapshotRecord
    decision: Decision
    subvolume_id: int = 0  # as found now


@dataclass
class RunResult:
    snapshot: str = ""
    deleted: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # path, why
    backup_job: int = 0  # the backup job the snapshot started (0: none)


class BackupTrigger(Protocol):
    """Backups started by schedules (backups.py; given by the composition root, which
    keeps this module free of backups)."""

    def check_trigger(self, schedule: Schedule) -> None:
        """Raises InvalidArgument unless ``schedule.backup`` is a backup of its subvolume."""

    async def trigger(self, schedule: Schedule, snapshot_uuid: str) -> int:
        """Start the schedule's backup sending that snapshot; the job's id, 0 when it was
        skipped (logged, never raised: a backup that cannot start is not the schedule's
        failure)."""


def parse_schedule(name: str, spec: dict[str, object]) -> Schedule:
    """Validate a schedule. Raises InvalidArgument naming each bad field."""
    try:
        return Schedule.model_validate({"name": name, **spec})
    except ValidationError as e:
        raise InvalidArgument(f"Bad schedule {name!r}: {validation_problems(e)}.") from None


class Schedules:
    """Schedules, their snapshots, and cleanup. Kernel work goes through Subvolumes."""

    def __init__(self, subvolumes: Subvolumes, config_dir: Path, state_dir: Path, *,
                 clock: Callable[[], float] = time.time, tz: tzinfo | None = None) -> None:
        self.subvolumes = subvolumes
        self.schedules_path = config_dir / SCHEDULES_FILE
        self.records_path = state_dir / RECORDS_FILE
        self.clock = clock
        self.tz = tz  # where hours/days/weeks begin; None: the local time zone
        self.file = ScheduleFile()
        self.records = RecordFile()
        self._journal = Journal(state_dir / JOURNAL_FILE)
        self._entry = 0  # the number of the last journal entry
        # (schedule, filesystem UUID) -> its snapshots' retention, kept up to date by
        # every change of records once made; made again when the schedule changes
        self._timelines: dict[tuple[str, str], Timeline] = {}
        self._lock = asyncio.Lock()  # one run/cleanup/change at a time
        self.on_change: list[Callable[[], None]] = []  # the timer re-reads schedules
        self.backups: BackupTrigger | None = None

    async def load(self) -> None:
        """Read schedules, records and the records' journal, and fold the journal into the
        records file. Raises OSError when that cannot be written (nothing else: files
        that cannot be used are moved aside, see load_model and journal.py)."""
        self.file = await asyncio.to_thread(load_model, self.schedules_path, ScheduleFile,
                                            "schedules")
        self.records = await asyncio.to_thread(load_model, self.records_path, RecordFile,
                                               "snapshot records")
        self._timelines.clear()
        self._entry = self.records.journal
        entries = await asyncio.to_thread(self._journal.read)
        for entry in entries:
            self._replay(entry)
        if entries:
            await self.save_records()

    def _replay(self, entry: Entry) -> None:
        """Apply a journal entry read back (one that is not already in the records)."""
        number = entry.get("n")
        if not isinstance(number, int) or number <= self.records.journal:
            return
        self._entry = max(self._entry, number)
        try:
            changes = _JournalEntry.model_validate(entry)
        except ValidationError as e:
            log.error("journal entry %d of %s is not valid (%s); it is left out", number,
                      self._journal.path, validation_problems(e))
            return
        self.records.snapshots.update(changes.set)
        for uuid in changes.forget:
            self.records.snapshots.pop(uuid, None)
        self.records.last_run.update(changes.runs)

    async def _log(self, entry: Entry) -> None:
        """Make a change of records durable: one journal line, or the whole file now and
        then. Raises OSError when neither can be written."""
        self._entry += 1
        entry["n"] = self._entry
        limit = max(JOURNAL_LINES, len(self.records.snapshots))
        if self._journal.lines + 1 < limit:
            try:
                await asyncio.to_thread(self._journal.append, entry)
                return
            except OSError as e:
                log.warning("cannot append to %s (%s); writing %s whole",
                            self._journal.path, e, self.records_path)
        await self.save_records()

    async def close(self) -> None:
        """Fold the journal into the records file, so that a stopped btrfsd leaves every
        record in snapshots.json (where a person may look or edit). Raises nothing:
        otherwise the next start folds it."""
        async with self._lock:
            if not self._journal.lines:
                return
            try:
                await self.save_records()
            except OSError as e:
                log.error("cannot write %s at exit (%s); the next start reads the "
                          "journal %s", self.records_path, e, self._journal.path)

    async def _save_schedules(self) -> None:
        # json, not pydantic's serializer: a path may hold any byte (a lone surrogate
        # inside btrfsd, names.py), which pydantic refuses and json escapes
        text = json.dumps(self.file.model_dump(mode="json"), indent=1)
        await asyncio.to_thread(write_atomic, self.schedules_path, text)

    async def save_records(self) -> None:
        # last runs of schedules that no longer exist (or of an older btrfsd's periodic
        # maintenance, which kept them here) are not kept
        known = self.file.schedules
        for name in [n for n in self.records.last_run if n not in known]:
            del self.records.last_run[name]
        # pydantic's own serializer: 10x faster than json.dumps of model_dump at 1,000
        # records, and it runs on the event loop (the records must not change while
        # they are written out)
        self.records.journal = self._entry
        text = self.records.model_dump_json(indent=1)
        await asyncio.to_thread(write_atomic, self.records_path, text)
        # after the file holds every entry: a crash before this line leaves entries
        # that the file's "journal" number says to skip
        await asyncio.to_thread(self._journal.clear)

    # -- schedules -------------------------------------------------------------------------
    def all(self) -> list[Schedule]:
        return [self.file.schedules[n] for n in sorted(self.file.schedules)]

    async def visible(self, creds: Creds | None) -> list[Schedule]:
        """The schedules whose subvolume ``creds`` could find (all for None or root)."""
        everything = self.all()
        seen = await self.subvolumes.reachable([s.subvolume for s in everything], creds)
        return [s for s, ok in zip(everything, seen, strict=True) if ok]

    def get(self, name: str) -> Schedule:
        """Raises NotFound."""
        try:
            return self.file.schedules[name]
        except KeyError:
            raise NotFound(f"There is no schedule {name!r}.",
                           hint=Hint(HintKind.LIST_SCHEDULES, {"name": name})) from None

    async def set(self, schedule: Schedule, *, replace: bool) -> None:
        """Add (or with ``replace`` change) a schedule after checking its subvolume.

        Raises AlreadyExists, InvalidArgument/NotFound/NotBtrfs for the subvolume,
        InvalidArgument when its backup does not exist or backs up another subvolume.
        """
        async with self._lock:
            if schedule.name in self.file.schedules and not replace:
                raise AlreadyExists(f"A schedule named {schedule.name!r} exists; remove it "
                                    "or change it (replace).")
            await self._target(schedule)  # the subvolume must exist and be one
            if schedule.backup is not None:
                if self.backups is None:
                    raise InvalidArgument("Backups are not available here.")
                self.backups.check_trigger(schedule)
            self.file.schedules[schedule.name] = schedule
            self._forget_timelines(schedule.name)  # its limits may have changed
            await self._save_schedules()
        log.info("schedule set name=%s subvolume=%s every=%ds", schedule.name,
                 schedule.subvolume, schedule.every)
        for listener in self.on_change:
            listener()

    async def remove(self, name: str) -> None:
        """Remove a schedule (its snapshots stay, and stay marked as its; its last run is
        forgotten). Raises NotFound."""
        async with self._lock:
            self.get(name)
            del self.file.schedules[name]
            self._forget_timelines(name)
            await self._save_schedules()
            await self.save_records()
        log.info("schedule removed name=%s", name)
        for listener in self.on_change:
            listener()

    def _forget_timelines(self, name: str) -> None:
        for key in [k for k in self._timelines if k[0] == name]:
            del self._timelines[key]

    async def _target(self, schedule: Schedule) -> Filesystem:
        fs, _ = await self.subvolumes.resolve(schedule.subvolume)
        await self.subvolumes.info(fs, schedule.subvolume)  # raises unless a subvolume
        return fs

    # -- running ------------------------------------------------------------------------------
    def due(self, name: str) -> bool:
        """True when the schedule has not run for at least its interval (a missed run)."""
        last = self.records.last_run.get(name)
        return last is None or self.clock() - last >= self.get(name).every

    async def run(self, name: str) -> RunResult:
        """Take a snapshot now and clean up. Raises BtrfsdError when no snapshot could be
        taken; failed deletes are reported in the result, not raised."""
        async with self._lock:
            schedule = self.get(name)
            now = self.clock()
            fs = await self._target(schedule)
            path = await self.subvolumes.snapshot(fs, schedule.subvolume, when=now)
            info = await self.subvolumes.info(fs, path)
            record = SnapshotRecord(schedule=name, filesystem=fs.uuid, created=now)
            self.records.snapshots[info.uuid] = record
            self.records.last_run[name] = now
            timeline = self._timelines.get((name, fs.uuid))
            if timeline is not None:
                timeline.add(Candidate(info.uuid, now))
            await self._log({"set": {info.uuid: record.model_dump()}, "runs": {name: now}})
            result = await self._cleanup(schedule, fs, dry_run=False)
            result.snapshot = path
        log.info("schedule ran name=%s snapshot=%s deleted=%d failed=%d", name, path,
                 len(result.deleted), len(result.failed))
        if schedule.backup is not None and self.backups is not None:
            # outside the lock: starting the job checks the target in a thread
            result.backup_job = await self.backups.trigger(schedule, info.uuid)
        return result

    async def plan(self, name: str, *, visible_to: Creds | None = None) -> list[Planned]:
        """Every snapshot of the schedule, youngest first, with the rule that keeps it (or
        none: to be deleted). With ``visible_to``: a schedule of a subvolume that caller
        could not find does not exist for them, and only snapshots they could find are
        listed. Raises NotFound."""
        schedule = self.get(name)
        if not (await self.subvolumes.reachable([schedule.subvolume], visible_to))[0]:
            raise NotFound(f"There is no schedule {name!r}.",
                           hint=Hint(HintKind.LIST_SCHEDULES, {"name": name}))
        fs = await self._target(schedule)
        planned, _ = await self._plan(schedule, fs)
        seen = await self.subvolumes.reachable([p.path for p in planned], visible_to)
        return [p for p, ok in zip(planned, seen, strict=True) if ok]

    async def _plan(self, schedule: Schedule, fs: Filesystem
                    ) -> tuple[list[Planned], list[str]]:
        """The schedule's snapshots with their decisions, and the UUIDs of its records
        whose snapshot is gone (deleted by hand). Changes nothing: a read uses it too."""
        mine = {u: r for u, r in self.records.snapshots.items()
                if r.schedule == schedule.name and r.filesystem == fs.uuid}
        where = {s.uuid: s for s in await self.subvolumes.list(fs) if s.uuid in mine}
        mp = fs.primary_mount.mount_point.rstrip("/")
        decisions = decide([Candidate(u, r.created, r.important) for u, r in mine.items()
                            if u in where], schedule.limits(), self.clock(), self.tz)
        planned = [Planned(d.candidate.key, f"{mp}/{where[d.candidate.key].path}",
                           mine[d.candidate.key], d, where[d.candidate.key].id)
                   for d in decisions]
        return planned, [u for u in mine if u not in where]

    async def cleanup(self, name: str, *, dry_run: bool) -> RunResult:
        """Delete what the rules do not keep (or with ``dry_run`` only say what). Keeps
        going when a delete fails; failures are in the result and tried again next time."""
        async with self._lock:
            schedule = self.get(name)
            fs = await self._target(schedule)
            return await self._cleanup(schedule, fs, dry_run=dry_run)

    def _timeline(self, schedule: Schedule, fs: Filesystem) -> Timeline:
        """The schedule's snapshots on ``fs`` as a Timeline (made from the records the
        first time, in their order: decide's order among equal times)."""
        timeline = self._timelines.get((schedule.name, fs.uuid))
        if timeline is None or timeline.limits != schedule.limits():
            timeline = Timeline(schedule.limits(), self.tz)
            for uuid, r in self.records.snapshots.items():
                if r.schedule == schedule.name and r.filesystem == fs.uuid:
                    timeline.add(Candidate(uuid, r.created, r.important))
            self._timelines[(schedule.name, fs.uuid)] = timeline
        return timeline

    async def _cleanup(self, schedule: Schedule, fs: Filesystem, *,
                       dry_run: bool) -> RunResult:
        result = RunResult()
        if dry_run:
            planned, _ = await self._plan(schedule, fs)
            result.deleted = [p.path for p in planned if not p.decision.keep]
            return result
        timeline = self._timeline(schedule, fs)
        gone, id_of = await self._present(fs, timeline.keys())
        forgotten: list[str] = list(gone)
        for uuid in forgotten:  # deleted by hand: nothing left to decide about
            timeline.remove(uuid)
            del self.records.snapshots[uuid]
        mp = fs.primary_mount.mount_point.rstrip("/")
        try:
            for uuid in timeline.losers(self.clock()):
                sid = id_of(uuid)
                if sid is None:  # cannot be (all missing ones were forgotten above)
                    continue
                path = f"{mp} (subvolume id {sid})"
                try:
                    path = f"{mp}/{(await self.subvolumes.info_by_id(fs, sid)).path}"
                    # by id, checked against the recorded UUID: the path is only for
                    # people (it is wrong where the top level is not mounted, e.g. @/@home)
                    await self.subvolumes.delete_by_id(fs, sid, uuid, path)
                except BtrfsdError as e:
                    log.warning("cleanup of schedule %s could not delete %s: %s",
                                schedule.name, path, e.message)
                    result.failed.append((path, e.message))
                    continue
                timeline.remove(uuid)
                del self.records.snapshots[uuid]
                forgotten.append(uuid)
                result.deleted.append(path)
        finally:
            if forgotten:  # unchanged records need no write
                await self._log({"forget": forgotten})
        return result

    async def _present(self, fs: Filesystem, wanted: AbstractSet[str]
                       ) -> tuple[AbstractSet[str], Callable[[str], int | None]]:
        """Those of ``wanted`` (UUIDs) that no subvolume of ``fs`` has, and how to find
        the id of one that exists. From the UUID tree (fs/uuidtree.py: 40 bytes per
        subvolume, read with no Python step per subvolume, so a run costs about the same
        with 1,000 snapshots as with 10), or, when it does not name them all (deleted by
        hand, or a tree still being filled after mounting an old filesystem), from the
        listing of every subvolume. Raises BtrfsdError."""
        named = await self.subvolumes.named_by_uuid(fs)
        if named is not None and not (gone := named.missing(wanted)):
            return gone, named.id_of
        ids = {s.uuid: s.id for s in await self.subvolumes.list(fs)}
        return set(wanted).difference(ids), ids.get

    async def set_snapshot_info(self, path: str, *, important: bool | None,
                                description: str | None) -> None:
        """Mark a schedule's snapshot important (kept outside the limits) and/or describe
        it. Raises InvalidArgument when no schedule made that snapshot, and what path
        resolution raises."""
        fs, _ = await self.subvolumes.resolve(path)
        info = await self.subvolumes.info(fs, path)
        async with self._lock:
            rec = self.records.snapshots.get(info.uuid)
            if rec is None:
                raise InvalidArgument(f"{path} was not made by a schedule; only scheduled "
                                      "snapshots carry these marks.")
            if important is not None:
                rec.important = important
                timeline = self._timelines.get((rec.schedule, rec.filesystem))
                if timeline is not None and info.uuid in timeline:
                    timeline.set_important(info.uuid, important)
            if description is not None:
                rec.description = description
            await self._log({"set": {info.uuid: rec.model_dump()}})
