"""Every method is authorized for the caller through the real polkitd.

For each mutating method: root succeeds, the unprivileged user is refused and the
filesystem is unchanged (btrfs-progs), a member of the example rules' admin group
succeeds. A method exported without an entry here fails test_every_method_has_a_case.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    DENIED,
    MANAGER_IFACE,
    Caller,
    V,
    World,
    btrfs,
    fs_state,
    qgroups,
)
from test_jobs import COVERED_JOB_METHODS

from btrfsd.bus.auth import method_actions
from btrfsd.bus.filesystem import FilesystemInterface
from btrfsd.bus.introspect import NO_SERVICE
from btrfsd.bus.job import JobInterface
from btrfsd.bus.manager import ManagerInterface
from btrfsd.constants import Action
from btrfsd.core.filesystems import Filesystem
from btrfsd.core.jobs import Job


@dataclass
class Case:
    """Prepare (as root, with btrfs-progs), call the method, check the effect."""

    prepare: Callable[[World, Path], Any]
    call: Callable[[World, Caller, Path, Any], dict[str, Any]]
    check: Callable[[World, Path, Any], None]
    # undo what prepare changed on the shared filesystem (run whatever happened)
    cleanup: Callable[[World], None] = lambda w: None


def _subvol(d: Path, name: str) -> Path:
    btrfs("subvolume", "create", str(d / name))
    return d / name


def _is_subvol(p: Path) -> bool:
    return p.exists() and p.stat().st_ino == 256


def _ro(p: Path) -> bool:
    return "ro=true" in btrfs("property", "get", "-ts", str(p), "ro")


MUTATING: dict[str, Case] = {
    "CreateSubvolume": Case(
        prepare=lambda w, d: d / "new",
        call=lambda w, c, d, p: w.fs_call(c, "CreateSubvolume", "sa{sv}", str(p), {}),
        check=lambda w, d, p: _is_subvol(p) or pytest.fail("no subvolume"),
    ),
    "DeleteSubvolume": Case(
        prepare=lambda w, d: _subvol(d, "victim"),
        call=lambda w, c, d, p: w.fs_call(c, "DeleteSubvolume", "sa{sv}", str(p), {}),
        check=lambda w, d, p: (not p.exists()) or pytest.fail("still there"),
    ),
    "CreateSnapshot": Case(
        prepare=lambda w, d: _subvol(d, "src"),
        call=lambda w, c, d, p: w.fs_call(c, "CreateSnapshot", "ssa{sv}", str(p),
                                          str(d / "snap"), {}),
        check=lambda w, d, p: (_is_subvol(d / "snap") and _ro(d / "snap"))
        or pytest.fail("no read-only snapshot"),
    ),
    "SetReadOnly": Case(
        prepare=lambda w, d: _subvol(d, "sv"),
        call=lambda w, c, d, p: w.fs_call(c, "SetReadOnly", "sba{sv}", str(p), True, {}),
        check=lambda w, d, p: _ro(p) or pytest.fail("not read-only"),
    ),
    "SetDefaultSubvolume": Case(
        prepare=lambda w, d: _subvol(d, "def"),
        call=lambda w, c, d, p: w.fs_call(c, "SetDefaultSubvolume", "sa{sv}", str(p), {}),
        check=lambda w, d, p: _check_default(w, p),
    ),
}


def _job_ran(w: World, operation: str, since: float) -> None:
    """A job of ``operation`` started after ``since`` has completed (GetLastResults)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = w.fs_call(w.root, "GetLastResults", "a{sv}", {})
        last = r["body"][0].get(operation) if r["ok"] else None
        if last and last["start_time"] >= since * 1e6:
            assert last["state"] == "completed", last
            return
        time.sleep(0.05)
    pytest.fail(f"no {operation} job completed")


MUTATING.update({
    "StartScrub": Case(
        prepare=lambda w, d: time.time(),
        call=lambda w, c, d, t: w.fs_call(c, "StartScrub", "a{sv}", {}),
        check=lambda w, d, t: _job_ran(w, "scrub", t),
    ),
    "StartBalance": Case(
        prepare=lambda w, d: time.time(),
        call=lambda w, c, d, t: w.fs_call(c, "StartBalance", "a{sv}",
                                          {"data_usage": V("u", 0)}),
        check=lambda w, d, t: _job_ran(w, "balance", t),
    ),
})


def _quota(w: World, on: bool) -> None:
    btrfs("quota", "enable" if on else "disable", str(w.mnt))


