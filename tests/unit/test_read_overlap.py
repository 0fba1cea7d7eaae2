"""bus/auth.py: a call runs while polkit is asked (_while_asking). Its outcome waits for
polkit's answer: an allowed caller gets it, a refused one gets the refusal only, once the
work ended; what a read changes waits in until_allowed() for the answer, and work in a
worker thread waits at its gate (core/gate.py) before its first change."""

from __future__ import annotations

import asyncio

import pytest
from dbus_fast import Message
from dbus_fast.errors import DBusError

from btrfsd.bus import auth, context, polkit
from btrfsd.bus.polkit import ACCESS_DENIED, Authority
from btrfsd.constants import Action
from btrfsd.core.gate import Gate, GateShut, wait_at
from btrfsd.errors import NotFound


class Polkit:
    """An Authority that answers ``allow`` after ``delay`` seconds."""

    def __init__(self, allow: bool, delay: float = 0.02) -> None:
        self.allow, self.delay = allow, delay
        self.lately: set[tuple[str, str]] = {(":1.42", "org.btrfsd1.read")}

    async def uid_of(self, sender: str) -> int:
        return 1000

    def note_allowed(self, sender: str, action: str, details: object) -> None:
        self.lately.add((sender, action))

    def note_refused(self, sender: str, action: str) -> None:
        self.lately.discard((sender, action))

    async def check(self, sender: str, action: str, interactive: bool,
                    details: object = None) -> tuple[bool, bool]:
        await asyncio.sleep(self.delay)
        return self.allow, False


MSG = Message(destination="org.btrfsd1", path="/org/btrfsd1", interface="org.btrfsd1.Manager",
              member="GetStatus", sender=":1.42")


def run(allow: bool, read: object, fake: Polkit | None = None, gated: bool = False
        ) -> object:
    async def go() -> object:
        return await auth._while_asking(fake or Polkit(allow), MSG,  # type: ignore[arg-type]
                                        "org.btrfsd1.read", {}, read, gated)  # type: ignore[arg-type]
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
    assert auth.current_gate() is None  # and a thread has no gate to wait at


class Telling(Polkit):
    """A Polkit that notes when it answered."""

    def __init__(self, allow: bool) -> None:
        super().__init__(allow, delay=0.2)
        self.answered = False

    async def check(self, sender: str, action: str, interactive: bool,
                    details: object = None) -> tuple[bool, bool]:
        answer = await super().check(sender, action, interactive, details)
        self.answered = True
        return answer


def prepares(steps: list[str], polkit: Telling) -> object:
    """A call that looks in a worker thread, then waits at its gate, then changes; each
    step noted with whether polkit had answered by then."""
    gate = auth.current_gate()
    assert gate is not None

    def work() -> str:
        steps.append(f"looked, answered {polkit.answered}")
        wait_at(gate)
        steps.append(f"changed, answered {polkit.answered}")
        return "made"

    return asyncio.to_thread(work)


def test_work_in_a_thread_changes_only_once_polkit_allowed() -> None:
    for allow in (True, False):
        steps: list[str] = []
        polkit = Telling(allow)

        async def call(steps: list[str] = steps, polkit: Telling = polkit) -> str:
            return await prepares(steps, polkit)  # type: ignore[no-any-return]

        if allow:
            assert run(True, call(), polkit, gated=True) == "made"
            assert steps == ["looked, answered False", "changed, answered True"]
        else:
            with pytest.raises(DBusError) as e:
                run(False, call(), polkit, gated=True)
            assert e.value.type == ACCESS_DENIED
            assert steps == ["looked, answered False"]  # the gate was shut


def test_a_gate_decides_once() -> None:
    gate = Gate()
    gate.open()
    gate.shut()  # too late: open stays open
    gate.wait()
    gate = Gate()
    gate.shut()
    gate.open()  # too late: shut stays shut
    with pytest.raises(GateShut):
        gate.wait()
    wait_at(None)  # no gate: nothing to wait for


def test_a_gate_nobody_decides_counts_as_shut() -> None:
    with pytest.raises(GateShut):
        Gate(0.05).wait()
    # the front end's gate outlasts its longest question to polkit
    assert auth.LONGEST_QUESTION >= 300


