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


# Text columns are kept as one string, the values joined by NUL: a name in the kernel
# never holds one, nor does a UUID.
_SEP = "\0"
# One row's fields in SubvolumeInfo's order (a SubvolumeInfo or a plain tuple).
Row = tuple[int, int, str, str, str, str, int, float, float, bool]
# A listing's columns, in SubvolumeInfo's field order.
Columns = tuple[list[int], list[int], list[str], list[str], list[str], list[str], list[int],
                list[float], list[float], list[bool]]
# The number columns, one after the other in one bytes object: id, parent id, generation
# (u64 each), ctime, otime (double: the very float values), read-only (one byte); in
# the machine's byte order, as arrays and memoryview casts use it.
_NUMBERS: tuple[tuple[Any, int], ...] = (("Q", 8), ("Q", 8), ("Q", 8), ("d", 8), ("d", 8), ("?", 1))


def _pack(rows: list[Row]) -> tuple[bytes, str]:
    ids, parents, paths, uuids, puuids, ruuids, gens, ctimes, otimes, ro = (
        zip(*rows, strict=True))
    # arrays, not struct.pack: a format per length would stay in struct's cache
    numbers = b"".join([array("Q", ids).tobytes(), array("Q", parents).tobytes(),
                        array("Q", gens).tobytes(), array("d", ctimes).tobytes(),
                        array("d", otimes).tobytes(), bytes(map(bool, ro))])
    return numbers, _SEP.join((*paths, *uuids, *puuids, *ruuids))


def _unpack(numbers: bytes, texts: str, n: int) -> Columns:
    if not n:
        return ([], [], [], [], [], [], [], [], [], [])
    view = memoryview(numbers)
    at, nums = 0, list[Any]()
    for code, size in _NUMBERS:
        nums.append(view[at:at + n * size].cast(code).tolist())
        at += n * size
    strs = texts.split(_SEP)
    ids, parents, gens, ctimes, otimes, ro = nums
    return (ids, parents, strs[:n], strs[n:2 * n], strs[2 * n:3 * n], strs[3 * n:], gens,
            ctimes, otimes, ro)


class SubvolumeRows(Sequence[SubvolumeInfo]):
    """An immutable listing of subvolumes, kept compactly and read as SubvolumeInfo
    tuples made on demand. Rows made together are two objects: their numbers packed in
    one bytes object, their text in one string (~45 bytes a row plus its path, against
    ~380 as SubvolumeInfo tuples with their own int, float and str objects). Small
    objects that live long, made among a listing's many short-lived ones, pin the
    allocator's pools and arenas (docs/benchmarks.md, issue 11): a few per block of
    rows, not ~7 per row. Joining listings shares their storage (no copy): a scan's
    listing is its blocks' rows joined."""

    __slots__ = ("_numbers", "_parts", "_size", "_texts")

    def __init__(self, rows: Iterable[Row] = ()) -> None:
        rows = list(rows)
        self._size = len(rows)
        self._parts: tuple[SubvolumeRows, ...] | None = None  # None: rows of their own
        self._numbers, self._texts = _pack(rows) if rows else (b"", "")

    @classmethod
    def join(cls, listings: Iterable[SubvolumeRows]) -> SubvolumeRows:
        """One listing of the rows of ``listings``, in their order (sharing their
        storage)."""
        joined = cls()
        joined._parts = tuple(p for rows in listings for p in rows._own() if p._size)
        joined._size = sum(p._size for p in joined._parts)
        return joined

    def _own(self) -> tuple[SubvolumeRows, ...]:
        return (self,) if self._parts is None else self._parts

    def columns(self) -> Columns:
        """The fields of every row as lists (the same values as the rows' fields), in
        SubvolumeInfo's order: built without making a tuple per row."""
        if self._parts is None:
            return _unpack(self._numbers, self._texts, self._size)
        out: Columns = ([], [], [], [], [], [], [], [], [], [])
        for part in self._parts:
            for column, values in zip(out, part.columns(), strict=True):
                column.extend(values)  # type: ignore[attr-defined]  # a list, per Columns
        return out

    def snapshots_of(self, uuid: str) -> SubvolumeRows:
        """The rows whose parent UUID is ``uuid`` (only those are made as tuples)."""
        return SubvolumeRows(row for part in self._own() if uuid in part._texts
                             for row in part if row.parent_uuid == uuid)

    def paths_by_id(self) -> dict[int, str]:
        """Each row's path by its id."""
        found: dict[int, str] = {}
        for part in self._own():
            columns = part.columns()
            found.update(zip(columns[0], columns[2], strict=True))
        return found

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[SubvolumeInfo]:
        if self._parts is None:
            return map(SubvolumeInfo._make, zip(*self.columns(), strict=True))
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
        for part in self._own():
            if at < part._size:
                return SubvolumeInfo._make(column[at] for column in part.columns())
            at -= part._size
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
