"""btrfsctl end to end: human output, --json, one-line errors with distinct exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import World
from sandbox import TEST_ADMIN, TEST_USER

CTL = str(Path(sys.executable).parent / "btrfsctl")


def ctl(world: World, *args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    prefix = world.sb.as_user(user) if user else []
    return subprocess.run([*prefix, CTL, *args], env=world.sb.env, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, cwd="/")


def test_snapshot_default_place_json(world: World) -> None:
    d = world.scratch()
    assert ctl(world, "subvolume", "create", str(d / "home")).returncode == 0
    r = ctl(world, "--json", "snapshot", str(d / "home"))
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    snap = Path(data["path"])
    assert snap.parent == d / "home" / ".snapshots" and data["read_only"] is True
    listed = json.loads(ctl(world, "snapshot", "list", str(d / "home"), "--json").stdout)
    assert [s["path"] for s in listed] == [f"{d.name}/home/.snapshots/{snap.name}"]
    r = ctl(world, "snapshot", "delete", str(snap))
    assert r.returncode == 0 and not snap.exists()


def test_human_tables_and_show(world: World) -> None:
    r = ctl(world, "fs", "list")
    assert r.returncode == 0 and world.fs.uuid in r.stdout
    r = ctl(world, "subvolume", "show", str(world.mnt))
    assert r.returncode == 0 and "read_only" in r.stdout


def test_readonly_and_default_commands(world: World) -> None:
    d = world.scratch()
    ctl(world, "subvolume", "create", str(d / "s"))
    assert ctl(world, "subvolume", "readonly", str(d / "s"), "on").returncode == 0
    info = json.loads(ctl(world, "--json", "subvolume", "show", str(d / "s")).stdout)
    assert info["read_only"] is True
    r = ctl(world, "--json", "subvolume", "set-default", str(d / "s"))
    assert r.returncode == 0
    sid = json.loads(r.stdout)["id"]
    assert json.loads(ctl(world, "--json", "subvolume", "get-default", str(world.mnt)).stdout
                      ) == {"id": sid}
    assert ctl(world, "subvolume", "set-default", str(world.mnt)).returncode == 0


def test_errors_are_one_line_with_distinct_codes(world: World) -> None:
    d = world.scratch()
    ctl(world, "subvolume", "create", str(d / "s"))
    cases = [
        (("subvolume", "create", str(d / "s")), None, 4, "Already exists"),
        (("subvolume", "delete", str(d / "missing")), None, 3, "Not found"),
        (("subvolume", "create", "/run/btrfsd-nope/x"), None, 3, "Not found"),
        (("subvolume", "create", "/dev/shm/x"), None, 6, "Not on a btrfs"),
        (("subvolume", "create", str(d / ("x" * 300))), None, 5, "Invalid argument"),
        (("subvolume", "create", str(d / "u")), TEST_USER, 13, "Authentication required"),
    ]
    for args, user, code, sentence in cases:
        r = ctl(world, *args, user=user)
        assert r.returncode == code, (args, r.returncode, r.stderr)
        assert r.stderr.startswith(f"btrfsctl: {sentence}"), r.stderr
        assert "Traceback" not in r.stderr
    r = ctl(world, "--json", "subvolume", "create", str(d / "s"))
    assert json.loads(r.stdout)["error"] == "org.btrfsd1.Error.AlreadyExists"


def test_admin_user_through_cli(world: World) -> None:
    d = world.scratch()
    r = ctl(world, "subvolume", "create", str(d / "a"), user=TEST_ADMIN)
    assert r.returncode == 0, r.stderr
    assert (d / "a").stat().st_ino == 256


def test_daemon_not_running_is_explained(world: World) -> None:
    env = dict(world.sb.env, DBUS_SYSTEM_BUS_ADDRESS=f"unix:path={world.sb.workdir}/nobus")
    r = subprocess.run([CTL, "fs", "list"], env=env, capture_output=True, text=True)
    assert r.returncode == 14 and r.stderr.startswith("btrfsctl: Cannot reach the system bus")
    assert "Traceback" not in r.stderr


def test_scrub_wait_status_and_jobs(world: World) -> None:
    r = ctl(world, "--json", "scrub", "start", str(world.mnt), "--wait")
    assert r.returncode == 0, r.stderr
    job = json.loads(r.stdout)
    assert job["State"] == "completed" and job["Operation"] == "scrub"
    status = json.loads(ctl(world, "--json", "scrub", "status", str(world.mnt)).stdout)
    assert status["running"] == [] and status["last"]["state"] == "completed"
    r = ctl(world, "scrub", "status", str(world.mnt), user=TEST_USER)  # reading is allowed
    assert r.returncode == 0 and "Last scrub: job" in r.stdout, r.stdout
    listed = json.loads(ctl(world, "--json", "jobs").stdout)
    assert job["object_path"] in [j["object_path"] for j in listed]


def test_balance_needs_a_filter_and_bad_sizes_are_usage_errors(world: World) -> None:
    r = ctl(world, "balance", "start", str(world.mnt))
    assert r.returncode == 5 and "full=true" in r.stderr, r.stderr
    r = ctl(world, "scrub", "start", str(world.mnt), "--limit", "12Q/s")
    assert r.returncode == 2
    r = ctl(world, "balance", "start", str(world.mnt), "--data-usage", "150")
    assert r.returncode == 2


def test_ctrl_c_stops_watching_not_the_job(world: World) -> None:
    import signal
    import time

    # enough data that the throttled scrub lasts well past the Ctrl-C, whatever ran before
    d = world.scratch()
    (d / "data").write_bytes(b"\xa5" * (16 << 20))
    subprocess.run(["sync", "-f", str(d)], check=True)
    # as from a terminal: a suite started in the background (nohup, `cmd &` in a script)
    # has SIGINT ignored, every child inherits that, and btrfsctl rightly keeps it so
    proc = subprocess.Popen([CTL, "scrub", "start", str(world.mnt), "--wait", "--limit",
                             "1M/s"], env=world.sb.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        time.sleep(1.5)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 130
        assert "the job keeps running" in err, err
        status = json.loads(ctl(world, "--json", "scrub", "status", str(world.mnt)).stdout)
        assert status["running"] and status["running"][0]["State"] == "running"
        assert ctl(world, "scrub", "cancel", str(world.mnt)).returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 20
    while json.loads(ctl(world, "--json", "scrub", "status", str(world.mnt)).stdout)["running"]:
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_quota_commands(world: World) -> None:
    d = world.scratch()
    sv = d / "q"
    assert ctl(world, "subvolume", "create", str(sv)).returncode == 0
    r = ctl(world, "quota", "set", str(sv), "30M")
    assert r.returncode == 5 and "enable them first" in r.stderr, r.stderr
    try:
        r = ctl(world, "--json", "quota", "enable", str(world.mnt), "--force")
        assert r.returncode == 0, r.stderr
        assert ctl(world, "quota", "set", str(sv), "30M", "--exclusive", "10M").returncode == 0
        shown = json.loads(ctl(world, "--json", "quota", "show", str(world.mnt), "--sync").stdout)
        mine = [q for q in shown["qgroups"] if q["path"] == f"{d.name}/q"]
        assert mine and mine[0]["max_referenced"] == 30 << 20
        assert mine[0]["max_exclusive"] == 10 << 20
        r = ctl(world, "quota", "show", str(world.mnt), user=TEST_USER)  # reading is allowed
        assert r.returncode == 0 and f"{d.name}/q" in r.stdout
        assert ctl(world, "quota", "set", str(sv), "-5G").returncode == 2
        assert ctl(world, "quota", "set", str(sv), "lots").returncode == 2
        assert ctl(world, "quota", "set", str(sv), "none").returncode == 0
        shown = json.loads(ctl(world, "--json", "quota", "show", str(world.mnt)).stdout)
        assert [q["max_referenced"] for q in shown["qgroups"] if q["path"] == f"{d.name}/q"
                ] == [0]
    finally:
        assert ctl(world, "quota", "disable", str(world.mnt)).returncode == 0


def test_status_says_what_is_served(world: World) -> None:
    r = ctl(world, "--json", "status", user=TEST_USER)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["filesystems"] >= 1 and isinstance(data["problems"], list)
    r = ctl(world, "status")
    assert r.returncode == 0 and "filesystem(s)" in r.stdout, r.stderr
