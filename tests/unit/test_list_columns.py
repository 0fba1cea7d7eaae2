"""ListSubvolumes' `columns` option: only the named columns are filled, the others are
empty, each filled one equal to the same column of the full reply; unknown names are
refused before anything is listed."""

from __future__ import annotations

import pytest
from dbus_fast import Variant

from btrfsd.bus.filesystem import subvolume_columns
from btrfsd.bus.options import SUBVOLUME_FIELDS, ListOptions, parse_options
from btrfsd.cli import plain
from btrfsd.core.inventory import Listing
from btrfsd.errors import InvalidArgument
from btrfsd.fs.info import SubvolumeInfo
from btrfsd.fs.quota import QgroupUsage

ROWS = [SubvolumeInfo(256 + i, 5, f"home/.snapshots/{i}/snapshot", f"u{i}", "p" if i else "",
                      "", 10 + i, 1.5 + i, 2.25 + i, bool(i % 2)) for i in range(4)]


def test_the_client_names_the_columns_as_the_daemon() -> None:
    assert plain.SUBVOLUME_FIELDS == SUBVOLUME_FIELDS


@pytest.mark.parametrize("usage", [{}, {257: QgroupUsage(0, 257, 1, 2, 3, 4)}])
@pytest.mark.parametrize("wanted", [(), ("id",), ("path", "otime", "read_only"),
                                    ("is_snapshot", "exclusive"), SUBVOLUME_FIELDS])
def test_only_the_named_columns_are_filled(usage: dict[int, QgroupUsage],
                                           wanted: tuple[str, ...]) -> None:
    listing = Listing(ROWS, usage)
    full = subvolume_columns(listing)
    some = subvolume_columns(listing, frozenset(wanted))
    assert len(full) == len(some) == len(SUBVOLUME_FIELDS)
    for name, whole, part in zip(SUBVOLUME_FIELDS, full, some, strict=True):
        assert len(whole) == len(ROWS)
        assert part == (whole if not wanted or name in wanted else [])
    assert subvolume_columns(Listing([], usage), frozenset(wanted)) == [[]] * 15


def test_unknown_columns_are_refused_by_name() -> None:
    opts = parse_options(ListOptions, {"columns": Variant("as", ["path", "otime"])})
    assert opts.columns == ["path", "otime"]
    with pytest.raises(InvalidArgument, match=r"unknown column 'size'.*the columns are id"):
        parse_options(ListOptions, {"columns": Variant("as", ["path", "size"])})
    with pytest.raises(InvalidArgument, match="columns"):
        parse_options(ListOptions, {"columns": Variant("s", "path")})