def test_only_root_and_callers_allowed_lately_start_early(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """A caller polkit refuses must not learn from the refusal's timing how long a read
    took: reads start early only for root and for a connection polkit allowed the same
    action with the same details (a rule may decide on the path) lately, and never
    once polkit refused that connection the action, whatever the details."""
    authority = Authority(None)  # type: ignore[arg-type]  # no bus: uids given below
    uids = {":1.1": 0, ":1.2": 1000, ":1.3": 1000}

    async def uid_of(sender: str) -> int:
        return uids[sender]

    monkeypatch.setattr(authority, "uid_of", uid_of)
    now = [1000.0]
    monkeypatch.setattr(polkit.time, "monotonic", lambda: now[0])
    read, mine, other = "org.btrfsd1.read", {"path": "/mine"}, {"path": "/secret"}

    def early(sender: str, details: dict[str, str], action: str = read) -> bool:
        msg = Message(destination="org.btrfsd1", path="/", member="GetSubvolume",
                      sender=sender)
        return asyncio.run(auth._early(authority, msg, action, details))

    assert early(":1.1", other) and not early(":1.2", mine) and not early(":1.3", mine)
    authority.note_allowed(":1.2", read, mine)
    assert early(":1.2", mine) and not early(":1.2", other) and not early(":1.3", mine)
    assert not early(":1.2", mine, "org.btrfsd1.other")
    now[0] += polkit.ALLOWED_LATELY_FOR + 1
    assert not early(":1.2", mine)
    authority.note_allowed(":1.2", read, mine)
    authority.note_refused(":1.2", read)  # refused /secret: sticky for the connection
    authority.note_allowed(":1.2", read, mine)  # an answer that arrives late: ignored
    assert not early(":1.2", mine) and early(":1.1", other)
    authority.note_allowed(":1.3", read, mine)
    assert early(":1.3", mine)


def test_authorize_notes_what_polkit_said() -> None:
    """authorize() records polkit's answers where _early reads them."""
    authority = Authority(None)  # type: ignore[arg-type]

    async def uid_of(sender: str) -> int:
        return 1000

    answers = iter([(True, False), (False, False)])

    async def check(sender: str, action: str, interactive: bool,
                    details: object = None) -> tuple[bool, bool]:
        return next(answers)

    authority.uid_of = uid_of  # type: ignore[method-assign]
    authority.check = check  # type: ignore[method-assign]
    details = {"path": "/mine"}

    async def go() -> None:
        await auth.authorize(authority, MSG, "org.btrfsd1.read", details)
        assert authority.allowed_lately(":1.42", "org.btrfsd1.read", details)
        with pytest.raises(DBusError):
            await auth.authorize(authority, MSG, "org.btrfsd1.read", {"path": "/x"})
        assert not authority.allowed_lately(":1.42", "org.btrfsd1.read", details)

    asyncio.run(go())


def test_only_roots_calls_prepare() -> None:
    """A method marked ``prepares`` starts while polkit is asked for root only (whom
    polkit allows everything); anyone else's call starts once polkit allowed it."""

    class Answers(Polkit):
        def __init__(self, uid: int) -> None:
            super().__init__(True, delay=0.05)
            self.uid, self.answered = uid, False

        async def uid_of(self, sender: str) -> int:
            return self.uid

        async def check(self, sender: str, action: str, interactive: bool,
                        details: object = None) -> tuple[bool, bool]:
            answer = await super().check(sender, action, interactive, details)
            self.answered = True
            return answer

    class Iface:
        def __init__(self, uid: int) -> None:
            self.authority = Answers(uid)
            self.started_before_the_answer: bool | None = None

        @auth.authorized(Action.SNAPSHOT_CREATE, prepares=True)
        async def create(self) -> str:
            self.started_before_the_answer = not self.authority.answered
            self.gated = auth.current_gate() is not None
            return "made"

    for uid, early in ((0, True), (1000, False)):
        iface = Iface(uid)
        token = context._current_message.set(MSG)
        try:
            assert asyncio.run(iface.create()) == "made"
        finally:
            context._current_message.reset(token)
        assert iface.started_before_the_answer is early, uid
        # an early start has a gate for its changes; a call after the answer needs none
        assert iface.gated is early, uid


def test_a_read_beside_polkit_has_no_gate() -> None:
    async def read() -> bool:
        return auth.current_gate() is None

    assert run(True, read()) is True


def test_at_most_a_few_calls_prepare_at_once() -> None:
    """Each call that prepares holds a worker thread at its gate until polkit answers:
    beyond PREPARING_AT_MOST at once, root's calls wait for polkit first."""

    class Slow(Polkit):
        def __init__(self) -> None:
            super().__init__(True, delay=0.2)

        async def uid_of(self, sender: str) -> int:
            return 0

    class Iface:
        def __init__(self) -> None:
            self.authority = Slow()
            self.started: list[float] = []

        @auth.authorized(Action.SNAPSHOT_CREATE, prepares=True)
        async def create(self) -> str:
            self.started.append(asyncio.get_running_loop().time())
            return "made"

    iface = Iface()

    async def calls() -> tuple[list[str], float]:
        token = context._current_message.set(MSG)
        try:
            begun = asyncio.get_running_loop().time()
            return await asyncio.gather(*(iface.create() for _ in range(5))), begun
        finally:
            context._current_message.reset(token)

    made, begun = asyncio.run(calls())
    assert made == ["made"] * 5 and auth._preparing == 0
    # polkit answers after 0.2 s: the calls that started before it are those that prepared
    early = [t for t in iface.started if t - begun < 0.1]
    assert len(early) == auth.PREPARING_AT_MOST, [t - begun for t in iface.started]
