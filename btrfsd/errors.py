"""Errors the core raises; each maps to one D-Bus error name ``org.btrfsd1.Error.<name>``.

The set of names is part of the public API and frozen by tests/unit/test_contracts.py.
An error says what happened in words no front end owns; what a person can do about it
travels as a structured ``Hint`` that each front end words in its own terms (a D-Bus
method name, a btrfsctl command, a button).
"""

from __future__ import annotations

import errno
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar

FactValue = bool | int | str


class HintKind(StrEnum):
    """What a caller can do next; the names are public (the error details' "hint")."""

    # quotas are off on the filesystem (facts: filesystem = UUID)
    ENABLE_QUOTA = "enable-quota"
    # a job holds the filesystem (facts: job_id, operation)
    JOB_RUNNING = "job-running"
    # the path is on another filesystem than the one asked (facts: filesystem, path)
    OTHER_FILESYSTEM = "other-filesystem"
    # no schedule by that name (facts: name)
    LIST_SCHEDULES = "list-schedules"


@dataclass(frozen=True)
class Hint:
    kind: HintKind
    facts: Mapping[str, FactValue] = field(default_factory=dict)


class BtrfsdError(Exception):
    """Base of every error btrfsd reports to a caller.

    ``message`` is a full sentence meant for a person: what went wrong, in terms of
    filesystems, paths and jobs (never of one front end). ``hint``, when given, names
    what to do about it.
    """

    name: ClassVar[str] = "Failed"

    def __init__(self, message: str, *, hint: Hint | None = None, errno: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.errno = errno  # the kernel's, when the error is one (from_errno)


class NotFound(BtrfsdError):
    name = "NotFound"


class AlreadyExists(BtrfsdError):
    name = "AlreadyExists"


class InvalidArgument(BtrfsdError):
    name = "InvalidArgument"


class NotBtrfs(BtrfsdError):
    name = "NotBtrfs"


class Busy(BtrfsdError):
    name = "Busy"


class NoSpace(BtrfsdError):
    name = "NoSpace"


class QuotaExceeded(BtrfsdError):
    name = "QuotaExceeded"


class AlreadyRunning(BtrfsdError):
    name = "AlreadyRunning"


class Cancelled(BtrfsdError):
    name = "Cancelled"


class Failed(BtrfsdError):
    name = "Failed"


class NotPermitted(BtrfsdError):
    """The kernel refused a call made with the caller's own identity (an own-objects
    grant): it is the standard org.freedesktop.DBus.Error.AccessDenied on the bus, not
    one of btrfsd's names."""

    name = "NotPermitted"


ERROR_CLASSES: tuple[type[BtrfsdError], ...] = (
    NotFound,
    AlreadyExists,
    InvalidArgument,
    NotBtrfs,
    Busy,
    NoSpace,
    QuotaExceeded,
    AlreadyRunning,
    Cancelled,
    Failed,
)

ERROR_NAMES: frozenset[str] = frozenset(cls.name for cls in ERROR_CLASSES)

_ERRNO_CLASSES: dict[int, type[BtrfsdError]] = {
    errno.ENOENT: NotFound,
    errno.EEXIST: AlreadyExists,
    errno.EINVAL: InvalidArgument,
    errno.ENAMETOOLONG: InvalidArgument,
    errno.ENOTDIR: InvalidArgument,
    errno.ELOOP: InvalidArgument,
    errno.EXDEV: InvalidArgument,
    errno.ENOTTY: NotBtrfs,
    errno.EBUSY: Busy,
    errno.ETXTBSY: Busy,
    errno.ENOTEMPTY: Busy,
    errno.EAGAIN: Busy,
    errno.EINPROGRESS: AlreadyRunning,
    errno.ENOSPC: NoSpace,
    errno.EDQUOT: QuotaExceeded,
    errno.ECANCELED: Cancelled,
}


def from_errno(err: int, message: str) -> BtrfsdError:
    """Build the BtrfsdError that best names a kernel errno (Failed when none fits)."""
    return _ERRNO_CLASSES.get(err, Failed)(message, errno=err)
