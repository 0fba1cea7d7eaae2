"""Quotas on real loop images: limits enforced by the kernel (EDQUOT), usage and limits
as btrfs-progs sees them, alerts with hysteresis that survive a restart, simple quotas."""

from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import btrfsutil
import pytest
from conftest import DENIED, Caller, V, World, qgroups, subvolume_rows
from sandbox import TEST_USER, LoopFs
from test_jobs import add_fs, ok, remove_fs, wait_state

MiB = 1 << 20
LEVELS = ["warning", "critical", "exceeded"]


@pytest.fixture
def qfs(world: World) -> Iterator[LoopFs]:
    """A fresh filesystem per test (quota state must not leak between tests)."""
    fs = add_fs(world, "1G", "btrfsd-quota", 0)
    yield fs
    remove_fs(world, fs)


def call(w: World, fs: LoopFs, member: str, sig: str, *body: Any,
         caller: Caller | None = None) -> dict[str, Any]:
    return w.fs_call(caller or w.root, member, sig, *body, fs=fs)


def enable(w: World, fs: LoopFs, **opts: Any) -> str:
    return ok(call(w, fs, "EnableQuota", "a{sv}", opts))[0]  # type: ignore[no-any-return]


def set_limit(w: World, fs: LoopFs, path: Path, referenced: int, exclusive: int = 0,
              caller: Caller | None = None) -> dict[str, Any]:
    return call(w, fs, "SetQuotaLimit", "stta{sv}", str(path), referenced, exclusive, {},
                caller=caller)


def usage(w: World, fs: LoopFs) -> tuple[str, bool, dict[int, list[Any]]]:
    mode, inconsistent, rows = ok(call(w, fs, "GetQuotaUsage", "a{sv}",
                                       {"sync": V("b", True)}))
    return mode, inconsistent, {r[0]: r for r in rows}


def fill(path: Path, limit_mib: int) -> int:
    """Write 1 MiB blocks until the kernel refuses with EDQUOT; return MiB written."""
    written = 0
    with open(path, "ab") as f:
        for _ in range(limit_mib * 2):
            try:
                f.write(os.urandom(MiB))
                f.flush()
                os.fsync(f.fileno())
            except OSError as e:
                assert e.errno == errno.EDQUOT, e
                return written
            written += 1
            time.sleep(0.02)  # let the watcher see usage rise through the levels
    raise AssertionError("the limit was never enforced")


def alert_levels(watcher: Caller, path: Path, settle: float = 1.2) -> list[str]:
    time.sleep(settle)  # several watcher passes (interval 0.3 s in the tests' config)
    return [s["body"][4] for s in watcher.signals()
            if s["member"] == "QuotaWarning" and s["body"][0] == str(path)]


def test_limit_enforced_alerts_once_each_then_again_after_falling(world: World,
                                                                   qfs: LoopFs) -> None:
    enable(world, qfs)
    home = qfs.mount_point / "home"
    btrfsutil.create_subvolume(str(home))
    ok(set_limit(world, qfs, home, 30 * MiB))
    watcher = Caller(world.sb, TEST_USER)  # anyone may listen
    try:
        watcher.subscribe("type='signal',sender='org.btrfsd1',member='QuotaWarning'")
        written = fill(home / "data", 30)
        assert 20 <= written <= 30
        assert alert_levels(watcher, home) == LEVELS  # each exactly once, in order
        # usage as btrfsd reports it matches btrfs-progs
        sid = btrfsutil.subvolume_id(str(home))
        _, inconsistent, rows = usage(world, qfs)
        row = rows[sid]
        assert row[1] == "home" and row[4] == 30 * MiB and row[5] == 0
        progs = {line.split()[0]: line.split() for line in qgroups(qfs.mount_point).splitlines()
                 if line.startswith("0/")}
        assert int(progs[f"0/{sid}"][1]) == row[2] and int(progs[f"0/{sid}"][3]) == row[4]
        assert not inconsistent
        # still full: a restart must not repeat the alerts
        world.sb.restart_daemon()
        assert alert_levels(watcher, home) == []
        # fall below every level minus the margin, then cross again: they fire again
        (home / "data").unlink()
        btrfsutil.sync(str(qfs.mount_point))
        assert alert_levels(watcher, home) == []
        fill(home / "data2", 30)
        assert alert_levels(watcher, home) == LEVELS
    finally:
        watcher.close()


