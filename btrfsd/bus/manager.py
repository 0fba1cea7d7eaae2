"""org.btrfsd1.Manager at /org/btrfsd1 (the ObjectManager root)."""

# No "from __future__ import annotations": dbus-fast reads these annotations at runtime
# and a postponed "None" return would become a bogus signature.
from typing import Annotated, Any

from dbus_fast import Variant
from dbus_fast.annotations import DBusObjectPath, DBusSignature, DBusStr
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property

from ..constants import MANAGER_IFACE, VERSION, Action
from ..core.backups import Backup, parse_backup
from ..core.limits import PerCallerLimit
from ..core.schedules import RunResult, Schedule, parse_schedule
from ..core.service import Service
from ..errors import InvalidArgument
from ..names import display, from_bus, to_bus
from .apidoc import MANAGER, documented
from .auth import authorized, current_caller
from .options import (
    CleanupOptions,
    NoOptions,
    OptionsArg,
    SetScheduleOptions,
    SnapshotInfo,
    parse_options,
)
from .paths import filesystem_path, job_path
from .polkit import Authority
from .variants import usec
from .visibility import read_view

VariantDict = Annotated[dict[str, Variant], DBusSignature("a{sv}")]
ScheduleDicts = Annotated[dict[str, dict[str, Variant]], DBusSignature("a{sa{sv}}")]
# path, uuid, created (µs), important, keep, reasons (comma-separated; '' = to delete),
# description
Explanation = Annotated[list[Any], DBusSignature("a(sstbbss)")]
# path, uuid of the source snapshot it copies, created (µs), keep, reasons
CopyExplanation = Annotated[list[Any], DBusSignature("a(sstbs)")]


def schedule_dict(s: Schedule) -> dict[str, Variant]:
    return {"subvolume": Variant("s", to_bus(s.subvolume)), "every": Variant("t", s.every),
            "hourly": Variant("u", s.hourly), "daily": Variant("u", s.daily),
            "weekly": Variant("u", s.weekly), "monthly": Variant("u", s.monthly),
            "yearly": Variant("u", s.yearly), "keep_last": Variant("u", s.keep_last),
            "min_age": Variant("t", s.min_age), "timer": Variant("s", s.timer),
            "backup": Variant("s", s.backup or "")}


def backup_dict(b: Backup) -> dict[str, Variant]:
    return {"source": Variant("s", to_bus(b.source)), "target": Variant("s", to_bus(b.target)),
            "hourly": Variant("u", b.hourly), "daily": Variant("u", b.daily),
            "weekly": Variant("u", b.weekly), "monthly": Variant("u", b.monthly),
            "yearly": Variant("u", b.yearly), "keep_last": Variant("u", b.keep_last),
            "schedule": Variant("s", b.schedule), "rate_limit": Variant("t", b.rate_limit)}


def run_result_dict(r: RunResult) -> dict[str, Variant]:
    return {"snapshot": Variant("s", to_bus(r.snapshot)),
            "deleted": Variant("as", [to_bus(p) for p in r.deleted]),
            "failed": Variant("a(ss)", [[to_bus(p), display(why)] for p, why in r.failed]),
            "backup_job": Variant("o", job_path(r.backup_job) if r.backup_job else "/")}


