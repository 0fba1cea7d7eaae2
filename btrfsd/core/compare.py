"""Compare two snapshots of one subvolume: which paths were added, deleted, changed or
renamed (the kernel's send stream says, fs/send.py; no walk of either tree).

``new`` may be the live subvolume: then it is compared through a temporary read-only
snapshot, made next to ``old`` under a name starting with TEMP_PREFIX and deleted (by
id) whatever happens; one left by a crash is deleted at the next start
(``remove_leftovers``).

A reply is paged (offset/limit): the rows of the last comparison are kept, so the next
pages of the same pair (offset > 0) come from the same result, also for a live ``new``;
a first page (offset 0) always compares afresh.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from dataclasses import dataclass

from ..errors import InvalidArgument, NotFound
from ..fs import paths, send, subvol
from ..fs.changes import Change
from .filesystems import Filesystem, Registry
from .subvolumes import SubvolumeInfo, Subvolumes

log = logging.getLogger(__name__)

TEMP_PREFIX = ".btrfsd-compare-"

Key = tuple[str, str, int, str, int]


@dataclass(frozen=True)
class Comparison:
    """The changed paths from ``old`` to ``new`` (absolute paths as checked), sorted."""

    old: str
    new: str
    rows: list[Change]


@dataclass
class _Run:
    """What one comparison made on its way (the temporary snapshot, to be deleted)."""

    temp: SubvolumeInfo | None = None
    temp_path: str = ""


def _require_subvolume(res: paths.Resolved) -> None:
    assert res.st is not None
    if not subvol.is_subvolume(res.st):
        raise InvalidArgument(f"{res.path} is not a subvolume or snapshot.")


def _check_pair(old: SubvolumeInfo, new: SubvolumeInfo, old_path: str, new_path: str
                ) -> None:
    """Refuse a pair that is not an older read-only snapshot and a newer state of the
    same subvolume. Raises InvalidArgument."""
    if old.id == new.id:
        raise InvalidArgument(f"{old_path} and {new_path} are the same subvolume; give two "
                              "different snapshots.")
    if not old.read_only:
        raise InvalidArgument(f"{old_path} is writable; the older side of a comparison must "
                              "be a read-only snapshot.")
    if not new.read_only:
        if old.parent_uuid != new.uuid:
            raise InvalidArgument(f"{old_path} is not a snapshot of {new_path}; compare "
                                  "snapshots of the same subvolume.")
        return
    if new.parent_uuid and new.parent_uuid == old.uuid:
        return  # new was taken of old
    if old.parent_uuid and old.parent_uuid == new.uuid:
        raise InvalidArgument(f"{old_path} was taken of {new_path}, so it is the newer one; "
                              "give the older snapshot first.")
    if not old.parent_uuid or old.parent_uuid != new.parent_uuid:
        raise InvalidArgument(f"{old_path} and {new_path} are not snapshots of the same "
                              "subvolume.")
    if (old.otime, old.id) > (new.otime, new.id):
        raise InvalidArgument(f"{old_path} is newer than {new_path}; give the older "
                              "snapshot first.")


class Comparisons:
    """CompareSnapshots' use case, on the filesystems of a registry."""

    def __init__(self, registry: Registry, subvolumes: Subvolumes) -> None:
        self._registry = registry
        self._subvolumes = subvolumes
        self._last: tuple[Key, Comparison] | None = None

    def _member(self, fs: Filesystem, res: paths.Resolved, fd: int) -> None:
        self._registry.check_member(fs, subvol.fsid_of(fd, res.path), res.path)

    def _source_of(self, fs: Filesystem, old: str) -> str:
        """Where the subvolume the snapshot ``old`` was taken of is mounted (absolute).
        Raises NotFound (gone), InvalidArgument (not a snapshot, or shown by no mount),
        BtrfsdError."""
        with paths.resolve(old) as o:
            fd = o.open()
            self._member(fs, o, fd)
            _require_subvolume(o)
            info = subvol.subvolume_info(fd, o.path)
            if not info.parent_uuid:
                raise InvalidArgument(f"{o.path} is not a snapshot; give both sides.")
            source = next((s for s in self._subvolumes.listed(fs, fd)
                           if s.uuid == info.parent_uuid), None)
        if source is None:
            raise NotFound(f"The subvolume {o.path} was taken of no longer exists; give "
                           "the newer side.")
        where = fs.path_of(source.path)
        if where is None:
            raise InvalidArgument(f"The subvolume {o.path} was taken of ({source.path}) "
                                  "is not mounted anywhere; give the newer side.")
        return where

    def _compare(self, fs: Filesystem, old: str, new: str, fresh: bool, run: _Run
                 ) -> Comparison:
        """Blocking: check, maybe take the temporary snapshot (noted in ``run``), read
        the stream. Raises BtrfsdError."""
        if not new:
            new = self._source_of(fs, old)
        with paths.resolve(old) as o, paths.resolve(new) as n:
            ofd = o.open()
            self._member(fs, o, ofd)
            nfd = n.open()
            self._member(fs, n, nfd)
            _require_subvolume(o)
            _require_subvolume(n)
            oinfo = subvol.subvolume_info(ofd, o.path)
            ninfo = subvol.subvolume_info(nfd, n.path)
            _check_pair(oinfo, ninfo, o.path, n.path)
            key = (fs.uuid, oinfo.uuid, oinfo.generation, ninfo.uuid, ninfo.generation)
            last = self._last
            if last is not None and last[0] == key and not fresh:
                return last[1]
            if ninfo.read_only:
                result = Comparison(o.path, n.path, send.changed_paths(ofd, oinfo.id, nfd))
            else:
                tfd = self._take_temporary(fs, o, nfd, ninfo, run)
                # taking the snapshot commits, which moves the live one's generation:
                # the next page must find the result under the generation it sees then
                key = (fs.uuid, oinfo.uuid, oinfo.generation, ninfo.uuid,
                       subvol.subvolume_info(nfd, n.path).generation)
                try:
                    result = Comparison(o.path, n.path,
                                        send.changed_paths(ofd, oinfo.id, tfd))
                finally:
                    os.close(tfd)
            self._last = (key, result)
            return result

    def _take_temporary(self, fs: Filesystem, o: paths.Resolved, nfd: int,
                        ninfo: SubvolumeInfo, run: _Run) -> int:
        """Snapshot the live subvolume (open as ``nfd``) read-only next to ``o``; return
        an fd of it the caller closes. Raises BtrfsdError."""
        base = o.path.rpartition("/")[0]
        where = f"{base}/{TEMP_PREFIX}{secrets.token_hex(8)}"
        with paths.resolve(where, must_exist=False) as dst:
            if dst.exists:
                raise InvalidArgument(f"{where} exists; try again.")
            self._member(fs, dst, dst.open_parent())
            subvol.create_snapshot(nfd, where, dst, read_only=True, recursive=False)
            fd = dst.open_created()
            info = subvol.subvolume_info(fd, where)
            if info.parent_uuid != ninfo.uuid or not info.read_only:
                raise InvalidArgument(f"{where} was replaced while it was being made; "
                                      "try again.")
            run.temp, run.temp_path = info, where
            return os.dup(fd)  # outlives the resolution

    async def compare(self, fs: Filesystem, old: str, new: str, *, fresh: bool = True
                      ) -> Comparison:
        """The changed paths from the read-only snapshot ``old`` to ``new`` (a newer
        snapshot of the same subvolume, or that subvolume itself; empty: the subvolume
        ``old`` was taken of, where a mount shows it), absolute paths. With
        ``fresh`` false, the result kept from the last comparison of the same pair (and
        the same generations) answers if there is one (a next page).

        Raises InvalidArgument (not snapshots of one subvolume, another filesystem,
        ``old`` writable or newer, symbolic links), NotFound, NotBtrfs, BtrfsdError.
        """
        run = _Run()
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(None, self._compare, fs, old, new, fresh, run)
        try:
            return await asyncio.shield(work)
        finally:
            if not work.done():
                # cancelled: the thread still reads the stream of the temporary
                # snapshot, which cannot be deleted before it is done
                await asyncio.wait([work])
            if run.temp is not None:
                await asyncio.shield(self._drop(fs, run.temp, run.temp_path))

    async def _drop(self, fs: Filesystem, temp: SubvolumeInfo, shown: str) -> None:
        try:
            await self._subvolumes.delete_by_id(fs, temp.id, temp.uuid, shown)
        except Exception:
            log.exception("cannot delete the temporary snapshot %s (id %d); the next start "
                          "retries", shown, temp.id)

    async def remove_leftovers(self) -> int:
        """Delete temporary snapshots a crash left behind (read-only snapshots named
        TEMP_PREFIX...) on every filesystem; return how many. Raises nothing."""
        gone = 0
        for fs in self._registry.all():
            try:
                items = await self._subvolumes.list(fs)
            except Exception:
                log.exception("cannot look for leftover comparison snapshots on %s", fs.uuid)
                continue
            for s in items:
                if (s.path.rpartition("/")[2].startswith(TEMP_PREFIX) and s.read_only
                        and s.parent_uuid):
                    log.info("deleting the leftover comparison snapshot %s", s.path)
                    await self._drop(fs, s, s.path)
                    gone += 1
        return gone

