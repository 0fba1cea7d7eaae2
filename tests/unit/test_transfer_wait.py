"""fs/receive.py's wait for ``btrfs receive`` (a pidfd polled with the stop request) and
fs/priority.py's nice 10, on harmless child processes instead of receive."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from btrfsd.errors import Cancelled
from btrfsd.fs import priority
from btrfsd.fs.receive import StopEvent, Transfer


def child(code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)


def test_wait_returns_when_the_child_exits() -> None:
    proc = child("import sys; sys.stdin.read(); sys.exit(3)")
    assert proc.stdin is not None
    proc.stdin.close()
    Transfer()._wait(proc)
    assert proc.returncode == 3


def test_a_stop_ends_the_wait_with_cancelled() -> None:
    proc = child("import time; time.sleep(60)")
    transfer = Transfer()
    # set from another thread while the wait polls, as a cancel on the event loop does
    timer = threading.Timer(0.05, transfer.stop.set)
    timer.start()
    try:
        with pytest.raises(Cancelled):
            transfer._wait(proc)
    finally:
        timer.join()
        proc.kill()
        proc.wait()
        assert proc.stdin is not None
        proc.stdin.close()


def test_a_stop_set_before_the_wait_cancels_it() -> None:
    proc = child("import time; time.sleep(60)")
    transfer = Transfer()
    transfer.stop.set()
    try:
        with pytest.raises(Cancelled):
            transfer._wait(proc)
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdin is not None
        proc.stdin.close()


def test_stop_event_lends_its_fd_only_while_open() -> None:
    stop = StopEvent()
    with stop.pollable() as fd:
        stop.set()
        assert os.eventfd_read(fd) == 1
    stop.set()  # no fd now: nothing written anywhere
    assert stop.is_set()


def test_lower_sets_nice_10_on_the_calling_thread_only() -> None:
    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen: list[int] = []

    def work() -> None:
        priority.lower()
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    assert seen == [max(before, priority.BULK_NICE)]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before


def test_lower_sets_nice_10_on_a_child() -> None:
    proc = child("import sys; sys.stdin.read()")
    try:
        priority.lower(proc.pid)
        assert os.getpriority(os.PRIO_PROCESS, proc.pid) >= priority.BULK_NICE
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait()
