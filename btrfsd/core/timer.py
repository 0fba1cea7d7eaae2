"""Fires schedules on time (apscheduler, in the daemon's event loop).

After downtime a schedule that missed one or more runs runs once at start, not once per
missed slot; then every ``every`` seconds from there.
"""

from __future__ import annotations

import logging

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from ..errors import BtrfsdError
from .maintenance import Maintenance
from .schedules import Schedules

log = logging.getLogger(__name__)


MAINTENANCE_TICK = 60  # seconds between looks for due scrubs and balances


class ScheduleTimer:
    def __init__(self, schedules: Schedules, maintenance: Maintenance) -> None:
        self.schedules = schedules
        self.maintenance = maintenance
        self.scheduler = AsyncIOScheduler()
        schedules.on_change.append(self.sync)

    async def fire(self, name: str) -> None:
        try:
            result = await self.schedules.run(name)
        except BtrfsdError as e:
            log.error("schedule %s could not take its snapshot: %s", name, e.message)
            return
        for path, why in result.failed:
            log.warning("schedule %s: cleanup will retry %s (%s)", name, path, why)

    async def start(self) -> None:
        """Run missed schedules once, then start the timer."""
        for schedule in self.schedules.all():
            if schedule.timer != "btrfsd":
                continue  # systemd's Persistent=true timer catches up itself
            if self.schedules.records.last_run.get(schedule.name) is not None and \
                    self.schedules.due(schedule.name):
                log.info("schedule %s missed its time while btrfsd was down; running it now",
                         schedule.name)
                await self.fire(schedule.name)
        await self.maintenance.tick()
        self.sync()
        self.scheduler.add_job(self.maintenance.tick, IntervalTrigger(seconds=MAINTENANCE_TICK),
                               id="__maintenance__", coalesce=True, max_instances=1)
        self.scheduler.start()

    def sync(self) -> None:
        """Make the timer's jobs match the schedules (after any change)."""
        wanted = {s.name: s for s in self.schedules.all() if s.timer == "btrfsd"}
        for job in self.scheduler.get_jobs():
            if job.id not in wanted and job.id != "__maintenance__":
                job.remove()
        for name, s in wanted.items():
            # coalesce + max_instances=1: a late or slow run never piles up
            self.scheduler.add_job(self.fire, IntervalTrigger(seconds=s.every), args=[name],
                                   id=name, replace_existing=True, coalesce=True,
                                   max_instances=1, misfire_grace_time=None)

    async def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        await self.maintenance.shutdown()
