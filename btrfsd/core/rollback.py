"""Rollback: make a subvolume a writable copy of one of its snapshots, keeping what it
was as a read-only snapshot next to the others.

A subvolume that is not separately mounted (nor the default) is swapped in place; the
path never stops existing. Step by step, and what a crash after each step leaves:

1. a writable snapshot of the snapshot is made beside the subvolume, named
   ``.btrfsd-rollback-<time>-<name>``. Crash: that extra subvolume (a copy of the
   snapshot; delete it).
2. the two names are exchanged (renameat2 RENAME_EXCHANGE): the path is the new copy,
   the temporary name holds the old state, complete. Crash: the old state under the
   temporary name; nothing is lost.
3. the old state's nested subvolumes (its snapshots among them) move into the new one
   at the same places; the kernel moves no read-only subvolume to another directory,
   so each read-only one is made writable, moved and made read-only again, but only
   from a directory no one but root can enter (btrfsd's own ``.snapshots`` is 0750
   root): a user who reached it in that moment could open files in it and keep writing
   through them after it is read-only again. Read-only ones elsewhere, and received
   ones, stay in the kept state (the reply's note names them). Crash: each nested
   subvolume is in one of the two, none lost; the one being moved may be left
   writable.
4. the old state is renamed into the new subvolume's snapshot directory under the
   current time, then 5. made read-only. Crash between 4 and 5: the old state is there
   but still writable.

A subvolume that is mounted of its own or is the default (the root, say) cannot be
swapped under its users: as snapper does, the current state is kept as a read-only
snapshot, a writable copy of the snapshot is made in the snapshot directory and set as
the default subvolume. That takes effect at the next mount or boot; a mount naming
``subvol=``/``subvolid=`` keeps mounting the old one until that option is changed.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
import time
from dataclasses import dataclass

from .. import constants
from ..errors import AlreadyRunning, BtrfsdError, Failed, InvalidArgument, from_errno
from ..fs import libbtrfsutil, paths, subvol
from ..fs.rename import exchange, rename_new
from ..fs.restore import lstat_at
from .filesystems import Filesystem, Registry, open_mount
from .jobmanager import JobManager, job_running_hint
from .lineage import belongs_to
from .restore_runner import OPERATION as RESTORE
from .subvolumes import Subvolumes

log = logging.getLogger(__name__)

TEMP_PREFIX = ".btrfsd-rollback-"
# a nested subvolume appears in a snapshot as an empty directory with this inode number
EMPTY_SUBVOL_DIR_INO = 2
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass(frozen=True)
class RollbackResult:
    saved: str  # the read-only snapshot of what the subvolume was
    new_default: str = ""  # set as the default subvolume (mounted/default case)
    note: str = ""  # what a person must know (takes effect at the next mount/boot, ...)


def _closed_to_users(dir_fd: int) -> bool:
    """Whether only root can enter the directory open as ``dir_fd``: owned by root, no
    search permission for others, nor for a group other than root's."""
    st = os.fstat(dir_fd)
    mode = stat.S_IMODE(st.st_mode)
    return st.st_uid == 0 and not mode & 0o001 and (st.st_gid == 0 or not mode & 0o010)


def _free_name(dir_fd: int, base: str) -> str:
    name, n = base, 0
    while lstat_at(dir_fd, name) is not None:
        n += 1
        name = f"{base}-{n}"
    return name


def _open_dir(dir_fd: int, name: str, shown: str) -> int:
    try:
        return os.open(name, _DIR, dir_fd=dir_fd)
    except OSError as e:
        raise from_errno(e.errno or 0, f"Cannot open {shown}: "
                         f"{os.strerror(e.errno or 0)}.") from e


