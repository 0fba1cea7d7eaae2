"""Periodic scrub and balance per filesystem, as btrfsmaintenance does, run as Jobs.

Defaults are btrfsmaintenance's: scrub monthly, balance weekly with data usage filters
5 then 10 and metadata 5 (each filter a separate, short balance, lowest first). Plans are
stored with the schedules (schedules.json), last runs with the snapshot records, so a
missed run runs once after downtime.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ..errors import AlreadyRunning, BtrfsdError
from .filesystems import Filesystem, Registry
from .jobmanager import JobManager
from .jobs import Job
from .schedules import MAINTENANCE_PERIODS, Maintenance, Schedules, maintenance_key

log = logging.getLogger(__name__)

SYSTEM_UID = 0  # jobs the timer starts belong to root


class MaintenanceRunner:
    """Starts due scrubs and balances; keeps one background task per filesystem."""

    def __init__(self, registry: Registry, jobs: JobManager, schedules: Schedules,
                 clock: Callable[[], float] | None = None) -> None:
        self.registry = registry
        self.jobs = jobs
        self.schedules = schedules
        self.clock = clock or schedules.clock
        self._running: dict[str, asyncio.Task[None]] = {}

    def due(self, plan: Maintenance, op: str) -> bool:
        period = MAINTENANCE_PERIODS[getattr(plan, op)]
        if not period:
            return False
        last = self.schedules.records.last_run.get(maintenance_key(plan.filesystem, op))
        return last is None or self.clock() - last >= period

    async def tick(self) -> None:
        """Start whatever is due (called every minute by the timer, and at start)."""
        for plan in self.schedules.file.maintenance.values():
            if plan.filesystem in self._running:
                continue
            try:
                fs = self.registry.get(plan.filesystem)
            except BtrfsdError:
                continue  # not mounted now: runs when it is
            ops = [op for op in ("scrub", "balance") if self.due(plan, op)]
            if ops:
                task = asyncio.get_running_loop().create_task(self._run(fs, plan, ops))
                self._running[plan.filesystem] = task

    async def _wait(self, job: Job) -> None:
        while job.active:
            await asyncio.sleep(1.0)

    async def _run(self, fs: Filesystem, plan: Maintenance, ops: list[str]) -> None:
        try:
            for op in ops:
                try:
                    if op == "scrub":
                        job = await self.jobs.start_scrub(fs, SYSTEM_UID, readonly=False,
                                                          limit=0)
                        log.info("maintenance: scrub of %s as job %d", fs.uuid, job.id)
                        await self._wait(job)
                    else:
                        for data, meta in plan.balance_steps():
                            job = await self.jobs.start_balance(fs, SYSTEM_UID, data=data,
                                                                metadata=meta)
                            log.info("maintenance: balance of %s as job %d", fs.uuid, job.id)
                            await self._wait(job)
                except AlreadyRunning as e:
                    log.info("maintenance %s of %s waits: %s", op, fs.uuid, e.message)
                    return  # try again at the next tick
                except BtrfsdError as e:
                    log.error("maintenance %s of %s failed to start: %s", op, fs.uuid,
                              e.message)
                self.schedules.records.last_run[maintenance_key(fs.uuid, op)] = self.clock()
                await self.schedules.save_records()
        finally:
            self._running.pop(fs.uuid, None)

    async def shutdown(self) -> None:
        for task in list(self._running.values()):
            task.cancel()
