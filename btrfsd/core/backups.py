"""Backups to another btrfs filesystem: their configuration (validated, stored atomically
in ``<config_dir>/backups.json``) and starting a run as a job (backup_runner.py does it).

A backup copies read-only snapshots of ``source`` into ``target`` (a directory on another
mounted btrfs filesystem) by send/receive, incrementally against the newest snapshot
both sides hold, and keeps the copies on the target by its own retention rules.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..constants import ROOT_UID
from ..errors import AlreadyExists, AlreadyRunning, BtrfsdError, InvalidArgument, NotFound
from ..fs import paths, subvol
from ..fs.info import SubvolumeInfo
from .backup_copies import DIR_FLAGS, Judged, judge, target_copies
from .filesystems import Filesystem, Registry
from .jobmanager import JobManager
from .jobs import Job
from .schedules import KeptCounts, Schedule, Schedules
from .state import load_model, validation_problems, write_atomic
from .subvolumes import Creds, Subvolumes

log = logging.getLogger(__name__)

BACKUPS_FILE = "backups.json"
OPERATION = "backup"
MAX_RATE = 1 << 40  # bytes per second; more is a typo


class Backup(KeptCounts):
    """One backup: snapshots of ``source`` received into ``target``, kept per limits."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    source: str = Field(pattern=r"^/")
    target: str = Field(pattern=r"^/")
    # a schedule of the source whose newest snapshot is sent ('' : take one)
    schedule: str = ""
    rate_limit: int = Field(default=0, ge=0, le=MAX_RATE)  # bytes/s, 0: no limit

    @model_validator(mode="after")
    def _keeps_something(self) -> Backup:
        if not self.keeps_by_count():
            raise ValueError("it keeps nothing on the target: give hourly/daily/weekly/"
                             "monthly/yearly or keep_last")
        return self


