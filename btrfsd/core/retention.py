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

from bisect import bisect_left, insort
from collections.abc import Callable, KeysView, Sequence
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


# A candidate's place in ``decide``'s youngest-first order: its sort is stable, so among
# snapshots made at the same time the one given first comes first.
Key = tuple[float, int]  # (-created, order given)
Period = tuple[int, ...]


@dataclass
class _Entry:
    key: Key
    created: float
    important: bool
    periods: tuple[Period, ...]  # one per kind with a limit, in PERIODS order


class Timeline:
    """``decide`` kept up to date as snapshots come and go, so that a scheduled run costs
    the same with 10 snapshots as with 1,000: each change marks the few snapshots it can
    take a reason from, and ``losers`` decides only about those.

    Why that is enough: a snapshot loses a reason only when a younger one pushes it out of
    ``keep_last`` (one per insertion: the one now at rank keep_last), when an older one of
    its period becomes the period's first, when another period's youngest snapshot moves
    ahead of its period's and pushes it out of the limit (one period per change: the one
    now at rank ``limit``), when its period's youngest snapshot goes (its period may fall
    back), or when it grows older than ``min_age``. Removals otherwise only give reasons.
    ``losers`` then gives exactly the snapshots ``decide`` would not keep (a unit test
    compares the two over random timelines).
    """

    def __init__(self, limits: Limits, tz: tzinfo | None = None) -> None:
        self.limits = limits
        self.tz = tz
        self._kinds = [(kind, period_of, getattr(limits, kind))
                       for kind, period_of in PERIODS.items() if getattr(limits, kind) > 0]
        self._order = 0
        self._entries: dict[str, _Entry] = {}
        self._by_key: dict[Key, str] = {}
        self._counted: list[Key] = []  # not important, youngest first
        # per kind: each period's members, youngest first (its first is the last one)
        self._members: list[dict[Period, list[Key]]] = [{} for _ in self._kinds]
        # per kind: the periods by their youngest member (decide's order of periods)
        self._ranked: list[list[tuple[Key, Period]]] = [[] for _ in self._kinds]
        self._dirty: set[str] = set()  # may have lost every reason since the last look
        self._then: float | None = None  # the time of the last look

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> KeysView[str]:
        """The snapshots here (a set view: ``keys() - present`` is cheap)."""
        return self._entries.keys()

    def add(self, candidate: Candidate) -> None:
        """Add a snapshot; it comes after those added before among equal times (as in
        ``decide``'s input). Raises ValueError when its key is already here."""
        if candidate.key in self._entries:
            raise ValueError(f"{candidate.key} is already in the timeline")
        self._order += 1
        stamp = datetime.fromtimestamp(candidate.created, self.tz) if self._kinds else None
        entry = _Entry((-candidate.created, self._order), candidate.created,
                       candidate.important,
                       tuple(period_of(stamp) for _, period_of, _ in self._kinds
                             ) if stamp is not None else ())
        self._entries[candidate.key] = entry
        self._by_key[entry.key] = candidate.key
        if not entry.important:
            self._count(entry)
        self._dirty.add(candidate.key)

    def remove(self, key: str) -> None:
        """Forget a snapshot (deleted, or gone). Raises KeyError when it is not here."""
        entry = self._entries.pop(key)
        del self._by_key[entry.key]
        self._dirty.discard(key)
        if not entry.important:
            self._uncount(entry)

    def set_important(self, key: str, important: bool) -> None:
        """Mark or unmark a snapshot important. Raises KeyError when it is not here."""
        entry = self._entries[key]
        if entry.important == important:
            return
        entry.important = important
        if important:
            self._uncount(entry)
        else:
            self._count(entry)
        self._dirty.add(key)

    def reasons(self, key: str, now: float) -> list[str]:
        """Why ``decide`` would keep the snapshot now, in its words and order (empty: to
        be deleted). Raises KeyError when it is not here."""
        entry = self._entries[key]
        reasons: list[str] = []
        if entry.important:
            reasons.append("important")
            return reasons
        if now - entry.created < self.limits.min_age:
            reasons.append("min-age")
        if bisect_left(self._counted, entry.key) < self.limits.keep_last:
            reasons.append("keep-last")
        for k, (kind, _, limit) in enumerate(self._kinds):
            period = entry.periods[k]
            members = self._members[k][period]
            if members[-1] == entry.key and \
                    bisect_left(self._ranked[k], (members[0], period)) < limit:
                reasons.append(kind)
        return reasons

    def losers(self, now: float) -> list[str]:
        """The snapshots ``decide`` would not keep at ``now``, youngest first. They are
        looked at again next time until removed (a delete that failed is tried again)."""
        if self._then is None:
            self._dirty.update(self._entries)
        else:
            self._older_than_min_age(self._then, now)
        self._then = now
        lost = [key for key in self._dirty if not self.reasons(key, now)]
        self._dirty = set(lost)
        lost.sort(key=lambda k: self._entries[k].key)
        return lost

    # -- bookkeeping -----------------------------------------------------------------------
    def _mark(self, key: Key) -> None:
        self._dirty.add(self._by_key[key])

    def _older_than_min_age(self, then: float, now: float) -> None:
        # "now - created < min_age" turned false between then and now only for those made
        # in (then - min_age, now - min_age]; a margin for rounding: reasons() decides
        if now <= then:
            return  # the clock went back: snapshots only got younger
        margin = 1e-3
        low = (-(now - self.limits.min_age + margin),)
        high = (-(then - self.limits.min_age - margin),)
        for key in self._counted[bisect_left(self._counted, low):
                                 bisect_left(self._counted, high)]:
            self._mark(key)

    def _count(self, entry: _Entry) -> None:
        insort(self._counted, entry.key)
        keep_last = self.limits.keep_last
        if keep_last and len(self._counted) > keep_last:
            self._mark(self._counted[keep_last])  # pushed out of keep_last, if younger
        for k, (_, _, limit) in enumerate(self._kinds):
            period = entry.periods[k]
            members = self._members[k].setdefault(period, [])
            ranked = self._ranked[k]
            if members:
                first, youngest = members[-1], members[0]
                insort(members, entry.key)
                if members[-1] != first:
                    self._mark(first)  # no longer its period's first
                if members[0] == youngest:
                    continue
                del ranked[bisect_left(ranked, (youngest, period))]
            else:
                members.append(entry.key)
            insort(ranked, (entry.key, period))
            if len(ranked) > limit:  # the period pushed out of the limit, if any
                self._mark(self._members[k][ranked[limit][1]][-1])

    def _uncount(self, entry: _Entry) -> None:
        del self._counted[bisect_left(self._counted, entry.key)]
        for k in range(len(self._kinds)):
            period = entry.periods[k]
            members = self._members[k][period]
            ranked = self._ranked[k]
            youngest = members[0]
            del members[bisect_left(members, entry.key)]
            if youngest != entry.key:
                continue
            del ranked[bisect_left(ranked, (youngest, period))]
            if not members:
                del self._members[k][period]
                continue
            insort(ranked, (members[0], period))
            self._mark(members[-1])  # its period may fall back past the limit
