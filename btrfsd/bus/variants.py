"""Plain Python values to D-Bus variants, for a{sv} dictionaries."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from dbus_fast import Variant

from ..names import display


def to_variant(value: bool | int | float | str) -> Variant:
    """bool -> b, int -> t (x when negative), float -> d, str -> s (as free text)."""
    if isinstance(value, bool):  # before int: bool is an int subclass
        return Variant("b", value)
    if isinstance(value, int):
        return Variant("t" if value >= 0 else "x", value)
    if isinstance(value, float):
        return Variant("d", value)
    return Variant("s", display(str(value)))


def to_vardict(values: Mapping[str, bool | int | float | str]) -> dict[str, Variant]:
    return {k: to_variant(v) for k, v in values.items()}


_PER_SECOND = 1_000_000.0  # the same product as with the int: it converts to this float


def usec(seconds: float) -> int:
    """Seconds since the epoch (float) to whole microseconds, the bus's time unit."""
    return int(seconds * _PER_SECOND)


def usecs(seconds: Iterable[float]) -> Iterator[int]:
    """``usec`` of each, without a Python call per value (a listing's column)."""
    return map(int, map(_PER_SECOND.__mul__, seconds))
