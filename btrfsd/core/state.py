"""Persistent state: atomic JSON files, and the job state (last results per filesystem,
jobs that were running).

One JSON file in the state directory, replaced atomically (write a temporary file of its
own, every byte, fsync, rename, fsync the directory), so a crash leaves either the old or
the new state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .jobs import JobRecord

log = logging.getLogger(__name__)

STATE_FILE = "jobs.json"


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
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'value'}: "
                     f"{err['msg'].removeprefix('Value error, ').lower()}"
                     for err in e.errors())


def load_model(path: Path, model: type[M], what: str) -> M:
    """Read a JSON file into ``model`` (blocking). A missing file gives an empty model; an
    unreadable one is logged and an empty model returned; an invalid one is moved aside
    (``<name>.invalid-<time>``, logged) so nothing is lost, and an empty model returned."""
    try:
        data = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return model()
    except OSError as e:
        log.error("cannot read %s %s: %s; starting with an empty one", what, path, e)
        return model()
    try:
        return model.model_validate_json(data)
    except ValidationError as e:
        aside = path.with_name(f"{path.name}.invalid-{int(time.time())}")
        log.error("%s %s is invalid (%s); moved it to %s and starting empty", what, path,
                  e.errors()[0].get("msg", e), aside)
        with contextlib.suppress(OSError):
            os.replace(path, aside)
        return model()


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
            text = json.dumps(state.model_dump(mode="json"), indent=1, sort_keys=True)
            try:
                await asyncio.to_thread(write_atomic, self.path, text)
            except OSError as e:
                log.error("cannot write job state %s: %s (check the state directory)",
                          self.path, e)
