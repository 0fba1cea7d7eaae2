"""Periodic scrub and balance per filesystem, as btrfsmaintenance does, run as Jobs.

Defaults are btrfsmaintenance's: scrub monthly, balance weekly with data usage filters
5 then 10 and metadata 5 (each filter a separate, short balance, lowest first). Plans
live in ``<config_dir>/maintenance.json``, last runs in
``<state_dir>/maintenance-runs.json``, so a missed run runs once after downtime. This
module owns both files and their lock; nothing else reads or writes them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..constants import ROOT_UID
from ..errors import AlreadyRunning, BtrfsdError, InvalidArgument, NotFound
from ..fs.balance import TypeFilter
from .balance_runner import OPERATION as BALANCE
from .balance_runner import BalanceParams
from .filesystems import Filesystem, Registry
from .jobmanager import JobManager
from .jobs import Job
from .scrub_runner import OPERATION as SCRUB
from .scrub_runner import ScrubParams
from .state import load_model, validation_problems, write_atomic

log = logging.getLogger(__name__)

PLANS_FILE = "maintenance.json"
RUNS_FILE = "maintenance-runs.json"
# Where plans and last runs lived before this module had files of its own.
LEGACY_PLANS_FILE = "schedules.json"
LEGACY_RUNS_FILE = "snapshots.json"
PERIODS = {"none": 0, "daily": 86400, "weekly": 7 * 86400, "monthly": 30 * 86400}
OPERATIONS = (SCRUB, BALANCE)
M = TypeVar("M", bound=BaseModel)


class MaintenancePlan(BaseModel):
    """Which maintenance a filesystem gets, and how often."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    filesystem: str  # UUID
    scrub: str = Field(default="monthly", pattern="^(none|daily|weekly|monthly)$")
    balance: str = Field(default="weekly", pattern="^(none|daily|weekly|monthly)$")
    data_usage: list[int] = Field(default_factory=lambda: [5, 10], max_length=10)
    metadata_usage: list[int] = Field(default_factory=lambda: [5], max_length=10)

    @field_validator("data_usage", "metadata_usage")
    @classmethod
    def _percentages(cls, values: list[int]) -> list[int]:
        for v in values:
            if not 0 <= v <= 100:
                raise ValueError(f"usage filter {v} is not a percentage (0-100)")
        return values

    def period(self, op: str) -> int:
        """Seconds between runs of ``op`` (scrub or balance); 0 for never."""
        return PERIODS[self.scrub if op == SCRUB else self.balance]

    def balance_steps(self) -> list[BalanceParams]:
        """One balance per step, lowest usage first."""
        data, meta = sorted(self.data_usage), sorted(self.metadata_usage)
        return [BalanceParams(TypeFilter(usage=data[i]) if i < len(data) else None,
                              TypeFilter(usage=meta[i]) if i < len(meta) else None)
                for i in range(max(len(data), len(meta)))]


def parse_plan(fs_uuid: str, spec: dict[str, object]) -> MaintenancePlan:
    """Validate a maintenance plan. Raises InvalidArgument naming each bad field."""
    try:
        return MaintenancePlan.model_validate({"filesystem": fs_uuid, **spec})
    except ValidationError as e:
        raise InvalidArgument(f"Bad maintenance plan: {validation_problems(e)}.") from None


class PlanFile(BaseModel):
    version: int = 1
    plans: dict[str, MaintenancePlan] = Field(default_factory=dict)  # by filesystem UUID


class RunFile(BaseModel):
    version: int = 1
    last_run: dict[str, float] = Field(default_factory=dict)  # "<uuid>:<op>" -> time


class _LegacyPlans(BaseModel):
    maintenance: dict[str, MaintenancePlan] = Field(default_factory=dict)


class _LegacyRuns(BaseModel):
    last_run: dict[str, float] = Field(default_factory=dict)


def _read_quietly(path: Path, model: type[M]) -> M:
    """Read a JSON file into ``model``; an empty model when it is missing, unreadable or
    invalid (another module's file: it is left exactly as it is)."""
    try:
        return model.model_validate_json(path.read_bytes())
    except (OSError, ValueError):
        return model()


def _run_key(fs_uuid: str, op: str) -> str:
    return f"{fs_uuid}:{op}"


