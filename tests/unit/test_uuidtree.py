"""fs/uuidtree.py reads a search result of the UUID tree the same way whether every item
is one id long (one iter_unpack) or not (a walk of the headers)."""

from __future__ import annotations

import random
import struct

from btrfsd.fs import uuidtree
from btrfsd.fs.treesearch import _ITEM_HEADER, _SEARCH_V2_HEAD, format_uuid


def result(items: list[tuple[int, int, int, list[int]]]) -> bytearray:
    """A TREE_SEARCH_V2 buffer holding ``items`` (objectid, type, offset, ids)."""
    buf = bytearray(_SEARCH_V2_HEAD.size)
    for oid, typ, off, ids in items:
        buf += _ITEM_HEADER.pack(7, oid, off, typ, 8 * len(ids))
        buf += struct.pack(f"<{len(ids)}Q", *ids)
    return buf + bytes(4096)


def test_both_readings_agree() -> None:
    rng = random.Random(5)
    items = [(rng.getrandbits(64), rng.choice((251, 252)), rng.getrandbits(64), [256 + i])
             for i in range(50)]
    want = {(o, f): ids[0] for o, t, f, ids in items if t == 251}
    fast, last, end = uuidtree._ids(result(items), len(items))
    assert fast == want and last == items[-1][:3]
    assert end == _SEARCH_V2_HEAD.size + 40 * len(items)
    odd = [*items[:20], (1, 251, 2, [300, 301]), *items[20:]]  # a UUID shared by two
    walked, last, end = uuidtree._ids(result(odd), len(odd))
    assert walked == {**want, (1, 2): 300} and last == odd[-1][:3]
    assert end == _SEARCH_V2_HEAD.size + 40 * len(odd) + 8
    assert uuidtree._ids(result([]), 0)[0] == {}


def test_keys_are_the_kernels() -> None:
    # btrfs_uuid_to_key: the UUID's two halves, little-endian
    raw = bytes(range(1, 17))
    oid, off = struct.unpack("<QQ", raw)
    assert uuidtree._key(format_uuid(raw)) == (oid, off)
