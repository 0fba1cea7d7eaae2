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

import struct

from .treesearch import (
    _ITEM_HEADER,
    _NR_ITEMS,
    _SEARCH_V2_HEAD,
    U64_MAX,
    _after,
    _search_call,
    format_uuid,
)

UUID_TREE_OBJECTID = 9
UUID_KEY_SUBVOL = 251  # (first 8 bytes of the UUID, 251, last 8) -> subvolume ids
_MAX_ITEMS = 4096
_ROOM = 4096  # an item is a key and one u64 (more only for a UUID shared by mistake)
_IDS = struct.Struct("<QQ")


def subvolume_ids(fd: int) -> dict[str, int]:
    """UUID (dashed) -> subvolume id of every subvolume the UUID tree of the filesystem
    holding ``fd`` names. Raises BtrfsdError (NotFound: no UUID tree)."""
    found: dict[str, int] = {}
    key: tuple[int, int, int] | None = (0, UUID_KEY_SUBVOL, 0)
    max_key = (U64_MAX, UUID_KEY_SUBVOL, U64_MAX)
    unpack, head = _ITEM_HEADER.unpack_from, _ITEM_HEADER.size
    while key is not None and key <= max_key:
        buf = _search_call(fd, key, max_key, 0, _MAX_ITEMS, UUID_TREE_OBJECTID)
        nr_items = struct.unpack_from("=I", buf, _NR_ITEMS)[0]
        pos = _SEARCH_V2_HEAD.size
        oid = typ = off = 0
        for _ in range(nr_items):
            _t, oid, off, typ, length = unpack(buf, pos)
            pos += head
            # the range holds other types between two UUIDs' keys (received UUIDs)
            if typ == UUID_KEY_SUBVOL and length >= 8:
                found[format_uuid(_IDS.pack(oid, off))] = struct.unpack_from("<Q", buf, pos)[0]
            pos += length
        if nr_items == 0 or (nr_items < _MAX_ITEMS and len(buf) - pos > _ROOM):
            break
        key = _after((oid, typ, off))
    return found
