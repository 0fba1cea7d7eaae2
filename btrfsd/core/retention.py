"""Which scheduled snapshots to keep: snapper's timeline rules, plus keep-last and a
minimum age. Pure functions (no clock, no filesystem), so every decision can be explained
and tested on its own.

Timeline: for each period kind (hour, day, ISO week starting Monday, month, year) with a
limit N, the periods that hold snapshots are taken youngest first, and in each of the N
youngest the *first* (oldest) snapshot of that period is kept. One snapshot can be kept
for several kinds at once (the first of a day is usually the first of its hour too).
Also kept: the ``keep_last`` youngest snapshots, snapshots younger than ``min_age``
seconds, and snapshots marked important (they do not count toward any limit).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo

PERIODS: dict[str, Callable[[datetime], tuple[int, ...]]] = {
    "hourly": lambda t: (t.year, t.month, t.day, t.hour),
    "daily": lambda t: (t.year, t.month, t.day),
    "weekly": lambda t: tuple(t.isocalendar()[:2]),
    "monthly": lambda t: (t.year, t.month),
    "yearly": lambda t: (t.year,),
}


@dataclass(frozen=True)
class Limits:
    """How many periods of each kind keep their first snapshot; 0 keeps none that way."""

    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    keep_last: int = 0
    min_age: float = 0.0  # seconds


@dataclass(frozen=True)
class Candidate:
    """A snapshot a schedule made: its key (UUID), when it was made, and whether it is
    marked important."""

    key: str
    created: float  # seconds since the epoch
    important: bool = False


@dataclass
class Decision:
    candidate: Candidate
    reasons: list[str] = field(default_factory=list)  # empty: to be deleted

    @property
    def keep(self) -> bool:
        return bool(self.reasons)


def decide(candidates: Sequence[Candidate], limits: Limits, now: float,
           tz: tzinfo | None = None) -> list[Decision]:
    """Decide for every candidate, youngest first. ``tz`` sets where periods begin
    (default: the local time zone)."""
    ordered = sorted(candidates, key=lambda c: c.created, reverse=True)
    decisions = {c.key: Decision(c) for c in ordered}
    for c in ordered:
        if c.important:
            decisions[c.key].reasons.append("important")
        elif now - c.created < limits.min_age:
            decisions[c.key].reasons.append("min-age")
    counted = [c for c in ordered if not c.important]
    for c in counted[:limits.keep_last]:
        decisions[c.key].reasons.append("keep-last")
    stamps: list[datetime] = []  # each candidate's local time, made once for every kind
    for kind, period_of in PERIODS.items():
        limit = getattr(limits, kind)
        if limit <= 0:
            continue
        if not stamps:
            stamps = [datetime.fromtimestamp(c.created, tz) for c in counted]
        first: dict[tuple[int, ...], Candidate] = {}
        # youngest first: the last one seen in a period is its first
        for c, stamp in zip(counted, stamps, strict=True):
            first[period_of(stamp)] = c
        # dicts keep insertion order: periods appear youngest first
        for period in list(first)[:limit]:
            decisions[first[period].key].reasons.append(kind)
    return [decisions[c.key] for c in ordered]
