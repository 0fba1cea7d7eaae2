"""Bulk work at a lower CPU priority than the event loop: a backup's send and pump
threads and its ``btrfs receive`` run at nice 10, so the daemon's answers to callers win
a busy CPU over its own transfers (docs/backup.md, the bench).

On Linux a thread has a nice value of its own (``setpriority`` on its thread id), and a
child starts with that of the thread that spawned it. Raising nice needs no capability;
lowering it again does (CAP_SYS_NICE, which btrfsd's unit does not grant), so only
threads that end with their work are lowered, never a pooled one.
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)

BULK_NICE = 10


def lower(pid: int = 0) -> None:
    """Set nice 10 on the calling thread (``pid`` 0) or on the process ``pid`` (its
    first thread). Best effort: a refusal (an older unit's syscall filter, EPERM) is
    logged and the work goes on at the priority it has. Raises nothing."""
    who = pid or threading.get_native_id()
    try:
        if os.getpriority(os.PRIO_PROCESS, who) < BULK_NICE:
            os.setpriority(os.PRIO_PROCESS, who, BULK_NICE)
    except OSError as e:  # ESRCH: a receive that already exited
        log.debug("cannot lower the CPU priority of %d: %s", who, e)
