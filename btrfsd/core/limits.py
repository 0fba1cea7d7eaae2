"""How many expensive reads one caller may have running at once.

A listing of 10,000 subvolumes costs the daemon ~100 ms of CPU; an unprivileged user
looping on it from many connections could starve everyone else. Calls over the limit
are refused at once with Busy (not queued: a queue would still let one caller occupy
the daemon), and the limit is per caller identity, not per connection, so opening more
connections does not help.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from contextlib import contextmanager

from ..errors import Busy


class PerCallerLimit:
    """At most ``limit`` concurrent holders per key (a caller's uid, say)."""

    def __init__(self, limit: int, what: str) -> None:
        self.limit = limit
        self.what = what
        self._running: dict[Hashable, int] = {}

    @contextmanager
    def hold(self, key: Hashable) -> Iterator[None]:
        """Hold one place for ``key`` for the body. Raises Busy when ``key`` already
        holds ``limit`` places."""
        running = self._running.get(key, 0)
        if running >= self.limit:
            raise Busy(f"{running} {self.what} of yours are still running (at most "
                       f"{self.limit} at once); wait for them before asking again.")
        self._running[key] = running + 1
        try:
            yield
        finally:
            left = self._running[key] - 1
            if left:
                self._running[key] = left
            else:
                del self._running[key]
