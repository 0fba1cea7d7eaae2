"""A hostile local user racing the daemon's path checks (issue 19).

The swaps run in this (root) process with renameat2(RENAME_EXCHANGE); the calls come from
the unprivileged test user. Each test is bounded to a few seconds.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from pathlib import Path

from conftest import MANAGER_IFACE, World, request

RENAME_EXCHANGE = 2
_libc = ctypes.CDLL(None, use_errno=True)


def _exchange(a: Path, b: Path) -> None:
    if _libc.renameat2(-100, os.fsencode(a), -100, os.fsencode(b), RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def test_a_fifo_swapped_for_a_directory_blocks_nobody(world: World) -> None:
    d = world.scratch()
    target, fifo = d / "x", d / "fifo"
    target.mkdir()
    os.mkfifo(fifo)
    os.chmod(d, 0o777)
    stop = threading.Event()

    def swap() -> None:
        while not stop.is_set():
            _exchange(target, fifo)

    swapper = threading.Thread(target=swap, daemon=True)
    answered: list[dict[str, object]] = []

    def ask() -> None:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            answered.extend(world.user.batch([request(
                "/org/btrfsd1", MANAGER_IFACE, "ResolvePath", "sa{sv}", [str(target), {}])] * 8))

    caller = threading.Thread(target=ask, daemon=True)
    swapper.start()
    caller.start()
    caller.join(20)  # 3 s of calls; a blocked daemon would never answer
    stop.set()
    swapper.join(5)
    assert not caller.is_alive(), "the daemon stopped answering while the FIFO was swapped in"
    assert answered
    for r in answered:  # answered, either way: a directory or a refused non-directory
        assert r["ok"] or r["error"] == "org.btrfsd1.Error.InvalidArgument", r
    # and everyone else is still served at once
    assert world.fs_call(world.root, "ListSubvolumes", "a{sv}", {})["ok"]
