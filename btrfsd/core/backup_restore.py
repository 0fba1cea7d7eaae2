"""A backup's copy sent back (RestoreBackup): a job of its own kind (``backup-restore``)
on the destination's filesystem, which may be any btrfs filesystem btrfsd sees.

The copy on the target is sent with the send ioctl and received by ``btrfs receive``
into the destination directory (the checks and clean-up of a backup run:
backup_runner.ReceivingRunner), incrementally when the destination's filesystem still
holds what another copy was made from (its original snapshot, matched by UUID, or an
earlier restored copy, matched by received UUID), else in full. The result is
read-only, like every received subvolume: snapshot it to get a writable one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from dataclasses import dataclass

from ..errors import AlreadyExists, Failed, InvalidArgument, NotFound
from ..fs import paths, subvol
from ..fs.info import SubvolumeInfo
from ..units import format_bytes
from .backup_copies import DIR_FLAGS, complete, target_copies
from .backup_runner import BackupKind, ReceivingRunner
from .backups import Backup
from .filesystems import Filesystem
from .jobkind import expect_params
from .jobs import Job, JobState

log = logging.getLogger(__name__)

RESTORE_OPERATION = "backup-restore"


@dataclass(frozen=True)
class RestoreParams:
    backup: Backup
    copy: str  # a name in the backup's target directory
    dest: str  # absolute path of the directory to receive into


class BackupRestoreKind(BackupKind):
    """Restores of backup copies; recovery (a killed run's unfinished subvolume removed)
    is a backup's."""

    operation = RESTORE_OPERATION

    def runner(self, fs: Filesystem, params: object) -> ReceivingRunner:
        return RestoreRunner(self, fs, expect_params(params, RestoreParams,
                                                     RESTORE_OPERATION))


class RestoreRunner(ReceivingRunner):
    """Sends one copy back into a destination directory."""

    what = "restore"

    def __init__(self, kind: BackupKind, fs: Filesystem, p: RestoreParams) -> None:
        # no rate limit: a restore is wanted as soon as possible
        super().__init__(kind, fs, 0, p.dest)
        self.backup = p.backup
        self.copy = p.copy
        self._copy_fd = -1
        self._copy: SubvolumeInfo | None = None
        self._parent: SubvolumeInfo | None = None
        self._parent_name = ""

    # -- blocking steps ------------------------------------------------------------------
    def _open_copy(self) -> dict[str, SubvolumeInfo]:
        """Open the copy; the other complete copies by name. Raises NotFound,
        InvalidArgument, OSError."""
        target = self.backup.target
        with paths.resolve(target) as res:
            assert res.st is not None
            if not stat.S_ISDIR(res.st.st_mode):
                raise InvalidArgument(f"{res.path} is not a directory.")
            tfd = os.open(".", DIR_FLAGS, dir_fd=res.target_fd)
        try:
            copies = target_copies(tfd, target)
            info = copies.get(self.copy)
            if info is None or not complete(info):
                raise NotFound(f"There is no complete copy {self.copy!r} in {target} "
                               f"(btrfsctl backup explain {self.backup.name} lists them).")
            fd = os.open(self.copy, DIR_FLAGS, dir_fd=tfd)
        finally:
            os.close(tfd)
        if subvol.subvolume_info(fd, f"{target}/{self.copy}").uuid != info.uuid:
            os.close(fd)
            raise Failed(f"{target}/{self.copy} changed while the restore was prepared; "
                         "try again.")
        self._copy_fd, self._copy = fd, info
        return {n: c for n, c in copies.items() if complete(c) and n != self.copy}

    def _name_free(self) -> None:
        try:
            os.stat(self.copy, dir_fd=self._dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        raise AlreadyExists(f"{self._dir}/{self.copy} exists; restore into another "
                            "directory or move it away.")

    def _send(self, parent: int) -> None:
        self._transfer.run(self._copy_fd, self._dir_fd, parent_root=parent,
                           clone_roots=[parent] if parent else [])

    def _close(self) -> None:
        super()._close()
        if self._copy_fd >= 0:
            os.close(self._copy_fd)
            self._copy_fd = -1

    # -- steps on the event loop ---------------------------------------------------------
    async def prepare(self, job: Job) -> None:
        """Check the destination (as a backup target), the copy and the name. Raises
        InvalidArgument, NotFound, NotBtrfs, AlreadyExists, Failed (read-only)."""
        try:
            self._dir_fd = await asyncio.to_thread(self._open_dir)
            others = await asyncio.to_thread(self._open_copy)
            await asyncio.to_thread(self._name_free)
            self._pick_parent(others, await self.kind.subvolumes.list(self.fs))
        except BaseException:
            self._close()
            raise
        job.update(details={"backup": self.backup.name, "copy": self.copy,
                            "dest": self._dir, "incremental": self._parent is not None,
                            "parent": self._parent_name})

    def _pick_parent(self, others: dict[str, SubvolumeInfo],
                     held: list[SubvolumeInfo]) -> None:
        """The copy to send against: one whose original (by UUID) or an earlier restore
        of it (by received UUID) the destination's filesystem holds read-only, where
        btrfs receive can open it; the newest older than the copy sent, else the
        oldest newer one."""
        assert self._copy is not None
        there = {k for s in held if s.read_only and self.fs.path_of(s.path) is not None
                 for k in (s.uuid, s.received_uuid) if k}
        usable = [(n, c) for n, c in others.items() if c.received_uuid in there]
        older = [nc for nc in usable if nc[1].id < self._copy.id]
        if older:
            self._parent_name, self._parent = max(older, key=lambda nc: nc[1].id)
        elif usable:
            self._parent_name, self._parent = min(usable, key=lambda nc: nc[1].id)

    async def _run(self, job: Job) -> None:
        assert self._copy is not None
        expect = self._copy.received_uuid  # the kernel sends a received copy under it
        got = None
        if self._parent is not None:
            parent = self._parent.id
            try:
                got = await self._receive(job, self.copy, lambda: self._send(parent), 0,
                                          expect)
            except Failed as e:
                # btrfs-progs before the fix of its issue 606 finds a clone source only
                # by received UUID, not the original's UUID: send it whole instead
                log.warning("restore of %s against %s failed (%s); sending it in full",
                            self.copy, self._parent_name, e.message)
                self._transfer.bytes_done = 0
                self._parent, self._parent_name = None, ""
                job.update(details={**{k: v for k, v in job.details.items()
                                        if k != "error_name"},
                                     "incremental": False, "parent": ""})
            else:
                if got is None:
                    return  # finished there (cancelled, out of space, gone)
        if got is None:
            got = await self._receive(job, self.copy, lambda: self._send(0), 0, expect)
            if got is None:
                return
        how = (f"incremental against {self._parent_name}" if self._parent is not None
               else "full")
        job.finish(JobState.COMPLETED,
                   f"{self.backup.target}/{self.copy} restored as {self._dir}/{self.copy} "
                   f"({how}, {format_bytes(self._transfer.bytes_done)}); it is read-only: "
                   "snapshot it for a writable copy.", success=True)
