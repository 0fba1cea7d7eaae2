"""glibc malloc settings for a daemon that makes big replies now and then and then idles.

Standard library only (ctypes): the daemon calls ``tune()`` once at start, before any
thread exists, so the settings hold however it was started (the systemd unit also sets
MALLOC_ARENA_MAX=2 for the same reason; docs/benchmarks.md, issue 11, has the numbers).
Without glibc (no ``mallopt``) both functions do nothing.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

# Every thread that calls malloc gets an arena of its own, up to 8 per CPU, and an arena
# keeps the memory its thread freed. The blocking calls run in a pool of worker threads,
# so each listing left its garbage in whichever thread's arena made it. Two arenas: the
# event loop's and one the workers share (they hold the GIL most of the time anyway).
ARENA_MAX = 2
# glibc raises its mmap threshold to the size of every mapped block freed (up to 32 MiB),
# after which the 2 MiB tree-search buffers and the big reply messages came from the
# arenas and stayed there. A fixed threshold (which also fixes the trim threshold) keeps
# every block of 256 KiB or more in a mapping of its own, given back when freed.
MMAP_THRESHOLD = 256 * 1024
TRIM_THRESHOLD = 1024 * 1024

_libc: ctypes.CDLL | None = None


def _glibc() -> ctypes.CDLL | None:
    global _libc
    if _libc is None:
        try:
            libc = ctypes.CDLL(None)
            libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            libc.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):  # not glibc
            return None
        _libc = libc
    return _libc


def tune() -> bool:
    """Apply the settings above; whether the C library took all of them. Raises
    nothing. Call it before starting threads: arenas are handed out at a thread's first
    allocation."""
    libc = _glibc()
    if libc is None:
        log.debug("no glibc mallopt: malloc settings left as they are")
        return False
    ok = all(libc.mallopt(param, value) == 1 for param, value in (
        (M_ARENA_MAX, ARENA_MAX), (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        (M_TRIM_THRESHOLD, TRIM_THRESHOLD)))
    if not ok:
        log.debug("mallopt refused a malloc setting")
    return ok


def trim() -> None:
    """Give the free pages inside the arenas back to the kernel (after a big reply).
    Raises nothing."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
