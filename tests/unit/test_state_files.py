"""State files that cannot stop the daemon: every corrupt kind is moved aside and the
daemon starts empty; atomic writes with names of their own; settings with bad quota
alert values; mount-event rescans that coalesce; the open files limit."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from btrfsd import config, daemon
from btrfsd.core import filesystems, state
from btrfsd.core.filesystems import Filesystem, Registry
from btrfsd.core.quota_alerts import ALERT_FILE, QuotaWatcher
from btrfsd.core.state import STATE_FILE, PersistedState, load_model, write_atomic


def _temporaries(d: Path) -> list[Path]:
    return [p for p in d.iterdir() if p.name.endswith(".tmp")]


def test_two_writers_of_one_file_leave_a_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "state" / STATE_FILE
    texts = {w: json.dumps({"writer": w, "pad": str(w) * 200_000}) for w in ("a", "b")}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def writer(w: str) -> None:
        try:
            start.wait()
            for _ in range(30):
                write_atomic(path, texts[w])
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(w,)) for w in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert path.read_text() in texts.values()
    assert not _temporaries(path.parent)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_short_writes_still_write_everything(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write
    calls = 0

    def one_byte(fd: int, data: Any) -> int:
        nonlocal calls
        calls += 1
        return real_write(fd, bytes(data[:1]))

    monkeypatch.setattr(state.os, "write", one_byte)
    text = json.dumps({"é": "ü" * 50})
    write_atomic(tmp_path / STATE_FILE, text)
    assert (tmp_path / STATE_FILE).read_text() == text
    assert calls == len(text.encode())


def test_a_failed_write_keeps_the_old_file_and_no_temporary(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / STATE_FILE
    write_atomic(path, "old")

    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(state.os, "fsync", no_space)
    with pytest.raises(OSError):
        write_atomic(path, "new")
    assert path.read_text() == "old" and not _temporaries(tmp_path)


def _bad_json(p: Path) -> None:
    p.write_text('{"next_job_id": 3,')


def _not_utf8(p: Path) -> None:
    p.write_bytes(b'{"next_job_id": 3, "x": "\xff\xfe\x80"}')


def _wrong_types(p: Path) -> None:
    p.write_text(json.dumps({"next_job_id": "many", "running": []}))


def _directory(p: Path) -> None:
    p.mkdir()
    (p / "inside").write_text("kept")


CORRUPT: dict[str, Callable[[Path], None]] = {
    "bad JSON": _bad_json, "not UTF-8": _not_utf8, "wrong types": _wrong_types,
    "a directory": _directory}


def _asides(path: Path) -> list[Path]:
    return sorted(path.parent.glob(path.name + ".invalid-*"))


def _content(p: Path) -> bytes | list[str]:
    return sorted(c.name for c in p.iterdir()) if p.is_dir() else p.read_bytes()


def _check_moved_aside(path: Path, load: Callable[[], object], empty: object,
                       corrupt: Callable[[Path], None]) -> None:
    corrupt(path)
    first = _content(path)
    assert load() == empty
    assert not os.path.lexists(path)
    [aside] = _asides(path)
    assert _content(aside) == first  # nothing of it is lost
    # the same trouble again (within the same second): a new name, the first one kept
    corrupt(path)
    assert load() == empty
    asides = _asides(path)
    assert len(asides) == 2 and aside in asides and _content(aside) == first


@pytest.mark.parametrize("kind", CORRUPT)
def test_a_corrupt_state_file_is_moved_aside(tmp_path: Path, kind: str,
                                             caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / STATE_FILE
    with caplog.at_level(logging.ERROR):
        _check_moved_aside(path, lambda: load_model(path, PersistedState, "job state"),
                           PersistedState(), CORRUPT[kind])
    # the log says where it went and how to get it back
    assert "moved it to" in caplog.text and "move it back" in caplog.text
    # and the next save works where the bad file was
    write_atomic(path, PersistedState(next_job_id=4).model_dump_json())
    assert load_model(path, PersistedState, "job state").next_job_id == 4


def test_an_unreadable_state_file_is_moved_aside(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # root reads a mode 000 file anyway, so the read itself fails here
    path = tmp_path / STATE_FILE
    path.write_text(PersistedState(next_job_id=9).model_dump_json())
    real = Path.read_bytes

    def eio(self: Path) -> bytes:
        if self == path:
            raise OSError(5, "Input/output error")
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", eio)
    assert load_model(path, PersistedState, "job state") == PersistedState()
    monkeypatch.undo()
    [aside] = _asides(path)
    assert json.loads(aside.read_text())["next_job_id"] == 9


def test_a_missing_file_is_empty_and_a_valid_one_stays(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE
    assert load_model(path, PersistedState, "job state") == PersistedState()
    assert load_model(tmp_path / "no" / "dir" / STATE_FILE, PersistedState, "x") == \
        PersistedState()
    write_atomic(path, PersistedState(next_job_id=5).model_dump_json())
    assert load_model(path, PersistedState, "job state").next_job_id == 5
    assert not _asides(path)


@pytest.mark.parametrize("kind", [*CORRUPT, "a count out of range"])
def test_corrupt_quota_alert_state_is_moved_aside(tmp_path: Path, kind: str) -> None:
    watcher = QuotaWatcher(Registry(), None, config.QuotaAlertSettings(),  # type: ignore[arg-type]
                           tmp_path, lambda alert: None)

    def load() -> dict[str, dict[str, int]]:
        watcher._fired = {"stale": {"1": 1}}
        watcher.load()
        return watcher._fired

    def out_of_range(p: Path) -> None:  # crossings() would index past the levels
        p.write_text(json.dumps({"fs": {"256": 7}}))

    corrupt = CORRUPT.get(kind, out_of_range)
    _check_moved_aside(tmp_path / ALERT_FILE, load, {}, corrupt)


def test_quota_alert_state_reads_what_it_wrote(tmp_path: Path) -> None:
    watcher = QuotaWatcher(Registry(), None, config.QuotaAlertSettings(),  # type: ignore[arg-type]
                           tmp_path, lambda alert: None)
    write_atomic(tmp_path / ALERT_FILE, json.dumps({"fs": {"256": 2, "257": 3}}))
    watcher.load()
    assert watcher._fired == {"fs": {"256": 2, "257": 3}}


def test_temporaries_of_an_interrupted_write_are_removed_at_load(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE
    write_atomic(path, PersistedState(next_job_id=2).model_dump_json())
    old = tmp_path / f".{STATE_FILE}.k3j_x9ab.tmp"
    old.write_text("half")
    hour_ago = time.time() - 3600  # before this process began: a crashed write's
    os.utime(old, (hour_ago, hour_ago))
    mine = tmp_path / f".{STATE_FILE}.m1n3_abc.tmp"  # this process may be writing it
    mine.write_text("being written")
    (tmp_path / f".{STATE_FILE}.other").write_text("not ours")
    assert load_model(path, PersistedState, "job state").next_job_id == 2
    assert _temporaries(tmp_path) == [mine] and (tmp_path / f".{STATE_FILE}.other").exists()


# -- settings ----------------------------------------------------------------------------
def _settings(tmp_path: Path, text: str) -> config.Loaded:
    f = tmp_path / "btrfsd.toml"
    f.write_text(text)
    loaded = config.load_settings(f)
    assert f.read_text() == text  # the administrator's file is never changed
    return loaded


def test_a_bad_quota_alert_override_is_left_out(tmp_path: Path) -> None:
    settings, problems = _settings(tmp_path, """
