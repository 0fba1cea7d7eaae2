"""Corrupt state cannot stop the daemon: with garbage in every state and config-dir file
the sandbox daemon starts, serves, and has moved each file aside."""

from __future__ import annotations

import time
from pathlib import Path

from conftest import World

STATE_FILES = ("jobs.json", "snapshots.json", "quota-alerts.json", "maintenance-runs.json")
CONFIG_FILES = ("schedules.json", "maintenance.json")
# Not UTF-8, not JSON: the kind of file that used to stop the daemon at start.
GARBAGE = b"\xff\xfe{\x00\x80 not json \xc3\x28"


def _asides(path: Path) -> set[Path]:
    return set(path.parent.glob(path.name + ".invalid-*"))


def test_garbage_in_every_state_file_does_not_stop_the_daemon(world: World) -> None:
    sb = world.sb
    paths = [sb.state_dir / n for n in STATE_FILES] + [sb.workdir / "etc" / n
                                                       for n in CONFIG_FILES]
    sb.stop("btrfsd")
    # what the other tests left, to put back afterwards
    before = {p: p.read_bytes() if p.exists() else None for p in paths}
    old_asides = {p: _asides(p) for p in paths}
    try:
        for p in paths:
            p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            p.write_bytes(GARBAGE)
        sb.start_daemon()
        r = world.manager_call(world.root, "GetFilesystems", "a{sv}", {})
        assert r["ok"], r
        r = world.manager_call(world.root, "GetSchedules", "a{sv}", {})
        assert r["ok"] and r["body"][0] == {}, r
        # the quota alert state is read by the watcher's first pass, just after the start
        deadline = time.monotonic() + 10
        while True:
            new = {p: _asides(p) - old_asides[p] for p in paths}
            if all(new.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        for p in paths:
            [aside] = new[p]
            assert aside.read_bytes() == GARBAGE, p
            # either gone, or a fresh file the daemon wrote since
            assert not p.exists() or p.read_bytes() != GARBAGE, p
        assert "is not UTF-8 text" in sb.daemon_log()
        # an operator sees it without reading the log: Manager.GetStatus, btrfsctl status
        status = world.manager_call(world.user, "GetStatus", "a{sv}", {})
        assert status["ok"], status
        problems = status["body"][0]["problems"]
        for p in paths:
            assert any(str(p) in line and "moved to" in line for line in problems), (p,
                                                                                     problems)
    finally:
        sb.stop("btrfsd")
        for p in paths:
            for aside in _asides(p) - old_asides[p]:
                aside.unlink()
            if before[p] is None:
                p.unlink(missing_ok=True)
            else:
                p.write_bytes(before[p])  # type: ignore[arg-type]
        sb.start_daemon()
