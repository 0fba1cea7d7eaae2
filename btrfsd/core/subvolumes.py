"""Subvolume and snapshot use cases. Async; kernel work runs in threads.

Every method checks its input completely before it changes anything, and raises only
BtrfsdError subclasses.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol, TypeVar

from .. import constants, memory
from ..errors import AlreadyExists, BtrfsdError, Busy, InvalidArgument, NotFound, NotPermitted
from ..fs import layouts, paths, subvol, uuidtree
from ..fs.creds import Creds as Creds  # front ends build it from a caller
from ..fs.creds import acting_as

# SubvolumeInfo is part of the core's vocabulary: front ends take it from here
from ..fs.info import SubvolumeRows as SubvolumeRows
from ..fs.subvol import SubvolumeInfo as SubvolumeInfo
from ..fs.treesearch import RootScan
from .filesystems import Filesystem, Registry, open_mount
from .gate import Gate, wait_at

log = logging.getLogger(__name__)
T = TypeVar("T")
# After a listing this long, the C library is asked to give back the free memory the
# listing and its reply left behind (memory.trim), TRIM_DELAY s later: once the reply is
# sent, and once for a burst of listings.
TRIM_AFTER_ROWS = 1000
TRIM_DELAY = 1.0
# While listings of that many are made or answered again (by callers, or a quota pass),
# every filesystem's last listing is kept (to answer again, or rescan in part after a
# change); all are forgotten this long after the last: a listing of 10,000 holds ~3 MiB
# a daemon that idles should give back (issue 11).
KEEP_BIG_LISTING_FOR = 15.0
SELECTIONS_KEPT = 4  # sources whose snapshots are kept per filesystem (_snapshots_in)
DEFAULT_NAME_TRIES = 8  # default snapshot names tried when others take them meanwhile
DEFAULT_NAMES_A_SECOND = 1000  # -1 ... -999 after a second's first default name
# "nobody", in no group: what this identity can reach, any local user can
ANY_USER = Creds(uid=65534, gid=65534)


def _require_subvolume(res: paths.Resolved) -> None:
    assert res.st is not None
    if not subvol.is_subvolume(res.st):
        raise InvalidArgument(f"{res.path} is not a subvolume.")


def _require_absent(res: paths.Resolved) -> None:
    if res.exists:
        raise AlreadyExists(f"{res.path} already exists; choose another name.")


@contextmanager
def _kernel_judges(creds: Creds | None) -> Iterator[None]:
    """Make the body's kernel calls with ``creds``' filesystem identity (None: as root),
    so the kernel's own permission checks decide; its refusal is NotPermitted."""
    if creds is None:
        yield
        return
    try:
        with acting_as(creds):
            yield
    except BtrfsdError as e:
        if e.errno in (errno.EACCES, errno.EPERM):
            raise NotPermitted(e.message) from None
        raise
    except PermissionError as e:  # os calls made directly (the default snapshot place)
        raise NotPermitted(f"Permission denied: {e.filename or ''}".rstrip(": ")) from None


def reachable_in(fs: Filesystem, rels: list[str], creds: Creds) -> list[bool]:
    """For each path relative to the top level (from the kernel's listing), whether
    ``creds`` could find it by path (blocking): shown by a mount, every directory on the
    way searchable by them. Raises OSError when the identity cannot be taken."""
    where = [fs.path_of(rel) for rel in rels]
    # the names come from the kernel's listing: judging each directory once is enough
    shown = iter(paths.reachable([w for w in where if w is not None], creds,
                                 names_exist=True))
    return [w is not None and next(shown) for w in where]


def _visible(fs: Filesystem, items: Sequence[SubvolumeInfo], creds: Creds
             ) -> list[SubvolumeInfo]:
    """The subvolumes ``creds`` could find by path (blocking)."""
    found = reachable_in(fs, [s.path for s in items], creds)
    return [s for s, ok in zip(items, found, strict=True) if ok]


def _decoded_rows(listing: RootScan, earlier: RootScan | None) -> int:
    """How many rows of ``listing`` a scan made anew (not taken over from ``earlier``)."""
    before = earlier.blocks if earlier is not None else {}
    return sum(len(b.rows) for i, b in listing.blocks.items() if before.get(i) is not b)


class DeleteHook(Protocol):
    """Told around every delete, whoever asks for it (a caller, a schedule's cleanup)."""

    async def before_delete(self, fs: Filesystem) -> None: ...

    def after_delete(self, fs: Filesystem) -> None: ...


