"""The API's reference text, put into dbus-fast's introspection of each interface.

Every method, argument, property and signal of the exported interfaces gets a name and an
``org.gtk.GDBus.DocString`` annotation (what gdbus-codegen turns into gtk-doc and what
D-Feet/d-spy show), so the daemon's own Introspect reply, the shipped XML written from it
(``python -m btrfsd.bus.introspect``) and the bindings generated from that XML all carry
the same words. dbus-fast names no out-argument and no signal argument (it reads only
the return annotation), so the names come from here too.

``documented`` runs once per interface class, at import: it changes dbus-fast's
introspection objects for the class's members (private storage, pinned by
tests/unit/test_dbus_fast_internals.py). A member or argument without a text here makes
it raise, so a new method cannot ship undocumented (tests/unit/test_apidoc.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

from dbus_fast import introspection as intr

DOC = "org.gtk.GDBus.DocString"
# qdbusxml2cpp (KDE/Qt) refuses a container type it has no C++ type for unless the XML
# names one: a{sv} is QVariantMap; the struct arrays stay QDBusArgument, which a Qt client
# reads with qdbus_cast into its own types (docs/front-ends.md).
QT_TYPE = "org.qtproject.QtDBus.QtTypeName"
QT_KNOWN = set("ybnqiuxtdsogv") | {"as", "ay", "ao", "av"}
QT_NAMES = {"a{sv}": "QVariantMap"}
OPTIONS = ("Options for forward compatibility (a{sv}); unknown keys are refused with "
           "InvalidArgument.")

T = TypeVar("T", bound=type)


@dataclass(frozen=True)
class Doc:
    """A member's text, its in-arguments' texts by name, and its out-arguments (or a
    signal's arguments) as (name, text) in order."""

    text: str
    args: dict[str, str] = field(default_factory=dict)
    out: tuple[tuple[str, str], ...] = ()


def _opt(**args: str) -> dict[str, str]:
    return {**args, "options": args.get("options", OPTIONS)}


MANAGER: dict[str, Doc] = {
    "Version": Doc("The API version btrfsd speaks (\"0.1\")."),
    "GetFilesystems": Doc("Object paths of the mounted btrfs filesystems. Action: read.",
                          _opt(), (("filesystems", "One org.btrfsd1.Filesystem object each."),)),
    "GetStatus": Doc("A health summary: version, number of filesystems, active jobs, problems."
                     " Action: read.", _opt(),
                     (("status", "version s, filesystems u, active_jobs u, problems as."),)),
    "GetJobs": Doc("Object paths of the jobs on the bus, running and recently finished."
                   " Action: read.", _opt(), (("jobs", "org.btrfsd1.Job objects."),)),
    "ResolvePath": Doc("The filesystem object holding a path and the subvolume it is in."
                       " Action: read; NotFound for a path the caller may not reach.",
                       _opt(path="Absolute path as the caller sees it."),
                       (("filesystem", "The org.btrfsd1.Filesystem object."),
                        ("subvolume_path", "Path of the subvolume, relative to the top level."))),
    "SetSchedule": Doc("Create or change a snapshot schedule (docs/schedules.md)."
                       " Action: schedule-manage.",
                       _opt(name="Schedule name.",
                            spec="subvolume s, every s, hourly/daily/weekly/monthly u, ...,"
                                 " backup s: a backup of the subvolume run after each "
                                 "snapshot.",
                            options="replace b: change an existing schedule.")),
    "RemoveSchedule": Doc("Remove a schedule (its snapshots stay). Action: schedule-manage.",
                          _opt(name="Schedule name.")),
    "GetSchedules": Doc("The schedules the caller may see, by name. Action: read.", _opt(),
                        (("schedules", "Per name: its settings and last run."),)),
    "RunSchedule": Doc("Take a schedule's snapshot now and clean up. Action: schedule-manage.",
                       _opt(name="Schedule name."),
                       (("result", "snapshot s, deleted as, failed a(ss), backup_job o (the"
                                   " backup it started; / for none)."),)),
    "CleanupSchedule": Doc("Apply a schedule's retention now. Action: schedule-manage.",
                           _opt(name="Schedule name.",
                                options="dry_run b: only say what would go."),
                           (("result", "snapshot s, deleted as, failed a(ss), backup_job o (the"
                                   " backup it started; / for none)."),)),
    "ExplainSchedule": Doc("Each snapshot of a schedule: kept (by which rules) or not."
                           " Action: read (an expensive read).",
                           _opt(name="Schedule name."),
                           (("snapshots", "path, uuid, created (µs), important, keep, "
                                          "reasons (comma-separated), description."),)),
    "SetBackup": Doc("Create or change a backup to another btrfs disk (docs/backup.md)."
                     " Action: backup-manage.",
                     _opt(name="Backup name.",
                          source_subvolume="Absolute path of the subvolume to back up.",
                          target_dir="Absolute path of a directory on another btrfs "
                                     "filesystem, root's all the way up.",
                          options="hourly/daily/weekly/monthly/yearly/keep_last u: "
                                  "retention on the target; schedule s: send that "
                                  "schedule's newest snapshot; rate_limit t: bytes/s; "
                                  "replace b: change an existing backup.")),
    "RemoveBackup": Doc("Forget a backup (its copies on the target stay). Action: "
                        "backup-manage.",
                        _opt(name="Backup name.")),
    "ListBackups": Doc("The backups whose source and target the caller may reach, by name."
                       " Action: read.", _opt(),
                       (("backups", "Per name: source, target, retention, schedule, "
                                    "rate_limit."),)),
    "ExplainBackup": Doc("Each copy on a backup's target, youngest first: kept (by which "
                         "rules; parent: the next incremental's) or deleted by the next "
                         "run. Action: read (an expensive read).",
                         _opt(name="Backup name."),
                         (("copies", "path, uuid (of the source snapshot it copies), "
                                     "created (µs), keep, reasons (comma-separated)."),)),
    "RunBackup": Doc("Send a snapshot of the source to the target now, as a job on the "
                     "target's filesystem. Action: backup-run.", _opt(name="Backup name."),
                     (("job", "The org.btrfsd1.Job object."),)),
    "RestoreBackup": Doc("Send a copy on a backup's target back into a directory on a "
                         "btrfs filesystem, as a job there (read-only result; incremental "
                         "when that filesystem holds a copy's original). Action: backup-manage.",
                         _opt(name="Backup name.",
                              copy="The copy's name in the target directory (ExplainBackup"
                                   " lists them).",
                              dest_dir="Absolute path of the directory to receive into, "
                                       "root's all the way up."),
                         (("job", "The org.btrfsd1.Job object."),)),
    "SetSnapshotInfo": Doc("Mark a scheduled snapshot important or describe it."
                           " Action: schedule-manage.",
                           _opt(path="The snapshot's absolute path.",
                                info="important b, description s.")),
}

_PATH = "Absolute path as the caller sees it (docs/api.md, Paths)."
FILESYSTEM: dict[str, Doc] = {
    "Uuid": Doc("The filesystem's UUID."),
    "Label": Doc("The filesystem's label (may be empty)."),
    "MountPoints": Doc("Where it is mounted."),
    "Devices": Doc("Its block devices."),
    "TotalBytes": Doc("Size in bytes."),
    "UsedBytes": Doc("Bytes used."),
    "FreeBytes": Doc("Bytes free (estimated, as df)."),
    "QuotaEnabled": Doc("Whether quotas are on."),
    "QuotaMode": Doc("qgroup (full), squota (simple) or empty (off)."),
    "DefaultSubvolumeId": Doc("Id of the default subvolume."),
    "ListSubvolumes": Doc("The subvolumes the caller may reach, as columns (docs/api.md)."
                          " Action: read (an expensive read).",
                          _opt(options="snapshots_of s: only the snapshots of this path;"
                                       " columns as: only these columns are filled, the"
                                       " others are empty (names as GetSubvolume's keys;"
                                       " empty: all)."),
                          (("columns", "id, parent id, path, uuid, parent uuid, received "
                                       "uuid, generation, ctime, otime, read-only, "
                                       "is-snapshot, referenced, exclusive, max referenced, "
                                       "max exclusive: one array each."),)),
    "GetSubvolume": Doc("One subvolume's fields by name. Action: read; NotFound for a path the"
                        " caller may not reach.", _opt(path=_PATH),
                        (("info", "id, parent_id, path, uuid, ..., and the quota figures "
                                  "when quotas are on."),)),
    "CreateSubvolume": Doc("Create a subvolume. Action: subvolume-create.", _opt(path=_PATH),
                           (("created", "Path of the new subvolume."),)),
    "DeleteSubvolume": Doc("Delete a subvolume or snapshot. Action: subvolume-delete.",
                           _opt(path=_PATH, options="recursive b: nested subvolumes too.")),
    "CreateSnapshot": Doc("Snapshot a subvolume (read-only by default). Action: "
                          "snapshot-create.",
                          _opt(source=_PATH, destination="Where; empty: "
                               "<source>/.snapshots/<UTC time>.",
                               options="read_only b (true), recursive b (false)."),
                          (("created", "Path of the new snapshot."),)),
    "SetReadOnly": Doc("Set or clear a subvolume's read-only flag. Action: subvolume-modify.",
                       _opt(path=_PATH, read_only="The new flag.")),
    "SetDefaultSubvolume": Doc("Make a subvolume the default. Action: subvolume-modify.",
                               _opt(path=_PATH), (("id", "The subvolume's id."),)),
    "CompareSnapshots": Doc(
        "The paths that changed from the read-only snapshot old to new (a newer snapshot "
        "of the same subvolume, or the subvolume itself: then through a temporary "
        "snapshot removed afterwards), from the kernel's send stream; sorted by path, "
        "paged (docs/api.md). Action: compare (reveals file names).",
        _opt(old="The older read-only snapshot (absolute path).",
             new="The newer snapshot, or the live subvolume old was taken of; empty: "
                 "that subvolume, where a mount shows it.",
             options="offset t (0): rows to skip; limit t (10000, at most 100000)."),
        (("total", "How many paths changed in all (page with offset)."),
         ("changes", "path, change (added, deleted, modified, metadata, renamed, linked), "
                     "old path, type (file, dir, symlink, other), size, data changed, "
                     "metadata changed: one array each, paths relative to the "
                     "subvolume."))),
    "StartScrub": Doc("Start a scrub job. Action: maintenance.",
                      _opt(options="readonly b, limit t (bytes/s per device)."),
                      (("job", "The org.btrfsd1.Job object."),)),
    "StartBalance": Doc("Start a balance job. Action: maintenance.",
                        _opt(options="data_usage u, metadata_usage u, limit u, full b."),
                        (("job", "The org.btrfsd1.Job object."),)),
    "RestoreFiles": Doc("Put files or directories from a read-only snapshot back into the "
                        "subvolume it was taken of (data shared by reflink), as a job with "
                        "progress in files and bytes. What is in the way is moved aside to "
                        "NAME.before-restore-<time>, or replaced with overwrite. Action: "
                        "restore.",
                        _opt(snapshot="Absolute path of a read-only snapshot of this "
                             "filesystem.",
                             paths="Paths inside the snapshot, relative to it or absolute "
                             "below it; symbolic links are restored as links.",
                             options="destination s (a directory to restore into), "
                             "overwrite b (false)."),
                        (("job", "The org.btrfsd1.Job object."),)),
    "Rollback": Doc("Make a subvolume a writable copy of one of its snapshots, keeping its "
                    "current state as a read-only snapshot in its snapshot directory. A "
                    "mounted or default subvolume gets a new default subvolume instead, "
                    "which takes effect at the next mount or boot (docs/api.md). Action: "
                    "rollback.",
                    _opt(subvolume="Absolute path of the writable subvolume.",
                         snapshot="Absolute path of one of its snapshots."),
                    (("saved", "Path of the read-only snapshot of the state before."),)),
    "QuotaWarning": Doc("A qgroup crossed a level (docs/quotas.md); once per crossing.",
                        out=(("path", "The subvolume, or empty when not every local user "
                                      "could reach it (find yours by qgroupid)."),
                             ("qgroupid", "level << 48 | subvolume id."),
                             ("used", "Bytes used (referenced or exclusive, the fuller)."),
                             ("limit", "The limit in bytes."),
                             ("level", "warning, critical or exceeded."))),
    "EnableQuota": Doc("Turn quotas on. Action: quota-manage.",
                       _opt(options="simple b (squota), force b."),
                       (("note", "A remark for people (e.g. a rescan started), or empty."),)),
    "DisableQuota": Doc("Turn quotas off. Action: quota-manage.", _opt()),
    "RescanQuota": Doc("Start a quota rescan job. Action: quota-manage.", _opt(),
                       (("job", "The org.btrfsd1.Job object."),)),
    "SetQuotaLimit": Doc("Set a subvolume's qgroup limits (0: none). Action: quota-manage.",
                         _opt(path=_PATH, referenced="Referenced bytes limit.",
                              exclusive="Exclusive bytes limit.")),
    "GetQuotaUsage": Doc("Quota usage of the qgroups the caller may reach. Action: read (an "
                         "expensive read); with sync also quota-manage.",
                         _opt(options="sync b: commit first."),
                         (("mode", "qgroup, squota or empty."),
                          ("inconsistent", "Whether the kernel says a rescan is needed."),
                          ("qgroups", "id, subvolume path, referenced, exclusive, max "
                                      "referenced, max exclusive."))),
    "SetMaintenance": Doc("Set periodic scrub/balance for this filesystem. Action: "
                          "schedule-manage.",
                          _opt(spec="scrub s, balance s, data_usage au, metadata_usage au.")),
    "GetMaintenance": Doc("The periodic maintenance plan (empty: none). Action: read.", _opt(),
                          (("plan", "scrub s, balance s, data_usage au, metadata_usage au."),)),
    "RemoveMaintenance": Doc("Remove the periodic maintenance plan. Action: schedule-manage.",
                             _opt()),
    "GetLastResults": Doc("The last finished job of each operation. Action: read.", _opt(),
                          (("results", "Per operation: job_id, state, times, progress, "
                                       "error, message, details."),)),
}

JOB: dict[str, Doc] = {
    "Completed": Doc("The job finished.", out=(("success", "Whether it completed."),
                                               ("message", "What happened, for people."))),
    "Operation": Doc("scrub, balance or quota-rescan."),
    "Filesystem": Doc("The org.btrfsd1.Filesystem object it runs on."),
    "State": Doc("running, paused, completed, failed or cancelled."),
    "Progress": Doc("0..1."),
    "BytesDone": Doc("Bytes processed so far."),
    "BytesTotal": Doc("Bytes to process (0: unknown)."),
    "Rate": Doc("Bytes per second lately."),
    "StartTime": Doc("µs since the epoch."),
    "EndTime": Doc("µs since the epoch (0: still running)."),
    "ExpectedEndTime": Doc("µs since the epoch (0: unknown)."),
    "StartedByUid": Doc("Who started it."),
    "Cancelable": Doc("Whether Cancel can stop it."),
    "Success": Doc("Whether it completed successfully (once finished)."),
    "Error": Doc("The D-Bus error name it failed with, or empty."),
    "Message": Doc("What happened, for people."),
    "Details": Doc("Operation-specific figures (a scrub's error counts, ...)."),
    "Cancel": Doc("Cancel the job. Action: job-cancel (yours) or job-cancel-other-user.",
                  _opt()),
    "Pause": Doc("Pause the job. Action: maintenance (yours) or job-cancel-other-user.",
                 _opt()),
    "Resume": Doc("Resume a paused job. Action: maintenance (yours) or "
                  "job-cancel-other-user.", _opt()),
}


def _annotate(target: intr.Method | intr.Signal | intr.Property | intr.Arg, text: str) -> None:
    target.annotations[DOC] = text


def qt_type(signature: str) -> str | None:
    """The Qt type name qdbusxml2cpp needs for ``signature``, None when it knows one."""
    if signature in QT_KNOWN:
        return None
    return QT_NAMES.get(signature, "QDBusArgument")


def _qt_annotate(target: intr.Method | intr.Signal | intr.Property) -> None:
    """Qt's annotations: on a method or signal, one per argument (In<n>/Out<n>, numbered
    per direction; a signal's arguments count as Out), on a property, one."""
    if isinstance(target, intr.Property):
        if (name := qt_type(str(target.signature))) is not None:
            target.annotations[QT_TYPE] = name
        return
    groups = ((("In", target.in_args), ("Out", target.out_args))
              if isinstance(target, intr.Method) else (("Out", target.args),))
    for direction, args in groups:
        for n, a in enumerate(args):
            if (name := qt_type(str(a.signature))) is not None:
                target.annotations[f"{QT_TYPE}.{direction}{n}"] = name


def _document_args(where: str, in_args: list[intr.Arg], out_args: list[intr.Arg],
                   doc: Doc) -> None:
    if {a.name for a in in_args} != set(doc.args):
        raise ValueError(f"{where}: in-arguments {[a.name for a in in_args]} but texts "
                         f"for {sorted(doc.args)}")
    for a in in_args:
        _annotate(a, doc.args[a.name or ""])
    if len(out_args) != len(doc.out):
        raise ValueError(f"{where}: {len(out_args)} out-arguments, {len(doc.out)} described")
    for a, (name, text) in zip(out_args, doc.out, strict=True):
        a.name = name
        _annotate(a, text)


def _introspection_of(member: Any) -> intr.Method | intr.Signal | intr.Property | None:
    """dbus-fast's introspection object for a decorated class attribute, else None."""
    for key in ("__DBUS_METHOD", "__DBUS_SIGNAL"):
        inner = getattr(member, "__dict__", {}).get(key)
        if inner is not None:
            return inner.introspection  # type: ignore[no-any-return]
    if isinstance(member, property) and isinstance(getattr(member, "introspection", None),
                                                   intr.Property):
        return member.introspection  # type: ignore[attr-defined,no-any-return]
    return None


def documented(docs: dict[str, Doc]) -> Any:
    """Class decorator: give every D-Bus member of the class its text and argument names
    from ``docs``. Raises ValueError for a member without text, a text without member, or
    arguments that do not match."""

    def apply(cls: T) -> T:
        seen = set()
        for attr in vars(cls).values():
            target = _introspection_of(attr)
            if target is None:
                continue
            where = f"{cls.__name__}.{target.name}"
            doc = docs.get(target.name)
            if doc is None:
                raise ValueError(f"{where} has no text in bus/apidoc.py")
            seen.add(target.name)
            _annotate(target, doc.text)
            _qt_annotate(target)
            if isinstance(target, intr.Method):
                _document_args(where, target.in_args, target.out_args, doc)
            elif isinstance(target, intr.Signal):
                _document_args(where, [], target.args, doc)
        if stale := set(docs) - seen:
            raise ValueError(f"{cls.__name__}: texts for members it lacks: {sorted(stale)}")
        return cls

    return apply
