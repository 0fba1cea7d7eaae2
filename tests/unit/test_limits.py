"""One caller's expensive reads are bounded; other callers are not affected."""

from __future__ import annotations

import pytest

from btrfsd.core.limits import PerCallerLimit
from btrfsd.errors import Busy


def test_a_caller_over_the_limit_is_refused_and_others_are_not() -> None:
    limit = PerCallerLimit(2, "listings")
    with limit.hold(1000), limit.hold(1000):
        with pytest.raises(Busy, match="2 listings of yours"), limit.hold(1000):
            pass
        with limit.hold(1001):  # another caller
            pass
    with limit.hold(1000), limit.hold(1000):  # places are given back, also on errors
        pass
    with pytest.raises(ValueError), limit.hold(7):
        raise ValueError
    assert limit._running == {}
