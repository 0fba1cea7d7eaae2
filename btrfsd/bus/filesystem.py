"""org.btrfsd1.Filesystem: one object per mounted btrfs filesystem."""

# No "from __future__ import annotations": dbus-fast reads these annotations at runtime
# and a postponed "None" return would become a bogus signature.
import functools
from array import array
from collections.abc import Callable, Collection, Iterator
from operator import attrgetter
from typing import Annotated, Any

from dbus_fast import Variant
from dbus_fast.annotations import DBusBool, DBusObjectPath, DBusSignature, DBusStr, DBusUInt64
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property, dbus_signal

from ..constants import FILESYSTEM_IFACE, Action
from ..core.balance_runner import OPERATION as BALANCE
from ..core.balance_runner import BalanceParams
from ..core.compare import Comparison
from ..core.filesystems import Filesystem
from ..core.inventory import Listing
from ..core.jobs import JobRecord
from ..core.limits import PerCallerLimit
from ..core.maintenance import parse_plan
from ..core.rescan_runner import OPERATION as RESCAN
from ..core.restore_runner import OPERATION as RESTORE
from ..core.restore_runner import RestoreParams
from ..core.scrub_runner import OPERATION as SCRUB
from ..core.scrub_runner import ScrubParams
from ..core.service import Service
from ..core.subvolumes import SubvolumeInfo, SubvolumeRows
from ..names import display, from_bus, to_bus
from .apidoc import FILESYSTEM, documented
from .auth import authorize, authorized, current_caller, current_gate, until_allowed
from .context import current_message
from .job import VariantDict
from .marshalled import KeptReplies, Marshalled, Pieces
from .options import (
    SUBVOLUME_FIELDS,
    BalanceOptions,
    CompareOptions,
    DeleteOptions,
    EnableQuotaOptions,
    ListOptions,
    NoOptions,
    OptionsArg,
    QuotaUsageOptions,
    RestoreOptions,
    ScrubOptions,
    SnapshotOptions,
    parse_options,
)
from .paths import job_path
from .polkit import Authority
from .variants import to_vardict, usec, usecs
from .visibility import own_identity, read_view

StrList = Annotated[list[str], DBusSignature("as")]
# One array per field, entry i of each describing subvolume i: id, parent id, path, uuid,
# parent uuid, received uuid, generation, ctime, otime (µs since the epoch), read-only,
# is-snapshot, then qgroup referenced, exclusive, max referenced, max exclusive bytes (0
# when quotas are off). Columns, not an array of structs: dbus-fast marshals and
# unmarshals 15 typed arrays of 10,000 in about 40% of the time of 10,000 structs
# (docs/benchmarks.md), and listings of 10,000 snapshots must stay cheap.
SUBVOLUME_COLUMNS = "(" + "".join("a" + t for t in "ttsssstxxbbtttt") + ")"
SubvolumeColumns = Annotated[list[list[Any]] | Marshalled, DBusSignature(SUBVOLUME_COLUMNS)]
# CompareSnapshots: the number of changed paths in all, then one page of them as columns:
# path, change, old path, type, size, data changed, metadata changed (docs/api.md).
CompareReply = Annotated[tuple[int, list[list[Any]]], DBusSignature("t(asasasasatabab)")]
ResultsDict = Annotated[dict[str, dict[str, Variant]], DBusSignature("a{sa{sv}}")]
# mode, inconsistent, then per qgroup: id, subvolume path, referenced, exclusive,
# max referenced, max exclusive
QuotaUsage = Annotated[tuple[str, bool, list[Any]], DBusSignature("sba(tstttt)")]
_NO, _YES = array("I", [0]), array("I", [1])
# A column of ListSubvolumes' reply, as Marshalled takes it
Column = list[Any] | array | Pieces  # type: ignore[type-arg]


