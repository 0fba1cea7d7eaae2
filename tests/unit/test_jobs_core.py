"""Job model, rate estimate, state file, sizes, option rules and ioctl struct layouts."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from dbus_fast import Variant

from btrfsd.bus.options import BalanceOptions, parse_options
from btrfsd.cli.jobs import EXIT_UNSUCCESSFUL, job_exit_code
from btrfsd.core.jobs import Job, JobState, RateMeter
from btrfsd.core.state import STATE_FILE, PersistedState, StateStore
from btrfsd.errors import InvalidArgument
from btrfsd.fs import balance, scrub
from btrfsd.units import format_bytes, parse_size


def test_ioctl_structs_have_the_kernel_sizes() -> None:
    assert scrub._ARGS.size == 1024
    assert balance._ARGS.size == 1024
    # _IOWR(0x94, 27, 1024) as in linux/btrfs.h
    assert scrub.BTRFS_IOC_SCRUB == 0xC400941B
    assert balance.BTRFS_IOC_BALANCE_V2 == 0xC4009420
    assert balance.BTRFS_IOC_BALANCE_CTL == 0x40049421


@pytest.mark.parametrize("text,value", [("4096", 4096), ("100M", 100 << 20), ("1.5G", 3 << 29),
                                        ("20GiB", 20 << 30), ("8k", 8192), ("2 T", 2 << 40)])
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "-1", "abc", "1e3", "5X", "20E", "1.2.3"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_format_bytes() -> None:
    assert format_bytes(0) == "0 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(20 << 30) == "20.0 GiB"


def test_rate_meter_uses_recent_window() -> None:
    m = RateMeter(window=10)
    assert m.add(0, 0) == 0
    assert m.add(5, 500) == 100
    m.add(10, 1000)
    # slows down: the old fast part drops out of the window
    m.add(20, 1100)
    assert m.add(30, 1200) == pytest.approx(10)
    assert RateMeter.expected_end(30, 1200, 2200, 10) == 130
    assert RateMeter.expected_end(30, 1200, 2200, 0) == 0


async def test_job_notifies_only_real_changes_and_ends_once() -> None:
    job = Job(id=1, operation="scrub", filesystem="fs", started_by_uid=1000)
    changes: list[set[str]] = []
    ended: list[Job] = []
    job.listen(lambda j, names: changes.append(names), ended.append)
    job.update(progress=0.5, bytes_done=10)
    job.update(progress=0.5)
    assert changes == [{"progress", "bytes_done"}]
    job.finish(JobState.COMPLETED, "done", success=True)
    assert job.progress == 1.0 and not job.active and ended == [job]
    rec = job.record()
    assert rec.state == "completed" and rec.message == "done"
    job.update(message="later")
    assert rec.message == "done"  # a record is a copy


async def test_job_fields_change_only_through_update() -> None:
    job = Job(id=1, operation="scrub", filesystem="fs", started_by_uid=0)
    seen: list[set[str]] = []
    job.listen(lambda j, names: seen.append(names))
    with pytest.raises(AttributeError, match="update"):
        job.state = JobState.PAUSED
    with pytest.raises(AttributeError, match="no field"):
        job.update(bogus=1)
    assert job.state is JobState.RUNNING and seen == []


async def test_job_update_refuses_worker_threads() -> None:
    job = Job(id=1, operation="scrub", filesystem="fs", started_by_uid=0)
    with pytest.raises(RuntimeError):
        await asyncio.to_thread(job.update, progress=0.5)
    assert job.progress == 0.0


def test_old_state_files_keep_what_to_put_back() -> None:
    # before job kinds, a scrub's speed limits to restore were "restore_speed_limits"
    old = {"id": 3, "operation": "scrub", "filesystem": "u", "state": "running",
           "started_by_uid": 0, "start_time": 1.0, "restore_speed_limits": {"1": 0}}
    rec = PersistedState.model_validate({"running": {"3": old}}).running[3]
    assert rec.undo == {"1": 0} and rec.state is JobState.RUNNING


def test_state_store_roundtrip_and_invalid_file(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    assert store.load().next_job_id == 1
    st = PersistedState(next_job_id=7)
    st.running[3] = Job(id=3, operation="balance", filesystem="fs", started_by_uid=0).record()
    asyncio.run(store.save(st))
    loaded = store.load()
    assert loaded.next_job_id == 7 and loaded.running[3].operation == "balance"
    assert not list((tmp_path / "state").glob(".*tmp"))  # no temporary file left
    (tmp_path / "state" / STATE_FILE).write_text(json.dumps({"next_job_id": "many"}))
    assert store.load().next_job_id == 1
    assert list((tmp_path / "state").glob(STATE_FILE + ".invalid-*"))


@pytest.mark.parametrize("opts,ok", [
    ({}, False),
    ({"full": Variant("b", True)}, True),
    ({"data_usage": Variant("u", 10)}, True),
    ({"metadata_usage": Variant("u", 5), "limit": Variant("u", 2)}, True),
    ({"full": Variant("b", True), "data_usage": Variant("u", 10)}, False),
    ({"data_usage": Variant("u", 101)}, False),
    ({"limit": Variant("u", 0), "data_usage": Variant("u", 1)}, False),
])
def test_balance_options(opts: dict[str, Variant], ok: bool) -> None:
    if ok:
        parse_options(BalanceOptions, opts)
    else:
        with pytest.raises(InvalidArgument):
            parse_options(BalanceOptions, opts)


def test_balance_without_filters_says_how() -> None:
    with pytest.raises(InvalidArgument, match="full=true"):
        parse_options(BalanceOptions, {})


def test_scrub_progress_sums_counts_and_keeps_position() -> None:
    a = scrub.ScrubProgress(csum_errors=1, data_bytes_scrubbed=10, last_physical=50)
    b = scrub.ScrubProgress(csum_errors=2, tree_bytes_scrubbed=5, last_physical=20)
    s = a + b
    assert s.csum_errors == 3 and s.bytes_scrubbed == 15 and s.last_physical == 50
    assert s.error_count == 3


def test_wait_exit_codes() -> None:
    assert job_exit_code("completed", True) == 0
    assert job_exit_code("completed", False) == EXIT_UNSUCCESSFUL
    assert job_exit_code("cancelled", False) == 11
    assert job_exit_code("interrupted", False) == 1
