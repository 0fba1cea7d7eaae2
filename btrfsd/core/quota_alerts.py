"""Quota alerts: a watcher compares every limited qgroup with warning, critical and
exceeded levels and reports each crossing once, with hysteresis.

A level fires when usage reaches it and re-arms only after usage falls ``margin`` points
below it. Which levels have fired is kept in the state directory, so a restart does not
repeat an alert for the same crossing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import Field, RootModel

from ..config import QuotaAlertSettings, Thresholds
from ..fs.quota import QgroupUsage
from ..units import format_qgroupid
from .filesystems import Filesystem, Registry
from .quotas import Quotas
from .state import load_model, write_atomic

log = logging.getLogger(__name__)

LEVELS = ("warning", "critical", "exceeded")
ALERT_FILE = "quota-alerts.json"
# The kernel refuses a write that would pass the limit, so usage stops just short of
# it: within this many bytes (at most 1% of the limit) counts as having reached it.
FULL_SLACK = 1 << 20


# fs uuid -> qgroupid -> how many levels have fired; a count outside 0..3 would make
# crossings() index past the levels on every pass, so the file may not hold one.
FiredLevels = dict[str, dict[str, Annotated[int, Field(ge=0, le=len(LEVELS))]]]


class AlertState(RootModel[FiredLevels]):
    """The contents of quota-alerts.json."""

    root: FiredLevels = Field(default_factory=dict)


@dataclass(frozen=True)
class QuotaAlert:
    fs_uuid: str
    path: str
    qgroupid: int
    used: int
    limit: int
    level: str


def _fullest(q: QgroupUsage) -> tuple[float, int, int]:
    """(percent, used, limit) of whichever limit of the qgroup is closest to full."""
    best = (0.0, 0, 0)
    for used, limit in ((q.referenced, q.max_referenced), (q.exclusive, q.max_exclusive)):
        if limit:
            slack = min(FULL_SLACK, limit // 100)
            pct = 100.0 if used + slack >= limit else used * 100.0 / limit
            if pct >= best[0]:
                best = (pct, used, limit)
    return best


def crossings(fired: int, pct: float, th: Thresholds) -> tuple[int, list[str]]:
    """Given how many levels have fired, return the new count and the levels to report.

    Pure, so the hysteresis rules are testable on their own.
    """
    levels = (th.warning, th.critical, th.exceeded)
    # re-arm: a fired level resets once usage is margin points below it
    while fired > 0 and pct < levels[fired - 1] - th.margin:
        fired -= 1
    reached = sum(1 for v in levels if pct >= v)
    if reached <= fired:
        return fired, []
    return reached, list(LEVELS[fired:reached])


class QuotaWatcher:
    """Checks limited qgroups every ``settings.interval`` seconds and reports crossings."""

    def __init__(self, registry: Registry, quotas: Quotas, settings: QuotaAlertSettings,
                 state_dir: Path, emit: Callable[[QuotaAlert], None]) -> None:
        self.registry = registry
        self.quotas = quotas
        self.settings = settings
        self.path = state_dir / ALERT_FILE
        self.emit = emit
        self._fired: dict[str, dict[str, int]] = {}  # fs uuid -> qgroupid -> levels fired

    def load(self) -> None:
        """Read the fired levels of the previous run (blocking). Raises nothing: a file
        that cannot be used is moved aside (see load_model), and alerts start afresh."""
        self._fired = load_model(self.path, AlertState, "quota alert state").root

    async def run(self) -> None:
        """Watch until cancelled."""
        await asyncio.to_thread(self.load)
        while True:
            try:
                await self.check_all()
            except Exception:  # keep watching; the next pass may succeed
                log.exception("quota alert pass failed")
            await asyncio.sleep(self.settings.interval)

    async def check_all(self) -> list[QuotaAlert]:
        """One pass over every filesystem with quotas on; returns the alerts sent."""
        alerts: list[QuotaAlert] = []
        changed = False
        for fs in self.registry.all():
            if not fs.quota_enabled:
                continue
            report = await self.quotas.report(fs, sync=True)
            stale = [q.subvolume_id for q, path in report.qgroups if q.level == 0 and not path]
            if stale:  # qgroups of deleted subvolumes: the same pass tidies them up
                await self.quotas.remove_stale(fs, stale)
            new, fired = self._check(fs, report.qgroups)
            alerts += new
            if fired != self._fired.get(fs.uuid, {}):
                self._fired[fs.uuid] = fired
                changed = True
        if changed:
            text = json.dumps(self._fired, indent=1, sort_keys=True)
            try:
                await asyncio.to_thread(write_atomic, self.path, text)
            except OSError as e:
                log.error("cannot save quota alert state %s: %s", self.path, e)
        for alert in alerts:
            log.warning("quota %s: %s (qgroup %s) uses %d of %d bytes fs=%s", alert.level,
                        alert.path or "?", format_qgroupid(alert.qgroupid), alert.used,
                        alert.limit, alert.fs_uuid)
            self.emit(alert)
        return alerts

    def _check(self, fs: Filesystem, qgroups: list[tuple[QgroupUsage, str]],
               ) -> tuple[list[QuotaAlert], dict[str, int]]:
        before = self._fired.get(fs.uuid, {})
        fired: dict[str, int] = {}
        alerts = []
        mp = fs.primary_mount.mount_point.rstrip("/")
        for q, rel in qgroups:
            if not q.limited:
                continue  # a removed limit forgets its alerts
            if not rel:  # a qgroup above level 0, or of a subvolume being deleted
                path = ""
            elif rel == "/":
                path = mp or "/"
            else:
                path = f"{mp}/{rel}"
            th = self.settings.for_target(fs.uuid, [path] if path else [])
            pct, used, limit = _fullest(q)
            key = str(q.qgroupid)
            count, levels = crossings(before.get(key, 0), pct, th)
            if count:
                fired[key] = count
            alerts += [QuotaAlert(fs.uuid, path, q.qgroupid, used, limit, lv) for lv in levels]
        return alerts, fired
