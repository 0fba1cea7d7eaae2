"""argparse types: bad values become usage errors (exit 2), never tracebacks."""

from __future__ import annotations

import argparse

from ..units import parse_duration, parse_size


def count(text: str) -> int:
    """A whole number, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("a count cannot be negative")
    if value >= 2**32:
        raise argparse.ArgumentTypeError(f"{text} is too large")
    return value


def percent(text: str) -> int:
    """A whole percentage, 0 to 100."""
    value = count(text)
    if value > 100:
        raise argparse.ArgumentTypeError("a percentage is 0 to 100")
    return value


def duration(text: str) -> int:
    """Seconds from "90s", "15m", "1h", "2d", "1w"."""
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def speed(text: str) -> int:
    """Bytes per second from "100M/s" or "100M"."""
    try:
        return parse_size(text.removesuffix("/s").removesuffix("/S"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def size_or_none(text: str) -> int:
    """A size (20G) or 'none' (0: no limit)."""
    if text.lower() in ("none", "0"):
        return 0
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