log_level = "debug"
[quota_alerts]
warning = 70
[quota_alerts.overrides]
"/home/alice" = { warning = 90 }
"/home/bob" = { warning = 99, critical = 90 }
"/home/carol" = { warnin = 85 }
"/home/dave" = 5
"fs-uuid" = { critical = 96 }
""")
    qa = settings.quota_alerts
    assert settings.log_level == "debug" and qa.warning == 70
    assert qa.overrides == {"/home/alice": {"warning": 90}, "fs-uuid": {"critical": 96}}
    assert qa.for_target("fs-uuid", ["/home/bob"]).warning == 70
    assert len(problems) == 3
    assert all("btrfsd.toml" in p and "left out" in p for p in problems)
    assert "/home/bob" in problems[0] and "warning < critical" in problems[0]


def test_a_bad_quota_alert_setting_falls_back_to_its_default(tmp_path: Path) -> None:
    settings, problems = _settings(tmp_path, """
[quota_alerts]
interval = "often"
warning = 150
critical = 90
margin = 5
typo = 1
overrides = { "/home/alice" = { critical = 85 } }
""")
    qa = settings.quota_alerts
    assert (qa.interval, qa.warning, qa.critical, qa.margin) == (30, 80, 90, 5)
    assert qa.overrides == {"/home/alice": {"critical": 85}}
    assert len(problems) == 3
    assert "interval" in problems[0] + problems[1] and "default 30" in problems[0] + problems[1]
    assert "typo: not a setting" in problems[2]


def test_levels_out_of_order_all_fall_back_and_overrides_follow(tmp_path: Path) -> None:
    settings, problems = _settings(tmp_path, """