def subvolume_columns(listing: Listing, wanted: Collection[str] = ()) -> list[Column]:
    """ListSubvolumes' reply (for Marshalled): the fields of the listing as columns (with
    ``wanted``, only those named there, SUBVOLUME_FIELDS; the others empty). Numbers
    come as arrays copied from the packed rows and strings in pieces made as they are
    marshalled, so no column of 10,000 Python objects is made (docs/benchmarks.md,
    issue 11)."""
    items = listing.items
    rows = items if isinstance(items, SubvolumeRows) else SubvolumeRows(items)
    want = set(wanted or SUBVOLUME_FIELDS)

    def paths() -> Iterator[tuple[int, str]]:
        for count, joined in rows.texts("path"):
            # names that need no escaping, as nearly all do: the piece as it is
            yield count, (joined if joined.isascii() and "\\" not in joined
                          else "\0".join(map(to_bus, joined.split("\0"))))

    def is_snapshot() -> array:  # type: ignore[type-arg]
        flags = array("I")
        for count, joined in rows.texts("parent_uuid"):
            if joined == "\0" * (count - 1):  # no parent UUID in the piece
                flags.extend(_NO * count)
            elif not ("\0\0" in joined or joined.startswith("\0") or joined.endswith("\0")):
                flags.extend(_YES * count)  # no empty one: each has a parent UUID
            else:
                flags.extend(map(bool, joined.split("\0")))
        return flags

    @functools.cache
    def usage() -> list[Any]:  # each row's QgroupUsage, or None (no qgroup)
        return list(map(listing.usage.get, rows.numbers("id")))

    def quota(name: str) -> list[int]:
        if not listing.usage:  # quotas off: zeros, without a look-up per subvolume
            return [0] * len(rows)
        value = attrgetter(name)
        return [0 if q is None else value(q) for q in usage()]

    made: dict[str, Callable[[], Column]] = {
        "id": lambda: rows.numbers("id"),
        "parent_id": lambda: rows.numbers("parent_id"),
        "path": lambda: Pieces(paths),
        "uuid": lambda: Pieces(lambda: rows.texts("uuid")),
        "parent_uuid": lambda: Pieces(lambda: rows.texts("parent_uuid")),
        "received_uuid": lambda: Pieces(lambda: rows.texts("received_uuid")),
        "generation": lambda: rows.numbers("generation"),
        "ctime": lambda: array("q", usecs(rows.numbers("ctime"))),
        "otime": lambda: array("q", usecs(rows.numbers("otime"))),
        "read_only": lambda: _flags(rows.read_only()),
        "is_snapshot": is_snapshot,
        "referenced": lambda: quota("referenced"),
        "exclusive": lambda: quota("exclusive"),
        "max_referenced": lambda: quota("max_referenced"),
        "max_exclusive": lambda: quota("max_exclusive"),
    }
    return [made[name]() if name in want and rows else [] for name in SUBVOLUME_FIELDS]


def _flags(values: bytes) -> array:  # type: ignore[type-arg]
    """Bytes of 0 or 1 as D-Bus booleans (32 bits each)."""
    flags = array("I")
    flags.extend(values)  # extend, not the constructor: that would read bytes as raw
    return flags


def change_columns(result: Comparison, offset: int, limit: int) -> tuple[int, list[list[Any]]]:
    """CompareSnapshots' reply: the total and rows offset..offset+limit as columns."""
    page = result.rows[offset:offset + limit]
    return len(result.rows), [[to_bus(c.path) for c in page], [c.change for c in page],
                              [to_bus(c.old_path) for c in page], [c.type for c in page],
                              [c.size for c in page], [c.data for c in page],
                              [c.metadata for c in page]]


def subvolume_dict(s: SubvolumeInfo) -> dict[str, Variant]:
    return {
        "id": Variant("t", s.id),
        "parent_id": Variant("t", s.parent_id),
        "path": Variant("s", to_bus(s.path)),
        "uuid": Variant("s", s.uuid),
        "parent_uuid": Variant("s", s.parent_uuid),
        "received_uuid": Variant("s", s.received_uuid),
        "generation": Variant("t", s.generation),
        "ctime": Variant("x", usec(s.ctime)),
        "otime": Variant("x", usec(s.otime)),
        "read_only": Variant("b", s.read_only),
        "is_snapshot": Variant("b", s.is_snapshot),
    }