class BackupFile(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: int = 1
    backups: dict[str, Backup] = Field(default_factory=dict)


def parse_backup(name: str, spec: dict[str, object]) -> Backup:
    """Validate a backup. Raises InvalidArgument naming each bad field."""
    try:
        return Backup.model_validate({"name": name, **spec})
    except ValidationError as e:
        raise InvalidArgument(f"Bad backup {name!r}: {validation_problems(e)}.") from None


def check_target_chain(res: paths.Resolved) -> None:
    """Refuse a target directory that anyone but root could replace: it and every
    directory above it must belong to root and be writable by root only (or sticky, like
    /tmp: then only the owner of an entry can move it). ``btrfs receive`` resolves the
    name it is given itself; this makes sure no local user can swap what it finds.
    Raises InvalidArgument."""
    assert res.st is not None and res.target_fd is not None
    cur = os.dup(res.target_fd)
    try:
        st = os.fstat(cur)
        where = res.path
        while True:
            if st.st_uid != 0 or (st.st_mode & 0o022 and not (
                    st.st_mode & stat.S_ISVTX and where != res.path)):
                raise InvalidArgument(
                    f"{where} can be changed by another user than root (owner uid "
                    f"{st.st_uid}, mode {stat.S_IMODE(st.st_mode):o}); a backup target and "
                    "every directory above it must be root's and writable only by root.")
            if where == "/":
                return
            nxt = os.open("..", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=cur)
            os.close(cur)
            cur = nxt
            st = os.fstat(cur)
            where = os.path.dirname(where.rstrip("/")) or "/"
    finally:
        os.close(cur)


def _identity(path: str) -> tuple[int, int] | None:
    """The directory at ``path`` as (device, inode); None when it cannot be reached."""
    try:
        with paths.resolve(path) as res:
            assert res.st is not None
            return res.st.st_dev, res.st.st_ino
    except (BtrfsdError, OSError):
        return None


def _not_found(name: str) -> NotFound:
    return NotFound(f"There is no backup {name!r} (btrfsctl backup list shows them).")


class Backups:
    """Backups: their configuration, and runs started as jobs on the target's
    filesystem (one backup per target filesystem at a time: the JobManager's rule)."""

    def __init__(self, registry: Registry, subvolumes: Subvolumes, schedules: Schedules,
                 jobs: JobManager, config_dir: Path) -> None:
        self.registry = registry
        self.subvolumes = subvolumes
        self.schedules = schedules
        self.jobs = jobs
        self.path = config_dir / BACKUPS_FILE
        self.file = BackupFile()
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        self.file = await asyncio.to_thread(load_model, self.path, BackupFile, "backups")

    async def _save(self) -> None:
        # json, not pydantic's serializer: a path may hold any byte (names.py)
        text = json.dumps(self.file.model_dump(mode="json"), indent=1)
        await asyncio.to_thread(write_atomic, self.path, text)

    def all(self) -> list[Backup]:
        return [self.file.backups[n] for n in sorted(self.file.backups)]

    def get(self, name: str) -> Backup:
        """Raises NotFound."""
        try:
            return self.file.backups[name]
        except KeyError:
            raise _not_found(name) from None

    def _check_places(self, b: Backup) -> tuple[Filesystem, Filesystem]:
        """The source's and the target's filesystems, after checking both (blocking).
        Raises InvalidArgument, NotFound, NotBtrfs."""
        src_fs, _ = self.subvolumes.resolve_filesystem(b.source)
        with paths.resolve(b.source) as res:
            assert res.st is not None
            if not subvol.is_subvolume(res.st):
                raise InvalidArgument(f"{res.path} is not a subvolume; a backup sends "
                                      "snapshots of a subvolume.")
        with paths.resolve(b.target) as res:
            assert res.st is not None
            if not stat.S_ISDIR(res.st.st_mode):
                raise InvalidArgument(f"{res.path} is not a directory.")
            fd = res.open()
            tgt_fs = self.registry.by_fsid(subvol.fsid_of(fd, res.path), res.path)
            check_target_chain(res)
        if tgt_fs.uuid == src_fs.uuid:
            raise InvalidArgument(
                f"{b.target} is on the same filesystem as {b.source}; a backup goes to "
                "another disk (a snapshot is the copy on the same one).")
        return src_fs, tgt_fs

    def _check_shared_target(self, backup: Backup) -> None:
        """Refuse a target that is another backup's under another name ('/t/', '/t/.',
        a bind mount): each run's retention judges every copy in its directory and would
        delete the other's, its next parent included (blocking). Raises
        InvalidArgument."""
        mine = _identity(backup.target)
        for other in self.file.backups.values():
            if other.name != backup.name and mine is not None \
                    and _identity(other.target) == mine:
                raise InvalidArgument(f"{backup.target} is the target directory of the "
                                      f"backup {other.name!r} ({other.target}); give each "
                                      "backup a directory of its own.")

    async def set(self, backup: Backup, *, replace: bool) -> None:
        """Add (or with ``replace`` change) a backup after checking its places.

        Raises AlreadyExists, InvalidArgument, NotFound, NotBtrfs."""
        async with self._lock:
            if backup.name in self.file.backups and not replace:
                raise AlreadyExists(f"A backup named {backup.name!r} exists; remove it or "
                                    "change it (replace).")
            for other in self.file.backups.values():
                if other.name != backup.name and other.target == backup.target:
                    raise InvalidArgument(f"{backup.target} is the target of the backup "
                                          f"{other.name!r}; give each backup a directory "
                                          "of its own.")
            if backup.schedule:
                schedule = self.schedules.get(backup.schedule)
                if schedule.subvolume != backup.source:
                    raise InvalidArgument(
                        f"The schedule {backup.schedule!r} snapshots {schedule.subvolume}, "
                        f"not {backup.source}.")
            await asyncio.to_thread(self._check_places, backup)
            await asyncio.to_thread(self._check_shared_target, backup)
            self.file.backups[backup.name] = backup
            await self._save()
        log.info("backup set name=%s source=%s target=%s", backup.name, backup.source,
                 backup.target)

    async def remove(self, name: str) -> None:
        """Forget a backup (its copies on the target stay). Raises NotFound."""
        async with self._lock:
            self.get(name)
            del self.file.backups[name]
            await self._save()
        log.info("backup removed name=%s", name)

    async def visible(self, name: str, visible_to: Creds | None) -> Backup:
        """The backup, if ``visible_to`` could reach both its source and its target by
        path (the read-privacy rule of ListBackups). Raises NotFound."""
        backup = self.get(name)
        if not all(await self.subvolumes.reachable([backup.source, backup.target],
                                                   visible_to)):
            raise _not_found(name)  # the same answer as for one that does not exist
        return backup

    def _copies(self, backup: Backup) -> dict[str, SubvolumeInfo]:
        """The subvolumes in the target directory (blocking). Raises InvalidArgument,
        NotFound, NotBtrfs, OSError."""
        with paths.resolve(backup.target) as res:
            assert res.st is not None
            if not stat.S_ISDIR(res.st.st_mode):
                raise InvalidArgument(f"{res.path} is not a directory.")
            fd = os.open(".", DIR_FLAGS, dir_fd=res.target_fd)
        try:
            self.registry.by_fsid(subvol.fsid_of(fd, backup.target), backup.target)
            return target_copies(fd, backup.target)
        finally:
            os.close(fd)

    async def explain(self, name: str, *, visible_to: Creds | None = None
                      ) -> tuple[Backup, list[Judged]]:
        """Each complete copy on the target, youngest first, with the retention rules
        that keep it ("parent" for the newest, which the next incremental needs; none:
        the next run deletes it). With ``visible_to``, only what that caller could reach
        by path. Raises NotFound, InvalidArgument, NotBtrfs."""
        backup = await self.visible(name, visible_to)
        try:
            copies = await asyncio.to_thread(self._copies, backup)
        except OSError as e:
            raise NotFound(f"The target {backup.target} cannot be read: "
                           f"{os.strerror(e.errno or 0)}.") from None
        judged = judge(copies, backup.limits(), self.schedules.clock(), self.schedules.tz)
        seen = await self.subvolumes.reachable(
            [f"{backup.target}/{j.name}" for j in judged], visible_to)
        return backup, [j for j, ok in zip(judged, seen, strict=True) if ok]

    async def run(self, name: str, uid: int, *, snapshot_uuid: str = "") -> Job:
        """Start a run as a job on the target's filesystem, sending the source's snapshot
        ``snapshot_uuid`` when given. Raises NotFound, InvalidArgument, NotBtrfs,
        AlreadyRunning (a job holds the target filesystem)."""
        from .backup_runner import BackupParams  # the runner needs this module

        backup = self.get(name)
        _, tgt_fs = await asyncio.to_thread(self._check_places, backup)
        return await self.jobs.start(tgt_fs, uid, OPERATION,
                                     BackupParams(backup, snapshot_uuid))

    def _dest_fs(self, dest: str) -> Filesystem:
        """The filesystem of a restore's destination directory (blocking; the job checks
        it in full). Raises InvalidArgument, NotFound, NotBtrfs."""
        with paths.resolve(dest) as res:
            assert res.st is not None
            if not stat.S_ISDIR(res.st.st_mode):
                raise InvalidArgument(f"{res.path} is not a directory.")
            return self.registry.by_fsid(subvol.fsid_of(res.open(), res.path), res.path)

    async def restore(self, name: str, copy: str, dest: str, uid: int) -> Job:
        """Send the copy ``copy`` (a name in the backup's target directory) back into the
        directory ``dest``, as a job on its filesystem. Raises NotFound, InvalidArgument,
        NotBtrfs, AlreadyExists, AlreadyRunning, Failed (``dest`` mounted read-only)."""
        from .backup_restore import RESTORE_OPERATION, RestoreParams

        backup = self.get(name)
        if not copy or "/" in copy or "\0" in copy or copy in (".", ".."):
            raise InvalidArgument(f"{copy!r} is not the name of a copy; btrfsctl backup "
                                  f"explain {name} lists them.")
        dest_fs = await asyncio.to_thread(self._dest_fs, dest)
        return await self.jobs.start(dest_fs, uid, RESTORE_OPERATION,
                                     RestoreParams(backup, copy, dest))

    # -- started by schedules (schedules.py's BackupTrigger) -----------------------------
    def check_trigger(self, schedule: Schedule) -> None:
        """Raises InvalidArgument unless the schedule's backup exists and backs up the
        schedule's subvolume."""
        try:
            backup = self.get(schedule.backup or "")
        except NotFound as e:
            raise InvalidArgument(e.message) from None
        if backup.source != schedule.subvolume:
            raise InvalidArgument(f"The backup {backup.name!r} sends snapshots of "
                                  f"{backup.source}, not of {schedule.subvolume}.")

    async def trigger(self, schedule: Schedule, snapshot_uuid: str) -> int:
        """Start the schedule's backup with the snapshot it just took, as btrfsd's own
        decision (root's job, like the timer's). Returns the job's id, 0 when it was
        skipped; raises nothing (a backup that cannot start is logged, and is not the
        schedule's failure)."""
        try:
            self.check_trigger(schedule)
            assert schedule.backup is not None
            job = await self.run(schedule.backup, ROOT_UID, snapshot_uuid=snapshot_uuid)
        except AlreadyRunning as e:
            log.warning("schedule %s: backup %s skipped this time: %s", schedule.name,
                        schedule.backup, e.message)
            return 0
        except BtrfsdError as e:
            log.error("schedule %s: backup %s could not start: %s", schedule.name,
                      schedule.backup, e.message)
            return 0
        except OSError as e:  # the target's checks open directories (review: a Low)
            log.error("schedule %s: backup %s could not start: %s", schedule.name,
                      schedule.backup, e)
            return 0
        log.info("schedule %s started backup %s as job %d", schedule.name, schedule.backup,
                 job.id)
        return job.id
