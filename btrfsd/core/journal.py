"""An append-only journal beside a JSON state file: each change is one short JSON line,
written whole and flushed to disk (fdatasync) before the change is acknowledged, so that a
change costs the same however big the state file is. Its owner folds it into the state
file now and then (``write_atomic``) and empties it.

A crash while appending leaves at most the last line torn: reading drops it (and cuts it
off the file, so the next line starts clean). A bad line before the end is not a crash's
doing: the lines before it are used, the file is moved aside for a person to look at, and
btrfsd starts anyway (as ``load_model`` does with state files).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from .state import aside_path, note_problem

log = logging.getLogger(__name__)

Entry = dict[str, Any]


class Journal:
    """The journal file at ``path`` (in a directory only root may write)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines = 0  # entries in the file now

    def read(self) -> list[Entry]:
        """The entries in the file, oldest first (blocking). Raises nothing: a torn last
        line is dropped and cut off; a file that cannot be used from some line on gives
        the entries before it and is moved aside (``<name>.invalid-<time>``)."""
        self.lines = 0
        try:
            raw = self.path.read_bytes() if self.path.is_file() else b""
        except OSError as e:
            log.error("cannot read %s: %s; starting without its changes", self.path, e)
            note_problem(f"The journal {self.path} could not be read ({e}); btrfsd started "
                         "without the changes in it.")
            return []
        lines = raw.split(b"\n")
        tail = lines.pop()  # after the last newline: b"" unless the last line is torn
        entries: list[Entry] = []
        good = 0  # bytes of whole, good lines
        for i, line in enumerate(lines):
            try:
                entry = json.loads(line.decode("utf-8"))
                if not isinstance(entry, dict):
                    raise ValueError("not an object")
            except ValueError as e:  # UnicodeDecodeError and JSONDecodeError too
                if i == len(lines) - 1 and not tail:
                    tail = line  # the last line, bad: torn even with its newline
                    break
                self._aside(f"line {i + 1} is not a journal entry ({e})")
                return entries
            entries.append(entry)
            good += len(line) + 1
        if tail:
            log.warning("%s ends in a line torn by a crash (%d bytes); it is dropped",
                        self.path, len(tail))
            try:
                os.truncate(self.path, good)
            except OSError as e:
                self._aside(f"its torn last line cannot be cut off ({e})")
                return entries
        self.lines = len(entries)
        return entries

    def _aside(self, problem: str) -> None:
        aside = aside_path(self.path)
        try:
            os.rename(self.path, aside)
        except OSError as e:
            log.error("%s: %s, and it cannot be moved aside (%s); it is emptied", self.path,
                      problem, e)
            try:
                self.clear()
            except OSError as e2:
                log.error("cannot empty %s either: %s", self.path, e2)
            where = "it was emptied"
        else:
            log.error("%s: %s; the lines before it are used, the file is moved to %s",
                      self.path, problem, aside)
            where = f"it was moved to {aside}"
        note_problem(f"The journal {self.path}: {problem}; {where} and btrfsd started with "
                     "the changes before it.")
        self.lines = 0

    def append(self, entry: Entry) -> None:
        """Add one entry, on disk when this returns (blocking). Raises OSError; the file is
        then as it was."""
        data = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
                     | os.O_NOFOLLOW, 0o600)
        try:
            size = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:  # os.write may write less than asked (a signal, a full disk)
                    view = view[os.write(fd, view):]
                os.fdatasync(fd)
            except OSError:
                # half a line would glue the next one to it: take it back
                os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)
        if size == 0:  # maybe a new file: its name must survive a crash too
            dfd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        self.lines += 1

    def clear(self) -> None:
        """Empty the file (blocking; after its entries were saved elsewhere). Raises
        OSError."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            self.lines = 0
            return
        try:
            os.ftruncate(fd, 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.lines = 0