def _limit_is(w: World, p: Path, limit: int) -> None:
    sid = btrfs("inspect-internal", "rootid", str(p)).strip()
    line = next(ln.split() for ln in qgroups(w.mnt).splitlines() if ln.startswith(f"0/{sid} "))
    assert line[3] == str(limit), line


MUTATING.update({
    "EnableQuota": Case(
        prepare=lambda w, d: _quota(w, False),
        # force: the shared filesystem may hold many snapshots by now
        call=lambda w, c, d, p: w.fs_call(c, "EnableQuota", "a{sv}", {"force": V("b", True)}),
        check=lambda w, d, p: qgroups(w.mnt) != "off" or pytest.fail("quotas still off"),
        cleanup=lambda w: _quota(w, False),
    ),
    "DisableQuota": Case(
        prepare=lambda w, d: _quota(w, True),
        call=lambda w, c, d, p: w.fs_call(c, "DisableQuota", "a{sv}", {}),
        check=lambda w, d, p: qgroups(w.mnt) == "off" or pytest.fail("quotas still on"),
        cleanup=lambda w: _quota(w, False),
    ),
    "SetQuotaLimit": Case(
        prepare=lambda w, d: (_quota(w, True), _subvol(d, "q"))[1],
        call=lambda w, c, d, p: w.fs_call(c, "SetQuotaLimit", "stta{sv}", str(p), 50 << 20, 0,
                                          {}),
        check=lambda w, d, p: _limit_is(w, p, 50 << 20),
        cleanup=lambda w: _quota(w, False),
    ),
    "RescanQuota": Case(
        prepare=lambda w, d: (_quota(w, True), time.time())[1],
        call=lambda w, c, d, t: w.fs_call(c, "RescanQuota", "a{sv}", {}),
        check=lambda w, d, t: _job_ran(w, "quota-rescan", t),
        cleanup=lambda w: _quota(w, False),
    ),
})


def _schedule(w: World, d: Path, keep_last: int = 5, replace: bool = False) -> str:
    """As root: a subvolume under d and a schedule for it; returns the schedule's name."""
    sv = d / "sv"
    if not sv.exists():
        _subvol(d, "sv")
    name = "s-" + d.name
    r = w.manager_call(w.root, "SetSchedule", "sa{sv}a{sv}", name,
                       {"subvolume": V("s", str(sv)), "every": V("t", 3600),
                        "keep_last": V("u", keep_last)}, {"replace": V("b", replace)})
    assert r["ok"], r
    return name


def _run_schedule(w: World, name: str) -> str:
    r = w.manager_call(w.root, "RunSchedule", "sa{sv}", name, {})
    assert r["ok"], r
    return r["body"][0]["snapshot"]  # type: ignore[no-any-return]


def _scheduled_twice_then_keep_one(w: World, d: Path) -> str:
    name = _schedule(w, d)
    _run_schedule(w, name)
    time.sleep(1.05)  # snapshot names have one-second resolution
    _run_schedule(w, name)
    return _schedule(w, d, keep_last=1, replace=True)


def _schedules(w: World) -> dict[str, Any]:
    return w.manager_call(w.root, "GetSchedules", "a{sv}", {})["body"][0]  # type: ignore[no-any-return]


def _drop_schedules(w: World) -> None:
    for name in _schedules(w):
        w.manager_call(w.root, "RemoveSchedule", "sa{sv}", name, {})


def _explained(w: World, snapshot: str) -> list[Any]:
    name = next(iter(_schedules(w)))
    rows = w.manager_call(w.root, "ExplainSchedule", "sa{sv}", name, {})["body"][0]
    return next(r for r in rows if r[0] == snapshot)  # type: ignore[no-any-return]


