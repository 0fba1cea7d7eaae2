"""Retention rules on hand-made timelines (UTC), each expectation written out by hand."""

from __future__ import annotations

from datetime import UTC, datetime

from btrfsd.core.retention import Candidate, Limits, decide


def t(s: str) -> float:
    return datetime.fromisoformat(s).replace(tzinfo=UTC).timestamp()


def kept(cands: list[Candidate], limits: Limits, now: str) -> dict[str, list[str]]:
    return {d.candidate.key: d.reasons for d in decide(cands, limits, t(now), UTC) if d.keep}


SNAPS = [Candidate(k, t(k)) for k in (
    "2026-11-16 09:00", "2026-11-16 09:30", "2026-11-16 10:15",  # Monday
    "2026-11-20 23:45", "2026-11-21 00:05", "2026-11-21 00:50",  # Fri / Sat
    "2026-11-22 08:00", "2026-11-22 08:40", "2026-11-22 09:10",  # Sunday
)]


def test_hourly_keeps_the_first_of_each_of_the_youngest_hours() -> None:
    assert kept(SNAPS, Limits(hourly=2), "2026-11-22 09:20") == {
        "2026-11-22 09:10": ["hourly"], "2026-11-22 08:00": ["hourly"]}


def test_daily_and_weekly_iso_weeks_start_on_monday() -> None:
    assert kept(SNAPS, Limits(daily=3, weekly=2), "2026-11-22 09:20") == {
        "2026-11-22 08:00": ["daily"], "2026-11-21 00:05": ["daily"],
        "2026-11-20 23:45": ["daily"],
        # week of Mon 16 Nov holds everything here: its first snapshot is Monday 09:00;
        # no earlier week has snapshots, so the second weekly slot stays unused
        "2026-11-16 09:00": ["weekly"]}


def test_one_snapshot_counts_for_several_rules_and_keep_last() -> None:
    got = kept(SNAPS, Limits(hourly=1, daily=1, monthly=1, keep_last=2), "2026-11-22 09:20")
    assert got == {"2026-11-22 09:10": ["keep-last", "hourly"],
                   "2026-11-22 08:40": ["keep-last"],
                   "2026-11-22 08:00": ["daily"],
                   "2026-11-16 09:00": ["monthly"]}


def test_min_age_and_important() -> None:
    cands = [*SNAPS[:-1], Candidate("2026-11-22 09:10", t("2026-11-22 09:10")),
             Candidate("imp", t("2026-11-16 09:30") + 1, important=True)]
    got = kept(cands, Limits(min_age=3600), "2026-11-22 09:20")
    assert got == {"2026-11-22 09:10": ["min-age"], "2026-11-22 08:40": ["min-age"],
                   "imp": ["important"]}
    # important snapshots never use up a limit slot
    got = kept(cands, Limits(yearly=1), "2026-11-22 09:20")
    assert got == {"2026-11-16 09:00": ["yearly"], "imp": ["important"]}


def test_nothing_kept_without_rules() -> None:
    assert kept(SNAPS, Limits(), "2026-11-22 09:20") == {}
