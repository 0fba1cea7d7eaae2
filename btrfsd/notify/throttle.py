"""Which alerts reach the desktop: no repeats for the same crossing, and a rate limit.

btrfsd already fires each quota level once per crossing (docs/quotas.md, hysteresis kept
across restarts); the agent adds its own guard because it cannot rely on the daemon's
state (a state file moved aside re-fires crossings, a flapping job fails every few
minutes), and because a burst of alerts must not bury the desktop. Pure logic: the clock
is passed in, so tests use a fake one.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

LEVELS = ("warning", "critical", "exceeded")


def level_rank(level: str) -> int:
    """0 for warning, 1 critical, 2 exceeded; -1 for a level this agent does not know."""
    return LEVELS.index(level) if level in LEVELS else -1


@dataclass
class Throttle:
    """Decide whether an alert is shown.

    ``quiet`` seconds after an alert for a subject was shown, the same or a lower level for
    that subject is not shown again (a higher one is: it is news). At most ``burst`` alerts
    are shown at once, then one per ``per`` seconds (a token bucket); an alert over the
    limit is dropped and counted in ``dropped`` (the next one shown says how many).
    """

    clock: Callable[[], float]
    quiet: float = 3600.0
    burst: int = 5
    per: float = 30.0
    dropped: int = 0
    _shown: dict[Hashable, tuple[float, int]] = field(default_factory=dict)
    _tokens: float = -1.0
    _refilled: float = 0.0

    def __post_init__(self) -> None:
        self._tokens = float(self.burst)
        self._refilled = self.clock()

    def repeat(self, subject: Hashable, rank: int = 0) -> bool:
        """Whether an alert of ``rank`` for ``subject`` repeats one shown within ``quiet``."""
        last = self._shown.get(subject)
        return last is not None and self.clock() - last[0] < self.quiet and rank <= last[1]

    def admit(self, subject: Hashable, rank: int = 0) -> bool:
        """True (and remember it) when the alert is to be shown; False for a repeat or
        over the rate limit. Raises nothing."""
        if self.repeat(subject, rank):
            return False
        now = self.clock()
        self._tokens = min(float(self.burst),
                           self._tokens + (now - self._refilled) / self.per)
        self._refilled = now
        if self._tokens < 1.0:
            self.dropped += 1
            return False
        self._tokens -= 1.0
        self._shown[subject] = (now, rank)
        # forget what is past its quiet time so the table does not grow without end
        for key in [k for k, (t, _) in self._shown.items() if now - t >= self.quiet]:
            del self._shown[key]
        return True

    def take_dropped(self) -> int:
        """How many were dropped since the last call (and reset the count)."""
        n, self.dropped = self.dropped, 0
        return n
