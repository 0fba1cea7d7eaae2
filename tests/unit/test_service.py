"""The composition root wires every kind and always leaves jobs right when it closes."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from btrfsd.config import Settings
from btrfsd.core.service import Service
from btrfsd.errors import AlreadyRunning


def _service(tmp_path: Path) -> Service:
    return Service(Settings(state_dir=tmp_path / "var", config_dir=tmp_path / "etc"))


def test_every_job_kind_is_registered(tmp_path: Path) -> None:
    # a balance is looked for in the kernel before a scrub, as before job kinds
    assert list(_service(tmp_path).jobs._kinds) == ["balance", "scrub", "quota-rescan",
                                                  "restore", "backup",
                                                  "backup-restore"]


async def test_close_shuts_jobs_down_even_after_a_background_task_died(
        tmp_path: Path) -> None:
    service = _service(tmp_path)
    calls: list[str] = []

    async def shutdown() -> None:
        calls.append("jobs")

    async def broken() -> None:
        raise TypeError("a corrupt state file, say")

    service.jobs.shutdown = shutdown  # type: ignore[method-assign]
    task = asyncio.get_running_loop().create_task(broken())
    await asyncio.sleep(0)
    service._background = [task]
    service._lock_fd = os.open(tmp_path, os.O_RDONLY)  # as if open() had run
    await service.close()
    assert calls == ["jobs"]


async def test_a_second_btrfsd_on_the_same_state_refuses_to_start(tmp_path: Path) -> None:
    first, second = _service(tmp_path), _service(tmp_path)
    first._lock_state()
    try:
        with pytest.raises(AlreadyRunning, match="state directory"):
            second._lock_state()
    finally:
        os.close(first._lock_fd)
    second._lock_state()  # free again once the first is gone
    os.close(second._lock_fd)