class Subvolumes:
    """Subvolume and snapshot operations on the filesystems of a registry."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self.delete_hooks: list[DeleteHook] = []
        # the last listing of each filesystem (by UUID, with the Filesystem it was made
        # for and its version), answered again while it is exact; dropped when the
        # filesystem goes (a copy with the same UUID mounted later repeats its generation
        # numbers)
        self._listings: dict[str, tuple[Filesystem, RootScan, int]] = {}
        # versions name listings: equal versions, equal items (front ends keep a reply
        # made from one and send it again while the version holds)
        self._versions = itertools.count(1)
        # the snapshots of a few sources in the current listing of each filesystem, by
        # filesystem UUID, then (version, source UUID): a page or script that lists one
        # subvolume's snapshots again while nothing changed gets them without a filter
        self._selections: dict[str, dict[tuple[int, str], SubvolumeRows]] = {}
        registry.add_listener(self._forget_listings)
        self._trim: asyncio.TimerHandle | None = None
        # when a big listing was last made or answered again, and the timer that forgets
        # the kept listings after; the loop it runs on, for listings made in threads
        self._big_listed = 0.0
        self._forget_big: asyncio.TimerHandle | None = None
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # made outside the event loop (tests): set by list_versioned
            self._loop = None

    def _forget_listings(self, added: list[Filesystem], removed: list[Filesystem]) -> None:
        for fs in removed:
            self._listings.pop(fs.uuid, None)
            self._selections.pop(fs.uuid, None)

    def _snapshots_in(self, fs: Filesystem, version: int, every: SubvolumeRows,
                      uuid: str) -> SubvolumeRows:
        """The snapshots of the subvolume with ``uuid`` in listing ``version`` of ``fs``
        (``every``), kept for SELECTIONS_KEPT sources until the listing changes."""
        kept = self._selections.setdefault(fs.uuid, {})
        found = kept.get((version, uuid))
        if found is None:
            if any(v != version for v, _ in kept):  # an older listing's: never again
                kept.clear()
            while len(kept) >= SELECTIONS_KEPT:
                del kept[next(iter(kept))]  # the oldest
            found = kept[(version, uuid)] = every.snapshots_of(uuid)
        return found

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.to_thread(fn, *args)

    def _member(self, fs: Filesystem, res: paths.Resolved, fd: int) -> None:
        fsid = subvol.fsid_of(fd, res.path)
        self._registry.check_member(fs, fsid, res.path)

    def _parent_member(self, fs: Filesystem, res: paths.Resolved) -> None:
        """Check that the directory a new object goes into belongs to ``fs``."""
        self._member(fs, res, res.open_parent())

    # -- reading ---------------------------------------------------------------------
    def resolve_filesystem(self, path: str, as_caller: Creds | None = None
                           ) -> tuple[Filesystem, str]:
        """Return the filesystem a path is on and the subvolume path containing it (blocking).
        With ``as_caller``, a path that caller could not reach does not exist.

        Raises InvalidArgument, NotFound, NotBtrfs.
        """
        with paths.resolve(path, as_caller=as_caller) as res:
            assert res.st is not None
            # Opening a FIFO or device could block or have side effects: use the directory.
            fd = res.open() if stat.S_ISDIR(res.st.st_mode) else res.open_parent()
            fs = self._registry.by_fsid(subvol.fsid_of(fd, res.path), res.path)
            return fs, subvol.containing_subvolume(fd, res.path).path

    async def resolve(self, path: str, as_caller: Creds | None = None
                      ) -> tuple[Filesystem, str]:
        """The filesystem a path is on and the subvolume path containing it (as
        ``resolve_filesystem``).

        Raises InvalidArgument, NotFound, NotBtrfs.
        """
        return await self._run(self.resolve_filesystem, path, as_caller)

    def listed(self, fs: Filesystem, fd: int) -> SubvolumeRows:
        """Every subvolume of ``fs``, whose mount ``fd`` has open: the last listing again
        while a search of the leaves changed since proves it exact (fs/treesearch.py),
        else a new one that decodes only what changed. Blocking (worker threads).
        Raises BtrfsdError."""
        return self._versioned(fs, fd)[0]

    def _versioned(self, fs: Filesystem, fd: int) -> tuple[SubvolumeRows, int]:
        # Threads may race here; each result is exact when made and the last one stays.
        held = self._listings.get(fs.uuid)
        earlier = held[1] if held is not None and held[0] is fs else None
        listing = subvol.list_all(fd, earlier)
        if held is not None and listing is earlier:
            version = held[2]
        else:
            version = next(self._versions)
            if _decoded_rows(listing, earlier) >= TRIM_AFTER_ROWS:
                # kept until the next change: made again once the scan's short-lived
                # objects and the originals are gone, so that it pins no arena they
                # filled (memory.freeze)
                frozen = memory.freeze(listing)
                del listing, earlier, held
                self._listings.pop(fs.uuid, None)
                listing = memory.thaw(frozen, RootScan)
        self._listings[fs.uuid] = (fs, listing, version)
        if len(listing.items) >= TRIM_AFTER_ROWS and self._loop is not None:
            # whoever listed (a caller, a quota pass in its own thread): the timer runs
            # on the loop
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self._note_big)
        return listing.items, version

    def _list(self, fs: Filesystem) -> tuple[SubvolumeRows, int]:
        fd = open_mount(fs)
        try:
            return self._versioned(fs, fd)
        finally:
            os.close(fd)

    async def reachable(self, where: list[str], creds: Creds | None) -> list[bool]:
        """For each absolute path, whether ``creds`` could find it (all True for None or
        root). Raises OSError when the identity cannot be taken."""
        if creds is None or creds.is_root:
            return [True] * len(where)
        return await self._run(paths.reachable, where, creds)

    async def is_public(self, path: str) -> bool:
        """Whether any local user could reach an absolute ``path``: what may be said to
        everyone, in a broadcast signal say. Raises nothing (False when it cannot
        tell)."""
        if not path:
            return False
        try:
            return (await self.reachable([path], ANY_USER))[0]
        except OSError as e:
            log.warning("cannot tell whether %s is public: %s", path, e)
            return False

    async def list(self, fs: Filesystem, *, snapshots_of: str = "",
                   visible_to: Creds | None = None) -> list[SubvolumeInfo]:
        """List every subvolume of ``fs`` (paths relative to the top level).

        With ``snapshots_of`` (an absolute path of a subvolume) only its snapshots. With
        ``visible_to`` only what that caller could find by path themselves (fs/creds.py).
        Raises BtrfsdError.
        """
        return [*(await self.list_versioned(fs, snapshots_of=snapshots_of,
                                            visible_to=visible_to))[0]]

    async def list_versioned(self, fs: Filesystem, *, snapshots_of: str = "",
                             visible_to: Creds | None = None
                             ) -> tuple[SubvolumeRows, tuple[int, str] | None]:
        """As ``list``, with a key that names the result: the same key, the same items
        (the listing's version and the uuid of ``snapshots_of``); None for a caller's
        own view (what a caller can reach changes with permissions, not the tree).
        Raises BtrfsdError."""
        self._loop = asyncio.get_running_loop()  # before the listing: it tells the loop
        source, every, version = await self._run(self._source_and_list, fs, snapshots_of,
                                                 visible_to)
        if len(every) >= TRIM_AFTER_ROWS and self._trim is None:
            self._trim = self._loop.call_later(TRIM_DELAY, self._trimmed)
        items = every if source is None else self._snapshots_in(fs, version, every,
                                                                source.uuid)
        if visible_to is not None and not visible_to.is_root:
            return SubvolumeRows(await self._run(_visible, fs, items, visible_to)), None
        return items, (version, "" if source is None else source.uuid)

    def _source_and_list(self, fs: Filesystem, snapshots_of: str, as_caller: Creds | None
                         ) -> tuple[SubvolumeInfo | None, SubvolumeRows, int]:
        # one trip to a worker thread for both (a listing of snapshots: ~0.1-0.2 ms less)
        source = self._info(fs, snapshots_of, as_caller) if snapshots_of else None
        return (source, *self._list(fs))

    def _trimmed(self) -> None:
        self._trim = None
        memory.trim()

    def _note_big(self) -> None:
        """A big listing was made or answered again (on the loop): keep the kept
        listings KEEP_BIG_LISTING_FOR seconds from now."""
        loop = asyncio.get_running_loop()
        self._big_listed = loop.time()
        if self._forget_big is None:
            self._forget_big = loop.call_later(KEEP_BIG_LISTING_FOR, self._forget_idle)

    def _forget_idle(self) -> None:
        """Forget the kept listings once nobody listed a big one for KEEP_BIG_LISTING_FOR
        seconds (the next listing scans the whole tree again), and give the memory back."""
        loop = asyncio.get_running_loop()
        idle = loop.time() - self._big_listed
        if idle < KEEP_BIG_LISTING_FOR:
            self._forget_big = loop.call_later(KEEP_BIG_LISTING_FOR - idle, self._forget_idle)
            return
        self._forget_big = None
        self._listings.clear()
        self._selections.clear()
        memory.trim()

    def _info(self, fs: Filesystem, path: str, as_caller: Creds | None) -> SubvolumeInfo:
        with paths.resolve(path, as_caller=as_caller) as res:
            _require_subvolume(res)
            fd = res.open()
            self._member(fs, res, fd)
            return subvol.subvolume_info(fd, res.path)

    async def info(self, fs: Filesystem, path: str, *, as_caller: Creds | None = None
                   ) -> SubvolumeInfo:
        """Return the subvolume at an absolute path (with ``as_caller``: as that caller
        could find it, else NotFound). Raises BtrfsdError."""
        return await self._run(self._info, fs, path, as_caller)

    def _by_id(self, fs: Filesystem, fn: Callable[[int], T]) -> T:
        """``fn`` on the open mount of ``fs``, checked to be ``fs`` (blocking: work by
        subvolume id, which needs no path below the mount)."""
        fd = open_mount(fs)
        try:
            mp = fs.primary_mount.mount_point
            # the mount point is a name, looked up when opened: make sure it still is fs
            self._registry.check_member(fs, subvol.fsid_of(fd, mp), mp)
            return fn(fd)
        finally:
            os.close(fd)

    async def named_by_uuid(self, fs: Filesystem) -> uuidtree.Named | None:
        """The subvolumes of ``fs`` that its UUID tree names (the top level too), to ask
        by UUID: 40 bytes each to read, against a listing's few hundred. A subvolume
        missing there may still exist (fs/uuidtree.py: a tree still being filled after
        mounting an old filesystem). None when the filesystem has no UUID tree. Raises
        BtrfsdError."""
        try:
            return await self._run(self._by_id, fs, uuidtree.read_named)
        except NotFound:
            return None

    async def info_by_id(self, fs: Filesystem, subvolume_id: int) -> SubvolumeInfo:
        """The subvolume ``subvolume_id`` of ``fs`` (path from the top level). Raises
        NotFound when there is none, BtrfsdError."""
        return await self._run(self._by_id, fs, lambda fd: subvol.subvolume_info_by_id(
            fd, subvolume_id))

    # -- changing --------------------------------------------------------------------
    def _create(self, fs: Filesystem, path: str, as_caller: Creds | None) -> str:
        with paths.resolve(path, must_exist=False, as_caller=as_caller) as res:
            _require_absent(res)
            self._parent_member(fs, res)
            with _kernel_judges(as_caller):
                subvol.create_subvolume(res)
            return res.path

    async def create(self, fs: Filesystem, path: str, *, as_caller: Creds | None = None
                     ) -> str:
        """Create an empty subvolume; return its canonical path. With ``as_caller`` the
        kernel decides with that caller's identity (they need write access to the
        directory). Raises BtrfsdError (NotPermitted when the kernel refuses them)."""
        made = await self._run(self._create, fs, path, as_caller)
        log.info("subvolume created path=%s fs=%s", made, fs.uuid)
        return made

    def _protect(self, fs: Filesystem, info: SubvolumeInfo, path: str) -> None:
        if info.id == constants.TOP_LEVEL_SUBVOLUME_ID:
            raise InvalidArgument(
                f"{path} is the top level of the filesystem; it cannot be deleted."
            )
        if info.id in fs.mounted_subvolume_ids():
            where = [m.mount_point for m in fs.mounts if m.subvolume_id == info.id]
            raise Busy(f"{path} is mounted at {', '.join(where)}; unmount it first.")
        if info.id == fs.default_subvolume_id:
            raise Busy(f"{path} is the default subvolume; make another one the default first.")

    def _delete(self, fs: Filesystem, path: str, recursive: bool,
                as_caller: Creds | None) -> str:
        with paths.resolve(path, as_caller=as_caller) as res:
            _require_subvolume(res)
            assert res.st is not None
            if as_caller is not None and res.st.st_uid != as_caller.uid:
                # the kernel would let anyone with write access to the directory delete
                # it; an own-objects grant covers only what the caller owns
                raise NotPermitted(f"{res.path} belongs to uid {res.st.st_uid}, not to you.")
            fd = res.open()
            self._member(fs, res, fd)
            info = subvol.subvolume_info(fd, res.path)
            self._protect(fs, info, res.path)
            nested = list(subvol.iter_subvolumes(fd))
            if nested and not recursive:
                raise Busy(
                    f"{res.path} contains {len(nested)} nested subvolume(s); delete them "
                    "first or pass the recursive option."
                )
            for n in nested:
                self._protect(fs, n, f"{res.path}/{n.path}")
            # by the id checked above, from the fd it was read on: a swap of the name
            # (or of any directory on the way to a nested one) cannot redirect it
            with _kernel_judges(as_caller):
                left = subvol.delete_subvolume(fd, res.path, info, nested)
            for s in left:
                log.warning("recursive delete of %s left nested subvolume %s alone: %s",
                            res.path, s.path, s.why)
            return res.path

    def _delete_by_id(self, fs: Filesystem, subvolume_id: int, expect_uuid: str,
                      shown: str) -> None:
        self._by_id(fs, lambda fd: self._delete_id_at(fs, fd, subvolume_id, expect_uuid,
                                                      shown))

    def _delete_id_at(self, fs: Filesystem, fd: int, subvolume_id: int, expect_uuid: str,
                      shown: str) -> None:
        try:
            info = subvol.subvolume_info_by_id(fd, subvolume_id)
        except NotFound:
            raise NotFound(f"{shown} (subvolume id {subvolume_id}) no longer "
                           "exists.") from None
        if info.uuid != expect_uuid:
            raise NotFound(
                f"{shown} (subvolume id {subvolume_id}) is gone: that id now holds "
                f"the subvolume with UUID {info.uuid or 'none'}, not {expect_uuid}, "
                "which is left alone.")
        self._protect(fs, info, shown)
        nested = list(subvol.iter_subvolumes(fd, top=subvolume_id))
        if nested:
            raise Busy(
                f"{shown} contains {len(nested)} nested subvolume(s); delete them "
                "first or pass the recursive option."
            )
        subvol.delete_subvolume(fd, shown, info)

    async def _with_delete_hooks(self, fs: Filesystem, fn: Callable[..., T],
                                 *args: object) -> T:
        for hook in self.delete_hooks:
            await hook.before_delete(fs)
        try:
            return await self._run(fn, *args)
        finally:
            for hook in self.delete_hooks:
                hook.after_delete(fs)

    async def delete(self, fs: Filesystem, path: str, *, recursive: bool = False,
                     as_caller: Creds | None = None) -> str:
        """Delete a subvolume or snapshot (and nested ones if ``recursive``).

        Refuses the top level, mounted subvolumes and the default subvolume. A nested
        subvolume moved out meanwhile is left alone (logged); one that keeps the
        subvolume from being deleted is named in the error. With ``as_caller`` the kernel
        decides with that caller's identity (write access to the directory, and the
        sticky bit's ownership rule). Raises BtrfsdError (NotPermitted).
        """
        gone = await self._with_delete_hooks(fs, self._delete, fs, path, recursive,
                                             as_caller)
        log.info("subvolume deleted path=%s fs=%s recursive=%s", gone, fs.uuid, recursive)
        return gone

    async def delete_by_id(self, fs: Filesystem, subvolume_id: int, expect_uuid: str,
                           shown: str) -> None:
        """Delete the subvolume ``subvolume_id`` of ``fs`` if its UUID is still
        ``expect_uuid``: no path is walked, so wherever it was moved it is this one or
        none. ``shown`` names it in messages (its path as last seen).

        The same refusals as ``delete`` (top level, mounted, default, nested ones).
        Raises NotFound (gone, or the id now holds another subvolume), BtrfsdError.
        """
        await self._with_delete_hooks(fs, self._delete_by_id, fs, subvolume_id, expect_uuid,
                                      shown)
        log.info("subvolume deleted id=%d uuid=%s path=%s fs=%s", subvolume_id, expect_uuid,
                 shown, fs.uuid)

    @staticmethod
    def default_snapshot_dir(fd: int, source_path: str) -> str:
        """Name of the directory in the source (open as ``fd``) for default snapshots.

        ``.snapshots`` as before, unless another tool owns it (snapper's subvolume, or
        snapper's or btrbk's snapshots inside): then ``.btrfsd-snapshots``, and that one
        for good once it exists, so the place does not flip back (docs/coexistence.md).
        Raises InvalidArgument when the directories cannot be examined.
        """
        try:
            if layouts.lstat_at(fd, layouts.BTRFSD_SNAPSHOT_DIR) is not None:
                # Whatever it is: a non-directory there is refused by the caller, never
                # silently passed over for .snapshots.
                return layouts.BTRFSD_SNAPSHOT_DIR
            owner = layouts.foreign_owner(fd, constants.DEFAULT_SNAPSHOT_DIR)
        except OSError as e:
            raise InvalidArgument(
                f"Cannot examine {source_path}/{constants.DEFAULT_SNAPSHOT_DIR} "
                f"({os.strerror(e.errno or 0)}); give a destination."
            ) from e
        if owner is None:
            return constants.DEFAULT_SNAPSHOT_DIR
        log.info("%s/%s belongs to another tool (%s); default snapshots go to %s",
                 source_path, constants.DEFAULT_SNAPSHOT_DIR, owner,
                 layouts.BTRFSD_SNAPSHOT_DIR)
        return layouts.BTRFSD_SNAPSHOT_DIR

    def _default_destination(self, source: paths.Resolved, when: float | None,
                             gate: Gate | None) -> tuple[str, tuple[int, int]]:
        """The path of a free default name for a snapshot of ``source``, and the
        (device, inode) of the directory it was checked in (made if missing; waits at
        ``gate`` before making anything or choosing the name). Raises InvalidArgument
        (no usable directory), AlreadyExists (every name of that second taken), GateShut,
        OSError."""
        stamp = time.strftime(constants.SNAPSHOT_NAME_FORMAT, time.gmtime(when))
        fd = source.open()
        dirname = self.default_snapshot_dir(fd, source.path.rstrip("/"))
        base = source.path.rstrip("/") + "/" + dirname
        try:
            st = os.stat(dirname, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            wait_at(gate)  # making the directory is the call's first change
            try:
                os.mkdir(dirname, 0o750, dir_fd=fd)
            except FileExistsError:
                pass
            except OSError as e:
                raise InvalidArgument(
                    f"Cannot make {base} ({os.strerror(e.errno or 0)}); give a destination."
                ) from e
            st = os.stat(dirname, dir_fd=fd, follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode):
            raise InvalidArgument(f"{base} is not a directory; give a destination.")
        # In a directory others may write to (a sticky shared one), someone else could
        # have made this directory first and would then own root's snapshots in it.
        trusted = {0, os.fstat(fd).st_uid}
        if st.st_uid not in trusted:
            raise InvalidArgument(
                f"{base} belongs to uid {st.st_uid}, neither root nor the owner of "
                f"{source.path}; btrfsd puts no snapshots there. Give a destination.")
        # Two snapshots in one second get -1, -2, ... so names stay unique and sortable.
        # Chosen once the call may go on, so that a call held at its gate (for polkit's
        # answer) does not hold on to a name another call then takes.
        wait_at(gate)
        name = stamp
        for n in range(1, DEFAULT_NAMES_A_SECOND + 1):
            try:
                os.stat(f"{dirname}/{name}", dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                return f"{base}/{name}", (st.st_dev, st.st_ino)
            name = f"{stamp}-{n}"
        raise AlreadyExists(f"{base} holds {DEFAULT_NAMES_A_SECOND} snapshots named for "
                            f"{stamp}; give a destination.")

    def _snapshot(self, fs: Filesystem, source: str, dest: str, read_only: bool,
                  recursive: bool, when: float | None = None,
                  as_caller: Creds | None = None, gate: Gate | None = None) -> str:
        with paths.resolve(source, as_caller=as_caller) as src:
            _require_subvolume(src)
            src_fd = src.open()
            self._member(fs, src, src_fd)
            if dest:
                return self._snapshot_to(fs, src, src_fd, dest, read_only, recursive,
                                         as_caller, gate)
            if recursive:
                raise InvalidArgument(
                    "A recursive snapshot needs a destination outside its source; the "
                    f"default place ({constants.DEFAULT_SNAPSHOT_DIR} inside the source) "
                    "would take in earlier snapshots."
                )
            # The default name is the first free one: another call (or anyone) may take
            # it between the look and the snapshot, and this call then takes the next.
            for attempt in range(DEFAULT_NAME_TRIES):
                with _kernel_judges(as_caller):
                    dest, checked = self._default_destination(src, when, gate)
                try:
                    return self._snapshot_to(fs, src, src_fd, dest, read_only, False,
                                             as_caller, gate, checked)
                except AlreadyExists:
                    if attempt == DEFAULT_NAME_TRIES - 1:
                        raise
            raise AssertionError("unreachable")

    def _snapshot_to(self, fs: Filesystem, src: paths.Resolved, src_fd: int, dest: str,
                     read_only: bool, recursive: bool, as_caller: Creds | None,
                     gate: Gate | None, checked: tuple[int, int] | None = None) -> str:
        with paths.resolve(dest, must_exist=False, as_caller=as_caller) as dst:
            _require_absent(dst)
            self._parent_member(fs, dst)
            if checked is not None:
                # the default place is walked again by name: it must still be the
                # directory whose owner was checked (an ancestor renamed meanwhile)
                parent = os.fstat(dst.open_parent())
                if (parent.st_dev, parent.st_ino) != checked:
                    raise Busy(f"{os.path.dirname(dst.path)} changed while the snapshot "
                               "was being made; try again.")
            if recursive and dst.path.startswith(src.path.rstrip("/") + "/"):
                raise InvalidArgument(
                    f"A recursive snapshot of {src.path} cannot be placed inside it "
                    f"({dst.path}): it would take in earlier snapshots; give a "
                    "destination outside the source."
                )
            wait_at(gate)  # everything before only looked
            with _kernel_judges(as_caller):
                subvol.create_snapshot(
                    src_fd, src.path, dst, read_only=read_only, recursive=recursive
                )
            return dst.path

    async def snapshot(self, fs: Filesystem, source: str, dest: str = "", *,
                       read_only: bool = True, recursive: bool = False,
                       when: float | None = None, as_caller: Creds | None = None,
                       gate: Gate | None = None) -> str:
        """Snapshot ``source`` to ``dest`` (default ``<source>/.snapshots/<UTC time>``, or
        ``.btrfsd-snapshots`` beside snapper or btrbk: docs/coexistence.md). With
        ``as_caller`` the kernel decides with that caller's identity (they must own the
        source and may write the destination directory). With ``gate``, the path walks
        and checks go on before it opens; making anything waits for it (core/gate.py).

        Returns the snapshot's path. Raises BtrfsdError (NotPermitted; AlreadyExists when
        the default names stayed taken over DEFAULT_NAME_TRIES tries; Busy when the default
        place changed meanwhile; GateShut when the gate was shut, with nothing made).
        """
        made = await self._run(self._snapshot, fs, source, dest, read_only, recursive, when,
                               as_caller, gate)
        log.info("snapshot created source=%s path=%s read_only=%s recursive=%s fs=%s",
                 source, made, read_only, recursive, fs.uuid)
        return made

    def _set_read_only(self, fs: Filesystem, path: str, read_only: bool) -> None:
        with paths.resolve(path) as res:
            _require_subvolume(res)
            fd = res.open()
            self._member(fs, res, fd)
            if subvol.subvolume_info(fd, res.path).id == constants.TOP_LEVEL_SUBVOLUME_ID:
                raise InvalidArgument("The top level of a filesystem cannot be made read-only.")
            subvol.set_read_only(fd, res.path, read_only)

    async def set_read_only(self, fs: Filesystem, path: str, read_only: bool) -> None:
        """Set or clear a subvolume's read-only flag. Raises BtrfsdError."""
        await self._run(self._set_read_only, fs, path, read_only)
        log.info("read-only flag set path=%s read_only=%s fs=%s", path, read_only, fs.uuid)

    def _set_default(self, fs: Filesystem, path: str) -> int:
        with paths.resolve(path) as res:
            _require_subvolume(res)
            fd = res.open()
            self._member(fs, res, fd)
            info = subvol.subvolume_info(fd, res.path)
            subvol.set_default_subvolume(fd, res.path)
            fs.default_subvolume_id = info.id
            return info.id

    async def set_default(self, fs: Filesystem, path: str) -> int:
        """Make a subvolume the default mounted one; return its id. Raises BtrfsdError."""
        sid = await self._run(self._set_default, fs, path)
        log.info("default subvolume set path=%s id=%d fs=%s", path, sid, fs.uuid)
        return sid

