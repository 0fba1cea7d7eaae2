"""One caller's expensive reads are bounded in places and in share of time; other
callers are not affected."""

from __future__ import annotations

import asyncio

import pytest

from btrfsd.core.limits import PerCallerLimit
from btrfsd.errors import Busy


class Clock:
    """A monotonic clock the test moves; ``sleep`` moves it and records the wait."""

    def __init__(self) -> None:
        self.now = 100.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


def limit_with(clock: Clock, **kw: float) -> PerCallerLimit:
    return PerCallerLimit(2, "listings", clock=clock, sleep=clock.sleep, **kw)  # type: ignore[arg-type]


async def spend(limit: PerCallerLimit, clock: Clock, key: int, seconds: float) -> None:
    async with limit.hold(key):
        clock.now += seconds


def test_a_caller_over_the_limit_is_refused_and_others_are_not() -> None:
    async def go() -> None:
        limit = PerCallerLimit(2, "listings")
        async with limit.hold(1000), limit.hold(1000):
            with pytest.raises(Busy, match="2 listings of yours"):
                async with limit.hold(1000):
                    pass
            async with limit.hold(1001):  # another caller
                pass
        async with limit.hold(1000), limit.hold(1000):  # places are given back
            pass
        with pytest.raises(ValueError):  # also on errors
            async with limit.hold(7):
                raise ValueError
        assert all(a.running == 0 for a in limit._accounts.values())
    asyncio.run(go())


def test_a_caller_past_their_share_waits_and_others_do_not() -> None:
    async def go() -> None:
        clock = Clock()
        limit = limit_with(clock, share=0.25, burst=1.0)
        await spend(limit, clock, 1000, 1.0)  # 1.0 (+0.25 refill, capped) - 1.0 = 0
        await spend(limit, clock, 1000, 1.0)  # 0 + 0.25 - 1.0 = -0.75
        assert clock.waits == []  # the burst is spent before anyone waits
        assert limit.wait_for(1000) == pytest.approx(0.75 / 0.25)
        await spend(limit, clock, 1001, 0.5)  # another caller has a full bucket
        assert clock.waits == []
        # 1000's bucket refilled by 0.125 during 1001's read: -0.625, a wait of 2.5 s
        await spend(limit, clock, 1000, 0.1)
        assert clock.waits == [pytest.approx(2.5)]
    asyncio.run(go())


def test_the_bucket_refills_with_time_and_holds_at_most_the_burst() -> None:
    async def go() -> None:
        clock = Clock()
        limit = limit_with(clock, share=0.5, burst=1.0)
        await spend(limit, clock, 1, 3.0)  # one long read: -2.0
        clock.now += 4.0  # refilled by 2.0 to 0.0
        assert limit.wait_for(1) == 0.0
        clock.now += 3600.0  # idle for long: the bucket holds 1.0, not more
        await spend(limit, clock, 1, 3.0)  # 1.0 (capped) - 3.0 = -2.0
        await spend(limit, clock, 1, 0.0)
        assert clock.waits == [pytest.approx(2.0 / 0.5)]
    asyncio.run(go())


def test_a_wait_longer_than_max_wait_is_refused_with_when_to_ask_again() -> None:
    async def go() -> None:
        clock = Clock()
        limit = limit_with(clock, share=0.1, burst=1.0, max_wait=5.0)
        await spend(limit, clock, 1, 2.0)  # 1.0 (capped) - 2.0 = -1.0: a wait of 10 s
        with pytest.raises(Busy, match="ask again in 10 s"):
            async with limit.hold(1):
                pytest.fail("ran past its share")
        assert limit._accounts[1].running == 0  # the refusal took no place
        clock.now += 5.0  # -0.5: a wait of 5 s, allowed
        await spend(limit, clock, 1, 0.0)
        assert clock.waits == [pytest.approx(5.0)]
    asyncio.run(go())


def test_an_error_in_the_read_is_charged_and_gives_the_place_back() -> None:
    async def go() -> None:
        clock = Clock()
        limit = limit_with(clock, share=0.5, burst=1.0)
        with pytest.raises(RuntimeError):
            async with limit.hold(1):
                clock.now += 2.0
                raise RuntimeError
        assert limit._accounts[1].running == 0
        assert limit.wait_for(1) == pytest.approx(1.0 / 0.5)
    asyncio.run(go())


def test_idle_callers_with_full_buckets_are_forgotten() -> None:
    async def go() -> None:
        clock = Clock()
        limit = limit_with(clock, share=0.5, burst=1.0)
        for uid in range(100):
            await spend(limit, clock, uid, 0.0)
        assert limit._accounts == {}  # nothing spent: nothing to remember
        await spend(limit, clock, 1, 0.5)
        assert list(limit._accounts) == [1]
        clock.now += 1.0  # refilled
        await spend(limit, clock, 2, 0.0)
        assert limit._accounts == {}
    asyncio.run(go())


@pytest.mark.parametrize("kw", [dict(share=0.0), dict(share=1.5), dict(burst=0.0),
                                dict(max_wait=-1.0)])
def test_nonsense_settings_are_refused(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        PerCallerLimit(2, "listings", **kw)  # type: ignore[arg-type]
