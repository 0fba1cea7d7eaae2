"""fs/uuidtree.py reads a search result of the UUID tree the same way whether every item
is a subvolume's and one id long (columns by iter_unpack), some are received UUIDs'
(a selection), or some are longer (a walk of the headers)."""

from __future__ import annotations

import random
import struct

from btrfsd.fs import uuidtree
from btrfsd.fs.treesearch import _ITEM_HEADER, _SEARCH_V2_HEAD, format_uuid

Item = tuple[int, int, int, list[int]]  # objectid, type, offset, ids


def result(items: list[Item]) -> bytearray:
    """A TREE_SEARCH_V2 buffer holding ``items``."""
    buf = bytearray(_SEARCH_V2_HEAD.size)
    for oid, typ, off, ids in items:
        buf += _ITEM_HEADER.pack(7, oid, off, typ, 8 * len(ids))
        buf += struct.pack(f"<{len(ids)}Q", *ids)
    return buf + bytes(4096)


def uuid_of(oid: int, off: int) -> str:
    return format_uuid(struct.pack("<QQ", oid, off))


def read(items: list[Item]) -> tuple[uuidtree.Named, tuple[int, int, int], int]:
    named = uuidtree.Named()
    last, end = named.add(result(items), len(items))
    return named, last, end


def check(items: list[Item]) -> None:
    named, last, end = read(items)
    subvols = {uuid_of(o, f): ids[0] for o, t, f, ids in items if t == 251}
    received = {uuid_of(o, f) for o, t, f, _ in items if t != 251} - subvols.keys()
    assert named.ids() == subvols
    assert last == items[-1][:3]
    assert end == _SEARCH_V2_HEAD.size + sum(32 + 8 * len(i[3]) for i in items)
    nobody = uuid_of(1, 1)
    assert named.missing([*subvols, *received, nobody]) == {*received, nobody}
    assert all(named.id_of(u) == i for u, i in subvols.items())
    assert named.id_of(nobody) is None
    assert all(named.id_of(u) is None for u in received)


def test_every_reading_agrees() -> None:
    rng = random.Random(5)
    subvols = [(rng.getrandbits(64), 251, rng.getrandbits(64), [256 + i]) for i in range(50)]
    check(subvols)  # one id each, all subvolumes: columns
    mixed = [(o, rng.choice((251, 252)), f, ids) for o, _, f, ids in subvols]
    check(mixed)  # received UUIDs among them: a selection
    check([*mixed[:20], (2, 251, 3, [300, 301]), *mixed[20:]])  # a UUID shared by two
    empty = read([])[0]
    assert empty.ids() == {} and empty.missing([uuid_of(1, 1)]) == {uuid_of(1, 1)}


def test_pages_add_up() -> None:
    named = uuidtree.Named()
    named.add(result([(1, 251, 2, [256])]), 1)
    named.add(result([(3, 251, 4, [257]), (5, 252, 6, [258])]), 2)
    assert named.ids() == {uuid_of(1, 2): 256, uuid_of(3, 4): 257}
    assert named.missing([uuid_of(1, 2), uuid_of(3, 4), uuid_of(5, 6)]) == {uuid_of(5, 6)}
    assert named.id_of(uuid_of(3, 4)) == 257


def test_keys_are_the_kernels() -> None:
    # btrfs_uuid_to_key: the UUID's two halves, little-endian; a search header holds them
    # as this host's u64s
    raw = bytes(range(1, 17))
    oid, off = struct.unpack("<QQ", raw)
    assert struct.unpack("=QQ", uuidtree._raw(format_uuid(raw))) == (oid, off)
    assert uuidtree._uuid(uuidtree._raw(format_uuid(raw))) == format_uuid(raw)
