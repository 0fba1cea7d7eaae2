"""The composition root wires every kind and always leaves jobs right when it closes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from btrfsd.config import Settings
from btrfsd.core.service import Service


def _service(tmp_path: Path) -> Service:
    return Service(Settings(state_dir=tmp_path / "var", config_dir=tmp_path / "etc"))


def test_every_job_kind_is_registered(tmp_path: Path) -> None:
    # a balance is looked for in the kernel before a scrub, as before job kinds
    assert list(_service(tmp_path).jobs._kinds) == ["balance", "scrub", "quota-rescan"]


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
    await service.close()
    assert calls == ["jobs"]
