"""ListSubvolumes' `columns` option: only the named columns are filled, the others are
empty, each filled one equal to the same column of the full reply; unknown names are
refused before anything is listed."""

from __future__ import annotations

import random
from typing import Any

import pytest
from dbus_fast import Variant
from dbus_fast._private.marshaller import Marshaller

from btrfsd.bus.filesystem import SUBVOLUME_COLUMNS, Column, subvolume_columns
from btrfsd.bus.marshalled import Marshalled, Pieces
from btrfsd.bus.options import SUBVOLUME_FIELDS, ListOptions, parse_options
from btrfsd.bus.variants import usec
from btrfsd.cli import plain
from btrfsd.core.inventory import Listing
from btrfsd.errors import InvalidArgument
from btrfsd.fs.info import PART_ROWS, SubvolumeInfo, SubvolumeRows
from btrfsd.fs.quota import QgroupUsage
from btrfsd.names import to_bus

ROWS = [SubvolumeInfo(256 + i, 5, f"home/.snapshots/{i}/snapshot", f"u{i}", "p" if i else "",
                      "", 10 + i, 1.5 + i, 2.25 + i, bool(i % 2)) for i in range(4)]


def cells(columns: list[Column]) -> list[list[Any]]:
    return [c.strings() if isinstance(c, Pieces) else list(c) for c in columns]


def test_the_client_names_the_columns_as_the_daemon() -> None:
    assert plain.SUBVOLUME_FIELDS == SUBVOLUME_FIELDS


@pytest.mark.parametrize("usage", [{}, {257: QgroupUsage(0, 257, 1, 2, 3, 4)}])
@pytest.mark.parametrize("wanted", [(), ("id",), ("path", "otime", "read_only"),
                                    ("is_snapshot", "exclusive"), SUBVOLUME_FIELDS])
def test_only_the_named_columns_are_filled(usage: dict[int, QgroupUsage],
                                           wanted: tuple[str, ...]) -> None:
    listing = Listing(ROWS, usage)
    full = cells(subvolume_columns(listing))
    some = cells(subvolume_columns(listing, frozenset(wanted)))
    assert len(full) == len(some) == len(SUBVOLUME_FIELDS)
    for name, whole, part in zip(SUBVOLUME_FIELDS, full, some, strict=True):
        assert len(whole) == len(ROWS)
        assert part == (whole if not wanted or name in wanted else [])
    assert subvolume_columns(Listing([], usage), frozenset(wanted)) == [[]] * 15


def expected(rows: list[SubvolumeInfo], usage: dict[int, QgroupUsage]) -> list[list[Any]]:
    """The reply's columns made the plain way, a row at a time (what the packed
    columns must marshal as)."""
    def quota(r: SubvolumeInfo) -> tuple[int, int, int, int]:
        q = usage.get(r.id)
        return (0, 0, 0, 0) if q is None else (
            q.referenced, q.exclusive, q.max_referenced, q.max_exclusive)
    return [list(c) for c in zip(*[
        (r.id, r.parent_id, to_bus(r.path), r.uuid, r.parent_uuid, r.received_uuid,
         r.generation, usec(r.ctime), usec(r.otime), r.read_only, r.parent_uuid != "",
         *quota(r)) for r in rows], strict=True)]


@pytest.mark.parametrize("parents", ["mixed", "split"])
@pytest.mark.parametrize("n", [1, 5, PART_ROWS, PART_ROWS + 1, 3 * PART_ROWS + 7])
def test_the_packed_columns_marshal_as_the_rows(n: int, parents: str) -> None:
    """Numbers copied as arrays and strings in pieces, from packed rows joined from
    several parts: the same bytes as dbus-fast marshalling the plain columns. Paths
    that are not UTF-8 or hold backslashes, every string length modulo 4, times before
    1970 and with fractions of a microsecond. Parent UUIDs mixed in each part, or
    snapshots only in the first part and none in the second."""
    rnd = random.Random(n)
    cut = rnd.randrange(n + 1)
    names = ["a", "ab", "abc", "abcd", "é", "x\\y", "bad\udcff", "snap\udce2\udc82"]
    made = [SubvolumeInfo(256 + i, rnd.choice([5, 256]), "/".join(
        rnd.choice(names) for _ in range(rnd.randrange(1, 4))),
        f"{i:08d}-0000-0000-0000-000000000000",
        rnd.choice(["", "p" * 36]) if parents == "mixed" else "p" * 36 if i < cut else "",
        rnd.choice(["", "r" * 36]), rnd.randrange(1 << 62),
        rnd.choice([-1.5, 0.0, 1.0000004, 1.7e9 + rnd.random()]),
        1.7e9 + rnd.random(), rnd.random() < 0.5) for i in range(n)]
    rows = SubvolumeRows.join([SubvolumeRows(made[:cut]), SubvolumeRows(made[cut:])])
    for usage in ({}, {256 + i: QgroupUsage(0, 256 + i, i, 2 * i, 3, 4)
                       for i in range(0, n, 2)}):
        want = expected(made, usage)
        ours = Marshalled(SUBVOLUME_COLUMNS, [subvolume_columns(Listing(rows, usage))])
        assert ours.body == bytes(Marshaller(SUBVOLUME_COLUMNS, [want]).marshall())
        assert cells(subvolume_columns(Listing(made, usage))) == [
            [int(v) for v in c] if isinstance(c[0], bool) else c for c in want]


def test_unknown_columns_are_refused_by_name() -> None:
    opts = parse_options(ListOptions, {"columns": Variant("as", ["path", "otime"])})
    assert opts.columns == ["path", "otime"]
    with pytest.raises(InvalidArgument, match=r"unknown column 'size'.*the columns are id"):
        parse_options(ListOptions, {"columns": Variant("as", ["path", "size"])})
    with pytest.raises(InvalidArgument, match="columns"):
        parse_options(ListOptions, {"columns": Variant("s", "path")})
