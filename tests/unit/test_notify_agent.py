"""btrfsd-notify's logic without buses: throttling on a fake clock, whose alert it is,
what a notification says, the action's command, Busy back-off, level merging."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import Message, MessageType

from btrfsd.notify import actions
from btrfsd.notify.agent import Agent
from btrfsd.notify.messages import CRITICAL, Note, job_note, quota_note
from btrfsd.notify.mine import absolute, job_is_mine, mount_roots, quota_subject
from btrfsd.notify.sysbus import BUSY, Btrfsd, busy_delay
from btrfsd.notify.throttle import Throttle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_no_repeat_within_quiet_time_but_a_higher_level_is_news() -> None:
    clock = Clock()
    t = Throttle(clock, quiet=60, burst=10, per=1)
    assert t.admit("q", 0)
    assert not t.admit("q", 0) and t.repeat("q", 0)
    assert t.admit("q", 2)  # exceeded after warning
    assert not t.admit("q", 1)  # critical after exceeded: nothing new
    assert t.admit("other", 0)
    clock.now += 61
    assert t.admit("q", 0)  # past the quiet time a new crossing is shown


def test_rate_limit_burst_then_one_per_period_and_counts_drops() -> None:
    clock = Clock()
    t = Throttle(clock, quiet=3600, burst=3, per=10)
    assert [t.admit(i) for i in range(5)] == [True, True, True, False, False]
    assert t.take_dropped() == 2 and t.take_dropped() == 0
    clock.now += 10
    assert t.admit(5) and not t.admit(6)
    clock.now += 100  # refills up to the burst only
    assert [t.admit(i) for i in range(7, 12)] == [True, True, True, False, False]
    assert not t.repeat(6)  # a dropped alert was not shown: it may come again


def test_busy_delay_follows_btrfsd_or_doubles() -> None:
    assert busy_delay("Too many reads at once; ask again in 3 s", 0) == 3.0
    assert busy_delay("busy", 0) == 1.0 and busy_delay("busy", 3) == 8.0
    assert busy_delay("busy", 10) == 30.0


MOUNTINFO = """\
36 25 0:32 / /srv rw,relatime shared:1 - btrfs /dev/loop0 rw
37 25 0:32 /@home /home rw,relatime shared:2 - btrfs /dev/loop0 rw
38 25 0:33 / /other rw - btrfs /dev/loop1 rw
39 25 0:32 /@home/my\\040docs /mnt/my\\040docs rw - btrfs /dev/loop0 rw
"""


def test_subvolume_paths_map_through_the_closest_mount() -> None:
    roots = mount_roots(MOUNTINFO, ["/srv", "/home", "/mnt/my docs"])
    assert roots == [("", "/srv"), ("@home", "/home"), ("@home/my docs", "/mnt/my docs")]
    assert absolute("@home/alice", roots) == ("/home/alice", "/home")
    assert absolute("@home/my docs/x", roots) == ("/mnt/my docs/x", "/mnt/my docs")
    assert absolute("data", roots) == ("/srv/data", "/srv")
    assert absolute("data", [("@home", "/home")]) is None


def _rows(path: str, qgroupid: int = 260) -> list[list[Any]]:
    return [[qgroupid, path, 100, 100, 200, 0]]


def test_quota_subject_yours_by_owner_all_for_admins(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    info = f"1 1 0:1 / {tmp_path} rw - btrfs /dev/x rw\n"
    me = os.getuid()
    mine = quota_subject(260, _rows("mine"), [str(tmp_path)], False, me, info)
    assert mine is not None and mine.where == str(tmp_path / "mine")
    assert mine.mount == str(tmp_path)
    # someone else's subvolume: not shown to a user, shown to an admin
    assert quota_subject(260, _rows("mine"), [str(tmp_path)], False, me + 1, info) is None
    admin = quota_subject(260, _rows("mine"), [str(tmp_path)], True, me + 1, info)
    assert admin is not None and admin.where == str(tmp_path / "mine")
    # btrfsd did not list the qgroup to this caller: nothing, even for a named path
    assert quota_subject(261, _rows("mine"), [str(tmp_path)], True, me, info) is None
    # a qgroup above level 0 has no path: admins see it by name
    hi = quota_subject(1 << 48 | 7, _rows("", 1 << 48 | 7), [str(tmp_path)], True, me, info)
    assert hi is not None and hi.where == "qgroup 1/7"
    assert quota_subject(1 << 48 | 7, _rows("", 1 << 48 | 7), [str(tmp_path)], False, me,
                         info) is None
    assert job_is_mine(5, False, 5) and not job_is_mine(5, False, 6) and job_is_mine(5, True, 6)


def test_messages() -> None:
    n = quota_note("/home/alice", "/home", 29 << 20, 30 << 20, "exceeded")
    assert n.summary == "/home/alice is full" and "29.0 MiB of 30.0 MiB used (96 %)" in n.body
    assert n.urgency == CRITICAL and (n.kind, n.target) == ("quota", "/home")
    scrub = {"Operation": "scrub", "State": "completed", "Success": True,
             "Message": "Scrub finished: 2 errors", "Details": {"csum_errors": 2}}
    found = job_note(scrub, "/srv", "/org/btrfsd1/jobs/3")
    assert found is not None and found.summary == "Scrub on /srv found errors"
    assert job_note({**scrub, "Details": {}}, "/srv", "/j") is None
    failed = job_note({"Operation": "balance", "State": "failed", "Message": "No space"},
                      "/srv", "/j")
    assert failed is not None and failed.summary == "Balance on /srv failed"
    assert job_note({"Operation": "balance", "State": "cancelled"}, "/srv", "/j") is None


def test_open_command_expansion_keeps_paths_whole() -> None:
    note = Note("s", "b", 1, "quota", "/mnt/my docs", "/mnt/my docs")
    argv = actions.expand("term -e {detail}", note)
    assert argv == ["term", "-e", "btrfsctl", "quota", "show", "/mnt/my docs"]
    assert actions.expand("xdg-open 'http://localhost:9090/btrfsd#{kind}'", note) == \
        ["xdg-open", "http://localhost:9090/btrfsd#quota"]
    job = Note("Scrub on /srv found errors", "b", 2, "job", "/org/btrfsd1/jobs/1", "/srv")
    assert actions.expand("{detail}", job) == ["btrfsctl", "scrub", "status", "/srv"]
    assert "{detail}" in actions.DEFAULT_COMMAND
    with pytest.raises(ValueError):
        actions.expand("'unclosed", note)


class FakeBus:
    """Replies with Busy ``busy`` times, then with ``body``."""

    def __init__(self, busy: int, body: list[Any]) -> None:
        self.busy = busy
        self.body = body
        self.calls = 0
        self.unique_name = ":1.5"

    async def call(self, msg: Message) -> Message:
        self.calls += 1
        if self.calls <= self.busy:
            return Message.new_error(Message(destination=":1.5", path="/", member="X",
                                             serial=1), BUSY, "ask again in 2 s")
        return Message(message_type=MessageType.METHOD_RETURN, reply_serial=1,
                       signature="sba(tstttt)", body=self.body)


async def test_busy_is_retried_after_waiting_and_reads_are_shared() -> None:
    waits: list[float] = []

    async def sleep(s: float) -> None:
        waits.append(s)

    bus = FakeBus(2, ["qgroup", False, [[260, "x", 1, 1, 2, 0]]])
    b = Btrfsd(bus, clock=Clock(), sleep=sleep)  # type: ignore[arg-type]
    import asyncio
    first, second = await asyncio.gather(b.quota_rows("/fs"), b.quota_rows("/fs"))
    assert first == second == [[260, "x", 1, 1, 2, 0]]
    assert waits == [2.0, 2.0] and bus.calls == 3  # one read for both askers
    gives_up = Btrfsd(FakeBus(9, []), clock=Clock(), sleep=sleep,  # type: ignore[arg-type]
                      attempts=3)
    from dbus_fast.errors import DBusError
    with pytest.raises(DBusError) as e:
        await gives_up.quota_rows("/fs")
    assert e.value.type == BUSY


class FakeBtrfsd:
    def __init__(self, rows: list[list[Any]], mount: str, admin: bool = False) -> None:
        self.rows = rows
        self.mount = mount
        self.admin = admin
        self.reads = 0

    async def quota_rows(self, fs_path: str) -> list[list[Any]]:
        self.reads += 1
        return self.rows

    async def mount_points(self, fs_path: str) -> list[str]:
        return [self.mount]

    async def sees_everything(self) -> bool:
        return self.admin

    async def properties(self, path: str, iface: str) -> dict[str, Any]:
        return {"Operation": "scrub", "State": "failed", "Message": "device 1: I/O error",
                "StartedByUid": os.getuid(), "Filesystem": "/fs"}


class FakeDesktop:
    def __init__(self) -> None:
        self.shown: list[tuple[Note, int]] = []

    async def show(self, note: Note, replaces: int = 0) -> int:
        self.shown.append((note, replaces))
        return len(self.shown)


def warning(level: str, qgroupid: int = 260) -> Message:
    return Message(message_type=MessageType.SIGNAL, path="/fs",
                   interface="org.btrfsd1.Filesystem", member="QuotaWarning",
                   signature="sttts", body=["", qgroupid, 29 << 20, 30 << 20, level])


async def test_agent_merges_one_pass_and_does_not_repeat(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    info = f"1 1 0:1 / {tmp_path} rw - btrfs /dev/x rw\n"
    btrfsd = FakeBtrfsd(_rows("home"), str(tmp_path))
    desktop = FakeDesktop()
    agent = Agent(btrfsd, desktop, Throttle(Clock()), uid=os.getuid(),  # type: ignore[arg-type]
                  settle=0.01, mountinfo=lambda: info)
    for level in ("warning", "critical", "exceeded"):
        agent.on_signal(warning(level))
    await agent.idle()
    assert [n.summary for n, _ in desktop.shown] == [f"{tmp_path}/home is full"]
    assert btrfsd.reads == 1
    agent.on_signal(warning("exceeded"))  # the same crossing again (a daemon restart)
    agent.on_signal(warning("warning"))
    await agent.idle()
    assert len(desktop.shown) == 1 and btrfsd.reads == 1  # dropped before any read
    # another user's subvolume (hidden from them by btrfsd): nothing
    agent.on_signal(warning("warning", qgroupid=999))
    await agent.idle()
    assert len(desktop.shown) == 1
    # a failed job of theirs
    agent.on_signal(Message(message_type=MessageType.SIGNAL, path="/org/btrfsd1/jobs/4",
                            interface="org.btrfsd1.Job", member="Completed", signature="bs",
                            body=[False, "failed"]))
    await agent.idle()
    assert desktop.shown[-1][0].summary == f"Scrub on {tmp_path} failed"
