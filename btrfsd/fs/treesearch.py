"""List every subvolume with one stream of BTRFS_IOC_TREE_SEARCH_V2 over the root tree,
as btrfs-progs does, instead of libbtrfsutil's several searches per subvolume; and tell,
for the price of a few leaves, whether a listing made earlier is still exact.

How a listing is known to be still exact (``unchanged``): every search result carries
the generation of the leaf it came from, and btrfs changes a leaf only in the running
transaction, copying it first if it is older, so a changed leaf (and its copy-on-write
ancestors) has at least that transaction's generation. A scan notes the running
transaction's id G when it starts (FS_INFO) and a digest of the items it read from
leaves of generation G or newer. Searching again with ``min_transid = G`` returns exactly
the items of such leaves today (the kernel skips whole subtrees older than G); if they
hash to the same digest, no leaf of the range changed since the scan began: a change
would have copied a leaf into this set, or changed, added or removed items of one in it.
A scan spans several ioctl calls, so it checks itself that way at its end: a change
while it ran (a subvolume caught mid-rename, say) makes it scan again, and a scan that
never settles is not reused. A subvolume's path also depends on the names of the
directories it sits in (not in the root tree until the next commit), so those are looked
up again each time (INO_LOOKUP, one per directory that holds subvolumes).

Blocking; needs CAP_SYS_ADMIN. Raises BtrfsdError on ioctl failure.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import struct
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from ..constants import TOP_LEVEL_SUBVOLUME_ID
from ..errors import BtrfsdError, from_errno
from .info import SubvolumeInfo
from .ioctl import fs_generation, iowr

ROOT_TREE_OBJECTID = 1
FS_TREE_OBJECTID = TOP_LEVEL_SUBVOLUME_ID  # the top level's tree
FIRST_FREE_OBJECTID = 256
LAST_FREE_OBJECTID = 2**64 - 256  # -256ULL
ROOT_ITEM_KEY = 132
ROOT_BACKREF_KEY = 144
U64_MAX = 2**64 - 1

# struct btrfs_ioctl_search_key (7 x u64, 3 x u32 + u32 unused, 4 x u64 unused), then
# the v2 buf_size (u64).
_SEARCH_V2_HEAD = struct.Struct("=7Q4I4QQ")
BTRFS_IOC_TREE_SEARCH_V2 = iowr(17, _SEARCH_V2_HEAD.size)
# struct btrfs_ioctl_search_header
_ITEM_HEADER = struct.Struct("=QQQII")
# struct btrfs_root_ref
_ROOT_REF = struct.Struct("=QQH")
# struct btrfs_ioctl_ino_lookup_args
_INO_LOOKUP = struct.Struct("=QQ4080s")
BTRFS_IOC_INO_LOOKUP = iowr(18, _INO_LOOKUP.size)

# Fields of struct btrfs_root_item (packed; 439 bytes in the v2 layout), in one unpack:
# generation at 160, flags at 208, uuid/parent_uuid/received_uuid at 247, then ctime and
# otime (btrfs_timespec: u64 sec, u32 nsec) at 327.
_ROOT_ITEM_V1 = struct.Struct("=160xQ40xQ")
_ROOT_ITEM_V2 = struct.Struct("=160xQ40xQ31x16s16s16s32xQIQI")
ROOT_ITEM_V2_SIZE = 439

# Room for ~270 root items per call. A search restarts from its key cheaply, while a
# bigger buffer costs its zeroing on every call (and, above malloc's mmap threshold, a
# fresh mapping and its page faults: btrfsd/memory.py): in-process at 10,000 subvolumes
# the check that a listing is still exact took 4-5 ms with 2 MiB and 0.15 ms with this,
# a listing after a change 92-102 ms and 69-77 ms.
_BUF_SIZE = 128 * 1024


def _search(fd: int, tree_id: int, min_key: tuple[int, int, int],
            max_key: tuple[int, int, int], min_transid: int = 0
            ) -> Iterator[tuple[int, int, int, int, memoryview]]:
    """Yield (leaf generation, objectid, type, offset, data) of every item between two
    keys, in key order; with ``min_transid`` only those of leaves of that generation or
    newer."""
    objectid, type_, offset = min_key
    while True:
        buf = bytearray(_SEARCH_V2_HEAD.size + _BUF_SIZE)
        _SEARCH_V2_HEAD.pack_into(
            buf, 0, tree_id, objectid, max_key[0], offset, max_key[2], min_transid, U64_MAX,
            type_, max_key[1], 4096, 0, 0, 0, 0, 0, _BUF_SIZE,
        )
        try:
            fcntl.ioctl(fd, BTRFS_IOC_TREE_SEARCH_V2, buf, True)
        except OSError as e:
            raise from_errno(e.errno or 0, f"Cannot search the root tree: {e.strerror}.") from e
        nr_items = struct.unpack_from("=I", buf, 7 * 8 + 2 * 4)[0]
        if nr_items == 0:
            return
        pos = _SEARCH_V2_HEAD.size
        view = memoryview(buf)  # slices without copying; each call gets a fresh buffer
        last = (objectid, type_, offset)
        unpack, head = _ITEM_HEADER.unpack_from, _ITEM_HEADER.size
        for _ in range(nr_items):
            transid, oid, off, typ, length = unpack(buf, pos)
            pos += head
            yield transid, oid, typ, off, view[pos:pos + length]
            pos += length
        last = (oid, typ, off)
        # Continue after the last key returned (offset, then type, then objectid carry).
        objectid, type_, offset = last
        if offset < U64_MAX:
            offset += 1
        elif type_ < 255:
            type_, offset = type_ + 1, 0
        elif objectid < U64_MAX:
            objectid, type_, offset = objectid + 1, 0, 0
        else:
            return
        if (objectid, type_, offset) > max_key:
            return


def _ino_path(fd: int, tree_id: int, dirid: int) -> str:
    """Path of directory ``dirid`` inside subvolume ``tree_id`` ('' for its root)."""
    if dirid == FIRST_FREE_OBJECTID:
        return ""
    buf = bytearray(_INO_LOOKUP.pack(tree_id, dirid, b""))
    try:
        fcntl.ioctl(fd, BTRFS_IOC_INO_LOOKUP, buf, True)
    except OSError as e:
        raise from_errno(e.errno or 0, f"Cannot look up a subvolume's place: {e.strerror}.") from e
    name: bytes = _INO_LOOKUP.unpack(buf)[2]
    return name.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


_NO_UUID = bytes(16)


def format_uuid(raw: bytes) -> str:
    """16 raw bytes as a dashed UUID string; '' for all zeros (no UUID)."""
    if raw == _NO_UUID:
        return ""
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# The root tree's part that lists subvolumes: their root items and backrefs.
_RANGE_MIN = (FIRST_FREE_OBJECTID, ROOT_ITEM_KEY, 0)
_RANGE_MAX = (LAST_FREE_OBJECTID, ROOT_BACKREF_KEY, U64_MAX)
_DIGEST_KEY = struct.Struct("=QQQQ")
# A root item's fields a listing shows: uuid, parent uuid, received uuid, generation,
# ctime, otime, read-only.
RootFields = tuple[str, str, str, int, float, float, bool]
Ref = tuple[int, int, str]  # parent subvolume id, directory inode in it, name


@dataclass(frozen=True)
class RootScan:
    """A listing of every subvolume but the top level (by id), and what makes telling
    whether it is still exact (``unchanged``) and a next listing (``list_subvolumes``)
    cheap: the generation of the transaction that ran when the scan began (-1: the scan
    could not be proved consistent, it is never reused), the digest of the items it read
    from leaves of that generation or newer, the directory paths the subvolume paths were
    built from ((parent, directory inode) -> path inside the parent), and for each item
    (same order) the generation of the leaf its root item was read from.

    Kept per filesystem for as long as the daemon runs, so compact: what a root item said
    is in the item itself, plus one array of numbers; backrefs are not kept (decoding them
    again is cheap). At 10,000 subvolumes 0.1 MiB instead of the 4.7 MiB of tuples per
    root item and backref it was.)"""

    items: tuple[SubvolumeInfo, ...]
    generation: int
    digest: bytes
    dirs: dict[tuple[int, int], str]
    root_leaf: array[int]


def _unproven(items: tuple[SubvolumeInfo, ...]) -> RootScan:
    return RootScan(items, -1, b"", {}, array("Q"))


def _digest(items: Iterable[tuple[int, int, int, int, memoryview]]) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for transid, oid, typ, off, data in items:
        h.update(_DIGEST_KEY.pack(transid, oid, typ, off))
        h.update(data)
    return h.digest()


def unchanged(fd: int, scan: RootScan) -> bool:
    """Whether ``scan`` is still exact for the filesystem of ``fd`` (the module text says
    how this is known). Raises BtrfsdError."""
    # A generation lower than the scan's: another copy of the filesystem (an image or
    # a volume snapshot rolled back and mounted in its place), whose numbers repeat
    if scan.generation < 0 or _start_generation(fd) < scan.generation:
        return False
    if _digest(_search(fd, ROOT_TREE_OBJECTID, _RANGE_MIN, _RANGE_MAX,
                       scan.generation)) != scan.digest:
        return False
    try:
        return all(_ino_path(fd, parent, dirid) == path
                   for (parent, dirid), path in scan.dirs.items())
    except BtrfsdError:  # a parent or directory went away since: not the same listing
        return False


def _root_fields(data: memoryview, fmt: Callable[[bytes], str]) -> RootFields:
    if len(data) >= ROOT_ITEM_V2_SIZE:
        generation, flags, u, pu, ru, cs, cn, os_, on = _ROOT_ITEM_V2.unpack_from(data)
        return (format_uuid(u), fmt(pu), fmt(ru), generation, cs + cn / 1e9,
                os_ + on / 1e9, bool(flags & 1))
    generation, flags = _ROOT_ITEM_V1.unpack_from(data)  # an old format: no uuids, times
    return ("", "", "", generation, 0.0, 0.0, bool(flags & 1))


# Scans in a row that changes overtook before the last is returned unproven.
_SCAN_TRIES = 3


def _start_generation(fd: int) -> int:
    try:
        generation = fs_generation(fd)
    except OSError as e:
        raise from_errno(e.errno or 0, f"Cannot read the filesystem's generation: "
                                       f"{e.strerror}.") from e
    return -1 if generation is None else generation


def list_subvolumes(fd: int, earlier: RootScan | None = None) -> RootScan:
    """Every subvolume of the filesystem holding ``fd`` except the top level, by id, with
    paths from the top level, as of one moment: a scan that a change overtook is made
    again (at most _SCAN_TRIES times; then it is returned marked unproven). With
    ``earlier``, a proven scan of the same filesystem, what did not change since is
    taken from it instead of being decoded again.

    Still one walk of every item, but an item whose leaf has the generation it had in
    ``earlier`` and older than the transaction that ran when ``earlier`` began is the
    same item: its leaf was not copied since, and an item cannot move to another leaf
    without both being copied. Raises BtrfsdError.
    """
    if earlier is not None and earlier.generation < 0:
        earlier = None  # unproven: nothing of it is taken over
    for _ in range(_SCAN_TRIES):
        start = _start_generation(fd)
        if earlier is not None and start < earlier.generation:
            earlier = None  # another copy of the filesystem (see unchanged)
        scan = _scan(fd, earlier, start)
        if start >= 0 and unchanged(fd, scan):
            return scan
    return _unproven(scan.items)


def _path_of(fd: int, refs: dict[int, Ref], paths: dict[int, str],
             dirs: dict[tuple[int, int], str], sid: int) -> str:
    """The path of subvolume ``sid`` from the top level, built from ``refs``, memoized in
    ``paths`` and ``dirs``. Raises KeyError when a parent on the way has no backref (being
    deleted), BtrfsdError."""
    if sid in paths:
        return paths[sid]
    parent, dirid, name = refs[sid]
    if parent != FS_TREE_OBJECTID and parent not in refs:
        raise KeyError(parent)  # parent being deleted: no path
    base = _path_of(fd, refs, paths, dirs, parent)
    where = dirs.get((parent, dirid))
    if where is None:
        where = dirs[(parent, dirid)] = _ino_path(fd, parent, dirid)
    rel = where + name
    paths[sid] = f"{base}/{rel}" if base else rel
    return paths[sid]


def _scan(fd: int, earlier: RootScan | None, start: int) -> RootScan:
    """One walk of the range (see list_subvolumes); ``start``: the running transaction's
    id when it began (-1: unknown). Raises BtrfsdError."""
    if earlier is None:
        earlier = _unproven(())  # nothing to take over
    old, old_root_leaf = earlier.items, earlier.root_leaf
    settled = max(earlier.generation, 0)  # leaves older than this: unchanged since
    j, n = 0, len(old)  # earlier's items by id, walked along: the search is in id order
    # An int value: the root item earlier's item of that index was made from (its leaf
    # has not changed since); else (leaf generation, fields) as read.
    roots: dict[int, int | tuple[int, RootFields]] = {}
    refs: dict[int, Ref] = {}  # backrefs are decoded each time: they are cheap
    uuids: dict[bytes, str] = {}  # snapshots of one source share its parent uuid

    def fmt(raw: bytes) -> str:
        text = uuids.get(raw)
        if text is None:
            text = uuids[raw] = format_uuid(raw)
        return text

    recent: list[tuple[int, int, int, int, memoryview]] = []  # from leaves >= start
    ref_head, ref_size = _ROOT_REF.unpack_from, _ROOT_REF.size
    for item in _search(fd, ROOT_TREE_OBJECTID, _RANGE_MIN, _RANGE_MAX):
        transid, oid, typ, off, data = item
        if transid >= start >= 0:
            recent.append(item)
        if typ == ROOT_ITEM_KEY:
            while j < n and old[j][0] < oid:
                j += 1
            if j < n and old[j][0] == oid and transid < settled and old_root_leaf[j] == transid:
                roots[oid] = j
            else:
                roots[oid] = (transid, _root_fields(data, fmt))
        elif typ == ROOT_BACKREF_KEY:
            dirid, _seq, name_len = ref_head(data)
            refs[oid] = (off, dirid, str(data[ref_size:ref_size + name_len], "utf-8",
                                         "surrogateescape"))
    scan_digest = _digest(recent)
    del recent

    paths: dict[int, str] = {FS_TREE_OBJECTID: ""}
    # Snapshots pile up in a few directories: one INO_LOOKUP per (subvolume, directory)
    # instead of one per snapshot (10,000 ioctls saved for 10,000 snapshots in one place).
    dirs: dict[tuple[int, int], str] = {}
    # not a closure: one that calls itself is a reference cycle, which kept every
    # scan's dicts (each backref and path) alive until the collector's next full pass
    path_of = functools.partial(_path_of, fd, refs, paths, dirs)

    result: list[SubvolumeInfo] = []
    leaves: list[int] = []
    for sid in sorted(roots):
        if sid not in refs:
            continue  # orphan: deleted, waiting for the cleaner
        try:
            path = path_of(sid)
        except KeyError:
            continue
        root, parent = roots[sid], refs[sid][0]
        if isinstance(root, int):
            was = old[root]
            leaves.append(old_root_leaf[root])
            if was.path == path and was.parent_id == parent:
                result.append(was)  # the very same row: nothing of it changed
                continue
            u, pu, ru, generation, ctime, otime, ro = was[3:]
        else:
            leaves.append(root[0])
            u, pu, ru, generation, ctime, otime, ro = root[1]
        result.append(SubvolumeInfo(sid, parent, path, u, pu, ru, generation, ctime, otime,
                                    ro))
    return RootScan(tuple(result), start, scan_digest, dirs, array("Q", leaves))
