"""Persistent state: atomic JSON files, and the job state (last results per filesystem,
jobs that were running).

Every JSON file btrfsd keeps (here, in the state directory and in the config directory)
is written by ``write_atomic`` (a temporary file of its own, every byte, fsync, rename,
fsync the directory), so a crash leaves either the old or the new content, and read by
``load_model``, which never stops the daemon: a file it cannot use is moved aside
(``<name>.invalid-<time>``) and btrfsd starts without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import logging
import os
import stat
import tempfile
import time
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

from .jobs import JobRecord

log = logging.getLogger(__name__)

STATE_FILE = "jobs.json"
# How many of a file's validation errors a log line names (a file of the wrong shape
# can have thousands).
MAX_PROBLEMS_LOGGED = 3
# About when this process began (this module is imported at start).
_STARTED = time.time()


def _temporary_glob(path: Path) -> str:
    """The names ``write_atomic`` gives its temporary files for ``path``."""
    return glob.escape(str(path.parent / f".{path.name}.")) + "*.tmp"


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a crash leaves the old or the new content
    (blocking). The file is mode 0600; a missing directory is made with mode 0700.
    Raises OSError (nothing is left behind then)."""
    directory = path.parent
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = text.encode()
    # A name of its own (mkstemp: O_EXCL, mode 0600): two writers of one file must not
    # write into the same temporary, or one could rename the other's half-written bytes.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        try:
            view = memoryview(data)
            while view:  # os.write may write less than asked (a signal, a full disk)
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)  # the rename itself survives a crash only once the directory is
    finally:
        os.close(dfd)


M = TypeVar("M", bound=BaseModel)


def validation_problems(e: ValidationError) -> str:
    """Each validation error as "field: what is wrong", for a person."""
    return "; ".join(_problem(err) for err in e.errors())


def _problem(err: ErrorDetails) -> str:
    return (f"{'.'.join(str(p) for p in err['loc']) or 'value'}: "
            f"{err['msg'].removeprefix('Value error, ').lower()}")


def _summary(e: ValidationError) -> str:
    errors = e.errors()
    text = "; ".join(_problem(err) for err in errors[:MAX_PROBLEMS_LOGGED])
    if len(errors) > MAX_PROBLEMS_LOGGED:
        text += f"; and {len(errors) - MAX_PROBLEMS_LOGGED} more"
    return text


def aside_path(path: Path) -> Path:
    """A free name beside ``path`` for a file that cannot be used:
    ``<name>.invalid-<UTC time>``, with ``-2``, ``-3``, ... when that one is taken, so an
    earlier one is never replaced (blocking)."""
    base = f"{path.name}.invalid-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    candidate = path.with_name(base)
    n = 1
    while os.path.lexists(candidate):
        n += 1
        candidate = path.with_name(f"{base}-{n}")
    return candidate


def _remove_temporaries(path: Path) -> None:
    # Left by a crash between creating and renaming one: each write has a name of its
    # own, so without this they would pile up. Only those from before this process
    # began: a newer one may be a write of this process in progress.
    for name in glob.glob(_temporary_glob(path)):
        try:
            if os.lstat(name).st_mtime >= _STARTED:
                continue
            os.unlink(name)
        except OSError as e:
            log.debug("cannot remove leftover temporary %s: %s", name, e)
        else:
            log.info("removed %s, left by an interrupted write", name)


def load_model(path: Path, model: type[M], what: str) -> M:
    """Read a JSON file into ``model`` (blocking). A missing file gives an empty model.

    Raises nothing: a file that cannot be used (not UTF-8, not JSON, the wrong shape, not
    a regular file, unreadable) is moved aside to ``<name>.invalid-<time>`` (see
    ``aside_path``), logged with what to do, and an empty model returned. Moving it keeps
    what was in it, and keeps the next save from replacing it or failing on it.
    """
    _remove_temporaries(path)
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            problem = "is not a regular file"
        else:
            raw = path.read_bytes()
            try:
                # json, not pydantic's parser: a saved path may hold any byte, written as
                # an escaped lone surrogate (names.py), which pydantic's parser refuses
                return model.model_validate(json.loads(raw.decode("utf-8")))
            except UnicodeDecodeError as e:
                problem = f"is not UTF-8 text (byte {e.start} is {raw[e.start]:#04x})"
            except json.JSONDecodeError as e:
                problem = f"is not valid JSON ({e.msg} at line {e.lineno})"
            except ValidationError as e:
                problem = f"is not valid ({_summary(e)})"
    except FileNotFoundError:
        return model()
    except OSError as e:
        problem = f"cannot be read ({e.strerror or e})"
    aside = aside_path(path)
    try:
        os.rename(path, aside)
    except OSError as e:
        log.error("%s file %s %s, and it cannot be moved aside (%s); btrfsd starts "
                  "without it and will replace it on the next change: copy it elsewhere "
                  "now if it matters", what, path, problem, e.strerror or e)
        _problems.append(f"The {what} file {path} {problem} and could not be moved aside; "
                         "btrfsd started without it.")
    else:
        log.error("%s file %s %s; moved it to %s and started without it. To use it "
                  "again: stop btrfsd, repair it, move it back to %s and start btrfsd",
                  what, path, problem, aside, path.name)
        _problems.append(f"The {what} file {path} {problem}; it was moved to {aside} and "
                         "btrfsd started without it.")
    return model()


# What loading found wrong since the daemon started, for an operator to see (Manager
# GetStatus, btrfsctl status) besides the log; bounded, newest last.
_problems: list[str] = []
MAX_PROBLEMS = 50


def note_problem(text: str) -> None:
    """Add a sentence about a state file that could not be used (see state_problems)."""
    _problems.append(text)


def state_problems() -> list[str]:
    """Sentences about state files that could not be used since btrfsd started."""
    del _problems[:-MAX_PROBLEMS]
    return list(_problems)


class PersistedState(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: int = 1
    next_job_id: int = 1
    running: dict[int, JobRecord] = Field(default_factory=dict)
    # filesystem UUID -> operation -> last finished (or interrupted) job
    last: dict[str, dict[str, JobRecord]] = Field(default_factory=dict)


class StateStore:
    """Loads and saves PersistedState; saves are serialized and run off the event loop."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / STATE_FILE
        self._lock = asyncio.Lock()

    def load(self) -> PersistedState:
        """Read the state file (blocking); see load_model."""
        return load_model(self.path, PersistedState, "job state")

    async def save(self, state: PersistedState) -> None:
        """Write ``state`` atomically in a thread. Failures are logged, not raised: a job
        must not fail because its record could not be written."""
        async with self._lock:
            # Serialize inside the lock so the newest state is the one written last.
            text = json.dumps(state.model_dump(mode="json", by_alias=True), indent=1,
                              sort_keys=True)
            try:
                await asyncio.to_thread(write_atomic, self.path, text)
            except OSError as e:
                log.error("cannot write job state %s: %s (check the state directory)",
                          self.path, e)
