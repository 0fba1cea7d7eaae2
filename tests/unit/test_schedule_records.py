"""Schedule records: a read never changes them; removing a schedule forgets its last run;
last runs of an older btrfsd's maintenance move to maintenance's own files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from test_schedule_runs import NamedIds

from btrfsd.core.filesystems import Filesystem
from btrfsd.core.maintenance import Maintenance
from btrfsd.core.schedules import RECORDS_FILE, Schedules, SnapshotRecord, parse_schedule
from btrfsd.fs.mounts import MountEntry
from btrfsd.fs.subvol import SubvolumeInfo

FS = Filesystem(uuid="fs-1", mounts=[MountEntry(1, "0:1", "/", "/mnt", "/dev/x", {})])


def _info(uuid: str, path: str) -> SubvolumeInfo:
    return SubvolumeInfo(256, 5, path, uuid, "", "", 1, 0.0, 0.0, True)


class FakeSubvolumes:
    """The subvolumes a schedule sees: its source and the snapshots still there."""

    def __init__(self, present: list[SubvolumeInfo]) -> None:
        self.present = present
        self.deleted: list[str] = []

    async def resolve(self, path: str) -> tuple[Filesystem, str]:
        return FS, "/"

    async def info(self, fs: Filesystem, path: str) -> SubvolumeInfo:
        return _info("source", "home")

    async def list(self, fs: Filesystem, **_: Any) -> list[SubvolumeInfo]:
        return self.present

    async def named_by_uuid(self, fs: Filesystem) -> NamedIds:
        return NamedIds({s.uuid: s.id for s in self.present})

    async def reachable(self, where: list[str], creds: object) -> list[bool]:
        return [True] * len(where)

    async def delete(self, fs: Filesystem, path: str) -> str:
        self.deleted.append(path)
        return path


def _schedules(tmp_path: Path, present: list[SubvolumeInfo]) -> tuple[Schedules, FakeSubvolumes]:
    subvolumes = FakeSubvolumes(present)
    sched = Schedules(subvolumes, tmp_path / "etc", tmp_path / "var",  # type: ignore[arg-type]
                      clock=lambda: 1_000_000.0)
    sched.file.schedules["h"] = parse_schedule("h", {"subvolume": "/mnt/home", "every": 3600,
                                                    "keep_last": 5})
    for uuid in ("kept", "gone"):
        sched.records.snapshots[uuid] = SnapshotRecord(schedule="h", filesystem=FS.uuid,
                                                       created=999_000.0)
    sched.records.last_run["h"] = 999_000.0
    return sched, subvolumes


async def test_explaining_a_schedule_changes_no_record(tmp_path: Path) -> None:
    sched, _ = _schedules(tmp_path, [_info("kept", "home/.snapshots/a")])
    before = sched.records.model_dump()
    planned = await sched.plan("h")
    assert [p.uuid for p in planned] == ["kept"]
    assert sched.records.model_dump() == before  # "gone" is only forgotten by a cleanup
    assert not (tmp_path / "var" / RECORDS_FILE).exists()
    result = await sched.cleanup("h", dry_run=False)
    assert result.deleted == [] and set(sched.records.snapshots) == {"kept"}


async def test_removing_a_schedule_forgets_its_last_run(tmp_path: Path) -> None:
    sched, _ = _schedules(tmp_path, [])
    await sched.remove("h")
    saved = json.loads((tmp_path / "var" / RECORDS_FILE).read_text())
    assert "h" not in saved["last_run"]
    assert set(saved["snapshots"]) == {"kept", "gone"}  # its snapshots stay its


async def test_maintenance_of_an_older_btrfsd_moves_to_its_own_files(tmp_path: Path) -> None:
    etc, var = tmp_path / "etc", tmp_path / "var"
    etc.mkdir()
    var.mkdir()
    (etc / "schedules.json").write_text(json.dumps({
        "version": 1, "schedules": {},
        "maintenance": {"fs-1": {"filesystem": "fs-1", "scrub": "weekly"}}}))
    (var / RECORDS_FILE).write_text(json.dumps({
        "version": 1, "snapshots": {},
        "last_run": {"maintenance:fs-1:scrub": 5.0, "maintenance:fs-1:balance": 6.0}}))
    m = Maintenance(None, None, etc, var)  # type: ignore[arg-type]
    await m.load()
    plan = m.get("fs-1")
    assert plan is not None and plan.scrub == "weekly"
    runs = json.loads((var / "maintenance-runs.json").read_text())["last_run"]
    assert runs == {"fs-1:scrub": 5.0, "fs-1:balance": 6.0}
    assert json.loads((etc / "maintenance.json").read_text())["plans"]["fs-1"]["scrub"] == (
        "weekly")
    # the schedules' next save drops what was maintenance's
    sched = Schedules(None, etc, var)  # type: ignore[arg-type]
    await sched.load()
    await sched.save_records()
    assert json.loads((var / RECORDS_FILE).read_text())["last_run"] == {}
