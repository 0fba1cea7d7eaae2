"""A backup run as a job kind, on the target's filesystem: snapshot (or reuse the
schedule's newest), send incrementally against the newest snapshot both sides hold
(matched by UUID: the target's received_uuid is the source snapshot's UUID), receive
with btrfs-progs (fs/receive.py), verify, apply the target's retention.

Never a fake backup: a subvolume in the target directory is a backup only when it is
read-only and carries a received_uuid (``btrfs receive`` sets both last). The name being
received is written to the job's record (``undo``) before the transfer starts, so a
kill -9 is cleaned up at the next start. A run never deletes an unfinished subvolume it
did not record itself: a name alone proves nothing (the owner of the source names their
own snapshots, and an administrator's writable subvolume in the target looks like a
partial receive).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import BtrfsdError, Cancelled, Failed, InvalidArgument, NoSpace, NotFound
from ..fs import paths, subvol
from ..fs.info import SubvolumeInfo
from ..fs.quota import read_qgroup
from ..fs.receive import Transfer
from ..units import format_bytes
from .backup_copies import DIR_FLAGS, complete, judge, remove_partial, target_copies
from .backups import OPERATION, Backup, check_target_chain
from .filesystems import Filesystem, Registry
from .jobkind import Adoption, RunnerControl, expect_params
from .jobs import Job, JobRecord, JobState, RateMeter
from .schedules import Schedules
from .subvolumes import Subvolumes
from .threads import in_own_thread

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class BackupParams:
    backup: Backup
    snapshot_uuid: str = ""  # send this snapshot of the source (a schedule's new one)


class BackupKind:
    """Backup jobs. The kernel runs none of its own; recovery removes a killed run's
    unfinished copy."""

    operation = OPERATION

    def __init__(self, registry: Registry, subvolumes: Subvolumes, schedules: Schedules,
                 poll_interval: float) -> None:
        self.registry = registry
        self.subvolumes = subvolumes
        self.schedules = schedules
        self.poll_interval = poll_interval

    def runner(self, fs: Filesystem, params: object) -> ReceivingRunner:
        p = expect_params(params, BackupParams, OPERATION)
        return BackupRunner(self, fs, p.backup, p.snapshot_uuid)

    def find(self, fs: Filesystem, fd: int) -> Adoption | None:
        return None

    def recover(self, fs: Filesystem | None, record: JobRecord) -> Adoption | None:
        """Delete the copy a killed run was receiving; the job is reported interrupted."""
        for where in record.undo:
            parent, _, name = where.rpartition("/")
            try:
                with paths.resolve(parent or "/") as res:
                    remove_partial(res.open(), name, where)
            except (OSError, BtrfsdError) as e:
                log.warning("cannot remove the unfinished backup copy %s of job %d: %s",
                            where, record.id, e)
        return None


@dataclass
class _Plan:
    source_fs: Filesystem
    source_uuid: str
    snapshot: str = ""  # absolute path of the snapshot sent
    snapshot_info: SubvolumeInfo | None = None
    parent: SubvolumeInfo | None = None  # on the source: the newest common snapshot
    parent_name: str = ""


class ReceivingRunner:
    """What a backup run and a restore of a copy share: a transfer into a directory
    (``_dir``, open as ``_dir_fd``) on the job's filesystem, checked, shown as progress
    in bytes, and on any failure the unfinished subvolume deleted (never a fake copy).
    Subclasses open ``_dir_fd`` in prepare and implement ``_run``."""

    what = "backup"  # for messages

    def __init__(self, kind: BackupKind, fs: Filesystem, rate_limit: int, where: str) -> None:
        self.kind = kind
        self.fs = fs  # the receiving side's
        self._dir = where
        self._transfer = Transfer(rate_limit)
        self._control = RunnerControl(kind.operation)
        self._dir_fd = -1
        self._stopping = False
        self._ended = asyncio.Event()

    # -- blocking steps ------------------------------------------------------------------
    def _open_dir(self) -> int:
        """Open ``_dir`` checked as a receiving directory: a directory on the job's
        filesystem, writable by root only all the way up, on a writable mount. Raises
        InvalidArgument, NotFound, Failed (mounted read-only)."""
        with paths.resolve(self._dir) as res:
            assert res.st is not None
            if not stat.S_ISDIR(res.st.st_mode):
                raise InvalidArgument(f"{res.path} is not a directory.")
            check_target_chain(res)
            fd = os.open(".", DIR_FLAGS, dir_fd=res.target_fd)
        try:
            self.kind.registry.check_member(self.fs, subvol.fsid_of(fd, self._dir),
                                            self._dir)
            if os.fstatvfs(fd).f_flag & os.ST_RDONLY:
                raise Failed(f"{self._dir} is on a filesystem mounted read-only; nothing "
                             "was sent (remount it read-write, then run again).",
                             errno=errno.EROFS)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _still_there(self) -> None:
        """Raises NotFound when ``_dir``'s path no longer leads to the directory the job
        received into (its filesystem was unmounted, or the directory moved)."""
        st = os.fstat(self._dir_fd)
        try:
            with paths.resolve(self._dir) as res:
                assert res.st is not None
                same = (res.st.st_dev, res.st.st_ino) == (st.st_dev, st.st_ino)
        except BtrfsdError:
            same = False
        if not same:
            raise self._gone()

    def _gone(self) -> NotFound:
        return NotFound(f"{self._dir} went away during the {self.what} (its filesystem "
                        "was unmounted or the directory moved); the unfinished copy was "
                        "deleted. Mount it again and run again.")

    def _verify(self, name: str, expect_uuid: str) -> SubvolumeInfo:
        shown = f"{self._dir}/{name}"
        copy = target_copies(self._dir_fd, self._dir).get(name)
        if copy is None:
            raise Failed(f"btrfs receive reported success but {shown} is not there.")
        if copy.received_uuid != expect_uuid or not copy.read_only:
            raise Failed(f"{shown} is not a complete copy (received_uuid "
                         f"{copy.received_uuid or 'none'}, expected {expect_uuid}; "
                         f"read-only: {copy.read_only}); it was deleted.")
        self._still_there()
        return copy

    # -- steps on the event loop ---------------------------------------------------------
    async def run(self, job: Job) -> None:
        """Run the job and finish it (see Runner.run)."""
        try:
            await self._run(job)
        finally:
            self._close()
            self._ended.set()

    def _close(self) -> None:
        if self._dir_fd >= 0:
            os.close(self._dir_fd)
            self._dir_fd = -1

    async def prepare(self, job: Job) -> None:
        """Open ``_dir_fd`` and check what the job needs (see Runner.prepare)."""
        raise NotImplementedError

    async def _run(self, job: Job) -> None:
        raise NotImplementedError

    async def _receive(self, job: Job, name: str, send: Callable[[], None], total: int,
                       expect_uuid: str) -> SubvolumeInfo | None:
        """Receive ``name`` into ``_dir`` from what ``send`` streams, verify it and
        return it; None when the job was finished here (cancelled, out of space, the
        directory gone). The name is in the job's record (undo) while it is unfinished,
        so a kill -9 is cleaned up at the next start. Raises BtrfsdError (the job
        fails, the unfinished copy deleted)."""
        where = f"{self._dir}/{name}"
        job.update(bytes_total=total, undo={where: 1})
        await job.persist()  # a kill -9 from here on is cleaned up at the next start
        try:
            await self._transfer_and_show(job, total, send)
            copy = await asyncio.to_thread(self._verify, name, expect_uuid)
        except BaseException as e:
            await self._drop(where, name)
            if self._stopping and isinstance(e, Cancelled):
                return None  # daemon stop: reported interrupted at the next start
            if isinstance(e, Cancelled):
                job.finish(JobState.CANCELLED, f"Cancelled; the unfinished copy {where} "
                           "was deleted.")
                return None
            if isinstance(e, NoSpace | NotFound):
                msg = (f"{self._dir} ran out of space; the unfinished copy was deleted. "
                       f"{e.message}" if isinstance(e, NoSpace) else e.message)
                job.update(details={**job.details, "error_name": e.name})
                job.finish(JobState.FAILED, msg, error=msg)
                return None
            if isinstance(e, BtrfsdError):
                job.update(details={**job.details, "error_name": type(e).__name__})
            raise
        job.update(undo={})
        await job.persist()
        return copy

    async def _drop(self, where: str, name: str) -> None:
        try:
            await asyncio.to_thread(remove_partial, self._dir_fd, name, where)
        except (OSError, BtrfsdError) as e:
            log.warning("cannot delete the unfinished copy %s: %s", where, e)

    def _unmounted(self) -> bool:
        return all(f.uuid != self.fs.uuid for f in self.kind.registry.all())

    async def _transfer_and_show(self, job: Job, total: int, send: Callable[[], None]
                                 ) -> None:
        meter = RateMeter()
        work = asyncio.ensure_future(in_own_thread(f"{self.kind.operation}-{job.id}", send))
        try:
            while not work.done():
                await asyncio.wait({work}, timeout=self.kind.poll_interval)
                if not work.done() and self._unmounted():
                    # a lazy umount leaves receive writing into a detached mount
                    raise self._gone()
                now = time.time()
                done = self._transfer.bytes_done
                rate = meter.add(now, done)
                job.update(bytes_done=done, rate=rate,
                           progress=min(done / total, 0.99) if total else 0.0,
                           expected_end_time=RateMeter.expected_end(now, done, total, rate))
        except BaseException:
            self._transfer.stop.set()
            with contextlib.suppress(BaseException):
                await work
            raise
        work.result()
        job.update(bytes_done=self._transfer.bytes_done)

    async def pause(self, job: Job) -> None:
        raise InvalidArgument(f"A {self.what} cannot be paused; cancel it (the unfinished "
                              "copy is deleted) and run it again.")

    async def resume(self, job: Job) -> None:
        raise InvalidArgument(f"A {self.what} cannot be paused or resumed.")

    async def cancel(self, job: Job) -> None:
        """Stop the send, kill btrfs receive; run() deletes the unfinished copy."""
        self._control.request_cancel(job)
        self._transfer.stop.set()

    async def shutdown(self, job: Job) -> None:
        """Stop the transfer and let run() delete the unfinished copy, so the next start
        finds nothing; the job is reported interrupted then."""
        self._stopping = True
        self._transfer.stop.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ended.wait(), 30)


class BackupRunner(ReceivingRunner):
    """Runs one backup into its target directory; the transfer in a thread of its own."""

    def __init__(self, kind: BackupKind, fs: Filesystem, backup: Backup,
                 snapshot_uuid: str = "") -> None:
        super().__init__(kind, fs, backup.rate_limit, backup.target)
        self.backup = backup
        self.snapshot_uuid = snapshot_uuid

    # -- blocking steps ------------------------------------------------------------------
    def _send(self, plan: _Plan) -> None:
        assert plan.snapshot_info is not None
        with paths.resolve(plan.snapshot) as res:
            snap_fd = res.open()
            if subvol.subvolume_info(snap_fd, res.path).uuid != plan.snapshot_info.uuid:
                raise Failed(f"{plan.snapshot} changed while the backup was prepared; run "
                             "it again.")
            parent = plan.parent.id if plan.parent is not None else 0
            self._transfer.run(snap_fd, self._dir_fd, parent_root=parent,
                               clone_roots=[parent] if parent else [])

    # -- steps on the event loop ---------------------------------------------------------
    async def _source_snapshots(self, plan: _Plan) -> list[SubvolumeInfo]:
        items = await self.kind.subvolumes.list(plan.source_fs)
        return [s for s in items if s.parent_uuid == plan.source_uuid and s.read_only]

    async def _pick_snapshot(self, plan: _Plan, snaps: list[SubvolumeInfo]) -> None:
        b = self.backup
        given = [s for s in snaps if s.uuid == self.snapshot_uuid]
        if given and (where := plan.source_fs.path_of(given[0].path)) is not None:
            plan.snapshot, plan.snapshot_info = where, given[0]
            return
        if b.schedule:
            records = self.kind.schedules.records.snapshots
            mine = [s for s in snaps if (r := records.get(s.uuid)) is not None
                    and r.schedule == b.schedule and r.filesystem == plan.source_fs.uuid]
            if mine:
                newest = max(mine, key=lambda s: records[s.uuid].created)
                where = plan.source_fs.path_of(newest.path)
                if where is not None:
                    plan.snapshot, plan.snapshot_info = where, newest
                    return
        plan.snapshot = await self.kind.subvolumes.snapshot(plan.source_fs, b.source)
        plan.snapshot_info = await self.kind.subvolumes.info(plan.source_fs, plan.snapshot)

    def _expected(self, plan: _Plan) -> int:
        """Bytes the stream will carry, from the source's qgroups (0: unknown, quotas
        off). Full: what the snapshot references. Incremental: the growth since the
        parent plus what only the parent still holds (what was rewritten or deleted)."""
        fs = plan.source_fs
        if not fs.quota_enabled or plan.snapshot_info is None:
            return 0
        new = read_qgroup(fs.uuid, 0, plan.snapshot_info.id)
        if new is None:
            return 0
        if plan.parent is None:
            return new.referenced
        old = read_qgroup(fs.uuid, 0, plan.parent.id)
        if old is None:
            return 0
        return max(new.referenced - old.referenced, 0) + old.exclusive

    async def prepare(self, job: Job) -> None:
        """Check the target again (it was checked when set). Raises InvalidArgument,
        NotFound, NotBtrfs, Failed (mounted read-only)."""
        self._dir_fd = await asyncio.to_thread(self._open_dir)
        job.update(details={"backup": self.backup.name, "incremental": False,
                            "snapshot": "", "parent": "", "deleted": 0})

    async def _run(self, job: Job) -> None:
        b = self.backup
        src_fs, _ = await self.kind.subvolumes.resolve(b.source)
        source = await self.kind.subvolumes.info(src_fs, b.source)
        plan = _Plan(src_fs, source.uuid)
        snaps = await self._source_snapshots(plan)
        await self._pick_snapshot(plan, snaps)
        assert plan.snapshot_info is not None
        name = plan.snapshot.rpartition("/")[2]
        copies = await asyncio.to_thread(target_copies, self._dir_fd, b.target)
        received = {c.received_uuid: c for c in copies.values() if complete(c)}
        if plan.snapshot_info.uuid in received:
            await self._retention(job, plan, copies, received[plan.snapshot_info.uuid])
            job.finish(JobState.COMPLETED, f"{plan.snapshot} is already on the target; "
                       "nothing was sent.", success=True)
            return
        if name in copies:
            # left by a run whose clean-up failed (a disk pulled out), or not btrfsd's at
            # all: only a person can tell, so it is named, never deleted
            raise Failed(f"{b.target}/{name} exists and is not a copy of {plan.snapshot}; "
                         "move it away (or delete it if it is an unfinished copy).")
        common = [s for s in snaps if s.uuid in received and s.uuid != plan.snapshot_info.uuid]
        if common:
            plan.parent = max(common, key=lambda s: (s.otime, s.id))
            plan.parent_name = plan.parent.path.rpartition("/")[2]
        total = await asyncio.to_thread(self._expected, plan)
        job.update(details={**job.details, "incremental": plan.parent is not None,
                            "snapshot": plan.snapshot, "parent": plan.parent_name})
        copy = await self._receive(job, name, lambda: self._send(plan), total,
                                   plan.snapshot_info.uuid)
        if copy is None:
            return
        where = f"{b.target}/{name}"
        deleted = await self._retention(job, plan, copies, copy)
        how = (f"incremental against {plan.parent_name}" if plan.parent is not None
               else "full")
        job.finish(JobState.COMPLETED,
                   f"{plan.snapshot} sent to {where} ({how}, "
                   f"{format_bytes(self._transfer.bytes_done)}); {deleted} older copies "
                   "deleted on the target.", success=True)

    async def _retention(self, job: Job, plan: _Plan, copies: dict[str, SubvolumeInfo],
                         newest: SubvolumeInfo) -> int:
        """Delete the target's copies the rules do not keep; the newest copy (the next
        run's parent) is always kept. Returns how many were deleted; a failed delete is
        logged and tried again next run."""
        judged = judge(copies, self.backup.limits(), self.kind.schedules.clock(),
                       self.kind.schedules.tz, newest)
        deleted = 0
        for j in judged:
            if j.decision.keep:
                continue
            c = j.info
            shown = f"{self.backup.target}/{j.name}"
            try:
                await self.kind.subvolumes.delete_by_id(self.fs, c.id, c.uuid, shown)
                deleted += 1
            except BtrfsdError as e:
                log.warning("backup %s could not delete %s: %s", self.backup.name, shown,
                            e.message)
        job.update(details={**job.details, "deleted": deleted})
        return deleted
