"""renameat2(2), which Python's os module lacks: an atomic exchange of two names, and a
rename that never replaces (blocking; call from a thread)."""

from __future__ import annotations

import ctypes
import os

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2

_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = _libc.renameat2
_renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                       ctypes.c_uint]
_renameat2.restype = ctypes.c_int


def renameat2(old_dir: int, old: str, new_dir: int, new: str, flags: int) -> None:
    """Rename ``old`` in the directory ``old_dir`` to ``new`` in ``new_dir`` with
    RENAME_* ``flags``. Names are single components (never walked). Raises OSError."""
    if _renameat2(old_dir, os.fsencode(old), new_dir, os.fsencode(new), flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), new)


def exchange(dir_fd: int, a: str, b: str) -> None:
    """Swap the names ``a`` and ``b`` in one directory atomically. Raises OSError."""
    renameat2(dir_fd, a, dir_fd, b, RENAME_EXCHANGE)


def rename_new(old_dir: int, old: str, new_dir: int, new: str) -> None:
    """Rename to a name that must not exist (EEXIST otherwise). Raises OSError."""
    renameat2(old_dir, old, new_dir, new, RENAME_NOREPLACE)
