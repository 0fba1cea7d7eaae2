"""The composition root: which core services exist, how they are wired, and how the
whole graph opens, runs its background work and closes.

Every server-side front end (the D-Bus adapter today, the fleet bridge next) builds one
``Service`` and talks only to it; none wires core parts itself.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from ..config import Settings
from ..errors import AlreadyRunning
from .backup_restore import BackupRestoreKind
from .backup_runner import BackupKind
from .backups import Backups
from .balance_runner import BalanceKind
from .compare import Comparisons
from .fast_delete import FastDelete
from .filesystems import Filesystem, Registry
from .inventory import Inventory
from .jobmanager import JobManager
from .limits import PerCallerLimit
from .maintenance import Maintenance
from .quota_alerts import QuotaAlert, QuotaWatcher
from .quotas import Quotas
from .rescan_runner import RescanKind
from .restore_runner import RestoreKind
from .rollback import Rollback
from .schedules import Schedules
from .scrub_runner import ScrubKind
from .state import state_problems
from .subvolumes import Subvolumes
from .threads import in_background
from .timer import ScheduleTimer

log = logging.getLogger(__name__)

AlertListener = Callable[[QuotaAlert], None]
LOCK_FILE = "btrfsd.lock"


@dataclass(frozen=True)
class ServiceStatus:
    filesystems: int
    active_jobs: int
    # sentences: state files that could not be used (moved aside) since the start
    problems: list[str]


class Service:
    """btrfsd's core, wired: filesystems, subvolumes, quotas, jobs of every kind,
    schedules, maintenance, quota alerts."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = Registry()
        self.subvolumes = Subvolumes(self.registry)
        self.quotas = Quotas(self.subvolumes)
        self.inventory = Inventory(self.subvolumes, self.quotas)
        self.comparisons = Comparisons(self.registry, self.subvolumes)
        # expensive reads per unprivileged caller (front ends key it by the caller)
        self.read_limit = PerCallerLimit(settings.reads_per_caller, "listings",
                                         share=settings.read_share,
                                         burst=settings.read_burst)
        self.jobs = JobManager(self.registry, settings.state_dir,
                               retention=settings.job_retention,
                               poll_interval=settings.job_poll_interval)
        # kernel work is looked for in this order (a balance before a scrub, as before)
        for kind in (BalanceKind(settings.job_poll_interval),
                     ScrubKind(settings.job_poll_interval),
                     RescanKind(settings.job_poll_interval)):
            self.jobs.register(kind)
        # restores: files back from snapshots (no kernel work to find; crash clean-up)
        self.jobs.register(RestoreKind(self.registry, self.subvolumes,
                                       settings.job_poll_interval))
        self.rollback = Rollback(self.registry, self.subvolumes, self.jobs)
        self.fast_delete = FastDelete(self.jobs, enabled=settings.quota_fast_delete)
        # every delete (a caller's or a schedule cleanup's) takes the fast path with full
        # qgroups
        self.subvolumes.delete_hooks.append(self.fast_delete)
        self.schedules = Schedules(self.subvolumes, settings.config_dir, settings.state_dir)
        # backups to another disk: jobs on the target's filesystem
        self.jobs.register(BackupKind(self.registry, self.subvolumes, self.schedules,
                                      settings.job_poll_interval))
        # copies sent back: jobs on the destination's filesystem
        self.jobs.register(BackupRestoreKind(self.registry, self.subvolumes,
                                             self.schedules, settings.job_poll_interval))
        self.backups = Backups(self.registry, self.subvolumes, self.schedules, self.jobs,
                               settings.config_dir)
        self.schedules.backups = self.backups  # schedules may start a backup (--backup)
        self.maintenance = Maintenance(self.registry, self.jobs, settings.config_dir,
                                       settings.state_dir)
        self.timer = ScheduleTimer(self.schedules, self.maintenance)
        self._alert_listeners: list[AlertListener] = []
        self.alerts = QuotaWatcher(self.registry, self.quotas, settings.quota_alerts,
                                   settings.state_dir, self._on_quota_alert)
        self._background: list[asyncio.Task[None]] = []
        self._open = False
        self._lock_fd = -1
        self.registry.add_listener(self._on_filesystems_changed)

    def status(self) -> ServiceStatus:
        """How the service is: what it serves, what runs, what went wrong at start."""
        return ServiceStatus(filesystems=len(self.registry.all()),
                             active_jobs=sum(1 for j in self.jobs.jobs() if j.active),
                             problems=state_problems())

    def add_quota_alert_listener(self, listener: AlertListener) -> None:
        """Hear every quota alert (a front end turns it into a signal, a message, ...)."""
        self._alert_listeners.append(listener)

    def _on_quota_alert(self, alert: QuotaAlert) -> None:
        for listener in self._alert_listeners:
            listener(alert)

    def _on_filesystems_changed(self, added: list[Filesystem],
                                removed: list[Filesystem]) -> None:
        if self._open:
            for fs in added:
                # a newly mounted filesystem may already be scrubbing or balancing
                in_background(self.jobs.detect(fs))

    def _lock_state(self) -> None:
        """One btrfsd per state directory: a second one (started by mistake) would
        recover, pause or cancel the first one's jobs before failing on the bus name."""
        state_dir = self.settings.state_dir
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(state_dir / LOCK_FILE,
                     os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(f"Another btrfsd is running with the state directory "
                                 f"{state_dir}; stop it first.") from None
        self._lock_fd = fd

    async def open(self) -> None:
        """Find the filesystems, load state, report or follow jobs of the previous run,
        and start following the mount table. Front ends add their listeners before.

        Raises AlreadyRunning when another btrfsd uses the same state directory, OSError
        when the state directory cannot be made.
        """
        await asyncio.to_thread(self._lock_state)
        await self.registry.rescan()
        await self.jobs.open()
        await self.maintenance.load()
        await self.schedules.load()
        await self.backups.load()
        # temporary snapshots of comparisons a crash interrupted
        await self.comparisons.remove_leftovers()
        self._open = True
        self.registry.start_watching(asyncio.get_running_loop())

    async def run_background(self) -> None:
        """Start the periodic work: refresh, quota alerts, schedules and maintenance."""
        loop = asyncio.get_running_loop()
        self._background = [loop.create_task(self._refresh_loop()),
                            loop.create_task(self.alerts.run())]
        await self.timer.start()

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.refresh_interval)
            try:
                await self.registry.rescan()
                # scrubs/balances started by other tools show up as jobs
                await self.jobs.detect_all()
            except Exception:  # keep serving; the next pass may succeed
                log.exception("periodic refresh failed")

    async def close(self) -> None:
        """Stop the background work and leave jobs as the next start expects them."""
        try:
            for task in self._background:
                task.cancel()
            for task in self._background:
                try:
                    await task
                except asyncio.CancelledError:
                    pass
                except Exception:  # it died earlier; the jobs must still be left right
                    log.exception("background task %s had failed", task.get_name())
            await self.timer.shutdown()
            await self.schedules.close()  # the records' journal folded into their file
            if self._open:
                self.registry.stop_watching(asyncio.get_running_loop())
            await self.fast_delete.shutdown()
        finally:
            # balances paused, speed limits put back, job state written: whatever failed
            if self._lock_fd >= 0:
                await self.jobs.shutdown()
                os.close(self._lock_fd)
                self._lock_fd = -1
