"""A listing kept as columns (fs/info.py SubvolumeRows) reads as the SubvolumeInfo rows it
was made from, and a kept listing made again (memory.freeze/thaw) is equal to it."""

from __future__ import annotations

import pytest

from btrfsd import memory
from btrfsd.core.subvolumes import _decoded_rows
from btrfsd.fs.info import PART_ROWS, SubvolumeInfo, SubvolumeRows
from btrfsd.fs.treesearch import Block, RootScan


def rows(n: int, start: int = 256) -> list[SubvolumeInfo]:
    names = ["plain", "caf\u00e9", "bad\udcff byte", "back\\slash", ""]
    return [SubvolumeInfo(
        start + i, 5 if i % 3 else start, f"snaps/{names[i % len(names)]}{i}",
        f"{i:08x}-0000-0000-0000-000000000000", "p" * 36 if i % 2 else "",
        "r" * 36 if i % 7 == 0 else "", 7 + i, 1_700_000_000.123456789 + i / 3,
        0.0 if i % 5 == 0 else 1_700_000_001.5, bool(i % 2)) for i in range(n)]


def test_rows_read_back_as_made() -> None:
    made = rows(300)
    joined = SubvolumeRows.join([SubvolumeRows(made[:128]), SubvolumeRows(),
                                 SubvolumeRows(made[128:])])
    assert len(joined) == 300
    assert list(joined) == made  # every field, floats bit for bit
    assert joined == made and joined == tuple(made) and joined == SubvolumeRows(made)
    assert joined != made[:-1] and joined != SubvolumeRows(made[1:])
    assert [type(r.read_only) for r in joined] == [bool] * 300
    assert joined.columns() == tuple(list(c) for c in zip(*made, strict=True))
    assert joined[0] == made[0] and joined[200] == made[200] and joined[-1] == made[-1]
    assert joined[10:13] == made[10:13]
    with pytest.raises(IndexError):
        joined[300]


def test_selections() -> None:
    made = rows(300)
    joined = SubvolumeRows.join([SubvolumeRows(made[:128]), SubvolumeRows(made[128:])])
    assert list(joined.snapshots_of("p" * 36)) == [r for r in made if r.parent_uuid == "p" * 36]
    assert list(joined.snapshots_of("nobody's")) == []
    assert list(joined.snapshots_of("p")) == []  # not a whole UUID
    assert list(joined.snapshots_of("")) == [r for r in made if not r.parent_uuid]
    some = [r._replace(parent_uuid="q" * 36) if r.id % 4 == 0 else r for r in made]
    mixed = SubvolumeRows.join([SubvolumeRows(some[:128]), SubvolumeRows(some[128:])])
    for uuid in ("p" * 36, "q" * 36):
        assert list(mixed.snapshots_of(uuid)) == [r for r in some if r.parent_uuid == uuid]
    assert joined.paths_by_id() == {r.id: r.path for r in made}


def test_empty() -> None:
    for empty in (SubvolumeRows(), SubvolumeRows.join([]), SubvolumeRows.join([SubvolumeRows()])):
        assert len(empty) == 0 and not empty and list(empty) == [] and empty == []
        assert empty.columns() == ([],) * 10
        assert empty.paths_by_id() == {}


def test_a_kept_listing_made_again_is_equal() -> None:
    made = rows(300)
    blocks = {0: Block(b"d" * 16, 9, SubvolumeRows(made[:128]), ((5, 256, "", "snaps/"),)),
              1: Block(b"e" * 16, 9, SubvolumeRows(made[128:]), ())}
    scan = RootScan(SubvolumeRows.join(b.rows for b in blocks.values()), 12, b"x" * 16,
                    {(5, 256): "snaps/"}, blocks)
    again = memory.thaw(memory.freeze(scan), RootScan)
    assert again == scan and again is not scan
    assert list(again.items) == made
    with pytest.raises(TypeError):
        memory.thaw(memory.freeze(made), RootScan)


def test_decoded_rows_counts_what_a_scan_made_anew() -> None:
    made = rows(300)
    kept = Block(b"d" * 16, 9, SubvolumeRows(made[:128]), ())
    fresh = Block(b"e" * 16, 9, SubvolumeRows(made[128:]), ())
    first = RootScan(SubvolumeRows.join([kept.rows]), 12, b"", {}, {0: kept})
    second = RootScan(SubvolumeRows.join([kept.rows, fresh.rows]), 13, b"", {},
                      {0: kept, 1: fresh})
    assert _decoded_rows(first, None) == 128
    assert _decoded_rows(second, first) == 172
    assert _decoded_rows(second, second) == 0


def test_equal_texts_of_parts_are_held_once() -> None:
    """Snapshots of one source: the parts' parent-UUID columns are equal and held as one
    string after a join, and still after a freeze and thaw; every row reads the same.
    Big parts are kept in pieces of PART_ROWS rows."""
    source = "s" * 36
    made = [r._replace(parent_uuid=source) for r in rows(3 * 128)]
    parts = [SubvolumeRows(made[at:at + 128]) for at in range(0, len(made), 128)]
    assert len({id(p._texts[2]) for p in parts}) == 3  # made apart: three strings
    joined = SubvolumeRows.join(parts)
    assert len({id(p._texts[2]) for p in joined._own()}) == 1
    assert list(joined) == made and list(joined.snapshots_of(source)) == made
    again = memory.thaw(memory.freeze(joined), SubvolumeRows)
    assert len({id(p._texts[2]) for p in again._own()}) == 1 and list(again) == made
    big = SubvolumeRows(rows(2 * PART_ROWS + 1))
    assert [len(p) for p in big._own()] == [PART_ROWS, PART_ROWS, 1]
    assert list(big) == rows(2 * PART_ROWS + 1)
