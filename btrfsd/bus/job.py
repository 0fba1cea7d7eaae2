"""org.btrfsd1.Job: one object per job (scrub, balance, quota rescan, ...) under
/org/btrfsd1/jobs/<n>."""

# No "from __future__ import annotations": dbus-fast reads these annotations at runtime.
from typing import Annotated, Any

from dbus_fast import Variant
from dbus_fast.annotations import (
    DBusBool,
    DBusDouble,
    DBusObjectPath,
    DBusSignature,
    DBusStr,
    DBusUInt32,
    DBusUInt64,
)
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property, dbus_signal

from ..constants import JOB_IFACE, Action
from ..core.jobmanager import JobManager
from ..core.jobs import Job
from ..names import display
from .apidoc import JOB, documented
from .auth import authorized
from .options import NoOptions, OptionsArg, parse_options
from .paths import filesystem_path
from .polkit import Authority
from .variants import to_vardict, usec

VariantDict = Annotated[dict[str, Variant], DBusSignature("a{sv}")]

# Job field -> (property, how to turn the field into the property's value)
_PROPERTY_OF: dict[str, tuple[str, Any]] = {
    "state": ("State", str),
    "progress": ("Progress", float),
    "bytes_done": ("BytesDone", int),
    "bytes_total": ("BytesTotal", int),
    "rate": ("Rate", int),
    "expected_end_time": ("ExpectedEndTime", usec),
    "end_time": ("EndTime", usec),
    "error": ("Error", display),
    "message": ("Message", display),
    "success": ("Success", bool),
    "details": ("Details", to_vardict),
}


@documented(JOB)
class JobInterface(ServiceInterface):
    """A job's progress as properties (PropertiesChanged at most every poll interval),
    Cancel/Pause/Resume, and Completed(success, message) at the end."""

    def __init__(self, authority: Authority, job: Job, jobs: JobManager) -> None:
        super().__init__(JOB_IFACE)
        self.authority = authority
        self.job = job
        self._jobs = jobs
        job.listen(self._changed, self._ended)

    def detach(self) -> None:
        """Stop following the job (its object is being removed)."""
        self.job.unlisten(self._changed, self._ended)

    @property
    def owner_uid(self) -> int:
        return self.job.started_by_uid

    def _changed(self, job: Job, fields: set[str]) -> None:
        changed = {}
        for name in fields:
            if name in _PROPERTY_OF:
                prop, convert = _PROPERTY_OF[name]
                changed[prop] = convert(getattr(job, name))
        if "state" in fields:
            changed["Cancelable"] = job.active
        if changed:
            self.emit_properties_changed(changed)

    def _ended(self, job: Job) -> None:
        self.completed(job.success, display(job.message))

    # -- signal -----------------------------------------------------------------------
    @dbus_signal(name="Completed")
    def completed(self, success: bool, message: str) -> Annotated[tuple[bool, str],
                                                                   DBusSignature("bs")]:
        return success, message

    # -- properties (read-level data only) ------------------------------------------------
    @dbus_property(access=PropertyAccess.READ, name="Operation")
    def operation(self) -> DBusStr:
        return str(self.job.operation)

    @dbus_property(access=PropertyAccess.READ, name="Filesystem")
    def filesystem(self) -> DBusObjectPath:
        return filesystem_path(self.job.filesystem)

    @dbus_property(access=PropertyAccess.READ, name="State")
    def state(self) -> DBusStr:
        return str(self.job.state)

    @dbus_property(access=PropertyAccess.READ, name="Progress")
    def progress(self) -> DBusDouble:
        return self.job.progress

    @dbus_property(access=PropertyAccess.READ, name="BytesDone")
    def bytes_done(self) -> DBusUInt64:
        return self.job.bytes_done

    @dbus_property(access=PropertyAccess.READ, name="BytesTotal")
    def bytes_total(self) -> DBusUInt64:
        return self.job.bytes_total

    @dbus_property(access=PropertyAccess.READ, name="Rate")
    def rate(self) -> DBusUInt64:
        return int(self.job.rate)

    @dbus_property(access=PropertyAccess.READ, name="StartTime")
    def start_time(self) -> DBusUInt64:
        return usec(self.job.start_time)

    @dbus_property(access=PropertyAccess.READ, name="EndTime")
    def end_time(self) -> DBusUInt64:
        return usec(self.job.end_time)

    @dbus_property(access=PropertyAccess.READ, name="ExpectedEndTime")
    def expected_end_time(self) -> DBusUInt64:
        return usec(self.job.expected_end_time)

    @dbus_property(access=PropertyAccess.READ, name="StartedByUid")
    def started_by_uid(self) -> DBusUInt32:
        return self.job.started_by_uid

    @dbus_property(access=PropertyAccess.READ, name="Cancelable")
    def cancelable(self) -> DBusBool:
        return self.job.active

    @dbus_property(access=PropertyAccess.READ, name="Success")
    def success(self) -> DBusBool:
        return self.job.success

    @dbus_property(access=PropertyAccess.READ, name="Error")
    def error(self) -> DBusStr:
        return display(self.job.error)

    @dbus_property(access=PropertyAccess.READ, name="Message")
    def message(self) -> DBusStr:
        return display(self.job.message)

    @dbus_property(access=PropertyAccess.READ, name="Details")
    def details(self) -> VariantDict:
        return to_vardict(self.job.details)

    # -- methods --------------------------------------------------------------------------
    @dbus_method(name="Cancel")
    @authorized(Action.JOB_CANCEL, other_user_action=Action.JOB_CANCEL_OTHER_USER)
    async def cancel(self, options: OptionsArg) -> None:
        parse_options(NoOptions, options)
        await self._jobs.cancel(self.job)

    @dbus_method(name="Pause")
    # as Cancel: the job's owner with the action that started it, anyone else with
    # the other-user action
    @authorized(Action.MAINTENANCE, other_user_action=Action.JOB_CANCEL_OTHER_USER)
    async def pause(self, options: OptionsArg) -> None:
        parse_options(NoOptions, options)
        await self._jobs.pause(self.job)

    @dbus_method(name="Resume")
    # as Cancel: the job's owner with the action that started it, anyone else with
    # the other-user action
    @authorized(Action.MAINTENANCE, other_user_action=Action.JOB_CANCEL_OTHER_USER)
    async def resume(self, options: OptionsArg) -> None:
        parse_options(NoOptions, options)
        await self._jobs.resume(self.job)
