"""Restore as a job kind: files and directories from a read-only snapshot put back into
the live subvolume (or under a destination), data shared by reflink (fs/restore.py).

Everything is checked before anything changes: the snapshot (read-only, a snapshot, of
this filesystem), each path (inside it, no link on the way, no device, FIFO or socket
anywhere below), each target directory, and the space a copy would need. The target
directories are written to the job's record (``undo``: path -> 1) before the first
temporary is made, so the next start removes a killed run's temporaries.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import stat
from dataclasses import dataclass, field

from ..errors import BtrfsdError, Busy, InvalidArgument, NoSpace, NotBtrfs, NotFound
from ..fs import paths, subvol
from ..fs import restore as frestore
from ..units import format_bytes
from .filesystems import Filesystem, Registry, open_mount
from .jobkind import Adoption, RunnerControl, expect_params
from .jobs import Job, JobRecord, JobState
from .lineage import live_of
from .subvolumes import Subvolumes
from .threads import in_own_thread

log = logging.getLogger(__name__)

OPERATION = "restore"


@dataclass(frozen=True)
class RestoreParams:
    snapshot: str  # absolute path of a read-only snapshot
    paths: tuple[str, ...]  # inside it: relative, or absolute below the snapshot
    destination: str = ""  # a directory to restore into instead of the original places
    overwrite: bool = False  # replace what is there instead of moving it aside


def _remove_leftovers(dir_path: str, job_id: int) -> None:
    """Remove a job's temporaries from one target directory (blocking). Raises
    BtrfsdError, OSError."""
    with paths.resolve(dir_path) as res:
        assert res.st is not None
        if not stat.S_ISDIR(res.st.st_mode):
            return
        fd = res.open()
        gone = frestore.remove_leftovers(fd, job_id)
        if gone:
            log.info("removed %d unfinished restore temporaries of job %d in %s", gone,
                     job_id, dir_path)


class RestoreKind:
    """Restore jobs. The kernel runs none of its own: nothing to find or follow."""

    operation = OPERATION

    def __init__(self, registry: Registry, subvolumes: Subvolumes,
                 poll_interval: float) -> None:
        self.registry = registry
        self.subvolumes = subvolumes
        self.poll_interval = poll_interval

    def runner(self, fs: Filesystem, params: object) -> RestoreRunner:
        p = expect_params(params, RestoreParams, OPERATION)
        return RestoreRunner(self, fs, p)

    def find(self, fs: Filesystem, fd: int) -> Adoption | None:
        return None

    def recover(self, fs: Filesystem | None, record: JobRecord) -> Adoption | None:
        """Remove the temporaries a killed run left in its target directories; the job
        is then reported interrupted (every file is old or restored)."""
        for dir_path in record.undo:
            try:
                _remove_leftovers(dir_path, record.id)
            except (OSError, BtrfsdError) as e:
                log.warning("cannot remove restore temporaries of job %d in %s: %s",
                            record.id, dir_path, e)
            except Exception:  # a clean-up bug must not keep the daemon from starting
                log.exception("cannot remove restore temporaries of job %d in %s",
                              record.id, dir_path)
        return None


@dataclass
class _Plan:
    sources: list[frestore.Source] = field(default_factory=list)
    targets: list[frestore.Target] = field(default_factory=list)

    def close(self) -> None:
        for s in self.sources:
            s.close()
        for t in self.targets:
            t.close()

    @property
    def files(self) -> int:
        return sum(s.files for s in self.sources)

    @property
    def size(self) -> int:
        return sum(s.size for s in self.sources)


class RestoreRunner:
    """Runs one restore in a thread of its own; the event loop shows its progress."""

    def __init__(self, kind: RestoreKind, fs: Filesystem, params: RestoreParams) -> None:
        self.kind = kind
        self.fs = fs
        self.params = params
        self._plan = _Plan()
        self._copier: frestore.Copier | None = None
        self._work: asyncio.Future[None] | None = None
        self._stopping = False
        self._control = RunnerControl(OPERATION)

    # -- checks (blocking) ------------------------------------------------------------
    def _open_snapshot(self, res: paths.Resolved) -> int:
        if res.st is None or not subvol.is_subvolume(res.st):
            raise InvalidArgument(f"{res.path} is not a snapshot (not a subvolume).")
        fd = res.open()
        self.kind.registry.check_member(self.fs, subvol.fsid_of(fd, res.path), res.path)
        info = subvol.subvolume_info(fd, res.path)
        if not info.parent_uuid:
            raise InvalidArgument(f"{res.path} is not a snapshot; restore takes files from "
                                  "a read-only snapshot.")
        if not info.read_only:
            raise InvalidArgument(f"{res.path} is writable: its files can change while they "
                                  "are restored. Restore from a read-only snapshot.")
        return fd

    def _live_root(self, snap_fd: int, snap_path: str) -> tuple[str, str]:
        mfd = open_mount(self.fs)
        try:
            items = self.kind.subvolumes.listed(self.fs, mfd)
        finally:
            os.close(mfd)
        snap = subvol.subvolume_info(snap_fd, snap_path)
        mine = next((s for s in items if s.uuid == snap.uuid), snap)
        live = live_of(mine, items)
        where = self.fs.path_of(live.path)
        if where is None:
            raise NotFound(f"The subvolume {snap_path} was taken of is not mounted anywhere; "
                           "give a destination.")
        return where, live.uuid

    def _relative(self, snap_path: str, path: str) -> list[str]:
        if path.startswith("/"):
            prefix = snap_path.rstrip("/") + "/"
            if not path.startswith(prefix):
                raise InvalidArgument(f"{path} is outside the snapshot {snap_path}; give "
                                      "paths inside it (or relative to it).")
            path = path[len(prefix):]
        parts = frestore.split_relative(path)
        if not parts:
            raise InvalidArgument("Restoring the snapshot's root would replace the whole "
                                  "subvolume; that is a rollback.")
        return parts

    def _target_dir(self, live_fd: int, live_path: str, parts: list[str]
                    ) -> tuple[int, str]:
        shown = "/".join([live_path.rstrip("/"), *parts[:-1]])
        try:
            handle = paths.descend(live_fd, parts[:-1])
        except paths.Stuck as e:
            if e.error.errno == errno.ENOENT:
                raise NotFound(f"{shown} does not exist any more; restore the directory "
                               "above it instead.") from None
            raise InvalidArgument(f"{shown} goes through a symbolic link or a "
                                  "non-directory; restore under a destination.") from None
        try:
            return os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC,
                           dir_fd=handle), shown
        finally:
            os.close(handle)

    def _same_fs(self, fd: int, shown: str) -> bool:
        try:
            return subvol.fsid_of(fd, shown) == self.fs.uuid
        except NotBtrfs:
            return False

    def _prepare_blocking(self, job_id: int) -> dict[str, int]:
        p = self.params
        if not p.paths:
            raise InvalidArgument("Give at least one path to restore.")
        with paths.resolve(p.snapshot) as snap:
            snap_fd = self._open_snapshot(snap)
            snap_dev = os.fstat(snap_fd).st_dev
            dest: tuple[int, str] | None = None
            live_res: paths.Resolved | None = None
            live_fd = -1
            try:
                if p.destination:
                    with paths.resolve(p.destination) as d:
                        assert d.st is not None
                        if not stat.S_ISDIR(d.st.st_mode):
                            raise InvalidArgument(f"{d.path} is not a directory.")
                        dest = (os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC,
                                        dir_fd=d.target_fd), d.path)
                else:
                    live_path, live_uuid = self._live_root(snap_fd, snap.path)
                    live_res = paths.resolve(live_path)
                    live_fd = live_res.open()
                    if subvol.subvolume_info(live_fd, live_path).uuid != live_uuid:
                        raise Busy(f"{live_path} changed while the restore was prepared; "
                                   "try again.")
                self._plan_all(snap_fd, snap.path, snap_dev, dest, live_res, live_fd)
            finally:
                if dest is not None:
                    os.close(dest[0])
                if live_res is not None:
                    live_res.close()
        self._check_space()
        return {t.dir_shown: 1 for t in self._plan.targets}

    def _plan_all(self, snap_fd: int, snap_path: str, snap_dev: int,
                  dest: tuple[int, str] | None, live_res: paths.Resolved | None,
                  live_fd: int) -> None:
        p = self.params
        seen: dict[tuple[str, str], str] = {}
        for path in p.paths:
            parts = self._relative(snap_path, path)
            shown = "/".join(parts)
            src = frestore.open_source(snap_fd, parts, shown)
            self._plan.sources.append(src)
            frestore.measure(src, snap_dev)
            if dest is not None:
                dir_fd = os.dup(dest[0])
                dir_shown = dest[1]
            else:
                assert live_res is not None
                dir_fd, dir_shown = self._target_dir(live_fd, live_res.path, parts)
            target = frestore.Target(dir_fd, dir_shown, parts[-1])
            self._plan.targets.append(target)
            target.reflink = self._same_fs(dir_fd, dir_shown)
            if p.overwrite and not target.reflink:
                raise InvalidArgument(f"{dir_shown} is on another filesystem than the "
                                      "snapshot; btrfsd does not overwrite there. Restore "
                                      "without overwrite (existing files are moved aside).")
            key = (dir_shown, parts[-1])
            if key in seen:
                raise InvalidArgument(f"{shown} and {seen[key]} would both be restored to "
                                      f"{dir_shown}/{parts[-1]}.")
            seen[key] = shown
            target.existing = frestore.lstat_at(dir_fd, parts[-1])
            if (p.overwrite and target.existing is not None
                    and stat.S_ISDIR(target.existing.st_mode)
                    and frestore.holds_other_mounts(dir_fd, parts[-1])):
                raise InvalidArgument(f"{dir_shown}/{parts[-1]} is or holds a subvolume or "
                                      "mount point; btrfsd does not overwrite it. Restore "
                                      "without overwrite.")
        if dest is None:
            self._refuse_nesting([s.shown for s in self._plan.sources])

    @staticmethod
    def _refuse_nesting(shown: list[str]) -> None:
        for a in shown:
            for b in shown:
                if a != b and b.startswith(a + "/"):
                    raise InvalidArgument(f"{b} is inside {a}, which is restored as a "
                                          "whole; give one of them.")

    def _check_space(self) -> None:
        need: dict[int, tuple[int, str]] = {}
        for src, t in zip(self._plan.sources, self._plan.targets, strict=True):
            if t.reflink:
                continue  # shared data: metadata only
            dev = os.fstat(t.dir_fd).st_dev
            total, _ = need.get(dev, (0, t.dir_shown))
            need[dev] = (total + src.allocated, t.dir_shown)
        for dev, (total, shown) in need.items():
            fd = next(t.dir_fd for t in self._plan.targets if os.fstat(t.dir_fd).st_dev == dev)
            st = os.fstatvfs(fd)
            free = st.f_bavail * st.f_frsize
            if total > free:
                raise NoSpace(f"{shown} has {format_bytes(free)} free; the restore copies "
                              f"{format_bytes(total)} there (another filesystem: no "
                              "reflinks).")

    # -- the Runner protocol ---------------------------------------------------------
    async def prepare(self, job: Job) -> None:
        """Check everything, then record the target directories (crash clean-up).
        Raises InvalidArgument, NotFound, NoSpace."""
        try:
            undo = await asyncio.to_thread(self._prepare_blocking, job.id)
        except OSError as e:
            self._plan.close()
            raise frestore.explain(e, "Cannot prepare the restore") from None
        except BaseException:
            self._plan.close()
            raise
        job.update(bytes_total=self._plan.size, undo=undo,
                   details={"files_done": 0, "files_total": self._plan.files,
                            "bytes_copied": 0, "moved_aside": 0, "replaced": 0})
        await job.persist()

    def _run_blocking(self, copier: frestore.Copier) -> None:
        # A job's message is shown to every caller (properties carry no caller), so it
        # names no file: the path's number; the log has the names.
        count = len(self._plan.sources)
        for i, (src, target) in enumerate(zip(self._plan.sources, self._plan.targets,
                                              strict=True), 1):
            try:
                copier.restore(src, target)
            except OSError as e:
                log.warning("restore of %s into %s failed: %s", src.shown, target.dir_shown,
                            e)
                if e.errno == errno.ENOSPC:
                    raise NoSpace(f"The target of path {i} of {count} ran out of space; "
                                  "that path was left as it was (the log names it).") from None
                raise frestore.explain(e, f"Cannot restore path {i} of {count} (the log "
                                       "names it)") from None
            except BtrfsdError as e:
                log.warning("restore of %s into %s failed: %s", src.shown, target.dir_shown,
                            e.message)
                raise type(e)(f"Cannot restore path {i} of {count} (the log names it)."
                              ) from None

    def _show(self, job: Job, copier: frestore.Copier) -> None:
        files_total = self._plan.files or 1
        done = copier.files_done / files_total
        if self._plan.size:
            done = (done + copier.bytes_done / self._plan.size) / 2
        job.update(progress=min(done, 1.0), bytes_done=copier.bytes_done,
                   details={**job.details, "files_done": copier.files_done,
                            "bytes_copied": copier.bytes_copied,
                            "moved_aside": copier.moved_aside, "replaced": copier.replaced})

    async def run(self, job: Job) -> None:
        """Restore every path, showing progress; finish the job (see Runner.run)."""
        copier = frestore.Copier(job.id, frestore.stamp(), self.params.overwrite)
        self._copier = copier
        self._work = asyncio.ensure_future(in_own_thread(f"restore-{job.id}",
                                                         self._run_blocking, copier))
        try:
            while not self._work.done():
                await asyncio.wait({self._work}, timeout=self.kind.poll_interval)
                self._show(job, copier)
            try:
                self._work.result()
            except frestore.Stopped:
                if self._stopping:
                    return  # daemon stop: the next start reports it interrupted
                job.finish(JobState.CANCELLED, self._summary(copier, "Cancelled; ") +
                           " The path being restored when it stopped was left as it was.")
                return
            except BtrfsdError as e:
                msg = f"{e.message} {self._summary(copier, 'Before that: ')}"
                job.finish(JobState.FAILED, msg, error=msg)
                return
            job.finish(JobState.COMPLETED, self._summary(copier, ""), success=True)
        finally:
            if not self._stopping:
                self._plan.close()

    def _summary(self, c: frestore.Copier, lead: str) -> str:
        how = (f"{format_bytes(c.bytes_copied)} copied (another filesystem), the rest "
               "shared by reflink" if c.bytes_copied else "data shared by reflink")
        text = (f"{lead}{c.placed_files} of {self._plan.files} entries restored "
                f"({format_bytes(c.placed_bytes)}, {how}).")
        if c.moved_aside:
            text += (f" {c.moved_aside} existing entries were moved aside as "
                     f"NAME{frestore.ASIDE_INFIX}{c.stamp}.")
        if c.replaced:
            text += f" {c.replaced} existing entries were replaced."
        return text

    async def pause(self, job: Job) -> None:
        raise InvalidArgument("A restore cannot be paused; cancel it (what is restored "
                              "stays restored) and start it again.")

    async def resume(self, job: Job) -> None:
        raise InvalidArgument("A restore cannot be paused or resumed.")

    async def cancel(self, job: Job) -> None:
        """Stop after the entry being made (it is removed again)."""
        self._control.request_cancel(job)
        if self._copier is not None:
            self._copier.stop.set()

    async def shutdown(self, job: Job) -> None:
        """Stop and remove the temporary being made, so the next start finds nothing to
        clean up; the job is reported interrupted then."""
        self._stopping = True
        if self._copier is not None:
            self._copier.stop.set()
        if self._work is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._work), 30)
        self._plan.close()
