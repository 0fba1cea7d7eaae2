"""Errors the core raises; each maps to one D-Bus error name ``org.btrfsd1.Error.<name>``.

The set of names is part of the public API and frozen by tests/unit/test_errors.py.
"""

from __future__ import annotations

import errno
from typing import ClassVar


class BtrfsdError(Exception):
    """Base of every error btrfsd reports to a caller.

    ``message`` is a full sentence meant for a person: what went wrong and, where
    possible, what to do about it.
    """

    name: ClassVar[str] = "Failed"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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
    return _ERRNO_CLASSES.get(err, Failed)(message)