@documented(FILESYSTEM)
class FilesystemInterface(ServiceInterface):
    """Properties of one filesystem and the subvolume/snapshot methods on it."""

    def __init__(self, authority: Authority, fs: Filesystem, service: Service) -> None:
        super().__init__(FILESYSTEM_IFACE)
        self.authority = authority
        self.fs = fs
        self._service = service
        self._last: dict[str, Any] = self.snapshot_properties()
        self._kept_replies = KeptReplies()

    @property
    def read_limit(self) -> PerCallerLimit:
        return self._service.read_limit

    # -- properties (read-level data only: a Get carries no caller to authorize) --------
    @dbus_property(access=PropertyAccess.READ, name="Uuid")
    def uuid(self) -> DBusStr:
        return self.fs.uuid

    @dbus_property(access=PropertyAccess.READ, name="Label")
    def label(self) -> DBusStr:
        return display(self.fs.label)

    @dbus_property(access=PropertyAccess.READ, name="MountPoints")
    def mount_points(self) -> StrList:
        return [to_bus(m) for m in self.fs.mount_points]

    @dbus_property(access=PropertyAccess.READ, name="Devices")
    def devices(self) -> StrList:
        return [to_bus(d) for d in self.fs.devices]

    @dbus_property(access=PropertyAccess.READ, name="TotalBytes")
    def total_bytes(self) -> DBusUInt64:
        return self.fs.usage.total_bytes

    @dbus_property(access=PropertyAccess.READ, name="UsedBytes")
    def used_bytes(self) -> DBusUInt64:
        return self.fs.usage.used_bytes

    @dbus_property(access=PropertyAccess.READ, name="FreeBytes")
    def free_bytes(self) -> DBusUInt64:
        return self.fs.usage.free_bytes

    @dbus_property(access=PropertyAccess.READ, name="QuotaEnabled")
    def quota_enabled(self) -> DBusBool:
        return self.fs.quota_enabled

    @dbus_property(access=PropertyAccess.READ, name="QuotaMode")
    def quota_mode(self) -> DBusStr:
        return self.fs.quota_mode

    @dbus_property(access=PropertyAccess.READ, name="DefaultSubvolumeId")
    def default_subvolume_id(self) -> DBusUInt64:
        return self.fs.default_subvolume_id

    def snapshot_properties(self) -> dict[str, Any]:
        """Current property values, to find what changed since the last signal."""
        fs = self.fs
        return {
            "Label": display(fs.label), "MountPoints": [to_bus(m) for m in fs.mount_points],
            "Devices": [to_bus(d) for d in fs.devices],
            "TotalBytes": fs.usage.total_bytes, "UsedBytes": fs.usage.used_bytes,
            "FreeBytes": fs.usage.free_bytes, "QuotaEnabled": fs.quota_enabled,
            "QuotaMode": fs.quota_mode,
            "DefaultSubvolumeId": fs.default_subvolume_id,
        }

    def emit_changes(self) -> None:
        """Emit PropertiesChanged for whatever differs from the last emission."""
        now = self.snapshot_properties()
        changed = {k: v for k, v in now.items() if self._last.get(k) != v}
        self._last = now
        if changed:
            self.emit_properties_changed(changed)

    # -- methods -------------------------------------------------------------------
    @dbus_method(name="ListSubvolumes")
    @authorized(Action.READ, expensive=True)
    async def list_subvolumes(self, options: OptionsArg) -> SubvolumeColumns:
        opts = parse_options(ListOptions, options)
        listing = await self._service.inventory.list(
            self.fs, snapshots_of=from_bus(opts.snapshots_of),
            visible_to=await read_view(self.authority))
        wanted = frozenset(opts.columns)
        if listing.key is None:  # a caller's own view: made for this call only
            return Marshalled(SUBVOLUME_COLUMNS, [subvolume_columns(listing, wanted)])
        # the same listing (key) and columns with the same usage: the same bytes as last
        # time
        key = (listing.key, wanted)
        return (self._kept_replies.get(key, listing.usage)
                or self._kept_replies.put(key, listing.usage, Marshalled(
                    SUBVOLUME_COLUMNS, [subvolume_columns(listing, wanted)])))

    @dbus_method(name="GetSubvolume")
    @authorized(Action.READ)
    async def get_subvolume(self, path: DBusStr, options: OptionsArg) -> VariantDict:
        parse_options(NoOptions, options)
        info, q = await self._service.inventory.get(self.fs, from_bus(path),
                                                    as_caller=await read_view(self.authority))
        result = subvolume_dict(info)
        if q is not None:
            result.update({"referenced": Variant("t", q.referenced),
                           "exclusive": Variant("t", q.exclusive),
                           "max_referenced": Variant("t", q.max_referenced),
                           "max_exclusive": Variant("t", q.max_exclusive)})
        return result

    @dbus_method(name="CreateSubvolume")
    @authorized(Action.SUBVOLUME_CREATE, own_action=Action.SUBVOLUME_CREATE_OWN)
    async def create_subvolume(self, path: DBusStr, options: OptionsArg) -> DBusStr:
        parse_options(NoOptions, options)
        return to_bus(await self._service.subvolumes.create(
            self.fs, from_bus(path), as_caller=await own_identity(self.authority)))

    @dbus_method(name="DeleteSubvolume")
    @authorized(Action.SUBVOLUME_DELETE, own_action=Action.SUBVOLUME_DELETE_OWN)
    async def delete_subvolume(self, path: DBusStr, options: OptionsArg) -> None:
        opts = parse_options(DeleteOptions, options)
        await self._service.subvolumes.delete(self.fs, from_bus(path), recursive=opts.recursive,
                                              as_caller=await own_identity(self.authority))

    @dbus_method(name="CreateSnapshot")
    @authorized(Action.SNAPSHOT_CREATE, own_action=Action.SNAPSHOT_CREATE_OWN, prepares=True)
    async def create_snapshot(
        self, source: DBusStr, destination: DBusStr, options: OptionsArg
    ) -> DBusStr:
        opts = parse_options(SnapshotOptions, options)
        made = await self._service.subvolumes.snapshot(
            self.fs, from_bus(source), from_bus(destination), read_only=opts.read_only,
            recursive=opts.recursive, as_caller=await own_identity(self.authority),
            gate=current_gate())
        return to_bus(made)

    @dbus_method(name="SetReadOnly")
    @authorized(Action.SUBVOLUME_MODIFY)
    async def set_read_only(self, path: DBusStr, read_only: DBusBool, options: OptionsArg) -> None:
        parse_options(NoOptions, options)
        await self._service.subvolumes.set_read_only(self.fs, from_bus(path), read_only)

    @dbus_method(name="SetDefaultSubvolume")
    @authorized(Action.SUBVOLUME_SET_DEFAULT)
    async def set_default_subvolume(self, path: DBusStr, options: OptionsArg) -> DBusUInt64:
        parse_options(NoOptions, options)
        sid = await self._service.subvolumes.set_default(self.fs, from_bus(path))
        self.emit_changes()
        return sid

    @dbus_method(name="CompareSnapshots")
    @authorized(Action.COMPARE, expensive=True)
    async def compare_snapshots(self, old: DBusStr, new: DBusStr, options: OptionsArg
                                ) -> CompareReply:
        opts = parse_options(CompareOptions, options)
        result = await self._service.comparisons.compare(
            self.fs, from_bus(old), from_bus(new), fresh=opts.offset == 0)
        return change_columns(result, opts.offset, opts.limit)  # type: ignore[return-value]

    @dbus_method(name="StartScrub")
    @authorized(Action.MAINTENANCE)
    async def start_scrub(self, options: OptionsArg) -> DBusObjectPath:
        opts = parse_options(ScrubOptions, options)
        job = await self._service.jobs.start(self.fs, current_caller().uid, SCRUB,
                                             ScrubParams(opts.readonly, opts.limit))
        return job_path(job.id)

    @dbus_method(name="StartBalance")
    @authorized(Action.MAINTENANCE)
    async def start_balance(self, options: OptionsArg) -> DBusObjectPath:
        opts = parse_options(BalanceOptions, options)
        params = BalanceParams.filtered(data_usage=opts.data_usage,
                                        metadata_usage=opts.metadata_usage, limit=opts.limit,
                                        full=opts.full)
        job = await self._service.jobs.start(self.fs, current_caller().uid, BALANCE, params)
        return job_path(job.id)

    # -- restore and rollback ------------------------------------------------------------
    @dbus_method(name="RestoreFiles")
    @authorized(Action.RESTORE)
    async def restore_files(self, snapshot: DBusStr, paths: StrList,
                            options: OptionsArg) -> DBusObjectPath:
        opts = parse_options(RestoreOptions, options)
        params = RestoreParams(from_bus(snapshot), tuple(from_bus(p) for p in paths),
                               destination=from_bus(opts.destination),
                               overwrite=opts.overwrite)
        job = await self._service.jobs.start(self.fs, current_caller().uid, RESTORE, params)
        return job_path(job.id)

    @dbus_method(name="Rollback")
    @authorized(Action.ROLLBACK)
    async def rollback(self, subvolume: DBusStr, snapshot: DBusStr,
                       options: OptionsArg) -> DBusStr:
        parse_options(NoOptions, options)
        result = await self._service.rollback.rollback(self.fs, from_bus(subvolume),
                                                       from_bus(snapshot))
        if result.new_default:
            self.emit_changes()
        return to_bus(result.saved)

    # -- quotas -------------------------------------------------------------------------
    @dbus_signal(name="QuotaWarning")
    def quota_warning(self, path: str, qgroupid: int, used: int, limit: int, level: str
                      ) -> Annotated[tuple[str, int, int, int, str], DBusSignature("sttts")]:
        return to_bus(path), qgroupid, used, limit, level

    @dbus_method(name="EnableQuota")
    @authorized(Action.QUOTA_MANAGE)
    async def enable_quota(self, options: OptionsArg) -> DBusStr:
        opts = parse_options(EnableQuotaOptions, options)
        note = await self._service.quotas.enable(self.fs, simple=opts.simple, force=opts.force)
        self.emit_changes()
        return note

    @dbus_method(name="DisableQuota")
    @authorized(Action.QUOTA_MANAGE)
    async def disable_quota(self, options: OptionsArg) -> None:
        parse_options(NoOptions, options)
        await self._service.quotas.disable(self.fs)
        self.emit_changes()

    @dbus_method(name="RescanQuota")
    @authorized(Action.QUOTA_MANAGE)
    async def rescan_quota(self, options: OptionsArg) -> DBusObjectPath:
        parse_options(NoOptions, options)
        job = await self._service.jobs.start(self.fs, current_caller().uid, RESCAN)
        return job_path(job.id)

    @dbus_method(name="SetQuotaLimit")
    @authorized(Action.QUOTA_MANAGE)
    async def set_quota_limit(self, path: DBusStr, referenced: DBusUInt64,
                              exclusive: DBusUInt64, options: OptionsArg) -> None:
        parse_options(NoOptions, options)
        await self._service.quotas.set_limit(self.fs, from_bus(path), referenced=referenced,
                                             exclusive=exclusive)

    @dbus_method(name="GetQuotaUsage")
    @authorized(Action.READ, expensive=True)
    async def get_quota_usage(self, options: OptionsArg) -> QuotaUsage:
        opts = parse_options(QuotaUsageOptions, options)
        if opts.sync:
            # a sync commits a transaction: more than reading, so quota-manage's to ask,
            # and only once the read itself is allowed (reads run while polkit is asked)
            await until_allowed()
            await authorize(self.authority, current_message(), Action.QUOTA_MANAGE)
        r = await self._service.quotas.report(
            self.fs, sync=opts.sync, visible_to=await read_view(self.authority))
        return (r.mode, r.inconsistent,  # type: ignore[return-value]
                [[q.qgroupid, to_bus(path), q.referenced, q.exclusive, q.max_referenced,
                  q.max_exclusive] for q, path in r.qgroups])

    # -- periodic maintenance -------------------------------------------------------------
    @dbus_method(name="SetMaintenance")
    @authorized(Action.SCHEDULE_MANAGE)
    async def set_maintenance(self, spec: OptionsArg, options: OptionsArg) -> None:
        parse_options(NoOptions, options)
        plan = parse_plan(self.fs.uuid, {k: v.value for k, v in spec.items()})
        await self._service.maintenance.set(plan)

    @dbus_method(name="GetMaintenance")
    @authorized(Action.READ)
    async def get_maintenance(self, options: OptionsArg) -> VariantDict:
        parse_options(NoOptions, options)
        plan = self._service.maintenance.get(self.fs.uuid)
        if plan is None:
            return {}
        return {"scrub": Variant("s", plan.scrub), "balance": Variant("s", plan.balance),
                "data_usage": Variant("au", plan.data_usage),
                "metadata_usage": Variant("au", plan.metadata_usage)}

    @dbus_method(name="RemoveMaintenance")
    @authorized(Action.SCHEDULE_MANAGE)
    async def remove_maintenance(self, options: OptionsArg) -> None:
        parse_options(NoOptions, options)
        await self._service.maintenance.remove(self.fs.uuid)

    @dbus_method(name="GetLastResults")
    @authorized(Action.READ)
    async def get_last_results(self, options: OptionsArg) -> ResultsDict:
        parse_options(NoOptions, options)
        return {op: job_result_dict(rec)
                for op, rec in self._service.jobs.last_results(self.fs.uuid).items()}


def job_result_dict(rec: JobRecord) -> dict[str, Variant]:
    """A finished job's record as a{sv} (times in µs since the epoch)."""
    return {
        "job_id": Variant("t", rec.id),
        "state": Variant("s", rec.state),
        "started_by_uid": Variant("u", rec.started_by_uid),
        "start_time": Variant("t", usec(rec.start_time)),
        "end_time": Variant("t", usec(rec.end_time)),
        "progress": Variant("d", rec.progress),
        "bytes_done": Variant("t", rec.bytes_done),
        "message": Variant("s", display(rec.message)),
        "details": Variant("a{sv}", to_vardict(rec.details)),
    }
