"""State files that cannot stop the daemon: every corrupt kind is moved aside and the
daemon starts empty; atomic writes with names of their own; settings with bad quota
alert values; mount-event rescans that coalesce; the open files limit."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from btrfsd.core import state
from btrfsd.core.state import STATE_FILE, write_atomic


def _temporaries(d: Path) -> list[Path]:
    return [p for p in d.iterdir() if p.name.endswith(".tmp")]


def test_two_writers_of_one_file_leave_a_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "state" / STATE_FILE
    texts = {w: json.dumps({"writer": w, "pad": str(w) * 200_000}) for w in ("a", "b")}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def writer(w: str) -> None:
        try:
            start.wait()
            for _ in range(30):
                write_atomic(path, texts[w])
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(w,)) for w in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert path.read_text() in texts.values()
    assert not _temporaries(path.parent)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_short_writes_still_write_everything(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write
    calls = 0

    def one_byte(fd: int, data: Any) -> int:
        nonlocal calls
        calls += 1
        return real_write(fd, bytes(data[:1]))

    monkeypatch.setattr(state.os, "write", one_byte)
    text = json.dumps({"é": "ü" * 50})
    write_atomic(tmp_path / STATE_FILE, text)
    assert (tmp_path / STATE_FILE).read_text() == text
    assert calls == len(text.encode())


def test_a_failed_write_keeps_the_old_file_and_no_temporary(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / STATE_FILE
    write_atomic(path, "old")

    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(state.os, "fsync", no_space)
    with pytest.raises(OSError):
        write_atomic(path, "new")
    assert path.read_text() == "old" and not _temporaries(tmp_path)