MUTATING.update({
    "SetSchedule": Case(
        prepare=lambda w, d: _subvol(d, "sv"),
        call=lambda w, c, d, p: w.manager_call(
            c, "SetSchedule", "sa{sv}a{sv}", "new-" + d.name,
            {"subvolume": V("s", str(p)), "every": V("t", 900), "hourly": V("u", 4)}, {}),
        check=lambda w, d, p: ("new-" + d.name in _schedules(w)) or pytest.fail("not set"),
        cleanup=_drop_schedules,
    ),
    "RemoveSchedule": Case(
        prepare=lambda w, d: _schedule(w, d),
        call=lambda w, c, d, name: w.manager_call(c, "RemoveSchedule", "sa{sv}", name, {}),
        check=lambda w, d, name: (name not in _schedules(w)) or pytest.fail("still there"),
        cleanup=_drop_schedules,
    ),
    "RunSchedule": Case(
        prepare=lambda w, d: _schedule(w, d),
        call=lambda w, c, d, name: w.manager_call(c, "RunSchedule", "sa{sv}", name, {}),
        check=lambda w, d, name: (len(list((d / "sv" / ".snapshots").iterdir())) == 1)
        or pytest.fail("no snapshot"),
        cleanup=_drop_schedules,
    ),
    "CleanupSchedule": Case(
        prepare=_scheduled_twice_then_keep_one,
        call=lambda w, c, d, name: w.manager_call(c, "CleanupSchedule", "sa{sv}", name, {}),
        check=lambda w, d, name: (len(list((d / "sv" / ".snapshots").iterdir())) == 1)
        or pytest.fail("nothing cleaned up"),
        cleanup=_drop_schedules,
    ),
    "SetSnapshotInfo": Case(
        prepare=lambda w, d: _run_schedule(w, _schedule(w, d)),
        call=lambda w, c, d, snap: w.manager_call(
            c, "SetSnapshotInfo", "sa{sv}a{sv}", snap, {"important": V("b", True)}, {}),
        check=lambda w, d, snap: _explained(w, snap)[3] or pytest.fail("not marked"),
        cleanup=_drop_schedules,
    ),
})


def _backup_target(w: World, d: Path) -> Path:
    t = w.sb.filesystems[1].mount_point / ("bk-" + d.name)
    t.mkdir(exist_ok=True)
    return t


def _backup(w: World, d: Path) -> str:
    """As root: a subvolume under d and a backup of it to the other filesystem."""
    sv = d / "sv" if (d / "sv").exists() else _subvol(d, "sv")
    name = "b-" + d.name
    r = w.manager_call(w.root, "SetBackup", "sssa{sv}", name, str(sv),
                       str(_backup_target(w, d)), {"keep_last": V("u", 2)})
    assert r["ok"], r
    return name


def _backups(w: World) -> dict[str, Any]:
    return w.manager_call(w.root, "ListBackups", "a{sv}", {})["body"][0]  # type: ignore[no-any-return]


def _drop_backups(w: World) -> None:
    for name in _backups(w):
        w.manager_call(w.root, "RemoveBackup", "sa{sv}", name, {})
    for t in w.sb.filesystems[1].mount_point.glob("bk-t-*"):
        for copy in t.iterdir():
            btrfs("subvolume", "delete", str(copy))
        t.rmdir()


def _backed_up(w: World, d: Path) -> None:
    """Wait for a complete (read-only) copy on the target."""
    deadline = time.monotonic() + 30
    while not any(_ro(c) for c in _backup_target(w, d).iterdir()):
        assert time.monotonic() < deadline, "not backed up"
        time.sleep(0.05)


def _backed_up_once(w: World, d: Path) -> tuple[str, str]:
    """As root: a backup run once; its name and the copy's name."""
    name = _backup(w, d)
    r = w.manager_call(w.root, "RunBackup", "sa{sv}", name, {})
    assert r["ok"], r
    _backed_up(w, d)
    (d / "back").mkdir()
    return name, next(c.name for c in _backup_target(w, d).iterdir() if _ro(c))


def _restored_copy(w: World, d: Path, copy: str) -> None:
    deadline = time.monotonic() + 30
    while not (_is_subvol(d / "back" / copy) and _ro(d / "back" / copy)):
        assert time.monotonic() < deadline, "not restored"
        time.sleep(0.05)


MUTATING.update({
    "SetBackup": Case(
        prepare=lambda w, d: _subvol(d, "sv"),
        call=lambda w, c, d, p: w.manager_call(
            c, "SetBackup", "sssa{sv}", "new-" + d.name, str(p), str(_backup_target(w, d)),
            {"daily": V("u", 3)}),
        check=lambda w, d, p: ("new-" + d.name in _backups(w)) or pytest.fail("not set"),
        cleanup=_drop_backups,
    ),
    "RemoveBackup": Case(
        prepare=_backup,
        call=lambda w, c, d, name: w.manager_call(c, "RemoveBackup", "sa{sv}", name, {}),
        check=lambda w, d, name: (name not in _backups(w)) or pytest.fail("still there"),
        cleanup=_drop_backups,
    ),
    "RunBackup": Case(
        prepare=_backup,
        call=lambda w, c, d, name: w.manager_call(c, "RunBackup", "sa{sv}", name, {}),
        check=lambda w, d, name: _backed_up(w, d),
        cleanup=_drop_backups,
    ),
    "RestoreBackup": Case(
        prepare=_backed_up_once,
        call=lambda w, c, d, nc: w.manager_call(c, "RestoreBackup", "sssa{sv}", nc[0], nc[1],
                                                str(d / "back"), {}),
        check=lambda w, d, nc: _restored_copy(w, d, nc[1]),
        cleanup=_drop_backups,
    ),
})


