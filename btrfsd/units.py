"""Byte sizes for people: parse "100M", "20G", "1.5T" (binary units) and format them back."""

from __future__ import annotations

import re

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50,
          "E": 1 << 60}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTPE]?)(?:I?B)?\s*$", re.IGNORECASE)
U64_MAX = 2**64 - 1


def parse_size(text: str, *, maximum: int = U64_MAX) -> int:
    """Parse a size: plain bytes or a number with a binary unit (K, M, G, T, P, E; "KiB",
    "KB" and "k" mean the same). Raises ValueError naming the text for junk, negatives
    and values over ``maximum``."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a size (examples: 4096, 100M, 20G, 1.5T)")
    number, unit = m.group(1), m.group(2).upper()
    value = int(float(number) * _UNITS[unit]) if "." in number else int(number) * _UNITS[unit]
    if value > maximum:
        raise ValueError(f"{text!r} is too large (at most {format_bytes(maximum)})")
    return value


def format_bytes(n: float) -> str:
    """Format a byte count with a binary unit: 0 B, 512 B, 1.5 KiB, 20.0 GiB."""
    if n < 1024:
        return f"{int(n)} B"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        n /= 1024
        if n < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.1f} EiB"


_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$", re.IGNORECASE)
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> int:
    """Parse "90s", "15m", "1h", "2d", "1w" or plain seconds. Raises ValueError."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a duration (examples: 15m, 1h, 2d, 1w)")
    return int(m.group(1)) * _SECONDS[m.group(2).lower()]


# A qgroup id holds the level in its top 16 bits and the subvolume id below them.
QGROUP_LEVEL_SHIFT = 48


def qgroupid(level: int, subvolume_id: int) -> int:
    """The id of a qgroup: level in the top 16 bits (0 for a subvolume's own qgroup)."""
    return (level << QGROUP_LEVEL_SHIFT) | subvolume_id


def split_qgroupid(qid: int) -> tuple[int, int]:
    """(level, subvolume id) of a qgroup id."""
    return qid >> QGROUP_LEVEL_SHIFT, qid & ((1 << QGROUP_LEVEL_SHIFT) - 1)


def format_qgroupid(qid: int) -> str:
    """A qgroup id as btrfs-progs writes it: level/id."""
    level, sid = split_qgroupid(qid)
    return f"{level}/{sid}"