[quota_alerts]
warning = 96
interval = 5
overrides = { "/home/alice" = { critical = 85 } }
""")
    qa = settings.quota_alerts
    assert (qa.interval, qa.warning, qa.critical) == (5, 80, 95)
    # 85 was above warning 96 as written, and is above the default 80 too: kept
    assert qa.overrides == {"/home/alice": {"critical": 85}}
    assert len(problems) == 1 and "default levels" in problems[0]


def test_quota_alerts_that_is_not_a_table(tmp_path: Path) -> None:
    settings, problems = _settings(tmp_path, "quota_alerts = 5\n")
    assert settings.quota_alerts == config.QuotaAlertSettings() and len(problems) == 1


def test_other_bad_settings_still_refuse_to_start(tmp_path: Path) -> None:
    f = tmp_path / "btrfsd.toml"
    f.write_text("refresh_interval = -1\n[quota_alerts]\nwarning = 150\n")
    with pytest.raises(config.ConfigError, match="refresh_interval: input should be greater"):
        config.load_settings(f)
    f.write_bytes(b"log_level = '\xff'\n")
    with pytest.raises(config.ConfigError):
        config.load_settings(f)


def test_the_daemon_starts_with_bad_quota_alert_values(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture,
                                                       ) -> None:
    f = tmp_path / "btrfsd.toml"
    f.write_text('[quota_alerts]\noverrides = { "/x" = { warning = 101 } }\n')
    served: list[config.Settings] = []

    async def serve(settings: config.Settings) -> None:
        served.append(settings)

    monkeypatch.setattr(daemon, "_serve", serve)
    monkeypatch.setattr(daemon.os, "geteuid", lambda: 0)
    monkeypatch.setattr(daemon.logsetup, "setup", lambda level, fmt: None)
    with caplog.at_level(logging.ERROR):
        assert daemon.main(["--config", str(f), "--state-dir", str(tmp_path)]) == 0
    assert served and served[0].quota_alerts.overrides == {}
    assert "override for '/x' left out" in caplog.text


# -- open files limit --------------------------------------------------------------------
@pytest.mark.parametrize("limits,nr_open,expected", [
    ((1024, 524288), None, (524288, 524288)),
    ((1024, resource.RLIM_INFINITY), 1048576, (1048576, resource.RLIM_INFINITY)),
    ((4096, 4096), None, None),
])
def test_the_soft_open_files_limit_is_raised(monkeypatch: pytest.MonkeyPatch,
                                             limits: tuple[int, int], nr_open: int | None,
                                             expected: tuple[int, int] | None) -> None:
    set_to: list[tuple[int, int]] = []
    monkeypatch.setattr(daemon.resource, "getrlimit", lambda r: limits)
    monkeypatch.setattr(daemon.resource, "setrlimit", lambda r, v: set_to.append(v))
    real = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: str(nr_open)
                        if str(self) == "/proc/sys/fs/nr_open" else real(self, *a, **k))
    daemon.raise_fd_limit(logging.getLogger("test"))
    assert set_to == ([expected] if expected else [])


# -- rescans -----------------------------------------------------------------------------
async def test_a_burst_of_mount_events_is_one_or_two_rescans(
        monkeypatch: pytest.MonkeyPatch) -> None:
    scans = 0
    running = threading.Event()
    release = threading.Event()

    def slow_scan() -> dict[str, Filesystem]:
        nonlocal scans
        scans += 1
        running.set()
        release.wait(5)
        return {}

    monkeypatch.setattr(filesystems, "_scan_and_refresh", slow_scan)
    reg = Registry()
    seen: list[int] = []
    reg.add_listener(lambda added, removed: seen.append(scans))
    reg._request_rescan(from_event=True)
    await asyncio.to_thread(running.wait, 5)
    # 200 mount events and 5 callers while one scan runs: they all share the next one
    for _ in range(200):
        reg._request_rescan(from_event=True)
    callers = [asyncio.create_task(reg.rescan()) for _ in range(5)]
    await asyncio.sleep(0.05)
    assert scans == 1
    release.set()
    await asyncio.gather(*callers)
    assert scans == 2 and seen == [1, 2]
    assert reg._rescan_task is None  # idle again: nothing left running or queued
    # an idle registry rescans at once for a caller, and only once
    await reg.rescan()
    assert scans == 3


async def test_a_failed_rescan_reaches_its_callers_and_the_next_one_runs(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    fail = [True]

    def scan() -> dict[str, Filesystem]:
        if fail[0]:
            raise OSError(5, "mountinfo unreadable")
        return {}

    monkeypatch.setattr(filesystems, "_scan_and_refresh", scan)
    reg = Registry()
    with pytest.raises(OSError, match="mountinfo unreadable"):
        await reg.rescan()
    with caplog.at_level(logging.ERROR):
        fut = reg._request_rescan(from_event=True)
        while not fut.done():
            await asyncio.sleep(0.01)
    assert "rescan after a mount change failed" in caplog.text
    fail[0] = False
    await reg.rescan()  # the registry keeps working


async def test_a_caller_that_gives_up_does_not_cancel_the_shared_rescan(
        monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    monkeypatch.setattr(filesystems, "_scan_and_refresh",
                        lambda: (release.wait(5), {})[1])
    reg = Registry()
    impatient = asyncio.create_task(reg.rescan())
    patient = asyncio.create_task(reg.rescan())
    await asyncio.sleep(0.05)
    impatient.cancel()
    await asyncio.sleep(0)
    release.set()
    await patient
    assert impatient.cancelled()


def test_a_path_with_any_byte_survives_a_save_and_a_load(tmp_path: Path) -> None:
    import asyncio
    import os

    from btrfsd.core.jobs import JobRecord
    from btrfsd.core.state import PersistedState, StateStore

    store = StateStore(tmp_path)
    message = "cannot open " + os.fsdecode(b"/srv/bad\xffname")
    state = PersistedState()
    state.running[1] = JobRecord(id=1, operation="scrub", filesystem="u",
                                 started_by_uid=0, message=message)
    asyncio.run(store.save(state))
    assert store.load().running[1].message == message
    assert not list(tmp_path.glob("*.invalid-*"))