def _restorable(w: World, d: Path) -> Path:
    """A subvolume whose file changed after a read-only snapshot; returns the snapshot."""
    sv = _subvol(d, "sv")
    (sv / "f").write_text("old\n")
    btrfs("subvolume", "snapshot", "-r", str(sv), str(d / "snap"))
    (sv / "f").write_text("new\n")
    btrfs("filesystem", "sync", str(sv))  # the generations fs_state compares settle
    return d / "snap"


def _restored(w: World, d: Path) -> None:
    deadline = time.monotonic() + 30
    while (d / "sv" / "f").read_text() != "old\n":
        assert time.monotonic() < deadline, "not restored"
        time.sleep(0.05)


def _rollback_ready(w: World, d: Path) -> Path:
    sv = _subvol(d, "sv")
    (sv / "f").write_text("old\n")
    btrfs("subvolume", "snapshot", "-r", str(sv), str(d / "snap"))
    (sv / "f").write_text("new\n")
    btrfs("filesystem", "sync", str(sv))
    return sv


MUTATING.update({
    "RestoreFiles": Case(
        prepare=_restorable,
        call=lambda w, c, d, snap: w.fs_call(c, "RestoreFiles", "sasa{sv}", str(snap), ["f"],
                                             {}),
        check=lambda w, d, snap: _restored(w, d),
    ),
    "Rollback": Case(
        prepare=_rollback_ready,
        call=lambda w, c, d, sv: w.fs_call(c, "Rollback", "ssa{sv}", str(sv),
                                           str(d / "snap"), {}),
        check=lambda w, d, sv: (sv / "f").read_text() == "old\n" or pytest.fail("same"),
    ),
})


def _no_maintenance(w: World) -> None:
    w.fs_call(w.root, "RemoveMaintenance", "a{sv}", {})


def _set_maintenance(w: World) -> None:
    r = w.fs_call(w.root, "SetMaintenance", "a{sv}a{sv}", {}, {})
    assert r["ok"], r


def _maintenance(w: World) -> dict[str, Any]:
    return w.fs_call(w.root, "GetMaintenance", "a{sv}", {})["body"][0]  # type: ignore[no-any-return]


MUTATING.update({
    "SetMaintenance": Case(
        prepare=lambda w, d: _no_maintenance(w),
        call=lambda w, c, d, p: w.fs_call(c, "SetMaintenance", "a{sv}a{sv}",
                                          {"scrub": V("s", "weekly")}, {}),
        check=lambda w, d, p: _maintenance(w).get("scrub") == "weekly" or pytest.fail("unset"),
        cleanup=_no_maintenance,
    ),
    "RemoveMaintenance": Case(
        prepare=lambda w, d: _set_maintenance(w),
        call=lambda w, c, d, p: w.fs_call(c, "RemoveMaintenance", "a{sv}", {}),
        check=lambda w, d, p: _maintenance(w) == {} or pytest.fail("still set"),
        cleanup=_no_maintenance,
    ),
})


def _compare_prepared(w: World, d: Path) -> Path:
    """A subvolume with a read-only snapshot and a change since; returns the subvolume."""
    sv = _subvol(d, "sv")
    btrfs("subvolume", "snapshot", "-r", str(sv), str(d / "s1"))
    (sv / "f").write_text("new")
    btrfs("filesystem", "sync", str(sv))  # its generation moves now, not during the check
    return sv


def _compared(w: World, d: Path) -> None:
    # the live subvolume was compared through a temporary snapshot, now gone again
    assert ".btrfsd-compare-" not in btrfs("subvolume", "list", str(w.mnt))


MUTATING.update({
    # not a change, but names every changed file: admins only (auth_admin_keep)
    "CompareSnapshots": Case(
        prepare=_compare_prepared,
        call=lambda w, c, d, sv: w.fs_call(c, "CompareSnapshots", "ssa{sv}", str(d / "s1"),
                                           str(sv), {}),
        check=lambda w, d, sv: _compared(w, d),
    ),
})


