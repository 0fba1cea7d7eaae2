"""Scheduled runs through Schedules with its incremental decision: each run deletes
exactly what the full decision (decide over every record, as ExplainSchedule shows) says,
while snapshots are deleted behind btrfsd's back, marked important, deletes fail, limits
change, the clock goes back, and btrfsd restarts (records read back from file and
journal)."""

from __future__ import annotations

import random
from collections.abc import Collection
from pathlib import Path
from typing import Any

from btrfsd.core.filesystems import Filesystem
from btrfsd.core.schedules import RunResult, Schedule, Schedules, parse_schedule
from btrfsd.errors import Busy
from btrfsd.fs.mounts import MountEntry
from btrfsd.fs.subvol import SubvolumeInfo

FS = Filesystem(uuid="fs-1", mounts=[MountEntry(1, "0:1", "/", "/mnt", "/dev/x", {})])
SOURCE = SubvolumeInfo(256, 5, "home", "source", "", "", 1, 0.0, 0.0, False)


class NamedIds:
    """What a fake's named_by_uuid answers (fs/uuidtree.py Named), from a dict."""

    def __init__(self, ids: dict[str, int]) -> None:
        self.ids = ids

    def missing(self, wanted: Collection[str]) -> set[str]:
        return set(wanted) - self.ids.keys()

    def id_of(self, uuid: str) -> int | None:
        return self.ids.get(uuid)


class FakeSubvolumes:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.present: dict[str, SubvolumeInfo] = {}  # path -> snapshot
        self.made = 0

    async def resolve(self, path: str) -> tuple[Filesystem, str]:
        return FS, "/"

    async def info(self, fs: Filesystem, path: str) -> SubvolumeInfo:
        return self.present.get(path.removeprefix("/mnt/"), SOURCE)

    async def snapshot(self, fs: Filesystem, source: str, **_: Any) -> str:
        self.made += 1
        path = f"home/.snapshots/{self.made}"
        self.present[path] = SubvolumeInfo(1000 + self.made, 256, path, f"u{self.made}",
                                           "source", "", 1, 0.0, 0.0, True)
        return f"/mnt/{path}"

    async def list(self, fs: Filesystem, **_: Any) -> list[SubvolumeInfo]:
        return [SOURCE, *self.present.values()]

    async def named_by_uuid(self, fs: Filesystem) -> NamedIds | None:
        # as the UUID tree: now and then none, or one that does not name every
        # subvolume yet (filled after mounting an old filesystem): the listing decides
        if self.rng.random() < 0.1:
            return None
        ids = {s.uuid: s.id for s in await self.list(fs)}
        if ids and self.rng.random() < 0.1:
            del ids[self.rng.choice(sorted(ids))]
        return NamedIds(ids)

    async def info_by_id(self, fs: Filesystem, subvolume_id: int) -> SubvolumeInfo:
        return next(s for s in self.present.values() if s.id == subvolume_id)

    async def reachable(self, where: list[str], creds: object) -> list[bool]:
        return [True] * len(where)

    async def delete_by_id(self, fs: Filesystem, subvolume_id: int, uuid: str,
                           shown: str) -> None:
        if self.rng.random() < 0.1:
            raise Busy(f"{shown} is busy.")
        del self.present[shown.removeprefix("/mnt/")]


def _spec(rng: random.Random) -> dict[str, object]:
    def n() -> int:
        return rng.choice((0, 1, 2, 4))
    return {"subvolume": "/mnt/home", "every": 900, "hourly": n(), "daily": n(),
            "weekly": n(), "monthly": n(), "keep_last": rng.choice((1, 2, 5))}


class Checked(Schedules):
    """Schedules whose every cleanup is checked against the full decision first."""

    async def _cleanup(self, schedule: Schedule, fs: Filesystem, *,
                       dry_run: bool) -> RunResult:
        planned, _ = await self._plan(schedule, fs)
        doomed = [p.path for p in planned if not p.decision.keep]
        result = await super()._cleanup(schedule, fs, dry_run=dry_run)
        assert sorted(result.deleted + [p for p, _ in result.failed]) == sorted(doomed)
        return result


async def _start(fake: FakeSubvolumes, var: Path, now: list[float]) -> Checked:
    sched = Checked(fake, var / "etc", var, clock=lambda: now[0])  # type: ignore[arg-type]
    await sched.load()
    return sched


async def _live(rng: random.Random, var: Path) -> None:
    now = [1_790_000_000.0]
    fake = FakeSubvolumes(rng)
    sched = await _start(fake, var, now)
    await sched.set(parse_schedule("h", _spec(rng)), replace=False)
    for _ in range(120):
        roll = rng.random()
        if roll < 0.05 and fake.present:  # deleted by hand
            del fake.present[rng.choice(list(fake.present))]
        elif roll < 0.1 and fake.present:
            await sched.set_snapshot_info(f"/mnt/{rng.choice(list(fake.present))}",
                                          important=rng.random() < 0.5, description=None)
        elif roll < 0.13:
            await sched.set(parse_schedule("h", _spec(rng)), replace=True)
        elif roll < 0.16:
            await sched.close()
            sched = await _start(fake, var, now)
        elif roll < 0.18:  # killed: no fold at exit
            sched = await _start(fake, var, now)
        now[0] += rng.choice((900, 900, 900, 3600, 86400, -1800, 0))
        await sched.run("h")
    # what cleanup did not delete is still recorded (the deleted by hand are forgotten
    # at the next run)
    assert {s.uuid for s in fake.present.values()} <= set(sched.records.snapshots)


async def test_runs_delete_what_the_full_decision_says(tmp_path: Path) -> None:
    for seed in range(8):
        await _live(random.Random(seed), tmp_path / str(seed))
