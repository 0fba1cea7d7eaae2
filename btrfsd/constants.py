"""Public names of btrfsd: one source of truth for bus names, paths, interfaces and actions.

Front ends depend on these; changing one is an API break.
"""

from typing import Final

VERSION: Final = "0.1.0"

BUS_NAME: Final = "org.btrfsd1"
ROOT_PATH: Final = "/org/btrfsd1"
FILESYSTEMS_PATH: Final = ROOT_PATH + "/filesystems"
JOBS_PATH: Final = ROOT_PATH + "/jobs"

MANAGER_IFACE: Final = "org.btrfsd1.Manager"
FILESYSTEM_IFACE: Final = "org.btrfsd1.Filesystem"
JOB_IFACE: Final = "org.btrfsd1.Job"

ERROR_PREFIX: Final = "org.btrfsd1.Error."

POLKIT_BUS_NAME: Final = "org.freedesktop.PolicyKit1"
POLKIT_PATH: Final = "/org/freedesktop/PolicyKit1/Authority"
POLKIT_IFACE: Final = "org.freedesktop.PolicyKit1.Authority"


class Action:
    """PolicyKit action ids, one per kind of operation (see polkit-actions/org.btrfsd1.policy)."""

    READ: Final = "org.btrfsd1.read"
    # the whole view for reads; without it a caller sees what they could reach by path
    READ_ALL: Final = "org.btrfsd1.read-all"
    SUBVOLUME_CREATE: Final = "org.btrfsd1.subvolume-create"
    SNAPSHOT_CREATE: Final = "org.btrfsd1.snapshot-create"
    SUBVOLUME_DELETE: Final = "org.btrfsd1.subvolume-delete"
    SUBVOLUME_MODIFY: Final = "org.btrfsd1.subvolume-modify"
    # the caller's own objects: what their file permissions let them do (the kernel
    # judges with their identity); allowed for active local sessions by default
    SUBVOLUME_CREATE_OWN: Final = "org.btrfsd1.subvolume-create-own"
    SNAPSHOT_CREATE_OWN: Final = "org.btrfsd1.snapshot-create-own"
    SUBVOLUME_DELETE_OWN: Final = "org.btrfsd1.subvolume-delete-own"
    # its own action: the default subvolume decides what is mounted (and often booted)
    SUBVOLUME_SET_DEFAULT: Final = "org.btrfsd1.subvolume-set-default"
    QUOTA_MANAGE: Final = "org.btrfsd1.quota-manage"
    MAINTENANCE: Final = "org.btrfsd1.maintenance"
    JOB_CANCEL: Final = "org.btrfsd1.job-cancel"
    JOB_CANCEL_OTHER_USER: Final = "org.btrfsd1.job-cancel-other-user"
    SCHEDULE_MANAGE: Final = "org.btrfsd1.schedule-manage"
    # files put back from a snapshot; a subvolume rolled back to a snapshot
    RESTORE: Final = "org.btrfsd1.restore"
    ROLLBACK: Final = "org.btrfsd1.rollback"
    MANAGE: Final = "org.btrfsd1.manage"
    # what changed between two snapshots: reveals file names anywhere in them
    COMPARE: Final = "org.btrfsd1.compare"
    # backups to another disk: set or remove one; run one or send a copy back (either
    # copies every file of a subvolume somewhere else)
    BACKUP_MANAGE: Final = "org.btrfsd1.backup-manage"
    BACKUP_RUN: Final = "org.btrfsd1.backup-run"


ALL_ACTIONS: Final = frozenset(
    v for k, v in vars(Action).items() if not k.startswith("_") and isinstance(v, str)
)

# Directory (relative to the snapshotted subvolume) where snapshots without an explicit
# destination go; a plain directory, so it is not itself part of later snapshots.
DEFAULT_SNAPSHOT_DIR: Final = ".snapshots"
# strftime pattern of default snapshot names: ISO 8601 basic format, UTC, sorts by time.
SNAPSHOT_NAME_FORMAT: Final = "%Y%m%dT%H%M%SZ"

TOP_LEVEL_SUBVOLUME_ID: Final = 5

ROOT_UID: Final = 0  # jobs btrfsd's own timer starts belong to root

# The uid of work btrfsd did not start (StartedByUid of an adopted job): (uint32)-1, as
# the kernel's "no uid".
NO_UID: Final = 2**32 - 1
