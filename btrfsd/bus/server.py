"""Start, serve and stop btrfsd on the system bus."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from dbus_fast import BusType, RequestNameReply
from dbus_fast.errors import DBusError
from dbus_fast.service import ServiceInterface

from ..config import Settings
from ..constants import BUS_NAME, ROOT_PATH
from ..core.filesystems import Filesystem
from ..core.jobs import Job
from ..core.quota_alerts import QuotaAlert
from ..core.service import Service
from ..core.threads import in_background
from .auth import check_interface
from .context import CallerAwareBus
from .filesystem import FilesystemInterface
from .job import JobInterface
from .manager import ManagerInterface
from .paths import filesystem_path, job_path
from .polkit import Authority

log = logging.getLogger(__name__)


class NameTaken(Exception):
    """Another connection owns org.btrfsd1."""


class Server:
    """The D-Bus front end: owns the bus connection and keeps exported objects in line
    with the core's filesystems and jobs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.bus = CallerAwareBus(bus_type=BusType.SYSTEM)
        self.service = Service(settings)
        self.authority = Authority(self.bus)
        self._fs_objects: dict[str, FilesystemInterface] = {}
        self._job_objects: dict[int, JobInterface] = {}
        self._stop = asyncio.Event()
        self._last_warning: asyncio.Task[None] | None = None

    def _export(self, path: str, interface: ServiceInterface) -> None:
        check_interface(interface)  # fail closed: no method without a polkit action
        self.bus.export(path, interface)

    def _on_filesystems_changed(self, added: list[Filesystem], removed: list[Filesystem]) -> None:
        for fs in removed:
            if self._fs_objects.pop(fs.uuid, None) is not None:
                self.bus.unexport(filesystem_path(fs.uuid))
        for fs in added:
            iface = FilesystemInterface(self.authority, fs, self.service)
            self._fs_objects[fs.uuid] = iface
            self._export(filesystem_path(fs.uuid), iface)
        for iface in self._fs_objects.values():
            iface.emit_changes()

    def _on_quota_alert(self, alert: QuotaAlert) -> None:
        # one after the other: the levels of one crossing must arrive in order
        self._last_warning = in_background(self._quota_warning(alert, self._last_warning))

    async def _quota_warning(self, alert: QuotaAlert,
                             before: asyncio.Task[None] | None) -> None:
        if before is not None:
            with contextlib.suppress(Exception):
                await before
        # A signal goes to every listener on the bus: it names the subvolume only when
        # any local user could reach it; otherwise the path is "" and a listener finds
        # its own subvolumes by qgroup id in GetQuotaUsage, which answers per caller.
        iface = self._fs_objects.get(alert.fs_uuid)
        if iface is None:
            return
        public = await self.service.subvolumes.is_public(alert.path)
        iface.quota_warning(alert.path if public else "", alert.qgroupid, alert.used,
                            alert.limit, alert.level)

    def _on_job_added(self, job: Job) -> None:
        iface = JobInterface(self.authority, job, self.service.jobs)
        self._job_objects[job.id] = iface
        self._export(job_path(job.id), iface)

    def _on_job_removed(self, job: Job) -> None:
        iface = self._job_objects.pop(job.id, None)
        if iface is not None:
            iface.detach()
            self.bus.unexport(job_path(job.id))

    async def _acquire_name(self) -> None:
        """Own BUS_NAME, asking again every 0.5 s for 5 s (a previous btrfsd may still be
        leaving). Raises NameTaken."""
        # a plain loop, not tenacity: its import alone was 1.2 MiB of the daemon's RSS
        deadline = asyncio.get_running_loop().time() + 5
        while True:
            reply = await self.bus.request_name(BUS_NAME)
            if reply in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
                return
            if asyncio.get_running_loop().time() + 0.5 > deadline:
                raise NameTaken(f"{BUS_NAME} is owned by another process ({reply.name})")
            await asyncio.sleep(0.5)

    async def run(self) -> None:
        """Serve until SIGTERM/SIGINT or the bus goes away.

        Raises NameTaken, DBusError or OSError when the bus cannot be joined.
        """
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        await self.bus.connect()
        self._export(ROOT_PATH, ManagerInterface(self.authority, self.service))
        # listeners before the core opens: the filesystems and jobs it finds get objects
        self.service.registry.add_listener(self._on_filesystems_changed)
        self.service.jobs.add_listeners(self._on_job_added, self._on_job_removed)
        self.service.add_quota_alert_listener(self._on_quota_alert)
        await self.service.open()
        await self._acquire_name()
        log.info("serving name=%s filesystems=%d", BUS_NAME,
                 len(self.service.registry.all()))
        await self.service.run_background()
        disconnected = loop.create_task(self.bus.wait_for_disconnect())  # type: ignore[no-untyped-call]
        stop = loop.create_task(self._stop.wait())
        await asyncio.wait({disconnected, stop}, return_when=asyncio.FIRST_COMPLETED)
        await self.service.close()
        if disconnected.done():
            log.error("lost the bus connection; exiting")
        else:
            log.info("stopping on signal")
            with contextlib.suppress(DBusError, OSError, EOFError):
                await self.bus.release_name(BUS_NAME)
            self.bus.disconnect()
            with contextlib.suppress(Exception):
                await disconnected
        stop.cancel()
