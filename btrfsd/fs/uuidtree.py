"""Which subvolumes exist, by UUID, from the UUID tree: one search of 40 bytes per
subvolume (its key and id), where the root tree holds a 439-byte root item and a backref
per subvolume (fs/treesearch.py). A scheduled run asks this to learn which of its
snapshots still exist (core/schedules.py), so its cost stays small as snapshots pile up.

The kernel adds a subvolume's item when it makes the subvolume and removes it when the
subvolume is deleted (btrfs_delete_subvolume), in the same transaction. A filesystem
made by a kernel older than 3.12 gets its UUID tree filled by a scan after mounting, so
a subvolume missing here is not proof that it is gone: callers ask the full listing then.

Blocking; needs CAP_SYS_ADMIN. Raises BtrfsdError on ioctl failure.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Collection, Sequence
from itertools import compress
from operator import itemgetter

from .treesearch import (
    _ITEM_HEADER,
    _MAX_ITEMS,
    _NR_ITEMS,
    _SEARCH_V2_HEAD,
    U64_MAX,
    Key,
    _following,
    _search_call,
    format_uuid,
)

UUID_TREE_OBJECTID = 9
UUID_KEY_SUBVOL = 251  # (first 8 bytes of the UUID, 251, last 8) -> subvolume ids
_HALVES = struct.Struct("<QQ")  # the UUID's halves as its item's objectid and offset
_NATIVE = struct.Struct("=QQ")  # an objectid and offset as a search header holds them
# A record: a search header (transid, the key's objectid and offset, type, length) and
# one u64, what nearly every item of the tree is. Its 16 key bytes are read as they are
# (_raw), so a whole result reads in one iter_unpack, and bytes hash faster than ints.
_RECORD_SIZE = 40
_KEY_BYTES = struct.Struct("=8x16s16x")
_SHAPE = struct.Struct("=24xII8x")  # a record's type and length
_TYPE_AT, _LENGTH_AT, _ID_AT = 24, 28, 32  # where in a record
_SUBVOL_SHAPE = (UUID_KEY_SUBVOL, 8)
_ID = struct.Struct("<Q")  # an item's ids: on-disk data, little-endian on every host
# Where a search result may have stopped short of the end: the kernel stops at the first
# item that does not fit, and an item can be as big as a leaf (nodesize: at most 64 KiB;
# a received UUID's item grows by 8 bytes per subvolume received from that source).
_ROOM = 64 * 1024 + _ITEM_HEADER.size
_FIRST = itemgetter(0)


@functools.lru_cache(maxsize=16384)  # ~150 bytes each
def _raw(uuid: str) -> bytes:
    """A dashed UUID's item key as a search header holds it: the objectid and offset
    (the UUID's little-endian halves, btrfs_uuid_to_key) as this host's u64s. Kept: a
    schedule asks about the same UUIDs on every run."""
    return _NATIVE.pack(*_HALVES.unpack(bytes.fromhex(uuid.replace("-", ""))))


def _uuid(raw: bytes) -> str:
    """The dashed UUID of an item key's 16 bytes (_raw's inverse)."""
    return format_uuid(_HALVES.pack(*_NATIVE.unpack(raw)))


def _same(records: bytes, at: int, value: int) -> bool:
    """Whether every record of ``records`` holds the u32 ``value`` at offset ``at``: one
    strided slice per byte, no Python step per record."""
    n = len(records) // _RECORD_SIZE
    want = struct.pack("=I", value)
    return all(records[at + i::_RECORD_SIZE] == want[i:i + 1] * n for i in range(4))


class Named:
    """The subvolumes one read of the UUID tree found (read_named), asked by UUID: which
    of many are missing (a scheduled run's question on every run, answered by C loops
    over key bytes, with no Python step per subvolume), and the id of some."""

    def __init__(self) -> None:
        # per search call: a buffer, the key bytes of its subvolume items (_raw) and
        # where in the buffer each one's id is
        self._pages: list[tuple[bytes | bytearray, list[bytes], Sequence[int]]] = []
        self._index: dict[bytes, tuple[bytes | bytearray, int]] | None = None  # id_of's

    def add(self, buf: bytearray, nr_items: int) -> tuple[Key, int]:
        """Take in one search result; return its last key and where it ends."""
        head = _SEARCH_V2_HEAD.size
        end = head + nr_items * _RECORD_SIZE
        records = bytes(memoryview(buf)[head:end])
        if not (nr_items and end <= len(buf) and _same(records, _LENGTH_AT, 8)):
            return self._walk(buf, nr_items)
        # each record is where it is read only because every one before it is one u64
        keys = list(map(_FIRST, _KEY_BYTES.iter_unpack(records)))
        places: Sequence[int] = range(head + _ID_AT, end, _RECORD_SIZE)
        oid, off = _NATIVE.unpack(keys[-1])
        last = (oid, _SHAPE.unpack_from(records, len(records) - _RECORD_SIZE)[0], off)
        if not _same(records, _TYPE_AT, UUID_KEY_SUBVOL):  # received UUIDs' items among them
            mine = list(map(_SUBVOL_SHAPE.__eq__, _SHAPE.iter_unpack(records)))
            keys, places = list(compress(keys, mine)), list(compress(places, mine))
        self._pages.append((buf, keys, places))
        return last, end

    def _walk(self, buf: bytearray, nr_items: int) -> tuple[Key, int]:
        """add() for a result whose items are not all one u64 long: a received UUID's
        item holds the ids of every subvolume received from one source (a stream
        received twice; any owner of a subvolume can set its received UUID), and a
        subvolume's item more than one id only when two share a UUID by mistake. A
        Python step per item header."""
        keys: list[bytes] = []
        ids: list[int] = []
        unpack, size, pos = _ITEM_HEADER.unpack_from, _ITEM_HEADER.size, _SEARCH_V2_HEAD.size
        oid = typ = off = 0
        for _ in range(nr_items):
            _t, oid, off, typ, length = unpack(buf, pos)
            pos += size
            if typ == UUID_KEY_SUBVOL and length >= 8:
                keys.append(_NATIVE.pack(oid, off))
                ids.append(_ID.unpack_from(buf, pos)[0])  # the first id
            pos += length
        self._pages.append((struct.pack(f"<{len(ids)}Q", *ids), keys,
                            range(0, 8 * len(ids), 8)))
        return (oid, typ, off), pos

    def missing(self, wanted: Collection[str]) -> set[str]:
        """Those of ``wanted`` (dashed UUIDs) the tree does not name."""
        left = set(map(_raw, wanted))
        for _buf, keys, _places in self._pages:
            left.difference_update(keys)
        # nearly always none: only then a Python step per UUID
        return {u for u in wanted if _raw(u) in left} if left else set()

    def id_of(self, uuid: str) -> int | None:
        """The id of the subvolume with ``uuid``; None when the tree does not name it.
        The first call indexes every key (a cleanup asks for a few, or for thousands)."""
        if self._index is None:
            self._index = {k: (buf, p) for buf, keys, places in self._pages
                           for k, p in zip(keys, places, strict=True)}
        found = self._index.get(_raw(uuid))
        if found is None:
            return None
        sid: int = _ID.unpack_from(*found)[0]
        return sid

    def ids(self) -> dict[str, int]:
        """UUID (dashed) -> id of every subvolume the tree names."""
        found: dict[str, int] = {}
        for buf, keys, places in self._pages:
            found.update(zip(map(_uuid, keys), (_ID.unpack_from(buf, p)[0] for p in places),
                             strict=True))
        return found


def read_named(fd: int) -> Named:
    """Every subvolume the UUID tree of the filesystem holding ``fd`` names. Raises
    BtrfsdError (NotFound: no UUID tree)."""
    named = Named()
    key: Key | None = (0, UUID_KEY_SUBVOL, 0)
    max_key = (U64_MAX, UUID_KEY_SUBVOL, U64_MAX)
    while key is not None and key <= max_key:
        buf = _search_call(fd, key, max_key, 0, _MAX_ITEMS, UUID_TREE_OBJECTID)
        nr_items = struct.unpack_from("=I", buf, _NR_ITEMS)[0]
        last, end = named.add(buf, nr_items)
        key = _following(buf, nr_items, end, last, _ROOM)
    return named
