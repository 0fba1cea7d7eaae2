"""What the kernel says about subvolumes (fs/subvol.py and fs/treesearch.py make it): one
subvolume (SubvolumeInfo), and a listing of many kept compactly (SubvolumeRows)."""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain
from typing import Any, NamedTuple, overload


class SubvolumeInfo(NamedTuple):
    """A subvolume as reported by the kernel; ``path`` is relative to the top level.

    A NamedTuple, not a dataclass: listings build 10,000 of these, and a tuple is made
    several times faster (docs/benchmarks.md).
    """

    id: int
    parent_id: int
    path: str
    uuid: str
    parent_uuid: str
    received_uuid: str
    generation: int
    ctime: float
    otime: float
    read_only: bool

    @property
    def is_snapshot(self) -> bool:
        return bool(self.parent_uuid)


# Text columns are kept as one string each, the values joined by NUL: a name in the
# kernel never holds one, nor does a UUID.
_SEP = "\0"
# One row's fields in SubvolumeInfo's order (a SubvolumeInfo or a plain tuple).
Row = tuple[int, int, str, str, str, str, int, float, float, bool]
# A listing's columns, in SubvolumeInfo's field order.
Columns = tuple[list[int], list[int], list[str], list[str], list[str], list[str], list[int],
                list[float], list[float], list[bool]]


class _Part:
    """Rows as columns: the numbers in arrays, each text column one joined string.
    ~45 bytes a row plus its path against ~380 as SubvolumeInfo tuples with their own int,
    float and str objects, and a handful of big objects instead of ~7 small ones a row
    (the small ones of a listing kept for long pin the allocator's arenas: see
    docs/benchmarks.md, issue 11)."""

    __slots__ = ("ctimes", "generations", "ids", "otimes", "parent_ids", "parent_uuids",
                 "paths", "read_only", "received_uuids", "size", "uuids")

    def __init__(self, rows: Iterable[Row]) -> None:
        ids, parents, paths, uuids, puuids, ruuids, gens, ctimes, otimes, ro = (
            zip(*rows, strict=True))
        self.ids, self.parent_ids = array("Q", ids), array("Q", parents)
        self.generations = array("Q", gens)
        self.ctimes, self.otimes = array("d", ctimes), array("d", otimes)
        self.read_only = bytes(map(bool, ro))
        self.paths, self.uuids = _SEP.join(paths), _SEP.join(uuids)
        self.parent_uuids, self.received_uuids = _SEP.join(puuids), _SEP.join(ruuids)
        self.size = len(self.ids)

    def columns(self) -> tuple[Iterable[Any], ...]:
        """The fields as columns (iterables of Python values), in SubvolumeInfo's order."""
        return (self.ids, self.parent_ids, self.paths.split(_SEP), self.uuids.split(_SEP),
                self.parent_uuids.split(_SEP), self.received_uuids.split(_SEP),
                self.generations, self.ctimes, self.otimes, map(bool, self.read_only))

    def __iter__(self) -> Iterator[SubvolumeInfo]:
        return map(SubvolumeInfo._make, zip(*self.columns(), strict=True))


class SubvolumeRows(Sequence[SubvolumeInfo]):
    """An immutable listing of subvolumes, kept as columns (a few arrays and strings per
    part) and read as SubvolumeInfo tuples made on demand. Joining listings shares their
    parts (no copy): a scan's listing is its blocks' rows joined."""

    __slots__ = ("_parts", "_size")

    def __init__(self, rows: Iterable[Row] = ()) -> None:
        rows = list(rows)
        self._parts: tuple[_Part, ...] = (_Part(rows),) if rows else ()
        self._size = len(rows)

    @classmethod
    def join(cls, listings: Iterable[SubvolumeRows]) -> SubvolumeRows:
        """One listing of the rows of ``listings``, in their order (sharing their
        storage)."""
        joined = cls()
        joined._parts = tuple(p for rows in listings for p in rows._parts)
        joined._size = sum(p.size for p in joined._parts)
        return joined

    def columns(self) -> Columns:
        """The fields of every row as lists (the same values as the rows' fields), in
        SubvolumeInfo's order: built without making a tuple per row."""
        out: Columns = ([], [], [], [], [], [], [], [], [], [])
        for part in self._parts:
            for column, values in zip(out, part.columns(), strict=True):
                column.extend(values)  # type: ignore[attr-defined]  # a list, per Columns
        return out

    def snapshots_of(self, uuid: str) -> SubvolumeRows:
        """The rows whose parent UUID is ``uuid`` (only those are made as tuples)."""
        return SubvolumeRows(row for part in self._parts
                             if uuid in part.parent_uuids.split(_SEP)
                             for row in part if row.parent_uuid == uuid)

    def paths_by_id(self) -> dict[int, str]:
        """Each row's path by its id."""
        found: dict[int, str] = {}
        for part in self._parts:
            found.update(zip(part.ids, part.paths.split(_SEP), strict=True))
        return found

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[SubvolumeInfo]:
        return chain.from_iterable(self._parts)

    @overload
    def __getitem__(self, index: int) -> SubvolumeInfo: ...

    @overload
    def __getitem__(self, index: slice) -> list[SubvolumeInfo]: ...

    def __getitem__(self, index: int | slice) -> SubvolumeInfo | list[SubvolumeInfo]:
        """A row by position (IndexError out of range); a slice as a list."""
        if isinstance(index, slice):
            return list(self)[index]
        at = index + self._size if index < 0 else index
        if not 0 <= at < self._size:
            raise IndexError("subvolume row index out of range")
        for part in self._parts:
            if at < part.size:
                return next(row for i, row in enumerate(part) if i == at)
            at -= part.size
        raise AssertionError("unreachable: the parts' sizes add up to the length")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SubvolumeRows):
            return self._size == other._size and self.columns() == other.columns()
        if isinstance(other, (tuple, list)):
            return len(other) == self._size and all(
                a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal by value, like a list

    def __repr__(self) -> str:
        return f"SubvolumeRows({list(self)!r})"
