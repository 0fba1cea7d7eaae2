"""The incremental retention decision (Timeline) against the full one (decide), over
seeded random timelines: clocks that stall and go back, daylight saving's repeated hour,
important marks set and cleared, snapshots deleted behind btrfsd's back, deletes that
fail, and limits changed between runs (a new Timeline, as schedules.py makes one)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

import pytest

from btrfsd.core.retention import Candidate, Limits, Timeline, decide

BERLIN = ZoneInfo("Europe/Berlin")


class Jumpy(tzinfo):
    """A zone whose clocks go back 30 hours every 10 days (and forward again 5 days
    later): an hour, day or week of local time then holds two stretches of real time, so
    a period's youngest snapshot can be younger than another period's (the real zones
    that fall back across midnight, seldom)."""

    def fromutc(self, dt: datetime) -> datetime:  # type: ignore[override]
        utc = dt.replace(tzinfo=None)
        back = (utc - datetime(2026, 1, 1)) // timedelta(days=5) % 2
        return (utc - timedelta(hours=30 * back)).replace(tzinfo=self)

    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(0)

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)


# the autumn night of 2026 whose 02:00-03:00 comes twice in Berlin
START = datetime(2026, 10, 24, 20, 0, tzinfo=UTC).timestamp()
STEPS = (0, 1, 60, 900, 900, 900, 3600, 3600, 5400, 86400, 6 * 86400, 35 * 86400,
         -900, -7200)


def _limits(rng: random.Random) -> Limits:
    def n() -> int:
        return rng.choice((0, 0, 1, 2, 3, 5))
    return Limits(hourly=n(), daily=n(), weekly=n(), monthly=n(), yearly=n(),
                  keep_last=n(), min_age=rng.choice((0.0, 0.0, 1800.0, 86400.0)))


@dataclass
class World:
    rng: random.Random
    limits: Limits
    tz: object
    now: float = START
    steps: tuple[int, ...] = STEPS
    made: int = 0

    def __post_init__(self) -> None:
        # what schedules.py keeps: records in the order made, and a Timeline of them
        self.records: dict[str, Candidate] = {}
        self.timeline = self._timeline()

    def _timeline(self) -> Timeline:
        timeline = Timeline(self.limits, self.tz)  # type: ignore[arg-type]
        for c in self.records.values():
            timeline.add(c)
        return timeline

    def snapshot(self) -> None:
        self.made += 1
        c = Candidate(f"s{self.made}", self.now, self.rng.random() < 0.05)
        self.records[c.key] = c
        self.timeline.add(c)

    def run(self) -> None:
        expected = decide(list(self.records.values()), self.limits, self.now,
                          self.tz)  # type: ignore[arg-type]
        doomed = [d.candidate.key for d in expected if not d.keep]
        assert self.timeline.losers(self.now) == doomed
        if self.rng.random() < 0.2:  # every reason, in decide's words
            for d in expected:
                assert self.timeline.reasons(d.candidate.key, self.now) == d.reasons
        for key in doomed:
            if self.rng.random() < 0.1:
                continue  # the delete failed: tried again next run
            self.forget(key)

    def forget(self, key: str) -> None:
        del self.records[key]
        self.timeline.remove(key)

    def step(self) -> None:
        roll = self.rng.random()
        if roll < 0.05 and self.records:  # deleted behind btrfsd's back
            self.forget(self.rng.choice(list(self.records)))
        elif roll < 0.1 and self.records:
            key = self.rng.choice(list(self.records))
            c = self.records[key]
            self.records[key] = Candidate(key, c.created, not c.important)
            self.timeline.set_important(key, not c.important)
        elif roll < 0.12:
            self.limits = _limits(self.rng)
            self.timeline = self._timeline()
        self.now += self.rng.choice(self.steps)
        self.snapshot()
        if self.rng.random() < 0.1:
            self.snapshot()  # two at the same time
        if self.rng.random() < 0.8:
            self.run()


SHORT = (0, 60, 900, 900, 1800, 3600, 3600, 5400, -900)
# hours before Jumpy's clocks first go back
JUMP = datetime(2026, 1, 6, tzinfo=UTC).timestamp() - 6 * 3600


@pytest.mark.parametrize(("tz", "start", "steps"), [
    (UTC, START, STEPS), (BERLIN, START, STEPS), (Jumpy(), START, STEPS),
    (Jumpy(), JUMP, SHORT)], ids=["utc", "berlin", "jumpy", "jumpy-back"])
def test_timeline_decides_as_decide_does(tz: object, start: float,
                                         steps: tuple[int, ...]) -> None:
    for seed in range(50):
        rng = random.Random(seed)
        world = World(rng, _limits(rng), tz, now=start, steps=steps)
        for _ in range(60):
            world.step()
        world.run()


def test_a_timeline_loaded_late_decides_as_decide_does() -> None:
    # a Timeline made from records that never had a run (after a restart)
    rng = random.Random(7)
    world = World(rng, Limits(hourly=24, daily=7, weekly=4, monthly=12, keep_last=3), UTC)
    for _ in range(500):
        world.now += rng.choice(STEPS[:9])
        world.snapshot()
    world.timeline = world._timeline()
    world.run()
    world.run()


def test_a_period_falls_back_when_its_youngest_goes() -> None:
    # Jumpy's hour H holds a (before the clocks go back) and c (30 hours later, when H
    # comes again); d and b are in between, in hours of their own. While c is there, H is
    # the youngest hour and keeps its first, a; once c is gone, H is the oldest of three.
    jump = datetime(2026, 1, 6, tzinfo=UTC).timestamp()
    cands = [Candidate("a", jump - 3000), Candidate("d", jump + 3600),
             Candidate("b", jump + 5 * 3600), Candidate("c", jump + 29 * 3600 + 600)]
    limits, now, tz = Limits(hourly=2, keep_last=1), jump + 30 * 3600, Jumpy()
    timeline = Timeline(limits, tz)
    for c in cands:
        timeline.add(c)
    assert timeline.losers(now) == ["d"]  # its delete fails: still there
    assert timeline.reasons("a", now) == ["hourly"]
    timeline.remove("c")  # deleted behind btrfsd's back
    expected = [d.candidate.key for d in decide(cands[:3], limits, now, tz) if not d.keep]
    assert expected == ["a"]
    assert timeline.losers(now) == expected