def test_limits_set_and_cleared_as_btrfs_progs_sees_them(world: World, qfs: LoopFs) -> None:
    enable(world, qfs)
    sv = qfs.mount_point / "sv"
    btrfsutil.create_subvolume(str(sv))
    sid = btrfsutil.subvolume_id(str(sv))

    def listed_limits() -> list[tuple[int, int]]:
        rows = subvolume_rows(call(world, qfs, "ListSubvolumes", "a{sv}", {}))
        return [r[13:15] for r in rows if r[0] == sid]

    # listed before and after: a limit changes no subvolume, and the listing's kept reply
    # (bus/marshalled.py) must not be sent again with the old figures
    assert listed_limits() == [(0, 0)]
    ok(set_limit(world, qfs, sv, 40 * MiB, 20 * MiB))
    line = next(ln.split() for ln in qgroups(qfs.mount_point).splitlines()
                if ln.startswith(f"0/{sid} "))
    assert line[3:5] == [str(40 * MiB), str(20 * MiB)]
    info = ok(call(world, qfs, "GetSubvolume", "sa{sv}", str(sv), {}))[0]
    assert info["max_referenced"] == 40 * MiB and info["max_exclusive"] == 20 * MiB
    assert listed_limits() == [(40 * MiB, 20 * MiB)]
    ok(set_limit(world, qfs, sv, 0, 0))
    line = next(ln.split() for ln in qgroups(qfs.mount_point).splitlines()
                if ln.startswith(f"0/{sid} "))
    assert line[3:5] == ["none", "none"]
    assert listed_limits() == [(0, 0)]


@pytest.mark.parametrize("case", ["plain directory", "quotas off", "tiny", "absurd",
                                  "missing", "bad option"])
def test_bad_quota_input_is_refused_and_changes_nothing(world: World, qfs: LoopFs,
                                                        case: str) -> None:
    sv = qfs.mount_point / "sv"
    btrfsutil.create_subvolume(str(sv))
    (qfs.mount_point / "dir").mkdir()
    if case != "quotas off":
        enable(world, qfs)
    before = qgroups(qfs.mount_point)
    r = {
        "plain directory": lambda: set_limit(world, qfs, qfs.mount_point / "dir", 10 * MiB),
        "quotas off": lambda: set_limit(world, qfs, sv, 10 * MiB),
        "tiny": lambda: set_limit(world, qfs, sv, 100),
        "absurd": lambda: set_limit(world, qfs, sv, 2**63),
        "missing": lambda: set_limit(world, qfs, qfs.mount_point / "nope", 10 * MiB),
        "bad option": lambda: call(world, qfs, "EnableQuota", "a{sv}", {"mode": V("s", "x")}),
    }[case]()
    assert not r["ok"], r
    expected = "NotFound" if case == "missing" else "InvalidArgument"
    assert r["error"] == f"org.btrfsd1.Error.{expected}", r
    if case == "quotas off":
        assert "EnableQuota" in r["message"], r
        assert r["details"]["hint"] == "enable-quota", r
        assert r["details"]["filesystem"] == qfs.uuid and "EnableQuota" not in (
            r["details"]["message"]), r
    assert qgroups(qfs.mount_point) == before


def test_unprivileged_user_reads_usage_but_changes_nothing(world: World, qfs: LoopFs) -> None:
    sv = qfs.mount_point / "sv"
    btrfsutil.create_subvolume(str(sv))
    for member, sig, body in (("EnableQuota", "a{sv}", [{}]),
                              ("EnableQuota", "a{sv}", [{"simple": V("b", True)}])):
        r = call(world, qfs, member, sig, *body, caller=world.user)
        assert not r["ok"] and r["error"] in DENIED, r
    assert qgroups(qfs.mount_point) == "off"
    enable(world, qfs)
    before = qgroups(qfs.mount_point)
    for member, sig, body in (("SetQuotaLimit", "stta{sv}", [str(sv), 10 * MiB, 0, {}]),
                              ("DisableQuota", "a{sv}", [{}]),
                              ("RescanQuota", "a{sv}", [{}])):
        r = call(world, qfs, member, sig, *body, caller=world.user)
        assert not r["ok"] and r["error"] in DENIED, r
    assert qgroups(qfs.mount_point) == before
    mode, _, rows = ok(call(world, qfs, "GetQuotaUsage", "a{sv}", {}, caller=world.user))
    assert mode == "qgroup" and rows


