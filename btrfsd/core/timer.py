"""Fires schedules on time (apscheduler, in the daemon's event loop).

After downtime a schedule that missed one or more runs runs once at start, not once per
missed slot; then every ``every`` seconds from there.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ..errors import BtrfsdError
from .maintenance import Maintenance
from .schedules import Schedules

if TYPE_CHECKING:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

log = logging.getLogger(__name__)


MAINTENANCE_TICK = 60  # seconds between looks for due scrubs and balances


class ScheduleTimer:
    def __init__(self, schedules: Schedules, maintenance: Maintenance) -> None:
        self.schedules = schedules
        self.maintenance = maintenance
        # apscheduler and what it imports (~4.5 MiB of the daemon's RSS) are loaded only
        # once a schedule is the daemon's to fire: many systems have none
        self.scheduler: AsyncIOScheduler | None = None
        self._ticker: asyncio.Task[None] | None = None
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
        self._ticker = asyncio.get_running_loop().create_task(self._tick_forever())
        self.sync()

    async def _tick_forever(self) -> None:
        """A look for due scrubs and balances every MAINTENANCE_TICK seconds, each after
        the last one ended (a slow one never piles up). Raises nothing but cancellation."""
        while True:
            await asyncio.sleep(MAINTENANCE_TICK)
            try:
                await self.maintenance.tick()
            except Exception:  # the next tick tries again; the daemon keeps serving
                log.exception("maintenance tick failed")

    def sync(self) -> None:
        """Make the timer's jobs match the schedules (after any change; before start()
        there is nothing to do: start() calls it)."""
        if self._ticker is None:
            return
        wanted = {s.name: s for s in self.schedules.all() if s.timer == "btrfsd"}
        if self.scheduler is None:
            if not wanted:
                return
            from apscheduler.schedulers.asyncio import AsyncIOScheduler

            self.scheduler = AsyncIOScheduler()
            self.scheduler.start()
        from apscheduler.triggers.interval import IntervalTrigger

        for job in self.scheduler.get_jobs():
            if job.id not in wanted:
                job.remove()
        for name, s in wanted.items():
            # coalesce + max_instances=1: a late or slow run never piles up
            self.scheduler.add_job(self.fire, IntervalTrigger(seconds=s.every), args=[name],
                                   id=name, replace_existing=True, coalesce=True,
                                   max_instances=1, misfire_grace_time=None)

    def job_names(self) -> list[str]:
        """The schedules the timer fires, sorted."""
        return sorted(j.id for j in self.scheduler.get_jobs()) if self.scheduler else []

    async def shutdown(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        await self.maintenance.shutdown()