def _check_default(w: World, p: Path) -> None:
    sid = btrfs("inspect-internal", "rootid", str(p)).strip()
    assert f"ID {sid} " in btrfs("subvolume", "get-default", str(w.mnt))
    btrfs("subvolume", "set-default", "5", str(w.mnt))  # restore for other tests


def _explain_as(w: World, c: Caller) -> dict[str, Any]:
    d = w.scratch()
    try:
        return w.manager_call(c, "ExplainSchedule", "sa{sv}", _schedule(w, d), {})
    finally:
        _drop_schedules(w)


def _explain_backup_as(w: World, c: Caller) -> dict[str, Any]:
    d = w.scratch()
    try:
        return w.manager_call(c, "ExplainBackup", "sa{sv}", _backup(w, d), {})
    finally:
        _drop_backups(w)


READ_METHODS: dict[str, Callable[[World, Caller], dict[str, Any]]] = {
    "GetFilesystems": lambda w, c: w.manager_call(c, "GetFilesystems", "a{sv}", {}),
    "ResolvePath": lambda w, c: w.manager_call(c, "ResolvePath", "sa{sv}", str(w.mnt), {}),
    "ListSubvolumes": lambda w, c: w.fs_call(c, "ListSubvolumes", "a{sv}", {}),
    "GetSubvolume": lambda w, c: w.fs_call(c, "GetSubvolume", "sa{sv}", str(w.mnt), {}),
    "GetJobs": lambda w, c: w.manager_call(c, "GetJobs", "a{sv}", {}),
    "GetStatus": lambda w, c: w.manager_call(c, "GetStatus", "a{sv}", {}),
    "GetLastResults": lambda w, c: w.fs_call(c, "GetLastResults", "a{sv}", {}),
    "GetQuotaUsage": lambda w, c: w.fs_call(c, "GetQuotaUsage", "a{sv}", {}),
    "GetSchedules": lambda w, c: w.manager_call(c, "GetSchedules", "a{sv}", {}),
    "GetMaintenance": lambda w, c: w.fs_call(c, "GetMaintenance", "a{sv}", {}),
    "ExplainSchedule": _explain_as,
    "ListBackups": lambda w, c: w.manager_call(c, "ListBackups", "a{sv}", {}),
    "ExplainBackup": _explain_backup_as,
}


def _exported_methods(w: World) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in ("/org/btrfsd1", w.fs_path()):
        r = w.root.call(path, "org.freedesktop.DBus.Introspectable", "Introspect")
        for iface in ET.fromstring(r["body"][0]).iter("interface"):
            name = iface.get("name", "")
            if name.startswith("org.btrfsd1."):
                found[name] = {m.get("name", "") for m in iface.iter("method")}
    return found


def test_every_method_has_a_case(world: World) -> None:
    exported = _exported_methods(world)
    all_methods = set().union(*exported.values())
    job_methods = set(method_actions(_job_interface()))
    assert job_methods <= COVERED_JOB_METHODS, "Job methods without an authorization test"
    untested = all_methods - set(MUTATING) - set(READ_METHODS)
    assert not untested, f"exported without an authorization test: {untested}"
    assert set(MUTATING) | set(READ_METHODS) <= all_methods


def _job_interface() -> JobInterface:
    job = Job(id=0, operation="scrub", filesystem="x", started_by_uid=0)
    return JobInterface(None, job, None)  # type: ignore[arg-type]


def test_read_methods_declare_read_and_mutating_ones_do_not() -> None:
    fs = Filesystem(uuid="00000000-0000-0000-0000-000000000000", mounts=[])
    actions = {**method_actions(ManagerInterface(None, NO_SERVICE)),  # type: ignore[arg-type]
               **method_actions(FilesystemInterface(None, fs, NO_SERVICE))}  # type: ignore[arg-type]
    for name in READ_METHODS:
        assert actions[name] == Action.READ
    for name in MUTATING:
        assert actions[name] not in (None, Action.READ)


@pytest.mark.parametrize("method", sorted(MUTATING))
@pytest.mark.parametrize("who", ["root", "admin"])
def test_root_and_admin_group_member_succeed(world: World, method: str, who: str) -> None:
    case, d = MUTATING[method], world.scratch()
    try:
        arg = case.prepare(world, d)
        r = case.call(world, world.root if who == "root" else world.admin, d, arg)
        assert r["ok"], r
        case.check(world, d, arg)
    finally:
        case.cleanup(world)