class Rollback:
    """Rollbacks on the filesystems of a registry."""

    def __init__(self, registry: Registry, subvolumes: Subvolumes, jobs: JobManager) -> None:
        self._registry = registry
        self._subvolumes = subvolumes
        self._jobs = jobs

    async def rollback(self, fs: Filesystem, subvolume: str, snapshot: str
                       ) -> RollbackResult:
        """Make ``subvolume`` a writable copy of ``snapshot`` (one of its snapshots, also
        one taken before an earlier rollback); return where its old state is kept.

        Raises InvalidArgument (the top level, a read-only target, the snapshot itself,
        a snapshot of another subvolume or filesystem), AlreadyRunning (a restore runs
        on the filesystem: its files would land in the old state), NotFound, BtrfsdError.
        """
        for job in self._jobs.jobs():
            if job.active and job.filesystem == fs.uuid and job.operation == RESTORE:
                raise AlreadyRunning(f"A {job.describe()} is writing into "
                                     f"{fs.primary_mount.mount_point}; roll back after it "
                                     "ends.", hint=job_running_hint(job))
        result = await asyncio.to_thread(self._rollback, fs, subvolume, snapshot)
        log.info("rollback subvolume=%s snapshot=%s saved=%s new_default=%s fs=%s",
                 subvolume, snapshot, result.saved, result.new_default, fs.uuid)
        if result.note:
            log.warning("%s", result.note)
        return result

    def _check(self, fs: Filesystem, s_res: paths.Resolved, p_res: paths.Resolved
               ) -> tuple[int, int, subvol.SubvolumeInfo, subvol.SubvolumeInfo]:
        for res in (s_res, p_res):
            assert res.st is not None
            if not subvol.is_subvolume(res.st):
                raise InvalidArgument(f"{res.path} is not a subvolume.")
        s_fd, p_fd = s_res.open(), p_res.open()
        for res, fd in ((s_res, s_fd), (p_res, p_fd)):
            self._registry.check_member(fs, subvol.fsid_of(fd, res.path), res.path)
        s = subvol.subvolume_info(s_fd, s_res.path)
        p = subvol.subvolume_info(p_fd, p_res.path)
        if s.id == constants.TOP_LEVEL_SUBVOLUME_ID:
            raise InvalidArgument("The top level of a filesystem cannot be rolled back.")
        if s.uuid == p.uuid:
            raise InvalidArgument(f"{p_res.path} is {s_res.path} itself; give one of its "
                                  "snapshots.")
        if s.read_only:
            raise InvalidArgument(f"{s_res.path} is read-only (a snapshot?); roll back the "
                                  "writable subvolume it belongs to.")
        mfd = open_mount(fs)
        try:
            items = self._subvolumes.listed(fs, mfd)
        finally:
            os.close(mfd)
        if not belongs_to(p, s, items):
            raise InvalidArgument(f"{p_res.path} is not a snapshot of {s_res.path}.")
        return s_fd, p_fd, s, next((i for i in items if i.uuid == s.uuid), s)

    def _rollback(self, fs: Filesystem, subvolume: str, snapshot: str) -> RollbackResult:
        with paths.resolve(subvolume) as s_res, paths.resolve(snapshot) as p_res:
            s_fd, p_fd, s, listed = self._check(fs, s_res, p_res)
            p = subvol.subvolume_info(p_fd, p_res.path)
            stamp = time.strftime(constants.SNAPSHOT_NAME_FORMAT, time.gmtime())
            default = subvol.default_subvolume_id(s_fd)
            if s.id in fs.mounted_subvolume_ids() or s.id == default or s_res.parent_fd is None:
                return self._by_default(fs, s_res, s_fd, p_fd, listed, stamp)
            return self._swap(s_res, s_fd, p_fd, s, p, stamp)

    # -- the mounted or default subvolume: a new default -----------------------------------
    def _snapshot_dir(self, fd: int, shown: str) -> tuple[int, str]:
        name = Subvolumes.default_snapshot_dir(fd, shown)
        try:
            os.mkdir(name, 0o750, dir_fd=fd)
        except FileExistsError:
            pass
        except OSError as e:
            raise from_errno(e.errno or 0, f"Cannot make {shown}/{name}: "
                             f"{os.strerror(e.errno or 0)}.") from e
        st = lstat_at(fd, name)
        if st is None or not stat.S_ISDIR(st.st_mode):
            raise InvalidArgument(f"{shown}/{name} is not a directory.")
        return _open_dir(fd, name, f"{shown}/{name}"), name

    def _by_default(self, fs: Filesystem, s_res: paths.Resolved, s_fd: int, p_fd: int,
                    s: subvol.SubvolumeInfo, stamp: str) -> RollbackResult:
        top = s_res.path.rstrip("/")
        dir_fd, dirname = self._snapshot_dir(s_fd, top)
        try:
            saved = _free_name(dir_fd, stamp)
            subvol.kernel_call(f"Cannot snapshot {top}", libbtrfsutil.create_snapshot,
                               s_fd, dir_fd, saved, read_only=True)
            fresh = _free_name(dir_fd, f"{stamp}-rollback")
            subvol.kernel_call(f"Cannot make a writable copy of {s_res.path}",
                               libbtrfsutil.create_snapshot, p_fd, dir_fd, fresh,
                               read_only=False)
            n_fd = _open_dir(dir_fd, fresh, f"{top}/{dirname}/{fresh}")
            try:
                new = subvol.subvolume_info(n_fd, fresh)
                subvol.set_default_subvolume(n_fd, f"{top}/{dirname}/{fresh}")
            finally:
                os.close(n_fd)
        finally:
            os.close(dir_fd)
        fs.default_subvolume_id = new.id
        new_path = f"{top}/{dirname}/{fresh}"
        rel = "/".join(x for x in (s.path, dirname, fresh) if x)
        note = (f"{new_path} (subvolume id {new.id}) is now the default subvolume: the "
                "rollback takes effect at the next mount or boot; until then "
                f"{s_res.path} stays as it is.")
        for m in fs.mounts:
            if m.subvolume_id == s.id:
                note += (f" {m.mount_point} mounts it with subvol={m.options.get('subvol', '')}"
                         f",subvolid={s.id}: where /etc/fstab or the boot loader (rootflags=)"
                         f" names subvol= or subvolid=, change it to subvol=/{rel} (or "
                         "remove it, so the default is mounted).")
        return RollbackResult(saved=f"{top}/{dirname}/{saved}", new_default=new_path,
                              note=note)

    # -- a plain subvolume: swapped in place ------------------------------------------
    def _swap(self, s_res: paths.Resolved, s_fd: int, p_fd: int, s: subvol.SubvolumeInfo,
              p: subvol.SubvolumeInfo, stamp: str) -> RollbackResult:
        parent = s_res.open_parent()
        name = s_res.name
        tmp = _free_name(parent, f"{TEMP_PREFIX}{stamp}-{name}"[:255])
        shown_tmp = s_res.path.rsplit("/", 1)[0] + "/" + tmp
        subvol.kernel_call(f"Cannot make a writable copy of {p.path}",
                           libbtrfsutil.create_snapshot, p_fd, parent, tmp, read_only=False)
        try:
            exchange(parent, tmp, name)
        except OSError as e:
            try:
                libbtrfsutil.delete_subvolume(parent, tmp)
            except OSError:
                log.warning("cannot remove the unused copy %s", shown_tmp)
            raise from_errno(e.errno or 0, f"Cannot swap {s_res.path} for its copy: "
                             f"{os.strerror(e.errno or 0)}.") from e
        # the path is the new copy now; the old state is under the temporary name
        where = (f"The old state of {s_res.path} is kept, complete, as {shown_tmp}.")
        try:
            old_fd = _open_dir(parent, tmp, shown_tmp)
            new_fd = _open_dir(parent, name, s_res.path)
            try:
                left = self._move_nested(old_fd, new_fd, s)
                dir_fd, dirname = self._snapshot_dir(new_fd, s_res.path)
                try:
                    saved = _free_name(dir_fd, stamp)
                    # moved while writable: the kernel moves no read-only subvolume to
                    # another directory
                    rename_new(parent, tmp, dir_fd, saved)
                    where = (f"The old state of {s_res.path} is kept, complete but still "
                             f"writable, as {s_res.path}/{dirname}/{saved}.")
                    subvol.set_read_only(old_fd, saved, True)
                finally:
                    os.close(dir_fd)
            finally:
                os.close(old_fd)
                os.close(new_fd)
        except OSError as e:
            raise Failed(f"The rollback of {s_res.path} stopped half-way "
                         f"({os.strerror(e.errno or 0)}). {where}") from e
        except BtrfsdError as e:
            raise Failed(f"The rollback of {s_res.path} stopped half-way ({e.message}) "
                         f"{where}") from e
        saved_path = f"{s_res.path}/{dirname}/{saved}"
        note = ""
        if left:
            note = (f"Nested subvolumes whose place in the snapshot is taken stayed in the "
                    f"kept state {saved_path}: {', '.join(left)}.")
        return RollbackResult(saved=saved_path, note=note)

    def _move_nested(self, old_fd: int, new_fd: int, s: subvol.SubvolumeInfo) -> list[str]:
        """Move the old state's direct nested subvolumes to the same places in the new
        one (snapshots stay next to the subvolume); return those whose place is taken."""
        left = []
        children = [c for c in subvol.iter_subvolumes(old_fd) if c.parent_id == s.id]
        for c in children:
            parent_rel, _, cname = c.path.rpartition("/")
            dst = self._dirs_like(old_fd, new_fd, parent_rel)
            src = subvol.open_dir_beneath(old_fd, parent_rel)
            if dst is None or src is None:
                left.append(c.path)
                for fd in (dst, src):
                    if fd is not None:
                        os.close(fd)
                continue
            try:
                there = lstat_at(dst, cname)
                if (there is not None and stat.S_ISDIR(there.st_mode)
                        and there.st_ino == EMPTY_SUBVOL_DIR_INO):
                    os.rmdir(cname, dir_fd=dst)  # the snapshot's stand-in for it
                    there = None
                if there is not None:
                    left.append(c.path)
                    continue
                if not self._move_one(src, dst, cname, c, old_fd):
                    left.append(c.path)
            finally:
                os.close(src)
                os.close(dst)
        return left

    @staticmethod
    def _move_one(src: int, dst: int, cname: str, c: subvol.SubvolumeInfo,
                  old_fd: int) -> bool:
        """Move one nested subvolume; False when it cannot move (mounted, received).
        The kernel moves no read-only subvolume to another directory: one is made
        writable for the move and read-only again right after (a crash in between leaves
        it writable). A received one is never made writable (that would end its
        incremental send/receive line): it stays."""
        if c.read_only and c.received_uuid:
            return False
        if c.read_only and not _closed_to_users(src):
            # while writable, a user who can reach it opens files in it, and those stay
            # writable after it is read-only again (the kernel checks at open): only
            # where no one but root can reach it (btrfsd's own 0750 .snapshots) is it
            # made writable for the move; elsewhere it stays in the kept state
            return False
        fd = subvol.open_nested(old_fd, c) if c.read_only else None
        if c.read_only and fd is None:
            return False
        try:
            if fd is not None:
                subvol.set_read_only(fd, c.path, False)
            try:
                rename_new(src, cname, dst, cname)
                return True
            except OSError as e:
                if e.errno not in (errno.EBUSY, errno.EEXIST, errno.EXDEV):
                    raise
                return False
            finally:
                if fd is not None:
                    subvol.set_read_only(fd, c.path, True)
        finally:
            if fd is not None:
                os.close(fd)

    @staticmethod
    def _dirs_like(old_fd: int, new_fd: int, rel: str) -> int | None:
        """Open ``rel`` below ``new_fd``, making missing directories as they are below
        ``old_fd`` (owner, mode). None when something else is in the way."""
        cur_new, cur_old = os.dup(new_fd), os.dup(old_fd)
        try:
            for part in [p for p in rel.split("/") if p]:
                st_old = os.stat(part, dir_fd=cur_old, follow_symlinks=False)
                st_new = lstat_at(cur_new, part)
                if st_new is None:
                    os.mkdir(part, 0o700, dir_fd=cur_new)
                    fd = os.open(part, _DIR, dir_fd=cur_new)
                    os.fchown(fd, st_old.st_uid, st_old.st_gid)
                    os.fchmod(fd, stat.S_IMODE(st_old.st_mode))
                elif not stat.S_ISDIR(st_new.st_mode):
                    return None
                else:
                    fd = os.open(part, _DIR, dir_fd=cur_new)
                os.close(cur_new)
                cur_new = fd
                nxt = os.open(part, _DIR, dir_fd=cur_old)
                os.close(cur_old)
                cur_old = nxt
            result, cur_new = cur_new, -1
            return result
        finally:
            if cur_new >= 0:
                os.close(cur_new)
            os.close(cur_old)
