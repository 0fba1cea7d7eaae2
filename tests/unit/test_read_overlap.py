"""bus/auth.py: a read runs while polkit is asked (_read_while_asking). Its outcome waits
for polkit's answer: an allowed caller gets it, a refused one gets the refusal only, once
the read ended; what a read changes waits in until_allowed() for the answer."""

from __future__ import annotations

import asyncio

import pytest
from dbus_fast import Message
from dbus_fast.errors import DBusError

from btrfsd.bus import auth, polkit
from btrfsd.bus.polkit import ACCESS_DENIED, Authority
from btrfsd.errors import NotFound


class Polkit:
    """An Authority that answers ``allow`` after ``delay`` seconds."""

    def __init__(self, allow: bool, delay: float = 0.02) -> None:
        self.allow, self.delay = allow, delay
        self.lately: set[tuple[str, str]] = {(":1.42", "org.btrfsd1.read")}

    async def uid_of(self, sender: str) -> int:
        return 1000

    def note_allowed(self, sender: str, action: str) -> None:
        self.lately.add((sender, action))

    def forget_allowed(self, sender: str, action: str) -> None:
        self.lately.discard((sender, action))

    async def check(self, sender: str, action: str, interactive: bool,
                    details: object = None) -> tuple[bool, bool]:
        await asyncio.sleep(self.delay)
        return self.allow, False


MSG = Message(destination="org.btrfsd1", path="/org/btrfsd1", interface="org.btrfsd1.Manager",
              member="GetStatus", sender=":1.42")


def run(allow: bool, read: object, fake: Polkit | None = None) -> object:
    async def go() -> object:
        return await auth._read_while_asking(fake or Polkit(allow), MSG,
                                             "org.btrfsd1.read", {}, read)  # type: ignore[arg-type]
    return asyncio.run(go())


def test_an_allowed_read_answers_and_may_change_what_it_must() -> None:
    done: list[str] = []

    async def read() -> str:
        await auth.until_allowed()
        done.append("synced")
        return "answer"

    assert run(True, read()) == "answer" and done == ["synced"]


def test_a_refused_read_changes_nothing_and_tells_nothing() -> None:
    done: list[str] = []

    async def syncs() -> str:
        await auth.until_allowed()
        done.append("synced")  # never: the refusal ends the wait
        return "answer"

    fake = Polkit(False)
    with pytest.raises(DBusError) as e:
        run(False, syncs(), fake)
    assert e.value.type == ACCESS_DENIED and done == []
    assert not fake.lately  # refused: its next reads wait for polkit

    async def fails() -> str:  # its own error (before polkit answered) is not told
        raise NotFound("/secret does not exist.")

    with pytest.raises(DBusError) as e:
        run(False, fails())
    assert e.value.type == ACCESS_DENIED

    async def slow() -> str:  # the refusal comes once the read ended
        await asyncio.sleep(0.1)
        done.append("read ended")
        return "answer"

    with pytest.raises(DBusError):
        run(False, slow())
    assert done == ["read ended"]


def test_until_allowed_outside_such_a_read_returns_at_once() -> None:
    asyncio.run(asyncio.wait_for(auth.until_allowed(), 1))


def test_only_root_and_callers_allowed_lately_start_early(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """A caller polkit refuses must not learn from the refusal's timing how long a read
    took: reads start early only for root and for a connection polkit allowed lately
    (and did not refuse since)."""
    authority = Authority(None)  # type: ignore[arg-type]  # no bus: uids given below
    uids = {":1.1": 0, ":1.2": 1000, ":1.3": 1000}

    async def uid_of(sender: str) -> int:
        return uids[sender]

    monkeypatch.setattr(authority, "uid_of", uid_of)
    now = [1000.0]
    monkeypatch.setattr(polkit.time, "monotonic", lambda: now[0])

    def early(sender: str, action: str = "org.btrfsd1.read") -> bool:
        msg = Message(destination="org.btrfsd1", path="/", member="GetStatus", sender=sender)
        return asyncio.run(auth._early(authority, msg, action))

    assert early(":1.1") and not early(":1.2") and not early(":1.3")
    authority.note_allowed(":1.2", "org.btrfsd1.read")
    assert early(":1.2") and not early(":1.3") and not early(":1.2", "org.btrfsd1.other")
    now[0] += polkit.ALLOWED_LATELY_FOR + 1
    assert not early(":1.2")
    authority.note_allowed(":1.2", "org.btrfsd1.read")
    authority.forget_allowed(":1.2", "org.btrfsd1.read")
    assert not early(":1.2") and early(":1.1")
