"""What the kernel says about subvolumes (fs/subvol.py and fs/treesearch.py make it): one
subvolume (SubvolumeInfo), and a listing of many kept compactly (SubvolumeRows)."""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain
from typing import NamedTuple, overload


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
_UUID_LENGTH = 36  # as fs/treesearch.py format_uuid writes one
_NUMBER_CODES = "QQQdd"  # then the read-only bytes (0 or 1)


def _pack(rows: list[Row]) -> tuple[bytes, tuple[str, str, str, str]]:
    ids, parents, paths, uuids, puuids, ruuids, gens, ctimes, otimes, ro = (
        zip(*rows, strict=True))
    # arrays, not struct.pack: a format per length would stay in struct's cache
    numbers = b"".join([array("Q", ids).tobytes(), array("Q", parents).tobytes(),
                        array("Q", gens).tobytes(), array("d", ctimes).tobytes(),
                        array("d", otimes).tobytes(), bytes(map(bool, ro))])
    return numbers, (_SEP.join(paths), _SEP.join(uuids), _SEP.join(puuids),
                     _SEP.join(ruuids))


# The number fields by name: their place in the numbers (after the ones before them)
_NUMBER_FIELDS = {"id": 0, "parent_id": 1, "generation": 2, "ctime": 3, "otime": 4}
_TEXT_FIELDS = {"path": 0, "uuid": 1, "parent_uuid": 2, "received_uuid": 3}
_READ_ONLY_AT = len(_NUMBER_CODES)  # the read-only bytes come after the numbers
_SIZES = [*(array(code).itemsize for code in _NUMBER_CODES), 1]  # per value, per column
_BEFORE = [sum(_SIZES[:i]) for i in range(len(_SIZES))]  # per row, of the columns before
# Rows given at once are kept in parts of at most this many (a scan's blocks are smaller):
# what is made from a listing a part at a time stays small however long the listing is.
PART_ROWS = 256
_SHARE_FROM = 256  # texts longer than this are shared between parts when equal (join)


def _numbers_at(numbers: bytes, count: int, index: int) -> memoryview:
    """The bytes of number column ``index`` (or the read-only bytes) of a part of
    ``count`` rows."""
    at = count * _BEFORE[index]
    return memoryview(numbers)[at:at + count * _SIZES[index]]


def _share_texts(parts: Iterable[SubvolumeRows]) -> None:
    """Let parts whose text column is equal hold one string: the snapshots of one source
    in a block have one parent UUID, 128 times the same ~4.6 KB text per block of a
    scan (issue 11: ~360 KB of a listing of 10,000 such snapshots). Equal values, so
    nothing a reader sees changes; pickle (memory.freeze) keeps them shared."""
    seen: dict[str, str] = {}
    for part in parts:
        texts = part._texts
        shared = tuple(seen.setdefault(t, t) if len(t) > _SHARE_FROM else t for t in texts)
        if any(a is not b for a, b in zip(shared, texts, strict=True)):
            part._texts = shared  # type: ignore[assignment]