class Maintenance:
    """Plans, last runs, and the runner that starts due scrubs and balances (one
    background task per filesystem)."""

    def __init__(self, registry: Registry, jobs: JobManager, config_dir: Path,
                 state_dir: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.registry = registry
        self.jobs = jobs
        self.config_dir = config_dir
        self.state_dir = state_dir
        self.clock = clock
        self._plans = PlanFile()
        self._runs = RunFile()
        self._lock = asyncio.Lock()  # every change of the plans or last runs
        self._running: dict[str, asyncio.Task[None]] = {}

    # -- storage ----------------------------------------------------------------------------
    def _load_blocking(self) -> tuple[PlanFile, RunFile, bool]:
        plans_path = self.config_dir / PLANS_FILE
        runs_path = self.state_dir / RUNS_FILE
        # Once either file of ours exists, or was moved aside as invalid, the old files
        # are never read again (their plans would come back, all due at once).
        ours = [p for d, n in ((self.config_dir, PLANS_FILE), (self.state_dir, RUNS_FILE))
                for p in d.glob(f"{n}*")]
        if ours:
            return (load_model(plans_path, PlanFile, "maintenance plans"),
                    load_model(runs_path, RunFile, "maintenance runs"), False)
        # Plans of an older btrfsd sat in schedules.json, last runs in snapshots.json:
        # the schedules' files, read here without any side effect (never moved aside).
        legacy = _read_quietly(self.config_dir / LEGACY_PLANS_FILE, _LegacyPlans)
        if not legacy.maintenance:
            return PlanFile(), RunFile(), False
        old_runs = _read_quietly(self.state_dir / LEGACY_RUNS_FILE, _LegacyRuns)
        runs = {key.removeprefix("maintenance:"): t for key, t in old_runs.last_run.items()
                if key.startswith("maintenance:")}
        return PlanFile(plans=legacy.maintenance), RunFile(last_run=runs), True

    async def load(self) -> None:
        """Read plans and last runs (taking over those an older btrfsd kept with the
        schedules). Never raises for unreadable or unwritable files: they are logged."""
        async with self._lock:
            self._plans, self._runs, migrated = await asyncio.to_thread(self._load_blocking)
            if migrated:
                try:
                    await self._save_runs()
                    await self._save_plans()
                    log.info("maintenance plans moved to %s", self.config_dir / PLANS_FILE)
                except OSError as e:
                    # keep them in memory; the next successful save writes them
                    log.error("cannot write maintenance state (%s); plans taken over from "
                              "%s stay in memory until a write works", e, LEGACY_PLANS_FILE)

    async def _save_plans(self) -> None:
        await asyncio.to_thread(write_atomic, self.config_dir / PLANS_FILE,
                                self._plans.model_dump_json(indent=1))

    async def _save_runs(self) -> None:
        text = json.dumps(self._runs.model_dump(mode="json"), indent=1, sort_keys=True)
        await asyncio.to_thread(write_atomic, self.state_dir / RUNS_FILE, text)

    # -- plans ------------------------------------------------------------------------------
    def get(self, fs_uuid: str) -> MaintenancePlan | None:
        """The plan of a filesystem, None when it has none."""
        return self._plans.plans.get(fs_uuid)

    async def set(self, plan: MaintenancePlan) -> None:
        """Set (or replace) a filesystem's periodic scrub/balance. The first runs come one
        period after the first time a plan is set, not at once."""
        async with self._lock:
            self._plans.plans[plan.filesystem] = plan
            await self._save_plans()
            now = self.clock()
            for op in OPERATIONS:
                self._runs.last_run.setdefault(_run_key(plan.filesystem, op), now)
            await self._save_runs()
        log.info("maintenance set fs=%s scrub=%s balance=%s data_usage=%s metadata_usage=%s",
                 plan.filesystem, plan.scrub, plan.balance, plan.data_usage,
                 plan.metadata_usage)

    async def remove(self, fs_uuid: str) -> None:
        """Stop periodic maintenance of a filesystem (its last runs go too). Raises
        NotFound."""
        async with self._lock:
            if self._plans.plans.pop(fs_uuid, None) is None:
                raise NotFound(f"Filesystem {fs_uuid} has no periodic maintenance.")
            running = self._running.pop(fs_uuid, None)
            if running is not None:  # no further steps; a job already started goes on
                running.cancel()
            await self._save_plans()
            for op in OPERATIONS:
                self._runs.last_run.pop(_run_key(fs_uuid, op), None)
            await self._save_runs()
        log.info("maintenance removed fs=%s", fs_uuid)

    # -- running ----------------------------------------------------------------------------
    def due(self, plan: MaintenancePlan, op: str) -> bool:
        period = plan.period(op)
        if not period:
            return False
        last = self._runs.last_run.get(_run_key(plan.filesystem, op))
        return last is None or self.clock() - last >= period

    async def tick(self) -> None:
        """Start whatever is due (called every minute by the timer, and at start)."""
        for plan in list(self._plans.plans.values()):
            if plan.filesystem in self._running:
                continue
            try:
                fs = self.registry.get(plan.filesystem)
            except BtrfsdError:
                continue  # not mounted now: runs when it is
            ops = [op for op in OPERATIONS if self.due(plan, op)]
            if ops:
                task = asyncio.get_running_loop().create_task(self._run(fs, plan, ops))
                self._running[plan.filesystem] = task

    async def _wait(self, job: Job) -> None:
        while job.active:
            await asyncio.sleep(1.0)

    async def _run(self, fs: Filesystem, plan: MaintenancePlan, ops: list[str]) -> None:
        try:
            for op in ops:
                steps: list[object] = ([ScrubParams()] if op == SCRUB
                                       else list(plan.balance_steps()))
                try:
                    for params in steps:
                        job = await self.jobs.start(fs, ROOT_UID, op, params)
                        log.info("maintenance: %s of %s as job %d", op, fs.uuid, job.id)
                        await self._wait(job)
                except AlreadyRunning as e:
                    log.info("maintenance %s of %s waits: %s", op, fs.uuid, e.message)
                    return  # try again at the next tick
                except BtrfsdError as e:
                    log.error("maintenance %s of %s failed to start: %s", op, fs.uuid,
                              e.message)
                async with self._lock:
                    if fs.uuid not in self._plans.plans:
                        return  # removed meanwhile: its last runs are gone for good
                    self._runs.last_run[_run_key(fs.uuid, op)] = self.clock()
                    await self._save_runs()
        finally:
            if self._running.get(fs.uuid) is asyncio.current_task():
                del self._running[fs.uuid]

    async def shutdown(self) -> None:
        for task in list(self._running.values()):
            task.cancel()