@documented(MANAGER)
class ManagerInterface(ServiceInterface):
    """Entry point: version, the filesystem objects, and path resolution."""

    def __init__(self, authority: Authority, service: Service) -> None:
        super().__init__(MANAGER_IFACE)
        self.authority = authority
        self._service = service

    @property
    def read_limit(self) -> PerCallerLimit:
        return self._service.read_limit

    @dbus_property(access=PropertyAccess.READ, name="Version")
    def version(self) -> DBusStr:
        return VERSION

    @dbus_method(name="GetFilesystems")
    @authorized(Action.READ)
    async def get_filesystems(
        self, options: OptionsArg
    ) -> Annotated[list[str], DBusSignature("ao")]:
        parse_options(NoOptions, options)
        return [filesystem_path(fs.uuid) for fs in self._service.registry.all()]

    @dbus_method(name="GetStatus")
    @authorized(Action.READ)
    async def get_status(self, options: OptionsArg) -> VariantDict:
        parse_options(NoOptions, options)
        st = self._service.status()
        return {"version": Variant("s", VERSION), "filesystems": Variant("u", st.filesystems),
                "active_jobs": Variant("u", st.active_jobs),
                "problems": Variant("as", [display(p) for p in st.problems])}

    @dbus_method(name="GetJobs")
    @authorized(Action.READ)
    async def get_jobs(self, options: OptionsArg) -> Annotated[list[str], DBusSignature("ao")]:
        parse_options(NoOptions, options)
        return [job_path(job.id) for job in self._service.jobs.jobs()]

    @dbus_method(name="ResolvePath")
    @authorized(Action.READ)
    async def resolve_path(
        self, path: DBusStr, options: OptionsArg
    ) -> Annotated[tuple[str, str], DBusSignature("os")]:
        parse_options(NoOptions, options)
        fs, subvolume = await self._service.subvolumes.resolve(
            from_bus(path), as_caller=await read_view(self.authority))
        return [filesystem_path(fs.uuid), to_bus(subvolume)]  # type: ignore[return-value]

    # -- schedules ------------------------------------------------------------------------
    @dbus_method(name="SetSchedule")
    @authorized(Action.SCHEDULE_MANAGE)
    async def set_schedule(self, name: DBusStr, spec: OptionsArg, options: OptionsArg) -> None:
        opts = parse_options(SetScheduleOptions, options)
        fields = {k: v.value for k, v in spec.items()}
        if isinstance(fields.get("subvolume"), str):
            fields["subvolume"] = from_bus(fields["subvolume"])
        schedule = parse_schedule(name, fields)
        await self._service.schedules.set(schedule, replace=opts.replace)

    @dbus_method(name="RemoveSchedule")
    @authorized(Action.SCHEDULE_MANAGE)
    async def remove_schedule(self, name: DBusStr, options: OptionsArg) -> None:
        parse_options(NoOptions, options)
        await self._service.schedules.remove(name)

    @dbus_method(name="GetSchedules")
    @authorized(Action.READ)
    async def get_schedules(self, options: OptionsArg) -> ScheduleDicts:
        parse_options(NoOptions, options)
        view = await read_view(self.authority)
        return {s.name: schedule_dict(s) for s in await self._service.schedules.visible(view)}

    @dbus_method(name="RunSchedule")
    @authorized(Action.SCHEDULE_MANAGE)
    async def run_schedule(self, name: DBusStr, options: OptionsArg) -> VariantDict:
        parse_options(NoOptions, options)
        return run_result_dict(await self._service.schedules.run(name))

    @dbus_method(name="CleanupSchedule")
    @authorized(Action.SCHEDULE_MANAGE)
    async def cleanup_schedule(self, name: DBusStr, options: OptionsArg) -> VariantDict:
        opts = parse_options(CleanupOptions, options)
        return run_result_dict(await self._service.schedules.cleanup(name, dry_run=opts.dry_run))

    @dbus_method(name="ExplainSchedule")
    @authorized(Action.READ, expensive=True)
    async def explain_schedule(self, name: DBusStr, options: OptionsArg) -> Explanation:
        parse_options(NoOptions, options)
        planned = await self._service.schedules.plan(
            name, visible_to=await read_view(self.authority))
        return [[to_bus(p.path), p.uuid, usec(p.record.created), p.record.important,
                 p.decision.keep, ",".join(p.decision.reasons), p.record.description]
                for p in planned]

    @dbus_method(name="SetSnapshotInfo")
    @authorized(Action.SCHEDULE_MANAGE)
    async def set_snapshot_info(self, path: DBusStr, info: OptionsArg,
                                options: OptionsArg) -> None:
        parse_options(NoOptions, options)
        marks = parse_options(SnapshotInfo, info)
        await self._service.schedules.set_snapshot_info(from_bus(path),
                                                        important=marks.important,
                                                        description=marks.description)

    # -- backups ----------------------------------------------------------------------------
    @dbus_method(name="SetBackup")
    @authorized(Action.BACKUP_MANAGE)
    async def set_backup(self, name: DBusStr, source_subvolume: DBusStr, target_dir: DBusStr,
                         options: OptionsArg) -> None:
        fields = {k: v.value for k, v in options.items()}
        replace = fields.pop("replace", False)
        if not isinstance(replace, bool):
            raise InvalidArgument("The option replace takes a boolean (b).")
        backup = parse_backup(name, {**fields, "source": from_bus(source_subvolume),
                                     "target": from_bus(target_dir)})
        await self._service.backups.set(backup, replace=replace)

    @dbus_method(name="RemoveBackup")
    @authorized(Action.BACKUP_MANAGE)
    async def remove_backup(self, name: DBusStr, options: OptionsArg) -> None:
        parse_options(NoOptions, options)
        await self._service.backups.remove(name)

    @dbus_method(name="ListBackups")
    @authorized(Action.READ)
    async def list_backups(self, options: OptionsArg) -> ScheduleDicts:
        parse_options(NoOptions, options)
        view = await read_view(self.authority)
        every = self._service.backups.all()
        seen = await self._service.subvolumes.reachable(
            [p for b in every for p in (b.source, b.target)], view)
        return {b.name: backup_dict(b) for i, b in enumerate(every)
                if seen[2 * i] and seen[2 * i + 1]}

    @dbus_method(name="ExplainBackup")
    @authorized(Action.READ, expensive=True)
    async def explain_backup(self, name: DBusStr, options: OptionsArg) -> CopyExplanation:
        parse_options(NoOptions, options)
        backup, judged = await self._service.backups.explain(
            name, visible_to=await read_view(self.authority))
        return [[to_bus(f"{backup.target}/{j.name}"), j.info.received_uuid,
                 usec(j.info.otime), j.decision.keep, ",".join(j.decision.reasons)]
                for j in judged]

    @dbus_method(name="RunBackup")
    @authorized(Action.BACKUP_RUN)
    async def run_backup(self, name: DBusStr, options: OptionsArg) -> DBusObjectPath:
        parse_options(NoOptions, options)
        job = await self._service.backups.run(name, current_caller().uid)
        return job_path(job.id)

    @dbus_method(name="RestoreBackup")
    # not backup-run: the destination is any directory root owns, and the owner of a
    # backup's source names its copies (docs/backup.md, "Restore")
    @authorized(Action.BACKUP_MANAGE)
    async def restore_backup(self, name: DBusStr, copy: DBusStr, dest_dir: DBusStr,
                             options: OptionsArg) -> DBusObjectPath:
        parse_options(NoOptions, options)
        job = await self._service.backups.restore(name, from_bus(copy), from_bus(dest_dir),
                                                  current_caller().uid)
        return job_path(job.id)
