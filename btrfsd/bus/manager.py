"""org.btrfsd1.Manager at /org/btrfsd1 (the ObjectManager root)."""

# No "from __future__ import annotations": dbus-fast reads these annotations at runtime
# and a postponed "None" return would become a bogus signature.
import asyncio
from typing import Annotated

from dbus_fast.annotations import DBusSignature, DBusStr
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property

from ..constants import MANAGER_IFACE, VERSION, Action
from ..core.services import Services
from .auth import authorized
from .options import NoOptions, OptionsArg, parse_options
from .paths import filesystem_path
from .polkit import Authority


class ManagerInterface(ServiceInterface):
    """Entry point: version, the filesystem objects, and path resolution."""

    def __init__(self, authority: Authority, services: Services) -> None:
        super().__init__(MANAGER_IFACE)
        self.authority = authority
        self._registry = services.registry
        self._subvolumes = services.subvolumes
        self._jobs = services.jobs

    @dbus_property(access=PropertyAccess.READ, name="Version")
    def version(self) -> DBusStr:
        return VERSION

    @dbus_method(name="GetFilesystems")
    @authorized(Action.READ)
    async def get_filesystems(
        self, options: OptionsArg
    ) -> Annotated[list[str], DBusSignature("ao")]:
        parse_options(NoOptions, options)
        return [filesystem_path(fs.uuid) for fs in self._registry.all()]

    @dbus_method(name="GetJobs")
    @authorized(Action.READ)
    async def get_jobs(self, options: OptionsArg) -> Annotated[list[str], DBusSignature("ao")]:
        parse_options(NoOptions, options)
        return [job.path for job in self._jobs.jobs()]

    @dbus_method(name="ResolvePath")
    @authorized(Action.READ)
    async def resolve_path(
        self, path: DBusStr, options: OptionsArg
    ) -> Annotated[tuple[str, str], DBusSignature("os")]:
        parse_options(NoOptions, options)
        fs, subvolume = await asyncio.to_thread(self._subvolumes.resolve_filesystem, path)
        return [filesystem_path(fs.uuid), subvolume]  # type: ignore[return-value]