def test_full_quotas_with_many_snapshots_need_force(world: World, qfs: LoopFs) -> None:
    src = qfs.mount_point / "src"
    btrfsutil.create_subvolume(str(src))
    (qfs.mount_point / "snaps").mkdir()
    for i in range(100):
        btrfsutil.create_snapshot(str(src), str(qfs.mount_point / "snaps" / f"s{i}"),
                                  read_only=True)
    r = call(world, qfs, "EnableQuota", "a{sv}", {})
    assert not r["ok"] and r["error"] == "org.btrfsd1.Error.InvalidArgument", r
    assert "100 snapshots" in r["message"] and "force" in r["message"]
    assert qgroups(qfs.mount_point) == "off"
    enable(world, qfs, force=V("b", True))
    assert qgroups(qfs.mount_point) != "off"


def test_rescan_job_and_disable(world: World, qfs: LoopFs) -> None:
    enable(world, qfs)
    path = ok(call(world, qfs, "RescanQuota", "a{sv}", {}))[0]
    assert wait_state(world, path, {"completed", "failed"})["State"] == "completed"
    ok(call(world, qfs, "DisableQuota", "a{sv}", {}))
    assert qgroups(qfs.mount_point) == "off"
    r = call(world, qfs, "RescanQuota", "a{sv}", {})
    assert not r["ok"] and r["error"] == "org.btrfsd1.Error.InvalidArgument", r


def test_simple_quota_limit_enforced(world: World, qfs: LoopFs) -> None:
    if not Path("/sys/fs/btrfs/features/simple_quota").exists():
        pytest.skip("this kernel has no simple quotas (needs Linux 6.7)")
    enable(world, qfs, simple=V("b", True))
    props = ok(world.root.call(world.fs_path(qfs), "org.freedesktop.DBus.Properties", "Get",
                               "ss", ["org.btrfsd1.Filesystem", "QuotaMode"]))[0]
    assert props == "squota"
    sv = qfs.mount_point / "sv"
    btrfsutil.create_subvolume(str(sv))
    ok(set_limit(world, qfs, sv, 10 * MiB))
    assert fill(sv / "data", 10) <= 10
    mode, _, rows = usage(world, qfs)
    assert mode == "squota"
    assert rows[btrfsutil.subvolume_id(str(sv))][2] > 8 * MiB


def test_deletes_with_full_qgroups_drain_fast_then_rescan(world: World, qfs: LoopFs) -> None:
    enable(world, qfs)
    src = qfs.mount_point / "src"
    btrfsutil.create_subvolume(str(src))
    for i in range(300):  # enough files for a tree of more than one level
        (src / f"f{i}").write_bytes(os.urandom(2048))
    (qfs.mount_point / "snaps").mkdir()
    snaps = [qfs.mount_point / "snaps" / f"s{i}" for i in range(4)]
    for s in snaps:
        btrfsutil.create_snapshot(str(src), str(s), read_only=True)
    snap_ids = [btrfsutil.subvolume_id(str(s)) for s in snaps]
    threshold = Path(f"/sys/fs/btrfs/{qfs.uuid}/qgroups/drop_subtree_threshold")
    original = threshold.read_text().strip()
    assert original != "0"
    for s in snaps:
        ok(call(world, qfs, "DeleteSubvolume", "sa{sv}", str(s), {}))
    assert threshold.read_text().strip() == "0"  # lowered for the cleaner
    deadline = time.monotonic() + 60
    while threshold.read_text().strip() != original:  # put back once rescanned
        assert time.monotonic() < deadline, "threshold never restored"
        time.sleep(0.2)
    mode, inconsistent, rows = usage(world, qfs)
    assert mode == "qgroup" and not inconsistent
    sid = btrfsutil.subvolume_id(str(src))
    progs = next(ln.split() for ln in qgroups(qfs.mount_point).splitlines()
                 if ln.startswith(f"0/{sid} "))
    assert int(progs[1]) == rows[sid][2]
    # the deleted snapshots' qgroups do not accumulate
    assert not set(snap_ids) & set(rows), sorted(rows)


