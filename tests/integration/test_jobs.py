"""Scrub and balance as Job objects, on loop images with real data, through the real bus
and polkitd. Progress is slowed with the kernel's scrub speed limit, never faked."""

from __future__ import annotations

import pwd
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import DENIED, FS_IFACE, Caller, V, World
from sandbox import TEST_USER, LoopFs

JOB_IFACE = "org.btrfsd1.Job"
PROPS = "org.freedesktop.DBus.Properties"
MiB = 1 << 20
SLOW = 40 * MiB  # scrub speed limit: 600 MiB take 15 s, for jobs a test stops early
PACED = 200 * MiB  # 600 MiB in ~3 s: slow enough to see progress, quick to finish
UNKNOWN_UID = 2**32 - 1
# Job methods, each exercised for authorization below (test_auth checks the list).
COVERED_JOB_METHODS = {"Cancel", "Pause", "Resume"}


# -- helpers ------------------------------------------------------------------------------
def ok(r: dict[str, Any]) -> Any:
    assert r["ok"], r
    return r["body"]


def props(w: World, path: str, caller: Caller | None = None) -> dict[str, Any]:
    return ok((caller or w.root).call(path, PROPS, "GetAll", "s", [JOB_IFACE]))[0]  # type: ignore[no-any-return]


def wait_state(w: World, path: str, states: set[str], timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = props(w, path)
        if p["State"] in states:
            return p
        time.sleep(0.1)
    raise AssertionError(f"{path} never reached {states}; last {p}")


def job_call(w: World, caller: Caller, path: str, member: str) -> dict[str, Any]:
    return caller.call(path, JOB_IFACE, member, "a{sv}", [{}])


def start(w: World, fs: LoopFs, member: str, caller: Caller | None = None,
          **opts: Any) -> dict[str, Any]:
    return w.fs_call(caller or w.root, member, "a{sv}", opts, fs=fs)


def speed_limit(fs: LoopFs) -> int:
    return int(Path(f"/sys/fs/btrfs/{fs.uuid}/devinfo/1/scrub_speed_max").read_text())


def jobs(w: World) -> list[str]:
    return ok(w.manager_call(w.root, "GetJobs", "a{sv}", {}))[0]  # type: ignore[no-any-return]


def balance_status(fs: LoopFs) -> str:
    # btrfs balance status exits 1 while a balance runs or is paused: no check=True
    return subprocess.run(["btrfs", "balance", "status", str(fs.mount_point)],
                          capture_output=True, text=True).stdout


def wait_for_fs(w: World, fs: LoopFs) -> None:
    deadline = time.monotonic() + 15
    while w.fs_path(fs) not in fs_paths(w):
        assert time.monotonic() < deadline, "daemon never saw the new filesystem"
        time.sleep(0.05)


def fs_paths(w: World) -> list[str]:
    return ok(w.manager_call(w.root, "GetFilesystems", "a{sv}", {}))[0]  # type: ignore[no-any-return]


def add_fs(w: World, size: str, label: str, data_mib: int) -> LoopFs:
    fs = w.sb.add_filesystem(size, label)
    if data_mib:
        subprocess.run(["dd", "if=/dev/zero", f"of={fs.mount_point}/data", "bs=1M",
                        f"count={data_mib}", "status=none"], check=True)
        subprocess.run(["sync", "-f", str(fs.mount_point)], check=True)
    wait_for_fs(w, fs)
    return fs


def remove_fs(w: World, fs: LoopFs) -> None:
    fs.destroy()
    w.sb.filesystems.remove(fs)


@pytest.fixture(scope="module")
def data_fs(world: World) -> Iterator[LoopFs]:
    """A 2 GiB image holding 600 MiB of data in several chunks."""
    fs = add_fs(world, "2G", "btrfsd-jobs", 600)
    yield fs
    remove_fs(world, fs)


@pytest.fixture
def idle(world: World, data_fs: LoopFs) -> Iterator[LoopFs]:
    """data_fs with no job running before and after the test."""
    yield data_fs
    for path in jobs(world):
        p = props(world, path)
        if p["Filesystem"] == world.fs_path(data_fs) and p["State"] in ("running", "paused"):
            job_call(world, world.root, path, "Cancel")
            wait_state(world, path, {"cancelled", "completed", "failed"})


def slow_scrub(w: World, fs: LoopFs, caller: Caller | None = None, limit: int = SLOW) -> str:
    return ok(start(w, fs, "StartScrub", caller, limit=V("t", limit)))[0]  # type: ignore[no-any-return]


# -- scrub --------------------------------------------------------------------------------
def test_scrub_progress_is_seen_moving_then_completed(world: World, idle: LoopFs) -> None:
    watcher = Caller(world.sb, TEST_USER)  # anyone may watch
    try:
        watcher.subscribe("type='signal',sender='org.btrfsd1'")
        path = slow_scrub(world, idle, limit=PACED)
        assert speed_limit(idle) == PACED
        final = wait_state(world, path, {"completed", "failed", "cancelled"})
        time.sleep(0.2)
        sigs = [s for s in watcher.signals() if s["path"] == path]
    finally:
        watcher.close()
    progress = [s["body"][1]["Progress"] for s in sigs
                if s["member"] == "PropertiesChanged" and "Progress" in s["body"][1]]
    running = [p for p in progress if p < 1.0]
    assert len(running) >= 3 and running == sorted(running), progress
    assert running[-1] > running[0]
    completed = [s["body"] for s in sigs if s["member"] == "Completed"]
    assert completed == [[True, final["Message"]]], completed
    assert final["State"] == "completed" and final["Progress"] == 1.0
    assert final["Details"]["csum_errors"] == 0
    assert final["BytesDone"] >= 600 * MiB
    assert speed_limit(idle) == 0, "speed limit not put back"
    # signals per second stay at about two (the poll interval is 0.5 s)
    changes = [s for s in sigs if s["member"] == "PropertiesChanged"]
    seconds = (final["EndTime"] - final["StartTime"]) / 1e6
    assert len(changes) <= 2 * seconds + 4, (len(changes), seconds)
    last = ok(world.fs_call(world.user, "GetLastResults", "a{sv}", {}, fs=idle))[0]
    assert last["scrub"]["state"] == "completed"
    assert last["scrub"]["job_id"] == int(path.rsplit("/", 1)[1])


def _physical_offset(fs: LoopFs, file: Path) -> int:
    """Where the file's first block lies in the image: FIEMAP gives btrfs' logical
    address, btrfs-map-logical turns it into the device offset."""
    out = subprocess.run(["filefrag", "-v", "-b4096", str(file)], check=True,
                         capture_output=True, text=True).stdout
    m = re.search(r"^\s*0:\s+0\.\.\s*\d+:\s+(\d+)\.\.", out, re.MULTILINE)
    assert m, out
    logical = int(m.group(1)) * 4096
    out = subprocess.run(["btrfs-map-logical", "-l", str(logical), fs.device], check=True,
                         capture_output=True, text=True).stdout
    m = re.search(r"physical (\d+)", out)
    assert m, out
    return int(m.group(1))


def test_scrub_reports_a_corrupted_block(world: World) -> None:
    fs = add_fs(world, "512M", "btrfsd-corrupt", 0)
    try:
        victim = fs.mount_point / "victim"
        victim.write_bytes(bytes(range(256)) * 1024)  # 256 KiB, checksummed
        subprocess.run(["sync", "-f", str(fs.mount_point)], check=True)
        offset = _physical_offset(fs, victim)
        with open(fs.image, "r+b") as img:
            img.seek(offset)
            img.write(b"\xde\xad" * 2048)  # one 4 KiB block of garbage
            img.flush()
        subprocess.run(["sync"], check=True)
        path = ok(start(world, fs, "StartScrub", readonly=V("b", True)))[0]
        final = wait_state(world, path, {"completed", "failed"})
        assert final["State"] == "completed"
        assert final["Details"]["csum_errors"] >= 1, final["Details"]
        assert final["Success"] is False
        assert "csum" in final["Message"] and "errors found" in final["Message"], final
    finally:
        remove_fs(world, fs)


def test_already_running_names_the_job_and_answers_meanwhile(world: World,
                                                             idle: LoopFs) -> None:
    path = slow_scrub(world, idle)
    for member, opts in (("StartScrub", {}), ("StartBalance", {"data_usage": V("u", 10)})):
        r = start(world, idle, member, **opts)
        assert not r["ok"] and r["error"] == "org.btrfsd1.Error.AlreadyRunning", r
        assert path in r["message"]
        # the hint front ends word themselves: which job is in the way
        d = r["details"]
        assert d["hint"] == "job-running" and d["operation"] == "scrub", d
        assert path.endswith(f"/{d['job_id']}") and path not in d["message"], d
    # the daemon keeps answering other callers while the scrub runs
    for _ in range(20):
        ok(world.fs_call(world.user, "ListSubvolumes", "a{sv}", {}))
    assert props(world, path)["State"] == "running"
    ok(job_call(world, world.root, path, "Cancel"))
    final = wait_state(world, path, {"cancelled", "completed"})
    assert final["State"] == "cancelled" and final["Cancelable"] is False
    assert speed_limit(idle) == 0


def test_scrub_pause_and_resume_from_checkpoint(world: World, idle: LoopFs) -> None:
    path = slow_scrub(world, idle, limit=PACED)
    time.sleep(1.0)
    ok(job_call(world, world.root, path, "Pause"))
    paused = wait_state(world, path, {"paused"})
    time.sleep(0.6)
    assert props(world, path)["BytesDone"] == paused["BytesDone"]  # nothing moves
    ok(job_call(world, world.root, path, "Resume"))
    final = wait_state(world, path, {"completed", "failed", "cancelled"})
    assert final["State"] == "completed" and final["Success"], final
    # resumed where it stopped: about one pass over the data, not two
    assert final["BytesDone"] < 2 * 600 * MiB


# -- balance ------------------------------------------------------------------------------
def test_balance_with_usage_filter_completes(world: World, idle: LoopFs) -> None:
    path = ok(start(world, idle, "StartBalance", data_usage=V("u", 50),
                    metadata_usage=V("u", 50)))[0]
    final = wait_state(world, path, {"completed", "failed", "cancelled"})
    assert final["State"] == "completed" and final["Success"], final
    assert final["Details"]["data_usage"] == 50


def test_balance_pause_resume_then_cancel(world: World, idle: LoopFs) -> None:
    path = ok(start(world, idle, "StartBalance", data_usage=V("u", 100)))[0]
    ok(job_call(world, world.root, path, "Pause"))
    wait_state(world, path, {"paused"})
    assert "paused" in balance_status(idle)
    ok(job_call(world, world.root, path, "Resume"))
    final = wait_state(world, path, {"completed", "failed", "cancelled"})
    assert final["State"] == "completed", final

    path = ok(start(world, idle, "StartBalance", data_usage=V("u", 100)))[0]
    ok(job_call(world, world.root, path, "Cancel"))
    final = wait_state(world, path, {"completed", "failed", "cancelled"})
    assert final["State"] == "cancelled", final
    assert "No balance found" in balance_status(idle)


# -- bad input ----------------------------------------------------------------------------
@pytest.mark.parametrize("member,opts", [
    ("StartBalance", {}),  # no filter and no full=true
    ("StartBalance", {"data_usage": V("u", 101)}),
    ("StartBalance", {"data_usage": V("s", "5")}),
    ("StartBalance", {"full": V("b", True), "data_usage": V("u", 5)}),
    ("StartScrub", {"limit": V("s", "100M")}),
    ("StartScrub", {"bogus": V("b", True)}),
])
def test_bad_job_options_are_refused(world: World, idle: LoopFs, member: str,
                                     opts: dict[str, Any]) -> None:
    before = jobs(world)
    r = start(world, idle, member, **opts)
    assert not r["ok"] and r["error"] == "org.btrfsd1.Error.InvalidArgument", r
    assert jobs(world) == before


def test_controlling_a_finished_job_is_refused(world: World, idle: LoopFs) -> None:
    path = ok(start(world, idle, "StartBalance", data_usage=V("u", 0)))[0]
    wait_state(world, path, {"completed"})
    for member in ("Pause", "Resume", "Cancel"):
        r = job_call(world, world.root, path, member)
        assert not r["ok"] and r["error"] == "org.btrfsd1.Error.InvalidArgument", r


# -- authorization ------------------------------------------------------------------------
def test_unprivileged_user_can_neither_start_nor_control(world: World, idle: LoopFs) -> None:
    before = jobs(world)
    for member, opts in (("StartScrub", {}), ("StartBalance", {"data_usage": V("u", 5)})):
        r = start(world, idle, member, world.user, **opts)
        assert not r["ok"] and r["error"] in DENIED, r
    assert jobs(world) == before
    path = slow_scrub(world, idle)
    for member in sorted(COVERED_JOB_METHODS):
        r = job_call(world, world.user, path, member)
        assert not r["ok"] and r["error"] in DENIED, r
    assert props(world, path, world.user)["State"] == "running"  # reading is allowed
    # the example rules' admin group may cancel anyone's job
    ok(job_call(world, world.admin, path, "Cancel"))
    assert wait_state(world, path, {"cancelled"})["StartedByUid"] == 0


GRANT_OWN_JOBS = """
polkit.addRule(function(action, subject) {
    if (subject.user == "USER" &&
        (action.id == "org.btrfsd1.maintenance" || action.id == "org.btrfsd1.job-cancel")) {
        return polkit.Result.YES;
    }
});
""".replace("USER", TEST_USER)


def test_controlling_another_users_job_needs_the_other_user_action(world: World,
                                                                  idle: LoopFs) -> None:
    remove = world.sb.install_rules("40-btrfsd-test-own-jobs.rules", GRANT_OWN_JOBS)
    try:
        deadline = time.monotonic() + 10
        while True:  # polkitd picks up new rules within a moment
            r = start(world, idle, "StartScrub", world.user, limit=V("t", SLOW))
            if r["ok"] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        own = ok(r)[0]
        uid = props(world, own)["StartedByUid"]
        assert uid == pwd.getpwnam(TEST_USER).pw_uid
        ok(job_call(world, world.user, own, "Pause"))  # own job: its action suffices
        wait_state(world, own, {"paused"})
        ok(job_call(world, world.user, own, "Resume"))
        ok(job_call(world, world.user, own, "Cancel"))  # own job: job-cancel suffices
        wait_state(world, own, {"cancelled"})

        other = slow_scrub(world, idle)  # root's job
        for member in ("Cancel", "Pause"):  # Pause and Resume follow Cancel
            r = job_call(world, world.user, other, member)
            assert not r["ok"] and r["error"] in DENIED, r
            assert "job-cancel-other-user" in r["message"]
        assert props(world, other)["State"] == "running"
    finally:
        remove()


# -- restarts and operations btrfsd did not start -------------------------------------------
def test_killed_daemon_reports_the_scrub_as_interrupted(world: World, idle: LoopFs) -> None:
    path = slow_scrub(world, idle)
    time.sleep(1.0)
    world.sb.kill_daemon()
    world.sb.start_daemon()
    p = props(world, path)
    assert p["State"] == "interrupted" and p["Cancelable"] is False, p
    assert "stopped while this scrub ran" in p["Message"]
    last = ok(world.fs_call(world.root, "GetLastResults", "a{sv}", {}, fs=idle))[0]
    assert last["scrub"]["state"] == "interrupted"
    assert speed_limit(idle) == 0, "speed limit of the killed run not put back"
    assert path in jobs(world)


def test_stopped_daemon_leaves_balance_paused_and_offers_it_again(world: World,
                                                                  idle: LoopFs) -> None:
    path = ok(start(world, idle, "StartBalance", data_usage=V("u", 100)))[0]
    wait_state(world, path, {"running"})
    world.sb.restart_daemon()  # SIGTERM: the running balance is paused, not lost
    p = wait_state(world, path, {"paused"})
    assert p["Operation"] == "balance" and p["StartedByUid"] == 0
    ok(job_call(world, world.root, path, "Resume"))
    assert wait_state(world, path, {"completed", "cancelled", "failed"})["State"] == "completed"


def test_scrub_started_by_btrfs_cli_is_shown_as_a_job(world: World, idle: LoopFs) -> None:
    limit = Path(f"/sys/fs/btrfs/{idle.uuid}/devinfo/1/scrub_speed_max")
    limit.write_text(str(SLOW))
    cli = subprocess.Popen(["btrfs", "scrub", "start", "-B", str(idle.mount_point)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        r = start(world, idle, "StartScrub")
        assert not r["ok"] and r["error"] == "org.btrfsd1.Error.AlreadyRunning", r
        assert "outside btrfsd" in r["message"]
        found = [j for j in jobs(world) if props(world, j)["StartedByUid"] == UNKNOWN_UID
                 and props(world, j)["State"] == "running"]
        assert len(found) == 1
        ok(job_call(world, world.root, found[0], "Cancel"))
        assert wait_state(world, found[0], {"cancelled", "completed"})["State"] == "cancelled"
        assert cli.wait(15) != 0  # the CLI's scrub was cancelled
    finally:
        if cli.poll() is None:
            cli.kill()
        limit.write_text("0")


def test_job_objects_are_in_object_manager(world: World, idle: LoopFs) -> None:
    path = ok(start(world, idle, "StartBalance", data_usage=V("u", 0)))[0]
    wait_state(world, path, {"completed"})
    objects = ok(world.root.call("/org/btrfsd1", "org.freedesktop.DBus.ObjectManager",
                                 "GetManagedObjects"))[0]
    assert JOB_IFACE in objects[path]
    assert objects[path][JOB_IFACE]["Filesystem"] == world.fs_path(idle)
    assert FS_IFACE in objects[world.fs_path(idle)]


def test_scrub_cancelled_by_the_btrfs_cli_is_not_reported_as_completed(world: World,
                                                                       idle: LoopFs) -> None:
    path = slow_scrub(world, idle)
    time.sleep(0.5)
    subprocess.run(["btrfs", "scrub", "cancel", str(idle.mount_point)], check=True,
                   capture_output=True)
    final = wait_state(world, path, {"completed", "cancelled", "failed"})
    assert final["State"] == "cancelled" and not final["Success"], final
    assert "outside btrfsd" in final["Message"]
