"""Backups to another btrfs filesystem (SetBackup/RunBackup/RemoveBackup/ListBackups)
through the real bus: full then incremental sends checked with btrfs-progs (received
UUIDs, read-only, file contents), target retention keeping the next run's parent, cancel
and kill -9 mid-send leaving no partial copy, a full target, bad input."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import DENIED, V, World, btrfs
from sandbox import TEST_USER, LoopFs
from test_cli import ctl
from test_jobs import JOB_IFACE, add_fs, props, remove_fs, wait_for_fs, wait_state

MiB = 1 << 20
ENDED = {"completed", "failed", "cancelled", "interrupted"}
OPT_SIG = {"schedule": "s", "rate_limit": "t", "replace": "b"}


def call(w: World, member: str, sig: str, *body: Any, caller: Any = None) -> dict[str, Any]:
    return w.manager_call(caller or w.root, member, sig, *body)


def set_backup(w: World, name: str, source: Path | str, target: Path | str,
               caller: Any = None, **opts: Any) -> dict[str, Any]:
    options = {k: V(OPT_SIG.get(k, "u"), v) for k, v in opts.items()}
    return call(w, "SetBackup", "sssa{sv}", name, str(source), str(target), options,
                caller=caller)


def run_backup(w: World, name: str) -> str:
    r = call(w, "RunBackup", "sa{sv}", name, {})
    assert r["ok"], r
    return r["body"][0]  # type: ignore[no-any-return]


def ran(w: World, name: str) -> dict[str, Any]:
    p = wait_state(w, run_backup(w, name), ENDED, timeout=60)
    assert p["State"] == "completed", (p["Message"], p)
    return p


def show(path: Path) -> dict[str, str]:
    out = btrfs("subvolume", "show", str(path))
    fields = dict(re.findall(r"^\s*([A-Za-z ]+):\s*(.*)$", out, re.M))
    return {k.strip(): v.strip() for k, v in fields.items()}


def digest(root: Path) -> dict[str, str]:
    """Every regular file below root (nested snapshot directories left out) by content."""
    found = {}
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".snapshots"]
        for f in files:
            p = Path(dirpath) / f
            found[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return found


def subvols_in(d: Path) -> list[str]:
    return sorted(e.name for e in d.iterdir() if e.is_dir() and e.stat().st_ino == 256)


def write(p: Path, size: int) -> None:
    p.write_bytes(os.urandom(size))


@pytest.fixture(scope="module")
def places(world: World) -> Iterator[tuple[Path, Path]]:
    """A directory for sources on the test filesystem, one for targets on the other."""
    tag = uuid.uuid4().hex[:6]
    src = world.mnt / f"bk-{tag}"
    src.mkdir()
    tgt = world.sb.filesystems[1].mount_point / f"bk-{tag}"
    tgt.mkdir()
    yield src, tgt
    for name in [b for b in call(world, "ListBackups", "a{sv}", {})["body"][0]]:
        call(world, "RemoveBackup", "sa{sv}", name, {})
    for d in (src, tgt):
        for sv in sorted(d.rglob("*"), key=lambda p: -len(p.parts)):
            if sv.is_dir() and not sv.is_symlink() and sv.stat().st_ino == 256:
                subprocess.run(["btrfs", "property", "set", str(sv), "ro", "false"],
                               check=False, capture_output=True)
                btrfs("subvolume", "delete", str(sv))
        shutil.rmtree(d)


def source(d: Path, name: str, data: int = 2 * MiB) -> Path:
    sv = d / name
    btrfs("subvolume", "create", str(sv))
    (sv / "dir").mkdir()
    write(sv / "dir" / "big", data)
    (sv / "small").write_text("hello\n")
    return sv


def target(d: Path, name: str) -> Path:
    t = d / name
    t.mkdir()
    return t


def sent(p: dict[str, Any]) -> Path:
    """The snapshot a finished run sent (its path when it was sent)."""
    return Path(p["Details"]["snapshot"])


def test_full_then_incremental_with_equal_contents(world: World,
                                                   places: tuple[Path, Path]) -> None:
    src_dir, tgt_dir = places
    sv, tgt = source(src_dir, "inc", 4 * MiB), target(tgt_dir, "inc")
    r = set_backup(world, "inc", sv, tgt, keep_last=5)
    assert r["ok"], r
    listed = call(world, "ListBackups", "a{sv}", {})["body"][0]["inc"]
    assert listed["source"] == str(sv) and listed["keep_last"] == 5

    p = ran(world, "inc")
    assert p["Details"]["incremental"] is False and p["BytesDone"] >= 4 * MiB, p
    snap = sent(p)
    copy = tgt / snap.name
    info = show(copy)
    assert info["Received UUID"] == show(snap)["UUID"] and "readonly" in info["Flags"]
    assert digest(copy) == digest(snap)

    (sv / "small").write_text("changed\n")
    write(sv / "dir" / "new", 64 * 1024)
    p = ran(world, "inc")
    assert p["Details"]["incremental"] is True and p["Details"]["parent"] == snap.name, p
    assert p["BytesDone"] < MiB, "the incremental sent the whole subvolume again"
    snap2 = sent(p)
    assert show(tgt / snap2.name)["Received UUID"] == show(snap2)["UUID"]
    assert digest(tgt / snap2.name) == digest(snap2)
    assert digest(tgt / snap.name) == digest(snap)  # the older copy is untouched

    # matched by UUID, not by name: renamed source snapshots still give a parent
    for s in (sv / ".snapshots").iterdir():
        s.rename(s.with_name("renamed-" + s.name))
    # the next snapshot's name must not be an older copy's (names have one-second
    # resolution; a name taken on the target fails the run)
    time.sleep(1.05)
    (sv / "small").write_text("again\n")
    p = ran(world, "inc")
    assert p["Details"]["incremental"] is True, p
    assert p["Details"]["parent"] == "renamed-" + snap2.name


def test_target_retention_keeps_the_next_parent(world: World,
                                                places: tuple[Path, Path]) -> None:
    src_dir, tgt_dir = places
    sv, tgt = source(src_dir, "ret", 256 * 1024), target(tgt_dir, "ret")
    # daily=1 keeps the first copy of today; the newest must stay as the next parent
    assert set_backup(world, "ret", sv, tgt, daily=1)["ok"]
    names = []
    for i in range(3):
        (sv / "small").write_text(f"run {i}\n")
        names.append(sent(ran(world, "ret")).name)
    assert subvols_in(tgt) == sorted([names[0], names[2]])
    r = call(world, "ExplainBackup", "sa{sv}", "ret", {})
    assert r["ok"], r
    assert [(row[0], row[3], row[4]) for row in r["body"][0]] == [
        (str(tgt / names[2]), True, "parent"), (str(tgt / names[0]), True, "daily")]
    assert r["body"][0][0][1] == show(src_dir / "ret" / ".snapshots" / names[2])["UUID"]
    out = ctl(world, "--json", "backup", "explain", "ret")
    assert out.returncode == 0, out.stderr
    assert [i["reasons"] for i in json.loads(out.stdout)] == ["parent", "daily"]
    p = ran(world, "ret")
    assert p["Details"]["incremental"] is True and p["Details"]["parent"] == names[2], p


def test_cancel_mid_send_leaves_no_partial_copy(world: World,
                                                places: tuple[Path, Path]) -> None:
    src_dir, tgt_dir = places
    sv, tgt = source(src_dir, "cancel", 6 * MiB), target(tgt_dir, "cancel")
    assert set_backup(world, "cancel", sv, tgt, keep_last=2, rate_limit=MiB)["ok"]
    job = run_backup(world, "cancel")
    deadline = time.monotonic() + 20
    while props(world, job)["BytesDone"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert subvols_in(tgt), "receive has not made its subvolume yet"
    r = world.root.call(job, JOB_IFACE, "Cancel", "a{sv}", [{}])
    assert r["ok"], r
    p = wait_state(world, job, ENDED, timeout=30)
    assert p["State"] == "cancelled" and "deleted" in p["Message"], p
    assert subvols_in(tgt) == []


def test_kill_mid_send_then_next_run_cleans_up_and_sends_incrementally(
        world: World, places: tuple[Path, Path]) -> None:
    src_dir, tgt_dir = places
    sv, tgt = source(src_dir, "kill", 256 * 1024), target(tgt_dir, "kill")
    assert set_backup(world, "kill", sv, tgt, keep_last=3)["ok"]
    first = sent(ran(world, "kill")).name
    write(sv / "dir" / "more", 6 * MiB)
    assert set_backup(world, "kill", sv, tgt, keep_last=3, rate_limit=MiB,
                      replace=True)["ok"]
    job = run_backup(world, "kill")
    deadline = time.monotonic() + 20
    while props(world, job)["BytesDone"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    world.sb.kill_daemon()
    world.sb.start_daemon()
    p = props(world, job)
    assert p["State"] == "interrupted", p
    assert subvols_in(tgt) == [first], "the killed run's partial copy is still there"
    assert set_backup(world, "kill", sv, tgt, keep_last=3, replace=True)["ok"]
    p = ran(world, "kill")
    assert p["Details"]["incremental"] is True and p["Details"]["parent"] == first, p
    snap = sent(p)
    assert digest(tgt / snap.name) == digest(snap)


@pytest.fixture(scope="module")
def small_fs(world: World) -> Iterator[LoopFs]:
    fs = add_fs(world, "200M", "btrfsd-bk-small", 0)
    yield fs
    remove_fs(world, fs)


def test_a_full_target_ends_as_nospace_naming_it(world: World, places: tuple[Path, Path],
                                                 small_fs: LoopFs) -> None:
    src_dir, _ = places
    sv = source(src_dir, "big", 0)
    subprocess.run(["dd", "if=/dev/zero", f"of={sv}/fill", "bs=1M", "count=260",
                    "status=none"], check=True)
    tgt = target(small_fs.mount_point, "full")
    assert set_backup(world, "full", sv, tgt, keep_last=1)["ok"]
    p = wait_state(world, run_backup(world, "full"), ENDED, timeout=60)
    assert p["State"] == "failed" and p["Details"]["error_name"] == "NoSpace", p
    assert str(tgt) in p["Message"], p
    assert subvols_in(tgt) == []
    call(world, "RemoveBackup", "sa{sv}", "full", {})


def test_bad_input_is_refused_and_changes_nothing(world: World,
                                                  places: tuple[Path, Path]) -> None:
    src_dir, tgt_dir = places
    sv = source(src_dir, "bad", 0)
    other = world.sb.filesystems[1].mount_point
    shm = Path(tempfile_dir())
    (tgt_dir / "file").write_text("x")
    (tgt_dir / "link").symlink_to(tgt_dir)
    open_dir = target(tgt_dir, "open")
    open_dir.chmod(0o777)
    taken = target(tgt_dir, "taken")
    assert set_backup(world, "taker", sv, taken, keep_last=1)["ok"]
    cases = {
        # each run's retention would delete the other's copies
        "another's target": (sv, f"{taken}/", {"keep_last": 1}, "InvalidArgument"),
        "another's target, .": (sv, f"{taken}/.", {"keep_last": 1}, "InvalidArgument"),
        "not btrfs": (sv, shm, {"keep_last": 1}, "NotBtrfs"),
        "same filesystem": (sv, src_dir, {"keep_last": 1}, "InvalidArgument"),
        "not a directory": (sv, tgt_dir / "file", {"keep_last": 1}, "InvalidArgument"),
        "a symlink": (sv, tgt_dir / "link", {"keep_last": 1}, "InvalidArgument"),
        "writable by others": (sv, open_dir, {"keep_last": 1}, "InvalidArgument"),
        "not a subvolume": (src_dir, other, {"keep_last": 1}, "InvalidArgument"),
        "keeps nothing": (sv, other, {}, "InvalidArgument"),
        "unknown option": (sv, other, {"keep_last": 1, "colour": 3}, "InvalidArgument"),
        "relative": ("rel", other, {"keep_last": 1}, "InvalidArgument"),
    }
    before = call(world, "ListBackups", "a{sv}", {})["body"][0]
    for why, (s, t, opts, error) in cases.items():
        r = set_backup(world, "bad", s, t, **opts)
        assert not r["ok"] and r["error"] == f"org.btrfsd1.Error.{error}", (why, r)
        assert "Traceback" not in r["message"]
    bad_type = call(world, "SetBackup", "sssa{sv}", "bad", str(sv), str(other),
                    {"keep_last": V("s", "seven")})
    assert bad_type["error"] == "org.btrfsd1.Error.InvalidArgument", bad_type
    for member in ("RunBackup", "RemoveBackup"):
        r = call(world, member, "sa{sv}", "no-such-backup", {})
        assert r["error"] == "org.btrfsd1.Error.NotFound", r
    # an unprivileged caller is refused before anything is looked at
    for r in (set_backup(world, "bad", sv, other, caller=world.user, keep_last=1),
              call(world, "RunBackup", "sa{sv}", "no-such", {}, caller=world.user),
              call(world, "RemoveBackup", "sa{sv}", "no-such", {}, caller=world.user)):
        assert not r["ok"] and r["error"] in DENIED, r
    assert call(world, "ListBackups", "a{sv}", {})["body"][0] == before
    assert call(world, "ListBackups", "a{sv}", {}, caller=world.user)["ok"]
    assert call(world, "RemoveBackup", "sa{sv}", "taker", {})["ok"]
    shutil.rmtree(shm)


def tempfile_dir() -> str:
    """A root-owned directory on a filesystem that is not btrfs (tmpfs)."""
    d = Path("/dev/shm") / f"btrfsd-bk-{uuid.uuid4().hex[:6]}"
    d.mkdir(mode=0o755)
    return str(d)


def test_btrfsctl_backup_set_list_run_remove(world: World, places: tuple[Path, Path]) -> None:
    src_dir, tgt_dir = places
    sv, tgt = source(src_dir, "cli", 128 * 1024), target(tgt_dir, "cli")
    r = ctl(world, "backup", "set", "cli", str(sv), str(tgt), "--daily", "7")
    assert r.returncode == 0, r.stderr
    r = ctl(world, "--json", "backup", "list")
    assert r.returncode == 0 and json.loads(r.stdout)["cli"]["daily"] == 7, r
    r = ctl(world, "--json", "backup", "run", "cli")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["State"] == "completed", r.stdout
    assert len(subvols_in(tgt)) == 1
    r = ctl(world, "backup", "run", "no-such")
    assert r.returncode != 0 and "no-such" in r.stderr and "Traceback" not in r.stderr
    assert ctl(world, "backup", "remove", "cli").returncode == 0
    assert "cli" not in json.loads(ctl(world, "--json", "backup", "list").stdout)


def test_a_schedule_with_backup_starts_one_sending_its_new_snapshot(
        world: World, places: tuple[Path, Path]) -> None:
    src_dir, tgt_dir = places
    sv, tgt = source(src_dir, "sched", 128 * 1024), target(tgt_dir, "sched")
    assert set_backup(world, "sched", sv, tgt, keep_last=2)["ok"]
    spec = {"subvolume": V("s", str(sv)), "every": V("t", 3600), "keep_last": V("u", 3),
            "backup": V("s", "sched")}
    try:
        # the backup must back up the schedule's subvolume
        other = source(src_dir, "sched-other", 0)
        r = call(world, "SetSchedule", "sa{sv}a{sv}", "bk-sched",
                 {**spec, "subvolume": V("s", str(other))}, {})
        assert r["error"] == "org.btrfsd1.Error.InvalidArgument", r
        r = call(world, "SetSchedule", "sa{sv}a{sv}", "bk-sched",
                 {**spec, "backup": V("s", "no-such")}, {})
        assert r["error"] == "org.btrfsd1.Error.InvalidArgument", r
        assert call(world, "SetSchedule", "sa{sv}a{sv}", "bk-sched", spec, {})["ok"]
        listed = call(world, "GetSchedules", "a{sv}", {})["body"][0]["bk-sched"]
        assert listed["backup"] == "sched"
        r = call(world, "RunSchedule", "sa{sv}", "bk-sched", {})
        assert r["ok"] and r["body"][0]["backup_job"] != "/", r
        p = wait_state(world, r["body"][0]["backup_job"], ENDED, timeout=60)
        assert p["State"] == "completed", p
        assert p["Details"]["snapshot"] == r["body"][0]["snapshot"], p
        snap = Path(r["body"][0]["snapshot"])
        assert show(tgt / snap.name)["Received UUID"] == show(snap)["UUID"]
    finally:
        call(world, "RemoveSchedule", "sa{sv}", "bk-sched", {})
        call(world, "RemoveBackup", "sa{sv}", "sched", {})


def test_restore_sends_a_copy_back_incrementally_against_the_original(
        world: World, places: tuple[Path, Path]) -> None:
    src_dir, tgt_dir = places
    sv, tgt = source(src_dir, "rs", 2 * MiB), target(tgt_dir, "rs")
    assert set_backup(world, "rs", sv, tgt, keep_last=3)["ok"]
    first = sent(ran(world, "rs"))
    write(sv / "dir" / "more", 256 * 1024)
    second = sent(ran(world, "rs"))
    dest = src_dir / "rs-back"
    dest.mkdir()
    # the source's filesystem holds the first copy's original: only the change travels
    r = ctl(world, "--json", "backup", "restore", "rs", str(tgt / second.name), str(dest))
    assert r.returncode == 0, r.stderr
    p = json.loads(r.stdout)
    assert p["State"] == "completed" and p["Operation"] == "backup-restore", p
    assert p["Details"]["incremental"] is True and p["Details"]["parent"] == first.name, p
    back = dest / second.name
    assert digest(back) == digest(second)
    assert "readonly" in show(back)["Flags"]
    assert show(back)["Received UUID"] == show(second)["UUID"]

    def restore(copy: str, where: Path | str) -> dict[str, Any]:
        return call(world, "RestoreBackup", "sssa{sv}", "rs", copy, str(where), {})

    open_dir = target(src_dir, "rs-open")
    open_dir.chmod(0o777)
    (src_dir / "rs-file").write_text("x")
    for copy, where, error in [
            (second.name, dest, "AlreadyExists"),  # the name is taken there
            ("../" + second.name, dest, "InvalidArgument"),
            ("no-such", dest, "NotFound"),
            (first.name, src_dir / "rs-file", "InvalidArgument"),
            (first.name, open_dir, "InvalidArgument"),
            (first.name, "/dev/shm", "NotBtrfs")]:
        r = restore(copy, where)
        assert r["error"] == f"org.btrfsd1.Error.{error}", (copy, where, r)
    assert subvols_in(dest) == [second.name] and subvols_in(open_dir) == []


@pytest.fixture(scope="module")
def spare(world: World) -> Iterator[LoopFs]:
    """A target filesystem tests may unmount or make read-only."""
    fs = add_fs(world, "300M", "btrfsd-bk-spare", 0)
    yield fs
    remove_fs(world, fs)


def mounted(world: World, fs: LoopFs, *opts: str) -> None:
    subprocess.run(["mount", "-t", "btrfs", *opts, fs.device, str(fs.mount_point)],
                   check=True)
    wait_for_fs(world, fs)


def test_target_unmounted_mid_send_fails_named_then_a_run_works(
        world: World, places: tuple[Path, Path], spare: LoopFs) -> None:
    src_dir, _ = places
    sv, tgt = source(src_dir, "umount", 4 * MiB), target(spare.mount_point, "umount")
    assert set_backup(world, "umount", sv, tgt, keep_last=2, rate_limit=MiB)["ok"]
    job = run_backup(world, "umount")
    deadline = time.monotonic() + 20
    while props(world, job)["BytesDone"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    subprocess.run(["umount", "-l", str(spare.mount_point)], check=True)
    try:
        p = wait_state(world, job, ENDED, timeout=30)
        assert p["State"] == "failed" and p["Details"]["error_name"] == "NotFound", p
        assert str(tgt) in p["Message"] and "unmounted" in p["Message"], p
        assert call(world, "GetStatus", "a{sv}", {})["ok"]
    finally:
        if not spare.mount_point.is_mount():
            mounted(world, spare)
    assert subvols_in(tgt) == [], "the unfinished copy is still there"
    assert set_backup(world, "umount", sv, tgt, keep_last=2, replace=True)["ok"]
    copy = tgt / sent(ran(world, "umount")).name
    assert subvols_in(tgt) == [copy.name] and "readonly" in show(copy)["Flags"]
    call(world, "RemoveBackup", "sa{sv}", "umount", {})


def test_read_only_target_is_refused_named_and_nothing_is_made(
        world: World, places: tuple[Path, Path], spare: LoopFs) -> None:
    src_dir, _ = places
    sv, tgt = source(src_dir, "ro", 64 * 1024), target(spare.mount_point, "ro")
    assert set_backup(world, "ro", sv, tgt, keep_last=2)["ok"]
    subprocess.run(["mount", "-o", "remount,ro", str(spare.mount_point)], check=True)
    try:
        r = call(world, "RunBackup", "sa{sv}", "ro", {})
        assert r["error"] == "org.btrfsd1.Error.Failed", r
        assert str(tgt) in r["message"] and "read-only" in r["message"], r
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(spare.mount_point)], check=True)
    assert subvols_in(tgt) == []
    assert not (sv / ".snapshots").exists(), "a snapshot was taken for nothing"
    call(world, "RemoveBackup", "sa{sv}", "ro", {})


def test_a_users_snapshot_name_cannot_get_a_subvolume_on_the_target_deleted(
        world: World, places: tuple[Path, Path]) -> None:
    """The clean-up of unfinished copies before a run must not delete a writable
    subvolume on the target only because the source's owner named a read-only snapshot
    of their subvolume like it."""
    src_dir, tgt_dir = places
    sv, tgt = source(src_dir, "owned", 64 * 1024), target(tgt_dir, "owned")
    user = pwd.getpwnam(TEST_USER)
    os.chown(sv, user.pw_uid, user.pw_gid)
    btrfs("subvolume", "create", str(tgt / "precious"))  # the administrator's, writable
    (tgt / "precious" / "keep").write_text("mine\n")
    subprocess.run([*world.sb.as_user(user.pw_name), "btrfs", "subvolume", "snapshot",
                    "-r", str(sv), str(sv / "precious")], check=True, capture_output=True)
    assert set_backup(world, "owned", sv, tgt, keep_last=2)["ok"]
    ran(world, "owned")
    assert (tgt / "precious" / "keep").read_text() == "mine\n", \
        "a run deleted a subvolume btrfsd did not make"


GRANT_RUN = """
polkit.addRule(function(action, subject) {
    if (subject.user == "USER" && action.id == "org.btrfsd1.backup-run") {
        return polkit.Result.YES;
    }
});
""".replace("USER", TEST_USER)


def test_running_backups_does_not_allow_restoring_into_any_root_directory(
        world: World, places: tuple[Path, Path]) -> None:
    """The owner of a source names the copies (btrfsd snapshots into a .snapshots they
    own, and they rename what is in it); a restore into a root-only directory such as
    /etc/systemd/system would then place their files under a name of their choice
    (a unit drop-in). backup-run therefore runs the configured backups only."""
    src_dir, tgt_dir = places
    user = pwd.getpwnam(TEST_USER)
    sv, tgt = source(src_dir, "named", 64 * 1024), target(tgt_dir, "named")
    os.chown(sv, user.pw_uid, user.pw_gid)
    as_user = world.sb.as_user(TEST_USER)
    subprocess.run([*as_user, "mkdir", str(sv / ".snapshots")], check=True)
    spec = {"subvolume": V("s", str(sv)), "every": V("t", 3600), "keep_last": V("u", 3)}
    root_only = target(src_dir, "etc-like")
    remove = world.sb.install_rules("40-btrfsd-test-backup-run.rules", GRANT_RUN)
    try:
        assert call(world, "SetSchedule", "sa{sv}a{sv}", "named", spec, {})["ok"]
        snap = Path(call(world, "RunSchedule", "sa{sv}", "named", {})["body"][0]["snapshot"])
        subprocess.run([*as_user, "mv", str(snap), str(snap.parent / "evil.service.d")],
                       check=True)
        assert set_backup(world, "named", sv, tgt, keep_last=2, schedule="named")["ok"]
        deadline = time.monotonic() + 10
        while True:  # polkitd picks the rule up within a moment
            r = call(world, "RunBackup", "sa{sv}", "named", {}, caller=world.user)
            if r["ok"] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert r["ok"], r  # backup-run runs the configured backup
        p = wait_state(world, r["body"][0], ENDED, timeout=60)
        assert p["State"] == "completed", p
        assert subvols_in(tgt) == ["evil.service.d"]
        r = call(world, "RestoreBackup", "sssa{sv}", "named", "evil.service.d",
                 str(root_only), {}, caller=world.user)
        assert r["error"] in DENIED, r
        assert subvols_in(root_only) == []
    finally:
        remove()
        call(world, "RemoveSchedule", "sa{sv}", "named", {})
        call(world, "RemoveBackup", "sa{sv}", "named", {})
