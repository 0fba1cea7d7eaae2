"""Corrupt state cannot stop the daemon: with garbage in every state and config-dir file
the sandbox daemon starts, serves, and has moved each file aside; a records journal torn
by a crash is read up to its torn line."""

from __future__ import annotations

import json
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


def test_a_records_journal_torn_by_a_crash_does_not_stop_the_daemon(world: World) -> None:
    # as kill -9 in the middle of appending a line: the whole lines count, the torn one
    # is dropped, and the journal is folded into snapshots.json at the start
    sb = world.sb
    records, journal = sb.state_dir / "snapshots.json", sb.state_dir / "snapshots.journal"
    sb.stop("btrfsd")
    before = {p: p.read_bytes() if p.exists() else None for p in (records, journal)}
    uuid = "00000000-0000-0000-0000-00000000abcd"
    try:
        n = json.loads(records.read_text()).get("journal", 0) if records.exists() else 0
        whole = {"n": n + 1, "set": {uuid: {"schedule": "x", "filesystem": "y",
                                            "created": 5.0}}}
        journal.write_bytes(json.dumps(whole).encode() + b"\n"
                            + b'{"n": %d, "forget": ["0000' % (n + 2))
        sb.start_daemon()
        r = world.manager_call(world.root, "GetSchedules", "a{sv}", {})
        assert r["ok"], r
        saved = json.loads(records.read_text())
        assert saved["journal"] == n + 1 and uuid in saved["snapshots"]
        assert journal.read_bytes() == b""
        assert "torn by a crash" in sb.daemon_log()
    finally:
        sb.stop("btrfsd")
        for p, data in before.items():
            if data is None:
                p.unlink(missing_ok=True)
            else:
                p.write_bytes(data)
        sb.start_daemon()
