"""Method replies marshalled once and sent again while what they say holds.

A ListSubvolumes reply of 10,000 subvolumes is about 1.9 MB; building its columns and
marshalling them took ~75 ms of the ~130 ms such a call cost (docs/benchmarks.md), every
time, although the listing under it was the same one (core/subvolumes.py keeps it and
says when it is). A method returns a ``Marshalled`` body in place of its value;
CallerAwareBus.send (bus/context.py) turns the reply into a ``MarshalledReply``, whose
header is made per reply (serial, destination) and whose body bytes are the kept ones.
"""

from __future__ import annotations

import asyncio
import re
import struct
import sys
from array import array
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from typing import Any

from dbus_fast import Message, MessageType, Variant
from dbus_fast._private.constants import LITTLE_ENDIAN, PROTOCOL_VERSION, HeaderField
from dbus_fast._private.marshaller import Marshaller
from dbus_fast.constants import MessageFlag

# A kept body is dropped when no call asked for it for this long: a front end that lists
# again (a page's refresh, a script's loop) keeps it; an idle daemon gives the memory back
# (1.9 MB at 10,000 subvolumes). 15 s, not 30: btrfsd re-reads a filesystem every 10 s
# (refresh_interval), and a page lists again on what that finds, not on a timer of its own.
KEEP_FOR = 15.0
KEEP_AT_MOST = 4  # bodies per interface object (e.g. whole listing + a few snapshots_of)


# A struct of arrays of fixed-size numbers and strings ("columns", as ListSubvolumes
# replies): marshalled here a column at a time, with struct.pack over a whole column of
# numbers, ~5x faster than dbus-fast's per-element marshaller for 10,000 rows (a unit
# test checks the bytes are dbus-fast's own).
_COLUMNS = re.compile(r"\((?:a[tuxbs])+\)")
_NUMBERS = {"t": ("Q", 8), "x": ("q", 8), "u": ("I", 4), "b": ("I", 4)}
_U32 = struct.Struct("<I").pack


def _pad(buf: bytearray, n: int) -> None:
    buf.extend(bytes(-len(buf) % n))


class Pieces:
    """A column of strings given a piece at a time, each made when the marshaller gets to
    it: the number of strings and the strings joined by NUL (which D-Bus text never
    holds). The strings of a long listing need not exist one by one (a listing of
    10,000 made ~100,000 objects that way, whose arenas stayed; docs/benchmarks.md,
    issue 11)."""

    __slots__ = ("_make",)

    def __init__(self, make: Callable[[], Iterable[tuple[int, str]]]) -> None:
        self._make = make

    def __iter__(self) -> Iterator[tuple[int, str]]:
        return iter(self._make())

    def strings(self) -> list[str]:
        """Every string of the column, in order."""
        return [s for count, joined in self if count for s in joined.split("\0")]


_BIG_ENDIAN = sys.byteorder == "big"  # arrays are in the machine's order, the body little


class _Lengths(dict[int, bytes]):
    """A string's length as it goes before it (u32), by length."""

    def __missing__(self, size: int) -> bytes:
        return self.setdefault(size, _U32(size)) if size < 4096 else _U32(size)


class _Tails(dict[int, bytes]):
    """What follows a string of each length: its NUL and padding to 4 (the next
    string's length starts aligned)."""

    def __missing__(self, size: int) -> bytes:
        tail = b"\0" * (1 + -(size + 1) % 4)
        return self.setdefault(size, tail) if size < 4096 else tail


_LENGTHS, _TAILS = _Lengths(), _Tails()


def _strings(column: Sequence[str]) -> bytes:
    """An array's strings, each its length, UTF-8 and NUL, padded to 4 but the last.
    Raises ValueError for a string that is not valid D-Bus text."""
    return _joined(len(column), "\0".join(column)) if column else b""


def _joined(count: int, joined: str) -> bytes:
    """As _strings, of ``count`` strings joined by NUL. Raises ValueError when that is
    not ``count`` strings (one held a NUL) or one is not UTF-8 text. C loops only: no
    Python per string."""
    raw = joined.encode()  # UnicodeEncodeError (a ValueError): not UTF-8 text
    size, rest = divmod(len(raw) - (count - 1), count)
    if (not rest and raw.count(0) == count - 1
            and raw[size::size + 1] == bytes(count - 1)):  # every string this long
        tail = _TAILS[size]
        return _LENGTHS[size] + raw.replace(b"\0", tail + _LENGTHS[size]) + b"\0"
    raws = raw.split(b"\0")
    if len(raws) != count:
        raise ValueError("a string holds a NUL character")
    sizes = list(map(len, raws))
    parts = [b""] * (3 * count)
    parts[::3] = map(_LENGTHS.__getitem__, sizes)
    parts[1::3] = raws
    parts[2::3] = map(_TAILS.__getitem__, sizes)
    packed = b"".join(parts)
    return packed[:len(packed) - len(_TAILS[sizes[-1]]) + 1]  # the last one unpadded


def _numbers(kind: str, column: Sequence[Any] | array) -> bytes:  # type: ignore[type-arg]
    """An array's numbers, given as values or as an array of the wire's element type
    (typecode as _NUMBERS' struct code: the same letters). Raises struct.error for a
    number out of range or not a number, TypeError for an array of another type."""
    code = _NUMBERS[kind][0]
    if isinstance(column, array):
        if column.typecode != code:
            raise TypeError(f"an array of {column.typecode!r} for a column of {kind!r}")
        if _BIG_ENDIAN:
            column = array(column.typecode, column)
            column.byteswap()
        return column.tobytes()
    values = map(bool, column) if kind == "b" else column  # truth, as dbus-fast
    # struct.Struct, not struct.pack: the module keeps the last 100 formats it compiled,
    # and one per column length held ~0.75 MB for 10,000 strings (issue 11)
    return struct.Struct(f"<{len(column)}{code}").pack(*values)


