"""How much of the daemon one caller's expensive reads may take.

A listing of 10,000 subvolumes costs the daemon ~100 ms of work; an unprivileged user
looping on it from many connections could starve everyone else. Two bounds, both per
caller identity (a uid), not per connection, so opening more connections does not help:

- **places**: at most ``limit`` expensive reads of one caller run at once; more are
  refused at once with Busy (not queued: a queue would let one caller hold the daemon's
  memory and tasks);
- **share**: over time a caller's expensive reads may take at most ``share`` of the
  daemon's time (a token bucket of seconds: it holds at most ``burst`` seconds, refills
  at ``share`` seconds per second, and each read pays the time it took). A read that
  finds the bucket empty waits, in its place, until it has refilled; one that would wait
  longer than ``max_wait`` is refused with Busy saying when to ask again.

The time a read pays is its wall time from its start to its answer, not only CPU time:
under contention that charges a caller more, never less, and a read's wait for a kernel
lock is time it held a worker thread all the same.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from ..errors import Busy

log = logging.getLogger(__name__)


@dataclass
class _Account:
    running: int
    balance: float  # seconds of work the caller may still spend without waiting
    stamp: float  # when balance was last brought up to date


class PerCallerLimit:
    """Places and a time share per key (a caller's uid, say); see the module text.

    ``clock`` and ``sleep`` are the monotonic clock and the asynchronous sleep (tests
    replace them).
    """

    def __init__(self, limit: int, what: str, *, share: float = 1.0, burst: float = 1.0,
                 max_wait: float = 5.0, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        if limit < 1 or not 0 < share <= 1 or burst <= 0 or max_wait < 0:
            raise ValueError("limit >= 1, 0 < share <= 1, burst > 0, max_wait >= 0")
        self.limit = limit
        self.what = what
        self.share = share
        self.burst = burst
        self.max_wait = max_wait
        self._clock = clock
        self._sleep = sleep
        self._accounts: dict[Hashable, _Account] = {}

    def _account(self, key: Hashable, now: float) -> _Account:
        acct = self._accounts.get(key)
        if acct is None:
            acct = self._accounts[key] = _Account(0, self.burst, now)
        else:
            acct.balance = min(self.burst, acct.balance + (now - acct.stamp) * self.share)
            acct.stamp = now
        return acct

    def _forget_idle(self, now: float) -> None:
        # An idle account whose bucket has refilled says nothing a new one would not:
        # dropping it keeps the table as small as the set of recent callers.
        full = [k for k, a in self._accounts.items() if a.running == 0
                and a.balance + (now - a.stamp) * self.share >= self.burst]
        for k in full:
            del self._accounts[k]

    def wait_for(self, key: Hashable) -> float:
        """Seconds ``key``'s next read would wait for its share now (0: none)."""
        now = self._clock()
        acct = self._accounts.get(key)
        if acct is None:
            return 0.0
        balance = min(self.burst, acct.balance + (now - acct.stamp) * self.share)
        return max(0.0, -balance / self.share)

    @asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        """Hold one place for ``key`` for the body, after waiting for its share.

        Raises Busy when ``key`` already holds ``limit`` places, or when its share would
        make it wait longer than ``max_wait`` (the message says when to ask again).
        """
        now = self._clock()
        acct = self._account(key, now)
        if acct.running >= self.limit:
            raise Busy(f"{acct.running} {self.what} of yours are still running (at most "
                       f"{self.limit} at once); wait for them before asking again.")
        wait = max(0.0, -acct.balance / self.share)
        if wait > self.max_wait:
            raise Busy(f"Your {self.what} have taken more than their share of btrfsd's "
                       f"time; ask again in {math.ceil(wait)} s.")
        acct.running += 1
        started: float | None = None
        try:
            if wait > 0:
                log.debug("%s of %s wait %.3f s for their share", self.what, key, wait)
                await self._sleep(wait)
            started = self._clock()
            yield
        finally:
            now = self._clock()
            acct = self._account(key, now)
            if started is not None:
                acct.balance -= now - started
            acct.running -= 1
            self._forget_idle(now)
