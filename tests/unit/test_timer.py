"""The in-daemon timer fires only schedules it owns, and catches up once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from btrfsd.core.schedules import Schedules, parse_schedule
from btrfsd.core.timer import ScheduleTimer


class FakeMaintenance:
    async def tick(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass


def test_systemd_schedules_are_left_to_systemd_and_missed_runs_run_once(tmp_path: Path) -> None:
    now = [1_000_000.0]
    sched = Schedules(None, tmp_path, tmp_path, clock=lambda: now[0])  # type: ignore[arg-type]
    for name, timer in (("mine", "btrfsd"), ("theirs", "systemd")):
        sched.file.schedules[name] = parse_schedule(name, {
            "subvolume": "/x", "every": 900, "keep_last": 1, "timer": timer})
        sched.records.last_run[name] = now[0] - 10 * 900  # ten slots missed
    fired: list[str] = []

    async def fake_run(name: str) -> Any:
        fired.append(name)
        return type("R", (), {"failed": []})()

    sched.run = fake_run  # type: ignore[method-assign]

    async def go() -> list[str]:
        timer = ScheduleTimer(sched, FakeMaintenance())  # type: ignore[arg-type]
        await timer.start()
        ids = timer.job_names()
        await timer.shutdown()
        return ids

    ids = asyncio.run(go())
    assert fired == ["mine"]  # once, not ten times; systemd's schedule not at all
    assert ids == ["mine"]