def _columns(types: str, columns: Sequence[Sequence[Any] | array | Pieces]  # type: ignore[type-arg]
             ) -> bytes:
    """The body of one struct of arrays (``types``: each array's element type), each
    given as a sequence of values, a number column as an array (see _numbers), a string
    column as Pieces. Raises ValueError for a string that is not valid D-Bus text,
    struct.error for a number out of range or not a number, TypeError or
    AttributeError for a value of the wrong kind."""
    if len(columns) != len(types):
        raise ValueError(f"{len(columns)} columns for {len(types)} arrays")
    buf = bytearray()
    for kind, column in zip(types, columns, strict=True):
        _pad(buf, 4)
        at = len(buf)
        buf.extend(bytes(4))  # the array's length, known at its end
        if kind == "s":
            start = len(buf)
            if isinstance(column, Pieces):
                for count, joined in column:
                    if count:
                        _pad(buf, 4)  # the last string of the piece before: unpadded
                        buf.extend(_joined(count, joined))
            else:
                buf.extend(_strings(column))
        else:
            if isinstance(column, Pieces):
                raise TypeError(f"strings for a column of {kind!r}")
            _pad(buf, _NUMBERS[kind][1])
            start = len(buf)
            buf.extend(_numbers(kind, column))
        buf[at:at + 4] = _U32(len(buf) - start)
    return bytes(buf)


class Marshalled:
    """One method's out arguments, already marshalled (the body of a reply)."""

    __slots__ = ("body", "signature")

    def __init__(self, signature: str, values: list[Any]) -> None:
        """Marshal ``values`` (the out arguments) as ``signature``.
        Raises what dbus-fast's Marshaller raises for values that do not match (and
        ValueError, TypeError or struct.error from the columns' own marshaller)."""
        self.signature = signature
        if len(values) == 1 and _COLUMNS.fullmatch(signature):
            self.body = _columns(signature[2:-1:2], values[0])
        else:
            self.body = bytes(Marshaller(signature, values).marshall())


class MarshalledReply(Message):
    """A METHOD_RETURN whose body is a Marshalled's bytes (dbus-fast's writer calls
    ``_marshall`` on each message it queues)."""

    def _marshall(self, negotiate_unix_fd: bool) -> bytearray:
        body: bytes = self.body[0].body
        # the fields in dbus-fast's order: the same bytes as its own reply (a unit test)
        fields = [(HeaderField.REPLY_SERIAL.value, Variant("u", self.reply_serial))]
        if self.destination:
            fields.append((HeaderField.DESTINATION.value, Variant("s", self.destination)))
        fields.append((HeaderField.SIGNATURE.value, Variant("g", self.signature)))
        header = Marshaller("yyyyuua(yv)", [
            LITTLE_ENDIAN, MessageType.METHOD_RETURN.value, self.flags.value,
            PROTOCOL_VERSION, len(body), self.serial, fields]).marshall()
        # the body starts 8-aligned: its own alignments were computed from offset 0
        header.extend(bytes(-len(header) % 8))
        return header + body


def as_reply(msg: Message) -> Message:
    """``msg`` itself, or for a method return carrying a Marshalled, the reply that sends
    its bytes. Raises ValueError when the Marshalled's signature is not the method's."""
    if (msg.message_type is not MessageType.METHOD_RETURN or len(msg.body) != 1
            or not isinstance(msg.body[0], Marshalled)):
        return msg
    kept: Marshalled = msg.body[0]
    if kept.signature != msg.signature:
        raise ValueError(f"a reply marshalled as {kept.signature!r} for a method "
                         f"returning {msg.signature!r}")
    return MarshalledReply(message_type=MessageType.METHOD_RETURN, serial=msg.serial,
                           reply_serial=msg.reply_serial, destination=msg.destination,
                           flags=MessageFlag.NONE, signature=msg.signature, body=[kept])


class KeptReplies:
    """Marshalled replies by key, each with the value it was made from (a reply is
    reused only while both are equal); forgotten when unused for KEEP_FOR seconds."""

    def __init__(self) -> None:
        self._kept: dict[Hashable, tuple[object, Marshalled]] = {}
        self._forget: asyncio.TimerHandle | None = None

    def get(self, key: Hashable, also: object) -> Marshalled | None:
        """The reply kept for ``key`` if it was made with ``also`` equal, else None."""
        held = self._kept.get(key)
        if held is None or held[0] != also:
            return None
        self._touch()
        return held[1]

    def put(self, key: Hashable, also: object, reply: Marshalled) -> Marshalled:
        """Keep ``reply`` for ``key`` (with ``also``) and return it."""
        self._kept.pop(key, None)
        while len(self._kept) >= KEEP_AT_MOST:
            del self._kept[next(iter(self._kept))]  # the oldest kept
        self._kept[key] = (also, reply)
        self._touch()
        return reply

    def clear(self) -> None:
        """Forget every kept reply."""
        self._kept.clear()
        if self._forget is not None:
            self._forget.cancel()
            self._forget = None

    def _touch(self) -> None:
        if self._forget is not None:
            self._forget.cancel()
        self._forget = asyncio.get_running_loop().call_later(KEEP_FOR, self.clear)