def test_qgroup_of_a_missing_subvolume_is_removed(world: World, qfs: LoopFs) -> None:
    enable(world, qfs)
    r = subprocess.run(["btrfs", "qgroup", "create", "0/999", str(qfs.mount_point)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("this kernel refuses a level-0 qgroup without a subvolume (and removes "
                    f"those of deleted subvolumes itself): {r.stderr.strip()}")
    assert "0/999 " in qgroups(qfs.mount_point)
    deadline = time.monotonic() + 10
    while "0/999 " in qgroups(qfs.mount_point):  # the watcher's next passes remove it
        assert time.monotonic() < deadline, "leftover qgroup not removed"
        time.sleep(0.2)


def test_schedule_cleanup_deletes_take_the_fast_path_too(world: World, qfs: LoopFs) -> None:
    enable(world, qfs)
    sv = qfs.mount_point / "sv"
    btrfsutil.create_subvolume(str(sv))
    threshold = Path(f"/sys/fs/btrfs/{qfs.uuid}/qgroups/drop_subtree_threshold")
    original = threshold.read_text().strip()
    spec = {"subvolume": V("s", str(sv)), "every": V("t", 3600), "keep_last": V("u", 1)}
    ok(world.manager_call(world.root, "SetSchedule", "sa{sv}a{sv}", "fast", spec, {}))
    try:
        for _ in range(2):  # the second run's cleanup deletes the first snapshot
            ok(world.manager_call(world.root, "RunSchedule", "sa{sv}", "fast", {}))
            time.sleep(1.05)
        assert f"for deletes fs={qfs.uuid}" in world.sb.daemon_log()
        deadline = time.monotonic() + 60
        while threshold.read_text().strip() != original:
            assert time.monotonic() < deadline, "threshold never restored"
            time.sleep(0.2)
    finally:
        world.manager_call(world.root, "RemoveSchedule", "sa{sv}", "fast", {})


def test_quota_rows_of_hidden_subvolumes_and_a_sync_need_more(world: World,
                                                              qfs: LoopFs) -> None:
    # issue 17: a caller sees the usage of what they could find; issue 19: a sync
    # commits a transaction, so it needs quota-manage, not just read
    mnt = qfs.mount_point
    (mnt / "closed").mkdir()
    os.chmod(mnt / "closed", 0o700)
    for p in ("open-sv", "closed/hidden-sv"):
        assert call(world, qfs, "CreateSubvolume", "sa{sv}", str(mnt / p), {})["ok"]
    enable(world, qfs, force=V("b", True))

    def rows(caller: Caller) -> set[str]:
        r = call(world, qfs, "GetQuotaUsage", "a{sv}", {}, caller=caller)
        assert r["ok"], r
        return {row[1] for row in r["body"][2]}

    assert {"open-sv", "closed/hidden-sv"} <= rows(world.root)
    assert {"open-sv", "closed/hidden-sv"} <= rows(world.admin)  # read-all by the group
    mine = rows(world.user)
    assert "open-sv" in mine and "closed/hidden-sv" not in mine, mine
    r = call(world, qfs, "GetQuotaUsage", "a{sv}", {"sync": V("b", True)}, caller=world.user)
    assert not r["ok"] and r["error"] in DENIED, r
    assert call(world, qfs, "GetQuotaUsage", "a{sv}", {"sync": V("b", True)},
                caller=world.admin)["ok"]


def test_a_quota_warning_names_only_what_anyone_could_reach(world: World,
                                                           qfs: LoopFs) -> None:
    # a signal reaches every listener: a subvolume behind a closed directory is not
    # named; its owner finds it by qgroup id in GetQuotaUsage (which answers per caller)
    enable(world, qfs)
    (qfs.mount_point / "closed").mkdir(mode=0o700)
    hidden = qfs.mount_point / "closed" / "hidden"
    btrfsutil.create_subvolume(str(hidden))
    ok(set_limit(world, qfs, hidden, 30 * MiB))
    sid = btrfsutil.subvolume_id(str(hidden))
    watcher = Caller(world.sb, TEST_USER)
    try:
        watcher.subscribe("type='signal',sender='org.btrfsd1',member='QuotaWarning'")
        fill(hidden / "data", 30)
        time.sleep(1.2)
        mine = [s["body"] for s in watcher.signals() if s["member"] == "QuotaWarning"
                and s["body"][1] == sid]
        assert [b[4] for b in mine] == LEVELS, mine
        assert all(b[0] == "" for b in mine), mine
    finally:
        watcher.close()
