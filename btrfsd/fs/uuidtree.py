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
from collections.abc import Iterable
from itertools import compress
from operator import itemgetter
from typing import cast

from .treesearch import (
    _ITEM_HEADER,
    _MAX_ITEMS,
    _NR_ITEMS,
    _ROOM,
    _SEARCH_V2_HEAD,
    U64_MAX,
    Key,
    _following,
    _search_call,
    format_uuid,
)

UUID_TREE_OBJECTID = 9
UUID_KEY_SUBVOL = 251  # (first 8 bytes of the UUID, 251, last 8) -> subvolume ids
_HALVES = struct.Struct("<QQ")
# A search header followed by one u64: what nearly every item of the tree is, so a whole
# result reads in one iter_unpack instead of a Python step per item.
_RECORD = struct.Struct("=QQQIIQ")
_OID_OFF, _TYPE, _LENGTH, _ID = itemgetter(1, 2), itemgetter(3), itemgetter(4), itemgetter(5)
_ID_OF = itemgetter(1)  # of a (uuid, id or None) pair


@functools.lru_cache(maxsize=16384)  # ~300 bytes each
def _key(uuid: str) -> tuple[int, int]:
    """The (objectid, offset) of a dashed UUID's item (btrfs_uuid_to_key: little-endian
    halves). Kept: a schedule asks about the same UUIDs on every run."""
    high, low = _HALVES.unpack(bytes.fromhex(uuid.replace("-", "")))
    return high, low


def _ids(buf: bytearray, nr_items: int) -> tuple[dict[tuple[int, int], int], Key, int]:
    """(objectid, offset) -> first id of each UUID_KEY_SUBVOL item of a search result,
    the result's last key, and where it ends."""
    head = _SEARCH_V2_HEAD.size
    end = head + nr_items * _RECORD.size
    if nr_items and end <= len(buf):
        records = list(_RECORD.iter_unpack(memoryview(buf)[head:end]))
        # each record is right only if every one before it was one u64 long; the loops
        # are map and compress over the records (no Python step per item)
        if set(map(_LENGTH, records)) == {8}:
            mine = list(compress(records, map(UUID_KEY_SUBVOL.__eq__, map(_TYPE, records))))
            last = records[-1]
            return (dict(zip(map(_OID_OFF, mine), map(_ID, mine), strict=True)),
                    (last[1], last[3], last[2]), end)
    found: dict[tuple[int, int], int] = {}
    unpack, size, pos = _ITEM_HEADER.unpack_from, _ITEM_HEADER.size, head
    oid = typ = off = 0
    for _ in range(nr_items):
        _t, oid, off, typ, length = unpack(buf, pos)
        pos += size
        if typ == UUID_KEY_SUBVOL and length >= 8:
            found[(oid, off)] = struct.unpack_from("<Q", buf, pos)[0]
        pos += length
    return found, (oid, typ, off), pos


def subvolume_ids(fd: int, wanted: Iterable[str] | None = None) -> dict[str, int]:
    """UUID (dashed) -> subvolume id of every subvolume the UUID tree of the filesystem
    holding ``fd`` names (with ``wanted``, of those of the UUIDs in it). Raises
    BtrfsdError (NotFound: no UUID tree)."""
    found: dict[str, int] = {}
    asked = None if wanted is None else list(wanted)
    key: Key | None = (0, UUID_KEY_SUBVOL, 0)
    max_key = (U64_MAX, UUID_KEY_SUBVOL, U64_MAX)
    while key is not None and key <= max_key:
        buf = _search_call(fd, key, max_key, 0, _MAX_ITEMS, UUID_TREE_OBJECTID)
        nr_items = struct.unpack_from("=I", buf, _NR_ITEMS)[0]
        ids, last, end = _ids(buf, nr_items)
        if asked is None:
            found.update((format_uuid(_HALVES.pack(*k)), sid) for k, sid in ids.items())
        else:  # C loops: map, zip, filter (a subvolume id is never 0)
            pairs = zip(asked, map(ids.get, map(_key, asked)), strict=True)
            found.update(cast("Iterable[tuple[str, int]]", filter(_ID_OF, pairs)))
        # _ROOM as for the root tree: an item is a key and one u64 (a few more ids only
        # for a UUID shared by mistake)
        key = _following(buf, nr_items, end, last, _ROOM)
    return found
