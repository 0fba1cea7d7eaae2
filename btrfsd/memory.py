"""Memory of a daemon that makes big listings and replies now and then and then idles:
glibc malloc settings (``tune``, ``trim``), and copies of long-kept data made after the
short-lived objects it was made among are gone (``freeze``, ``thaw``).

Standard library only (ctypes, pickle): the daemon calls ``tune()`` once at start, before any
thread exists, so the settings hold however it was started (the systemd unit also sets
MALLOC_ARENA_MAX=2 for the same reason; docs/benchmarks.md, issue 11, has the numbers).
Without glibc (no ``mallopt``) ``tune`` and ``trim`` do nothing.
"""

from __future__ import annotations

import ctypes
import logging

# At start, with the idle daemon's modules: imported during a listing, its objects were
# made among the listing's short-lived ones and held an arena of their own (freeze).
import pickle
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

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



def freeze(value: object) -> bytes:
    """``value`` (the daemon's own data, never a caller's bytes) as bytes that ``thaw``
    makes a copy of. Raises what pickle raises for an object it cannot copy.

    For data kept long that was made among many short-lived objects (a listing): CPython
    gives a 1 MiB arena back only when every object in it is gone, so a few hundred kept
    objects spread over the arenas a listing filled hold them all. Frozen, the originals
    dropped, and thawed, the copies are made side by side in the arenas that were there
    before, and the others are given back (docs/benchmarks.md, issue 11).
    """
    return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)


def thaw(frozen: bytes, kind: type[T]) -> T:
    """The copy of what ``freeze`` made ``frozen`` of, which was a ``kind``. Raises
    TypeError when it was not."""
    value = pickle.loads(frozen)  # only bytes this process made (freeze)
    if not isinstance(value, kind):
        raise TypeError(f"thawed a {type(value).__name__}, not a {kind.__name__}")
    return value
