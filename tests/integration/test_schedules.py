"""Scheduled snapshots with retention: weeks of a timeline lived through with an injected
clock on a real loop image (snapshots really made and deleted), checked against an
expectation computed here by calendar arithmetic; the D-Bus side: bad input, restarts,
missed runs, failed deletes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import btrfsutil
import pytest
from conftest import V, World
from sandbox import LoopFs
from test_jobs import add_fs, ok, remove_fs

from btrfsd.constants import SNAPSHOT_NAME_FORMAT
from btrfsd.core.filesystems import Registry
from btrfsd.core.schedules import Schedules, parse_schedule
from btrfsd.core.subvolumes import Subvolumes

STEP = 900  # 15 minutes: the default step of a lived-through timeline


@pytest.fixture
def sfs(world: World) -> Iterator[LoopFs]:
    fs = add_fs(world, "2G", "btrfsd-sched", 0)
    yield fs
    remove_fs(world, fs)


# -- the expectation: calendar arithmetic, independent of btrfsd's grouping ---------------
def _floor(t: datetime, kind: str) -> datetime:
    t = t.replace(minute=0, second=0, microsecond=0)
    if kind == "hourly":
        return t
    t = t.replace(hour=0)
    if kind == "daily":
        return t
    if kind == "weekly":
        return t - timedelta(days=t.weekday())  # Monday
    t = t.replace(day=1)
    return t if kind == "monthly" else t.replace(month=1)


def _back(t: datetime, kind: str) -> datetime:
    if kind == "hourly":
        return t - timedelta(hours=1)
    if kind == "daily":
        return t - timedelta(days=1)
    if kind == "weekly":
        return t - timedelta(days=7)
    if kind == "monthly":
        return (t - timedelta(days=1)).replace(day=1)
    return t.replace(year=t.year - 1)


def expected(start: datetime, count: int, limits: dict[str, int], step: int = STEP
             ) -> set[datetime]:
    """Times of the snapshots that must remain after ``count`` runs every ``step`` seconds."""
    times = [start + timedelta(seconds=step * k) for k in range(count)]
    now = times[-1]
    keep = set(times[-limits["keep_last"]:]) if limits.get("keep_last") else set()
    for kind in ("hourly", "daily", "weekly", "monthly", "yearly"):
        period = _floor(now, kind)
        for _ in range(limits.get(kind, 0)):
            # the first snapshot at or after the period's start (or the very first one)
            first = start if period <= start else start + timedelta(
                seconds=-(-(period - start).total_seconds() // step) * step)
            if first > now or (period < start and _floor(start, kind) != period):
                break
            keep.add(first)
            period = _back(period, kind)
    return keep


def simulate(fs: LoopFs, state: Path, start: datetime, days: int, limits: dict[str, int],
             step: int = STEP) -> tuple[set[datetime], set[datetime], int]:
    """Live through ``days`` of a schedule run every ``step`` seconds; return the times
    btrfsd keeps, the times of the snapshots really on disk, and how many subvolumes the
    filesystem has."""
    src = fs.mount_point / "src"
    btrfsutil.create_subvolume(str(src))
    (src / "file").write_text("data")
    clock = [start.timestamp()]

    async def run() -> set[datetime]:
        registry = Registry()
        await registry.rescan()
        sched = Schedules(Subvolumes(registry), state / "etc", state / "var",
                          clock=lambda: clock[0], tz=UTC)
        await sched.load()
        await sched.set(parse_schedule("t", {"subvolume": str(src), "every": step, **limits}),
                        replace=False)
        for k in range(days * 86400 // step):
            clock[0] = start.timestamp() + k * step
            result = await sched.run("t")
            assert not result.failed, result.failed
        return {datetime.fromtimestamp(p.record.created, UTC) for p in await sched.plan("t")}

    kept = asyncio.run(run())
    on_disk = {datetime.strptime(n, SNAPSHOT_NAME_FORMAT).replace(tzinfo=UTC)
               for n in (p.name for p in (src / ".snapshots").iterdir())}
    listed = len(list(btrfsutil.SubvolumeIterator(str(fs.mount_point), top=5)))
    return kept, on_disk, listed


# 60 days in hours (1,440 runs, not 5,760 at 15 minutes: the suite's budget; the
# 15-minute step is lived through by the shorter timelines)
@pytest.mark.parametrize("days,limits,step", [
    (60, {"hourly": 24, "daily": 7, "weekly": 4, "monthly": 12, "yearly": 2}, 3600),
    (20, {"hourly": 6, "daily": 3, "monthly": 2, "keep_last": 5}, STEP),
    (9, {"weekly": 3, "daily": 2}, STEP),
])
def test_timeline_lived_through_matches_calendar_expectation(
        world: World, sfs: LoopFs, tmp_path: Path, days: int, limits: dict[str, int],
        step: int) -> None:
    start = datetime(2026, 9, 1, 0, 0, tzinfo=UTC)  # a Tuesday: the first week is partial
    kept, on_disk, subvolumes = simulate(sfs, tmp_path, start, days, limits, step)
    want = expected(start, days * 86400 // step, limits, step)
    assert kept == want, (sorted(kept - want), sorted(want - kept))
    assert on_disk == want  # the others were really deleted
    assert subvolumes == 1 + len(want)  # src and the kept snapshots


# -- the D-Bus side --------------------------------------------------------------------------
def mcall(w: World, member: str, sig: str, *body: Any) -> dict[str, Any]:
    return w.manager_call(w.root, member, sig, *body)


def set_schedule(w: World, name: str, subvolume: Path | str, **spec: Any) -> dict[str, Any]:
    spec.setdefault("every", V("t", 3600))
    spec.setdefault("keep_last", V("u", 3))
    return mcall(w, "SetSchedule", "sa{sv}a{sv}", name,
                 {"subvolume": V("s", str(subvolume)), **spec}, {})


def replace_schedule(w: World, name: str, subvolume: Path, keep_last: int) -> dict[str, Any]:
    return mcall(w, "SetSchedule", "sa{sv}a{sv}", name,
                 {"subvolume": V("s", str(subvolume)), "every": V("t", 3600),
                  "keep_last": V("u", keep_last)}, {"replace": V("b", True)})


def schedules(w: World) -> dict[str, Any]:
    return ok(mcall(w, "GetSchedules", "a{sv}", {}))[0]  # type: ignore[no-any-return]


@pytest.fixture
def home(world: World) -> Iterator[Path]:
    d = world.scratch()
    btrfsutil.create_subvolume(str(d / "home"))
    yield d / "home"
    for name in list(schedules(world)):
        mcall(world, "RemoveSchedule", "sa{sv}", name, {})


@pytest.mark.parametrize("case,error", [
    ("missing subvolume", "NotFound"),
    ("not btrfs", "NotBtrfs"),
    ("plain directory", "InvalidArgument"),
    ("zero interval", "InvalidArgument"),
    ("negative limit", "InvalidArgument"),
    ("absurd limit", "InvalidArgument"),
    ("bad name", "InvalidArgument"),
    ("keeps nothing", "InvalidArgument"),
    ("unknown key", "InvalidArgument"),
    ("duplicate", "AlreadyExists"),
])
def test_bad_schedules_are_refused_and_nothing_changes(world: World, home: Path, case: str,
                                                       error: str) -> None:
    ok(set_schedule(world, "first", home))
    before = schedules(world)
    r = {
        "missing subvolume": lambda: set_schedule(world, "x", home.parent / "nope"),
        "not btrfs": lambda: set_schedule(world, "x", "/tmp"),
        "plain directory": lambda: set_schedule(world, "x", home.parent),
        "zero interval": lambda: set_schedule(world, "x", home, every=V("t", 0)),
        "negative limit": lambda: set_schedule(world, "x", home, daily=V("x", -1)),
        "absurd limit": lambda: set_schedule(world, "x", home, daily=V("u", 10**6)),
        "bad name": lambda: set_schedule(world, "a/b", home),
        "keeps nothing": lambda: set_schedule(world, "x", home, keep_last=V("u", 0)),
        "unknown key": lambda: set_schedule(world, "x", home, hourlyy=V("u", 1)),
        "duplicate": lambda: set_schedule(world, "first", home),
    }[case]()
    assert not r["ok"] and r["error"] == f"org.btrfsd1.Error.{error}", r
    assert schedules(world) == before
    assert not (home / ".snapshots").exists()


def test_unknown_schedule_names(world: World, home: Path) -> None:
    for member in ("RunSchedule", "RemoveSchedule", "ExplainSchedule"):
        r = mcall(world, member, "sa{sv}", "nope", {})
        assert not r["ok"] and r["error"] == "org.btrfsd1.Error.NotFound", r


def _snaps(home: Path) -> list[str]:
    d = home / ".snapshots"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def test_restart_keeps_schedules_and_marks_and_runs_a_missed_schedule_once(
        world: World, home: Path) -> None:
    ok(set_schedule(world, "h", home, every=V("t", 60)))
    first = ok(mcall(world, "RunSchedule", "sa{sv}", "h", {}))[0]["snapshot"]
    ok(mcall(world, "SetSnapshotInfo", "sa{sv}a{sv}", first,
             {"important": V("b", True), "description": V("s", "before upgrade")}, {}))
    world.sb.stop("btrfsd")
    # btrfsd was down for a day: 1,440 slots missed
    records = world.sb.state_dir / "snapshots.json"
    data = json.loads(records.read_text())
    data["last_run"]["h"] -= 86400
    records.write_text(json.dumps(data))
    time.sleep(1.1)  # the catch-up snapshot gets a name of its own second
    world.sb.start_daemon()
    deadline = time.monotonic() + 10
    while len(_snaps(home)) < 2:
        assert time.monotonic() < deadline, "the missed run did not run"
        time.sleep(0.1)
    time.sleep(1.0)
    assert len(_snaps(home)) == 2  # once, not once per missed slot
    assert "h" in schedules(world)
    rows = ok(mcall(world, "ExplainSchedule", "sa{sv}", "h", {}))[0]
    marked = [r for r in rows if r[0] == first]
    assert marked and marked[0][3] is True and marked[0][6] == "before upgrade"
    assert "important" in marked[0][5]


def test_a_failing_delete_does_not_stop_cleanup_and_is_reported(world: World,
                                                                home: Path) -> None:
    ok(set_schedule(world, "c", home, keep_last=V("u", 5)))
    for _ in range(3):
        ok(mcall(world, "RunSchedule", "sa{sv}", "c", {}))
        time.sleep(1.05)
    names = _snaps(home)
    assert len(names) == 3
    # the oldest becomes undeletable: btrfsd refuses to delete a mounted subvolume
    mnt = world.sb.workdir / "held"
    mnt.mkdir(exist_ok=True)
    sid = btrfsutil.subvolume_id(str(home / ".snapshots" / names[0]))
    subprocess.run(["mount", "-o", f"subvolid={sid}", world.fs.device, str(mnt)], check=True)
    try:
        ok(replace_schedule(world, "c", home, keep_last=1))
        r = ok(mcall(world, "CleanupSchedule", "sa{sv}", "c", {}))[0]
        assert [Path(p).name for p in r["deleted"]] == [names[1]]
        assert [Path(p).name for p, _ in r["failed"]] == [names[0]]
        assert "mounted" in r["failed"][0][1]
        assert _snaps(home) == [names[0], names[2]]
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    # next time it works
    r = ok(mcall(world, "CleanupSchedule", "sa{sv}", "c", {}))[0]
    assert [Path(p).name for p in r["deleted"]] == [names[0]] and not r["failed"]
    assert _snaps(home) == [names[2]]


def test_a_snapshot_deleted_by_hand_is_forgotten_before_deciding(world: World,
                                                                  home: Path) -> None:
    """A run learns which of its snapshots exist from the UUID tree (fs/uuidtree.py); the
    newest deleted behind btrfsd's back must not count, or keep_last would keep it and
    delete the oldest instead."""
    ok(set_schedule(world, "gone", home, keep_last=V("u", 3)))
    for _ in range(3):
        ok(mcall(world, "RunSchedule", "sa{sv}", "gone", {}))
        time.sleep(1.05)
    names = _snaps(home)
    subprocess.run(["btrfs", "-q", "subvolume", "delete", str(home / ".snapshots" / names[2])],
                   check=True)
    r = ok(mcall(world, "RunSchedule", "sa{sv}", "gone", {}))[0]
    assert not r["deleted"] and not r["failed"]
    assert _snaps(home)[:2] == names[:2] and len(_snaps(home)) == 3
    rows = ok(mcall(world, "ExplainSchedule", "sa{sv}", "gone", {}))[0]
    assert len(rows) == 3 and all(row[4] for row in rows)  # three kept, none forgotten


def test_dry_run_and_explain(world: World, home: Path) -> None:
    ok(set_schedule(world, "d", home, keep_last=V("u", 5)))
    for _ in range(2):
        ok(mcall(world, "RunSchedule", "sa{sv}", "d", {}))
        time.sleep(1.05)
    ok(replace_schedule(world, "d", home, keep_last=1))
    rows = ok(mcall(world, "ExplainSchedule", "sa{sv}", "d", {}))[0]
    assert [(r[4], r[5]) for r in rows] == [(True, "keep-last"), (False, "")]
    r = ok(mcall(world, "CleanupSchedule", "sa{sv}", "d", {"dry_run": V("b", True)}))[0]
    assert len(r["deleted"]) == 1 and len(_snaps(home)) == 2  # nothing deleted


# -- periodic maintenance ---------------------------------------------------------------------
def fs_call(w: World, fs: LoopFs | None, member: str, sig: str, *body: Any) -> dict[str, Any]:
    return w.fs_call(w.root, member, sig, *body, fs=fs)


@pytest.mark.parametrize("spec,ok_", [
    ({}, True),
    ({"scrub": V("s", "weekly"), "balance": V("s", "none"),
      "data_usage": V("au", [5, 10, 20])}, True),
    ({"scrub": V("s", "hourly")}, False),
    ({"data_usage": V("au", [150])}, False),
    ({"data_usage": V("au", list(range(20)))}, False),
    ({"bogus": V("b", True)}, False),
])
def test_maintenance_plans_are_validated(world: World, spec: dict[str, Any], ok_: bool) -> None:
    fs_call(world, None, "RemoveMaintenance", "a{sv}", {})
    r = fs_call(world, None, "SetMaintenance", "a{sv}a{sv}", spec, {})
    try:
        if not ok_:
            assert not r["ok"] and r["error"] == "org.btrfsd1.Error.InvalidArgument", r
            assert ok(fs_call(world, None, "GetMaintenance", "a{sv}", {}))[0] == {}
            return
        ok(r)
        plan = ok(fs_call(world, None, "GetMaintenance", "a{sv}", {}))[0]
        defaults = {"scrub": "monthly", "balance": "weekly", "data_usage": [5, 10],
                    "metadata_usage": [5]}
        assert plan == {**defaults, **{k: v["$v"][1] for k, v in spec.items()}}
    finally:
        fs_call(world, None, "RemoveMaintenance", "a{sv}", {})
    r = fs_call(world, None, "RemoveMaintenance", "a{sv}", {})
    assert not r["ok"] and r["error"] == "org.btrfsd1.Error.NotFound", r


def test_due_maintenance_runs_as_jobs_after_downtime(world: World, sfs: LoopFs) -> None:
    ok(fs_call(world, sfs, "SetMaintenance", "a{sv}a{sv}", {
        "scrub": V("s", "daily"), "balance": V("s", "daily"), "data_usage": V("au", [0, 5]),
        "metadata_usage": V("au", [0])}, {}))
    assert ok(fs_call(world, sfs, "GetLastResults", "a{sv}", {}))[0] == {}  # not at once
    world.sb.stop("btrfsd")
    records = world.sb.state_dir / "maintenance-runs.json"
    data = json.loads(records.read_text())
    for key in data["last_run"]:
        if key.startswith(f"{sfs.uuid}:"):
            data["last_run"][key] -= 2 * 86400  # two days down: one run each, not two
    records.write_text(json.dumps(data))
    world.sb.start_daemon()
    deadline = time.monotonic() + 30
    while True:
        last = ok(fs_call(world, sfs, "GetLastResults", "a{sv}", {}))[0]
        if "balance" in last and last["balance"]["state"] == "completed" and (
                last["balance"]["details"].get("data_usage") == 5):
            break
        assert time.monotonic() < deadline, last
        time.sleep(0.2)
    assert last["scrub"]["state"] == "completed" and last["scrub"]["started_by_uid"] == 0
    runs = json.loads(records.read_text())["last_run"]
    assert runs[f"{sfs.uuid}:scrub"] > time.time() - 60


def test_renamed_snapshot_stays_the_schedules(world: World, home: Path) -> None:
    ok(set_schedule(world, "r", home, keep_last=V("u", 5)))
    made = Path(ok(mcall(world, "RunSchedule", "sa{sv}", "r", {}))[0]["snapshot"])
    ok(mcall(world, "SetSnapshotInfo", "sa{sv}a{sv}", str(made),
             {"description": V("s", "keep me")}, {}))
    renamed = made.with_name("my-favourite")
    made.rename(renamed)  # records follow the UUID, not the name
    rows = ok(mcall(world, "ExplainSchedule", "sa{sv}", "r", {}))[0]
    assert [(r[0], r[6]) for r in rows] == [(str(renamed), "keep me")]
    # a snapshot the schedule did not make is never its
    other = home.parent / "manual"
    btrfsutil.create_snapshot(str(home), str(other), read_only=True)
    r = mcall(world, "SetSnapshotInfo", "sa{sv}a{sv}", str(other),
              {"important": V("b", True)}, {})
    assert not r["ok"] and r["error"] == "org.btrfsd1.Error.InvalidArgument", r
    assert len(ok(mcall(world, "ExplainSchedule", "sa{sv}", "r", {}))[0]) == 1