class SubvolumeRows(Sequence[SubvolumeInfo]):
    """An immutable listing of subvolumes, kept compactly and read as SubvolumeInfo
    tuples made on demand. Rows made together are five objects: their numbers packed in
    one bytes object, each text field in one string (~45 bytes a row plus its path, against
    ~380 as SubvolumeInfo tuples with their own int, float and str objects). Small
    objects that live long, made among a listing's many short-lived ones, pin the
    allocator's pools and arenas (docs/benchmarks.md, issue 11): a few per block of
    rows, not ~7 per row. Joining listings shares their storage (no copy): a scan's
    listing is its blocks' rows joined."""

    __slots__ = ("_numbers", "_parts", "_size", "_texts")
    _texts: tuple[str, str, str, str]  # paths, uuids, parent uuids, received uuids

    def __init__(self, rows: Iterable[Row] = ()) -> None:
        rows = list(rows)
        self._size = len(rows)
        self._parts: tuple[SubvolumeRows, ...] | None = None  # None: rows of their own
        if self._size > PART_ROWS:
            self._parts = tuple(SubvolumeRows(rows[at:at + PART_ROWS])
                                for at in range(0, self._size, PART_ROWS))
            self._numbers, self._texts = b"", ("", "", "", "")
            return
        self._numbers, self._texts = _pack(rows) if rows else (b"", ("", "", "", ""))

    @classmethod
    def join(cls, listings: Iterable[SubvolumeRows]) -> SubvolumeRows:
        """One listing of the rows of ``listings``, in their order (sharing their
        storage)."""
        joined = cls()
        joined._parts = tuple(p for rows in listings for p in rows._own() if p._size)
        joined._size = sum(p._size for p in joined._parts)
        _share_texts(joined._parts)
        return joined

    def _own(self) -> tuple[SubvolumeRows, ...]:
        return (self,) if self._parts is None else self._parts

    def columns(self) -> Columns:
        """The fields of every row as lists (the same values as the rows' fields), in
        SubvolumeInfo's order: built without making a tuple per row."""
        texts = [self._strings(name) for name in _TEXT_FIELDS]
        ids, parents, gens, ctimes, otimes = (
            self.numbers(name).tolist() for name in _NUMBER_FIELDS)
        return (ids, parents, *texts, gens, ctimes, otimes,  # type: ignore[return-value]
                list(map(bool, self.read_only())))

    def numbers(self, field: str) -> array:  # type: ignore[type-arg]
        """Number field ``field`` (id, parent_id, generation: unsigned 64-bit; ctime,
        otime: double) of every row as an array, copied from the packed rows without a
        Python object per value. Raises KeyError for another name."""
        index = _NUMBER_FIELDS[field]
        column = array(_NUMBER_CODES[index])
        for part in self._own():
            column.frombytes(_numbers_at(part._numbers, part._size, index))
        return column

    def read_only(self) -> bytes:
        """Every row's read-only flag, one byte each (0 or 1)."""
        return b"".join(_numbers_at(p._numbers, p._size, _READ_ONLY_AT) for p in self._own())

    def _strings(self, field: str) -> list[str]:
        """Text field ``field`` of every row, a string each (split a part at a time: C
        loops, no Python step per row)."""
        return list(chain.from_iterable(
            joined.split(_SEP) for _, joined in self.texts(field)))

    def texts(self, field: str) -> Iterator[tuple[int, str]]:
        """Text field ``field`` (path, uuid, parent_uuid, received_uuid) of every row, in
        pieces of at most PART_ROWS rows: each the number of rows and their values
        joined by NUL, which no name or UUID holds (so the strings of a long listing
        need not exist one by one). Raises KeyError for another name."""
        index = _TEXT_FIELDS[field]
        return ((p._size, p._texts[index]) for p in self._own() if p._size)

    def snapshots_of(self, uuid: str) -> SubvolumeRows:
        """The rows whose parent UUID is ``uuid``: parts where all rows match are shared,
        only rows of parts where some do are made as tuples."""
        if len(uuid) != _UUID_LENGTH or _SEP in uuid:  # not a UUID: row by row
            return SubvolumeRows(row for row in self if row.parent_uuid == uuid)
        found: list[SubvolumeRows] = []
        for part in self._own():
            # each parent UUID is one or none (""): with no NUL in it, a count of this
            # one is a count of rows
            matches = part._texts[2].count(uuid)
            if matches == part._size:
                found.append(part)
            elif matches:
                found.append(SubvolumeRows(row for row in part if row.parent_uuid == uuid))
        return SubvolumeRows.join(found)

    def paths_by_id(self) -> dict[int, str]:
        """Each row's path by its id."""
        return dict(zip(self.numbers("id"), self._strings("path"), strict=True))

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