@pytest.mark.parametrize("method", sorted(MUTATING))
@pytest.mark.parametrize("interactive", [False, True])
def test_unprivileged_user_refused_and_nothing_changes(world: World, method: str,
                                                       interactive: bool) -> None:
    case, d = MUTATING[method], world.scratch()
    try:
        _refused(world, case, d, interactive)
    finally:
        case.cleanup(world)


def _refused(world: World, case: Case, d: Path, interactive: bool) -> None:
    arg = case.prepare(world, d)
    before = fs_state(world.mnt)
    jobs_before = world.manager_call(world.root, "GetJobs", "a{sv}", {})["body"]
    r = case.call(world, world.user, d, arg) if not interactive else world.user.call(
        **_interactive(world, case, d, arg))
    assert not r["ok"]
    # Without the interactive flag polkit's auth_admin is a challenge the caller must
    # be told about; with it (and no agent to ask), a plain denial.
    expected = ("org.freedesktop.DBus.Error.AccessDenied" if interactive else
                "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired")
    assert r["error"] == expected, r
    assert fs_state(world.mnt) == before
    assert world.manager_call(world.root, "GetJobs", "a{sv}", {})["body"] == jobs_before


def _interactive(w: World, case: Case, d: Path, arg: Any) -> dict[str, Any]:
    """Capture the call a case makes and replay it with the interactive flag."""
    captured: dict[str, Any] = {}

    class Recorder(Caller):
        def __init__(self) -> None:
            pass

        def call(self, path: str, iface: str, member: str, sig: str = "",
                 body: list[Any] | None = None, interactive: bool = False,
                 dest: str = "org.btrfsd1") -> dict[str, Any]:
            captured.update(path=path, iface=iface, member=member, sig=sig, body=body,
                            interactive=True)
            return {}

    case.call(w, Recorder(), d, arg)
    return captured


@pytest.mark.parametrize("method", sorted(READ_METHODS))
def test_read_methods_allowed_for_everyone(world: World, method: str) -> None:
    for caller in (world.root, world.user, world.admin):
        r = READ_METHODS[method](world, caller)
        assert r["ok"], (caller.user, r)


def test_concurrent_callers_get_their_own_decisions(world: World) -> None:
    """Root and the unprivileged user fire many creates at once, interleaved."""
    d = world.scratch()
    n = 40

    def calls(prefix: str) -> list[dict[str, Any]]:
        return [world.fs_request("CreateSubvolume", "sa{sv}", str(d / f"{prefix}{i}"), {})
                for i in range(n)]

    world.user.send(calls("u"))
    world.root.send(calls("r"))
    world.admin.send(calls("a"))
    user_results, root_results = world.user.receive(), world.root.receive()
    admin_results = world.admin.receive()
    assert all(r["ok"] for r in root_results), root_results
    assert all(r["ok"] for r in admin_results), admin_results
    assert all(not r["ok"] and r["error"] in DENIED for r in user_results), user_results
    names = sorted(p.name for p in d.iterdir())
    assert names == sorted([f"r{i}" for i in range(n)] + [f"a{i}" for i in range(n)])


def test_without_polkitd_only_root_is_allowed(world: World) -> None:
    sb = world.sb
    sb.stop("polkitd")
    try:
        d = world.scratch()
        r = world.fs_call(world.admin, "CreateSubvolume", "sa{sv}", str(d / "a"), {})
        assert not r["ok"] and r["error"] == "org.freedesktop.DBus.Error.AccessDenied", r
        assert "PolicyKit is not reachable" in r["message"]
        r = world.fs_call(world.user, "ListSubvolumes", "a{sv}", {})
        assert not r["ok"] and r["error"] == "org.freedesktop.DBus.Error.AccessDenied", r
        r = world.fs_call(world.root, "CreateSubvolume", "sa{sv}", str(d / "r"), {})
        assert r["ok"], r
        assert not (d / "a").exists()
    finally:
        sb.start_polkitd()


def test_options_variants_are_checked_before_authorization_matters(world: World) -> None:
    """A denied caller learns nothing about option validity: auth comes first."""
    d = world.scratch()
    r = world.fs_call(world.user, "DeleteSubvolume", "sa{sv}", str(d), {"bogus": V("b", True)})
    assert r["error"] in DENIED, r


def test_manager_interface_name(world: World) -> None:
    assert MANAGER_IFACE in _exported_methods(world)
