"""The schedules' records journal (journal.py, schedules.py): a change is one appended
line; a torn last line (kill -9 mid-write) is dropped on load and never stops the daemon;
a bad line before the end is moved aside with the file; the records file of an older
btrfsd (no journal) still loads; entries already folded into the records file are not
applied twice; the journal is folded in at load, at exit, and once it is long."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from btrfsd.core import schedules as schedules_module
from btrfsd.core.journal import Journal
from btrfsd.core.schedules import JOURNAL_FILE, RECORDS_FILE, Schedules, SnapshotRecord
from btrfsd.core.state import state_problems


def _record(created: float, schedule: str = "h") -> dict[str, object]:
    return SnapshotRecord(schedule=schedule, filesystem="fs-1", created=created).model_dump()


async def _loaded(var: Path) -> Schedules:
    # schedule h exists (last runs of schedules that do not are dropped)
    (var / "etc").mkdir(exist_ok=True)
    (var / "etc" / "schedules.json").write_text(json.dumps({"version": 1, "schedules": {
        "h": {"name": "h", "subvolume": "/mnt", "every": 3600, "keep_last": 1}}}))
    sched = Schedules(None, var / "etc", var)  # type: ignore[arg-type]
    await sched.load()
    return sched


def test_a_journal_reads_back_what_was_appended(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    assert journal.read() == []
    for n in range(3):
        journal.append({"n": n})
    assert journal.lines == 3
    assert Journal(tmp_path / "j").read() == [{"n": 0}, {"n": 1}, {"n": 2}]
    journal.clear()
    assert journal.read() == [] and (tmp_path / "j").read_bytes() == b""


@pytest.mark.parametrize("torn", [b'{"n": 3, "set": {"u', b'{"n": 3}\x00\x00\n', b"\xff"])
def test_a_torn_last_line_is_dropped_and_cut_off(tmp_path: Path, torn: bytes) -> None:
    path = tmp_path / "j"
    path.write_bytes(b'{"n": 1}\n{"n": 2}\n' + torn)
    journal = Journal(path)
    assert journal.read() == [{"n": 1}, {"n": 2}]
    assert path.read_bytes() == b'{"n": 1}\n{"n": 2}\n'  # the next line starts clean
    journal.append({"n": 3})
    assert Journal(path).read() == [{"n": 1}, {"n": 2}, {"n": 3}]


def test_a_bad_line_before_the_end_moves_the_journal_aside(tmp_path: Path) -> None:
    path = tmp_path / "j"
    path.write_bytes(b'{"n": 1}\nnot json\n{"n": 3}\n')
    assert Journal(path).read() == [{"n": 1}]
    assert not path.exists() and len(list(tmp_path.glob("j.invalid-*"))) == 1
    assert any(str(path) in p for p in state_problems())


async def test_records_of_an_older_btrfsd_load(tmp_path: Path) -> None:
    (tmp_path / RECORDS_FILE).write_text(json.dumps({
        "version": 1, "snapshots": {"u1": _record(5.0)}, "last_run": {"h": 5.0}}))
    sched = await _loaded(tmp_path)
    assert sched.records.snapshots["u1"].created == 5.0
    assert sched.records.last_run == {"h": 5.0}


async def test_a_crash_mid_append_leaves_the_daemon_starting_with_the_rest(
        tmp_path: Path) -> None:
    (tmp_path / RECORDS_FILE).write_text(json.dumps({
        "version": 1, "snapshots": {"u1": _record(5.0)}, "last_run": {"h": 5.0},
        "journal": 4}))
    lines = [{"n": 4, "forget": ["u1"]},  # in the file already: not applied again
             {"n": 5, "set": {"u2": _record(6.0)}, "runs": {"h": 6.0}},
             {"n": 6, "forget": ["u1"]},
             {"n": 7, "set": {"u3": _record(7.0)}, "runs": {"h": 7.0}}]
    text = "".join(json.dumps(x) + "\n" for x in lines)
    (tmp_path / JOURNAL_FILE).write_text(text[:-20])  # killed in the middle of line 7
    sched = await _loaded(tmp_path)
    assert list(sched.records.snapshots) == ["u2"]
    assert sched.records.last_run == {"h": 6.0}
    # folded in at load: the file holds it all, the journal is empty
    saved = json.loads((tmp_path / RECORDS_FILE).read_text())
    assert list(saved["snapshots"]) == ["u2"] and saved["journal"] == 6
    assert (tmp_path / JOURNAL_FILE).read_bytes() == b""
    # the next entries are numbered on from there
    await sched._log({"runs": {"h": 8.0}})
    assert json.loads((tmp_path / JOURNAL_FILE).read_text())["n"] == 7


async def test_changes_go_to_the_journal_and_are_folded_in_when_long_and_at_exit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schedules_module, "JOURNAL_LINES", 3)
    sched = await _loaded(tmp_path)
    journal, records = tmp_path / JOURNAL_FILE, tmp_path / RECORDS_FILE
    await sched._log({"runs": {"h": 1.0}})
    await sched._log({"runs": {"h": 2.0}})
    assert len(journal.read_text().splitlines()) == 2 and not records.exists()
    await sched._log({"runs": {"h": 3.0}})  # the third line: the whole file instead
    assert journal.read_bytes() == b"" and json.loads(records.read_text())["journal"] == 3
    sched.records.last_run["h"] = 4.0
    await sched._log({"runs": {"h": 4.0}})
    await sched.close()
    assert journal.read_bytes() == b""
    assert json.loads(records.read_text())["journal"] == 4
