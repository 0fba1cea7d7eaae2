"""Quota alert levels: crossings, hysteresis, overrides, and the "limit reached" slack."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from btrfsd.config import QuotaAlertSettings, Thresholds
from btrfsd.core.quota_alerts import FULL_SLACK, _fullest, crossings
from btrfsd.core.quotas import check_limit
from btrfsd.errors import InvalidArgument
from btrfsd.fs.quota import QgroupUsage
from btrfsd.units import qgroupid, split_qgroupid

TH = Thresholds()  # 80 / 95 / 100, margin 5


def walk(values: list[float]) -> list[list[str]]:
    fired, out = 0, []
    for pct in values:
        fired, levels = crossings(fired, pct, TH)
        out.append(levels)
    return out


def test_each_level_fires_once_while_usage_stays_up() -> None:
    assert walk([50, 81, 85, 96, 99, 100, 100]) == [
        [], ["warning"], [], ["critical"], [], ["exceeded"], []]


def test_a_jump_reports_every_level_crossed_in_order() -> None:
    assert walk([10, 100]) == [[], ["warning", "critical", "exceeded"]]


def test_rearm_needs_the_margin() -> None:
    # 81 -> 77 (within the 5-point margin of 80): no re-arm, so 81 again is silent
    assert walk([81, 77, 81]) == [["warning"], [], []]
    # 81 -> 74 (below 75): re-armed, fires again
    assert walk([81, 74, 81]) == [["warning"], [], ["warning"]]
    # falling from full to 92 re-arms exceeded (100-5) but not critical (95-5=90)
    assert walk([100, 92, 100]) == [["warning", "critical", "exceeded"], [], ["exceeded"]]


def test_thresholds_must_be_ordered() -> None:
    with pytest.raises(ValidationError):
        Thresholds(warning=95, critical=80)
    with pytest.raises(ValidationError):
        Thresholds(exceeded=120)


def test_overrides_subvolume_then_filesystem_then_global() -> None:
    s = QuotaAlertSettings(warning=70, overrides={"/home/alice": {"warning": 90},
                                                  "uuid-1": {"critical": 99}})
    assert s.for_target("uuid-1", ["/home/alice"]).warning == 90
    assert s.for_target("uuid-1", ["/home/bob"]).critical == 99
    assert s.for_target("uuid-1", ["/home/bob"]).warning == 70
    assert s.for_target("uuid-2", []).warning == 70
    with pytest.raises(ValidationError):
        QuotaAlertSettings(overrides={"/x": {"warning": 99, "critical": 90}})
    with pytest.raises(ValidationError):
        QuotaAlertSettings(overrides={"/x": {"bogus": 1}})


def test_fullest_limit_and_slack() -> None:
    q = QgroupUsage(0, 256, referenced=50, exclusive=40, max_referenced=100,
                    max_exclusive=0)
    assert _fullest(q) == (50.0, 50, 100)
    limit = 30 << 20
    near = QgroupUsage(0, 256, limit - 16384, 0, limit, 0)  # the kernel stops just short
    assert _fullest(near)[0] == 100.0
    short = QgroupUsage(0, 256, limit - FULL_SLACK // 2, 0, limit, 0)  # slack: 1% of 30 MiB
    assert _fullest(short)[0] < 100.0
    big = 100 << 30
    assert _fullest(QgroupUsage(0, 256, big - FULL_SLACK + 1, 0, big, 0))[0] == 100.0
    both = QgroupUsage(0, 256, 10, 90 << 20, 1 << 40, 100 << 20)
    assert _fullest(both)[1:] == (90 << 20, 100 << 20)


def test_limit_sanity_and_qgroup_ids() -> None:
    check_limit("referenced", 0)
    check_limit("referenced", 20 << 30)
    for bad in (1, 100, 2**63):
        with pytest.raises(InvalidArgument):
            check_limit("referenced", bad)
    assert split_qgroupid(qgroupid(1, 300)) == (1, 300)
    assert qgroupid(0, 256) == 256
