"""List every subvolume with one stream of BTRFS_IOC_TREE_SEARCH_V2 over the root tree,
as btrfs-progs does, instead of libbtrfsutil's several searches per subvolume; and tell,
for the price of a few leaves, whether a listing made earlier is still exact.

How a listing is known to be still exact (``unchanged``): every search result carries
the generation of the leaf it came from, and btrfs changes a leaf only by copying it in
the running transaction, which gives it that transaction's generation and gives its
copy-on-write ancestors at least as much. A scan remembers the highest leaf generation
it saw, M, and a digest of the items of the leaves that have it. Searching again with
``min_transid = M`` returns exactly the items of the leaves changed in M or later, and
nothing of older leaves (the kernel skips whole subtrees older than M). If those items
hash to the same digest, no leaf of the range was changed after the scan: a leaf changed
later, in M or after, would have added items, lost some or changed some. A subvolume's
path also depends on the names of the directories it sits in (not in the root tree
until the next commit), so those are looked up again each time (INO_LOOKUP, one per
directory that holds subvolumes).

Blocking; needs CAP_SYS_ADMIN. Raises BtrfsdError on ioctl failure.
"""

from __future__ import annotations

import fcntl
import hashlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from ..constants import TOP_LEVEL_SUBVOLUME_ID
from ..errors import from_errno
from .ioctl import iowr

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

# Room for ~4,000 root items per call (nr_items is capped at 4096 anyway): fewer calls,
# each restarting the search from its key.
_BUF_SIZE = 2 * 1024 * 1024


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


RawSubvolume = tuple[int, int, str, str, str, str, int, float, float, bool]
# The root tree's part that lists subvolumes: their root items and backrefs.
_RANGE_MIN = (FIRST_FREE_OBJECTID, ROOT_ITEM_KEY, 0)
_RANGE_MAX = (LAST_FREE_OBJECTID, ROOT_BACKREF_KEY, U64_MAX)
_DIGEST_KEY = struct.Struct("=QQQQ")


@dataclass(frozen=True)
class RootScan:
    """What ``unchanged`` needs of a scan: the highest leaf generation it saw, the digest
    of those leaves' items, and the directory paths its subvolume paths were built from
    ((parent subvolume id, directory inode) -> path inside the parent)."""

    generation: int
    digest: bytes
    dirs: dict[tuple[int, int], str]


def _digest(items: Iterator[tuple[int, int, int, int, memoryview]]) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for transid, oid, typ, off, data in items:
        h.update(_DIGEST_KEY.pack(transid, oid, typ, off))
        h.update(data)
    return h.digest()


def unchanged(fd: int, scan: RootScan) -> bool:
    """Whether a listing made by ``list_subvolumes`` is still exact for the filesystem
    of ``fd`` (the module text says how this is known). Raises BtrfsdError."""
    if _digest(_search(fd, ROOT_TREE_OBJECTID, _RANGE_MIN, _RANGE_MAX,
                       scan.generation)) != scan.digest:
        return False
    return all(_ino_path(fd, parent, dirid) == path
               for (parent, dirid), path in scan.dirs.items())


def list_subvolumes(fd: int) -> tuple[list[RawSubvolume], RootScan]:
    """Every subvolume of the filesystem holding ``fd`` except the top level, sorted by
    id, and what ``unchanged`` needs to tell later whether that list is still exact.

    Tuples: id, parent id, path from the top level, uuid, parent uuid, received uuid,
    generation, ctime, otime (seconds), read-only. Raises BtrfsdError.
    """
    items: dict[int, memoryview] = {}
    refs: dict[int, tuple[int, int, str]] = {}  # id -> (parent id, dirid, name)
    found = list(_search(fd, ROOT_TREE_OBJECTID, _RANGE_MIN, _RANGE_MAX))
    newest = max((f[0] for f in found), default=0)
    scan_digest = _digest(f for f in found if f[0] == newest)
    for _transid, oid, typ, off, data in found:
        if typ == ROOT_ITEM_KEY:
            items[oid] = data
        elif typ == ROOT_BACKREF_KEY:
            dirid, _seq, name_len = _ROOT_REF.unpack_from(data)
            name = bytes(data[_ROOT_REF.size:_ROOT_REF.size + name_len])
            refs[oid] = (off, dirid, name.decode("utf-8", "surrogateescape"))
    del found
    paths: dict[int, str] = {FS_TREE_OBJECTID: ""}
    # Snapshots pile up in a few directories: one INO_LOOKUP per (subvolume, directory)
    # instead of one per snapshot (10,000 ioctls saved for 10,000 snapshots in one place).
    dirs: dict[tuple[int, int], str] = {}

    def path_of(sid: int) -> str:
        if sid in paths:
            return paths[sid]
        parent, dirid, name = refs[sid]
        if parent != FS_TREE_OBJECTID and parent not in refs:
            raise KeyError(parent)  # parent being deleted: no path
        base = path_of(parent)
        where = dirs.get((parent, dirid))
        if where is None:
            where = dirs[(parent, dirid)] = _ino_path(fd, parent, dirid)
        rel = where + name
        paths[sid] = f"{base}/{rel}" if base else rel
        return paths[sid]

    result: list[RawSubvolume] = []
    uuids: dict[bytes, str] = {}  # snapshots of one source share its parent uuid

    def fmt(raw: bytes) -> str:
        text = uuids.get(raw)
        if text is None:
            text = uuids[raw] = format_uuid(raw)
        return text

    for sid in sorted(items):
        if sid not in refs:
            continue  # orphan: deleted, waiting for the cleaner
        try:
            path = path_of(sid)
        except KeyError:
            continue
        data = items[sid]
        if len(data) >= ROOT_ITEM_V2_SIZE:
            generation, flags, u, pu, ru, cs, cn, os_, on = _ROOT_ITEM_V2.unpack_from(data)
            result.append((sid, refs[sid][0], path, format_uuid(u), fmt(pu), fmt(ru),
                           generation, cs + cn / 1e9, os_ + on / 1e9, bool(flags & 1)))
        else:  # an old-format root item: no uuids or times
            generation, flags = _ROOT_ITEM_V1.unpack_from(data)
            result.append((sid, refs[sid][0], path, "", "", "", generation, 0.0, 0.0,
                           bool(flags & 1)))
    return result, RootScan(newest, scan_digest, dirs)
