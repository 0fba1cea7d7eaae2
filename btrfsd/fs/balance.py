"""Balance by ioctl: start/resume (blocking), progress, pause and cancel.

BTRFS_IOC_BALANCE_V2 runs until the balance completes, is paused or is cancelled, so
callers run it in a thread; BALANCE_PROGRESS and BALANCE_CTL work from other threads.
"""

from __future__ import annotations

import errno
import fcntl
import struct
from dataclasses import dataclass

from .ioctl import ior, iow, iowr

# struct btrfs_balance_args (packed, 136 bytes): profiles, usage (or usage_min/max), devid,
# pstart, pend, vstart, vend, target, flags, limit (or limit_min/max), stripes_min,
# stripes_max, unused[6].
_FILTER = "QQQQQQQQQQII48x"
# struct btrfs_ioctl_balance_args: flags, state, data, sys, meta filters, progress
# (expected, considered, completed), unused[72]: 1024 bytes.
_ARGS = struct.Struct("=QQ" + _FILTER * 3 + "QQQ" + "576x")
BTRFS_IOC_BALANCE_V2 = iowr(32, _ARGS.size)
BTRFS_IOC_BALANCE_CTL = iow(33, 4)  # int argument passed by value
BTRFS_IOC_BALANCE_PROGRESS = ior(34, _ARGS.size)

# flags of the whole balance
BALANCE_DATA = 1 << 0
BALANCE_SYSTEM = 1 << 1
BALANCE_METADATA = 1 << 2
BALANCE_RESUME = 1 << 4
# flags of one type's filter
ARGS_USAGE = 1 << 1
ARGS_LIMIT = 1 << 5
# state bits reported back
STATE_RUNNING = 1 << 0
STATE_PAUSE_REQ = 1 << 1
STATE_CANCEL_REQ = 1 << 2
CTL_PAUSE = 1
CTL_CANCEL = 2


@dataclass(frozen=True)
class TypeFilter:
    """Which chunks of one type (data or metadata) to balance.

    ``usage``: only chunks at most this percent full (0-100); ``limit``: at most this
    many chunks. None leaves a filter off; a TypeFilter with neither balances every chunk.
    """

    usage: int | None = None
    limit: int | None = None

    def pack(self) -> tuple[int, ...]:
        flags = (ARGS_USAGE if self.usage is not None else 0) | (
            ARGS_LIMIT if self.limit is not None else 0)
        # profiles, usage, devid, pstart, pend, vstart, vend, target, flags, limit, stripes
        return (0, self.usage or 0, 0, 0, 0, 0, 0, 0, flags, self.limit or 0, 0, 0)


_NO_FILTER = (0,) * 12


@dataclass(frozen=True)
class BalanceStatus:
    """A balance's state bits and chunk counts (expected may be 0 early on)."""

    state: int
    expected: int
    considered: int
    completed: int

    @property
    def running(self) -> bool:
        return bool(self.state & STATE_RUNNING)


def _status(buf: bytes | bytearray) -> BalanceStatus:
    values = _ARGS.unpack(buf)
    return BalanceStatus(state=values[1], expected=values[-3], considered=values[-2],
                         completed=values[-1])


class BalanceStopped(Exception):
    """The balance was paused or cancelled before it finished."""

    def __init__(self, status: BalanceStatus) -> None:
        super().__init__("balance stopped")
        self.status = status

    @property
    def paused(self) -> bool:
        # A cancel request wins over a pause request, as in the kernel.
        return bool(self.status.state & STATE_PAUSE_REQ) and not (
            self.status.state & STATE_CANCEL_REQ)


def _run(fd: int, buf: bytearray) -> BalanceStatus:
    try:
        fcntl.ioctl(fd, BTRFS_IOC_BALANCE_V2, buf, True)
    except OSError as e:
        if e.errno == errno.ECANCELED:
            raise BalanceStopped(_status(buf)) from None
        raise
    return _status(buf)


def balance_start(fd: int, data: TypeFilter | None, metadata: TypeFilter | None) -> BalanceStatus:
    """Balance the chosen chunk types; blocks until the balance ends.

    System chunks follow the metadata filter, as btrfs-progs does. Returns the final
    status. Raises BalanceStopped when paused or cancelled, OSError otherwise
    (EINPROGRESS: a balance or another exclusive operation runs; ENOSPC).
    """
    flags = (BALANCE_DATA if data else 0) | (BALANCE_METADATA | BALANCE_SYSTEM if metadata else 0)
    meta = metadata.pack() if metadata else _NO_FILTER
    buf = bytearray(_ARGS.pack(flags, 0, *(data.pack() if data else _NO_FILTER), *meta, *meta,
                               0, 0, 0))
    return _run(fd, buf)


def balance_resume(fd: int) -> BalanceStatus:
    """Resume a paused balance; blocks until it ends. Raises as balance_start."""
    buf = bytearray(_ARGS.pack(BALANCE_RESUME, 0, *_NO_FILTER * 3, 0, 0, 0))
    return _run(fd, buf)


def balance_progress(fd: int) -> BalanceStatus | None:
    """Status of the filesystem's balance (running or paused), None when there is none.

    Raises OSError.
    """
    buf = bytearray(_ARGS.size)
    try:
        fcntl.ioctl(fd, BTRFS_IOC_BALANCE_PROGRESS, buf, True)
    except OSError as e:
        if e.errno == errno.ENOTCONN:
            return None
        raise
    return _status(buf)


def balance_control(fd: int, command: int) -> bool:
    """Pause (CTL_PAUSE) or cancel (CTL_CANCEL) the balance; waits until it has stopped.

    Returns False when no balance was running (or, for pause, none was running rather
    than paused). Raises OSError for other failures.
    """
    try:
        fcntl.ioctl(fd, BTRFS_IOC_BALANCE_CTL, command)
    except OSError as e:
        if e.errno == errno.ENOTCONN:
            return False
        raise
    return True
