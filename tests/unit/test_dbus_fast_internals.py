"""The dbus-fast internals btrfsd relies on, pinned: if an upgrade changes them, these
tests fail and say which one and where btrfsd uses it (pyproject.toml pins dbus-fast to
the tested major version; move the pin only with these green).

Checked twice: the private names exist, and they behave as btrfsd needs on a real
(private) dbus-daemon: the caller's message is visible inside a method, ObjectManager
signals come from the root path, and an error reply carries the details dictionary.
"""

# No "from __future__ import annotations": dbus-fast reads the Probe's annotations at
# runtime.
import asyncio
import itertools
import os
import shutil
import subprocess
from array import array
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.aio.message_bus import _MessageWriter
from dbus_fast.annotations import DBusStr
from dbus_fast.errors import DBusError
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property

from btrfsd.bus.context import CallerAwareBus, current_message
from btrfsd.bus.errors import to_dbus_error
from btrfsd.bus.filesystem import SUBVOLUME_COLUMNS, SubvolumeColumns
from btrfsd.bus.marshalled import _NUMBERS, Marshalled, MarshalledReply, Pieces, as_reply
from btrfsd.bus.writer import MAX_MESSAGE
from btrfsd.constants import ROOT_PATH
from btrfsd.errors import Hint, HintKind, InvalidArgument

# (owner, private name, where btrfsd uses it)
INTERNALS = [
    (MessageBus, "_make_method_handler", "bus/context.py: the caller's message in a method"),
    (MessageBus, "_emit_interface_added", "bus/context.py: InterfacesAdded from the root"),
    (MessageBus, "_emit_interface_removed", "bus/context.py: InterfacesRemoved from the root"),
    (ServiceInterface, "_get_methods", "bus/auth.py: every method declares a polkit action"),
    (ServiceInterface, "_get_all_property_values", "bus/context.py: InterfacesAdded values"),
    (DBusError, "_as_message", "bus/errors.py: error replies with details"),
    (_MessageWriter, "write_callback", "bus/writer.py: waiting for a full socket"),
    (_MessageWriter, "buffer_message", "bus/writer.py: no message over the bus's limit"),
    (Message, "_marshall", "bus/marshalled.py: replies whose body is marshalled once"),
]


def test_decorated_members_keep_their_introspection() -> None:
    """bus/apidoc.py documents members through dbus-fast's per-function storage
    (``__DBUS_METHOD``/``__DBUS_SIGNAL`` in the wrapper's __dict__, ``introspection`` on a
    property): the daemon's own Introspect reply must show what it set."""
    from btrfsd.bus.apidoc import DOC
    from btrfsd.bus.introspect import interfaces

    for iface in interfaces():
        intro = iface.introspect()
        for m in [*intro.methods, *intro.signals, *intro.properties]:
            assert DOC in m.annotations, f"{iface.name}.{m.name}: dbus-fast storage changed"
# what PatientWriter reads and sets on dbus-fast's writer
WRITER_FIELDS = ("messages", "buf", "offset", "unix_fds", "fut", "sock", "fd", "loop", "bus",
                 "negotiate_unix_fd")


@pytest.mark.parametrize("owner,name,where", INTERNALS,
                         ids=[f"{o.__name__}.{n}" for o, n, _ in INTERNALS])
def test_private_names_exist(owner: type, name: str, where: str) -> None:
    if not hasattr(owner, name):
        pytest.fail(f"dbus-fast no longer has {owner.__name__}.{name}, which btrfsd uses in "
                    f"{where}; adapt that code or pin dbus-fast to the last version that had "
                    "it.")


@pytest.fixture
async def bus_address(tmp_path: Path) -> AsyncIterator[str]:
    daemon = shutil.which("dbus-daemon")
    if daemon is None:
        pytest.skip("dbus-daemon is not installed (scripts/dev installs it)")
    socket = tmp_path / "bus"
    config = tmp_path / "bus.conf"
    config.write_text(f"""<!DOCTYPE busconfig PUBLIC
 "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>session</type><listen>unix:path={socket}</listen>
<policy context="default"><allow send_destination="*" eavesdrop="true"/>
<allow eavesdrop="true"/><allow own="*"/></policy></busconfig>
""")
    # --print-address: the address comes once the daemon listens (the socket file
    # appears at bind(), before listen(): a connect then is refused)
    proc = subprocess.Popen([daemon, f"--config-file={config}", "--nofork",
                             "--print-address=1"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(5):
            printed = await asyncio.to_thread(proc.stdout.readline)
        assert printed.startswith(b"unix:path="), printed
        yield f"unix:path={socket}"
    finally:
        proc.terminate()
        proc.wait(5)


class Probe(ServiceInterface):
    """Answers with the sender it sees, or fails with a core error."""

    def __init__(self) -> None:
        super().__init__("org.btrfsd1.Probe")

    @dbus_property(name="Answer")
    def answer(self) -> DBusStr:
        return "42"

    @answer.setter
    def answer(self, value: DBusStr) -> None:
        pass

    @dbus_method(name="WhoCalls")
    async def who_calls(self) -> DBusStr:
        await asyncio.sleep(0)  # the message must survive an await
        return current_message().sender or ""

    @dbus_method(name="Fail")
    async def fail(self) -> None:
        err = InvalidArgument("Quotas are off.", hint=Hint(HintKind.ENABLE_QUOTA,
                                                           {"filesystem": "u"}))
        raise to_dbus_error(err)


async def test_the_internals_behave_as_btrfsd_needs(bus_address: str) -> None:
    os.environ.pop("DBUS_SESSION_BUS_ADDRESS", None)
    server = await CallerAwareBus(bus_address=bus_address, bus_type=BusType.SESSION).connect()
    client = await MessageBus(bus_address=bus_address, bus_type=BusType.SESSION).connect()
    try:
        server.export(ROOT_PATH, Probe())
        signals: list[Message] = []
        client.add_message_handler(
            lambda m: signals.append(m) if m.message_type == MessageType.SIGNAL else None)
        await client.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus", member="AddMatch", signature="s",
            body=["type='signal',interface='org.freedesktop.DBus.ObjectManager'"]))

        reply = await client.call(Message(destination=server.unique_name, path=ROOT_PATH,
                                          interface="org.btrfsd1.Probe", member="WhoCalls"))
        assert reply is not None and reply.body == [client.unique_name], (
            "the method did not see its caller's message (bus/context.py)")

        reply = await client.call(Message(destination=server.unique_name, path=ROOT_PATH,
                                          interface="org.btrfsd1.Probe", member="Fail"))
        assert reply is not None and reply.message_type == MessageType.ERROR
        assert reply.error_name == "org.btrfsd1.Error.InvalidArgument"
        assert reply.signature == "sa{sv}", "error replies lost their details (bus/errors.py)"
        text, details = reply.body
        assert "EnableQuota" in text and details["hint"].value == "enable-quota"

        server.export(ROOT_PATH + "/child", Probe())
        for _ in range(100):
            if signals:
                break
            await asyncio.sleep(0.01)
        added = [m for m in signals if m.member == "InterfacesAdded"]
        assert added and added[0].path == ROOT_PATH, (
            "InterfacesAdded no longer comes from the ObjectManager's path (bus/context.py)")
        assert added[0].body[1]["org.btrfsd1.Probe"]["Answer"].value == "42"
    finally:
        client.disconnect()
        server.disconnect()


class Big(ServiceInterface):
    """Replies larger than a socket buffer holds."""

    def __init__(self) -> None:
        super().__init__("org.btrfsd1.Big")

    @dbus_method(name="Blob")
    async def blob(self) -> DBusStr:
        return "x" * (16 << 20)


async def test_large_concurrent_replies_keep_the_connection(bus_address: str) -> None:
    # dbus-fast 5.2 sent a second reply while a large one was half written, got EAGAIN
    # and dropped the connection (btrfsd left the bus): bus/writer.py waits instead
    server = await CallerAwareBus(bus_address=bus_address, bus_type=BusType.SESSION).connect()
    client = await MessageBus(bus_address=bus_address, bus_type=BusType.SESSION).connect()
    try:
        writer = server._writer
        missing = [f for f in WRITER_FIELDS if not hasattr(writer, f)]
        assert not missing, f"dbus-fast's writer lost {missing} (bus/writer.py uses them)"
        server.export("/big", Big())
        calls = [client.call(Message(destination=server.unique_name, path="/big",
                                     interface="org.btrfsd1.Big", member="Blob"))
                 for _ in range(8)]
        replies = await asyncio.wait_for(asyncio.gather(*calls), 30)
        assert all(r is not None and r.message_type == MessageType.METHOD_RETURN
                   and len(r.body[0]) == 16 << 20 for r in replies)
        assert server.connected, "the service dropped its bus connection"
    finally:
        client.disconnect()
        server.disconnect()


class Huge(ServiceInterface):
    """A reply over the bus's limit (bus/writer.py MAX_MESSAGE), and a small one."""

    def __init__(self) -> None:
        super().__init__("org.btrfsd1.Huge")

    @dbus_method(name="Blob")
    async def blob(self) -> DBusStr:
        return "x" * (MAX_MESSAGE + 1)

    @dbus_method(name="Small")
    async def small(self) -> DBusStr:
        return "fine"

    @dbus_method(name="Fail")
    async def fail(self) -> DBusStr:  # an error that echoes something very long
        raise DBusError("org.btrfsd1.Error.NotFound", "x" * (MAX_MESSAGE + 1))

    @dbus_method(name="Bad")
    async def bad(self) -> DBusStr:  # a value that does not marshal as its signature
        return 5  # type: ignore[return-value]


async def test_a_reply_over_the_bus_limit_is_an_error_and_keeps_the_connection(
        bus_address: str) -> None:
    """dbus-daemon drops a connection that sends a message over its max_message_size
    (32 MiB on the system bus): such a reply, or error reply, becomes
    org.btrfsd1.Error.Failed saying why, and the service stays on the bus."""
    server = await CallerAwareBus(bus_address=bus_address, bus_type=BusType.SESSION).connect()
    client = await MessageBus(bus_address=bus_address, bus_type=BusType.SESSION).connect()
    try:
        server.export("/huge", Huge())

        def call(member: str) -> Message:
            return Message(destination=server.unique_name, path="/huge",
                           interface="org.btrfsd1.Huge", member=member)

        reply = await asyncio.wait_for(client.call(call("Blob")), 30)
        assert reply is not None and reply.message_type == MessageType.ERROR
        assert reply.error_name == "org.btrfsd1.Error.Failed"
        assert "more than the bus carries" in reply.body[0], reply.body
        assert reply.signature == "sa{sv}" and "message" in reply.body[1]  # as every error
        reply = await asyncio.wait_for(client.call(call("Fail")), 30)
        assert reply is not None and reply.error_name == "org.btrfsd1.Error.Failed"
        # the last line of defence (bus/context.py): a reply that cannot be made is one
        # of btrfsd's errors, with the body they all have
        reply = await asyncio.wait_for(client.call(call("Bad")), 30)
        assert reply is not None and reply.error_name == "org.btrfsd1.Error.Failed"
        assert reply.signature == "sa{sv}" and "failed inside btrfsd" in reply.body[0]
        reply = await asyncio.wait_for(client.call(call("Small")), 30)
        assert reply is not None and reply.body == ["fine"]
        assert server.connected
    finally:
        client.disconnect()
        server.disconnect()


# a ListSubvolumes-shaped reply with the odd cases: empty strings, a non-ASCII path,
# booleans and signed times next to 64-bit values (alignment inside the body)
COLUMNS = [[5, 256], [5, 5], ["", "home/é/.snapshots/1"], ["u1", "u2"], ["", "u1"], ["", ""],
           [7, 9], [-1, 1 << 40], [0, 3], [False, True], [False, True], [1, 2], [0, 0],
           [0, 1 << 62], [0, 0]]


@pytest.mark.parametrize("destination", [":1.42", None])
def test_a_marshalled_reply_is_byte_for_byte_dbus_fasts_own(destination: str | None) -> None:
    plain = Message(message_type=MessageType.METHOD_RETURN, serial=9, reply_serial=3,
                    destination=destination, signature=SUBVOLUME_COLUMNS, body=[COLUMNS])
    kept = as_reply(Message(message_type=MessageType.METHOD_RETURN, serial=9, reply_serial=3,
                            destination=destination, signature=SUBVOLUME_COLUMNS,
                            body=[Marshalled(SUBVOLUME_COLUMNS, [COLUMNS])]))
    assert isinstance(kept, MarshalledReply)
    assert kept._marshall(False) == plain._marshall(False)


def test_a_reply_marshalled_for_another_signature_is_refused() -> None:
    msg = Message(message_type=MessageType.METHOD_RETURN, reply_serial=3, signature="s",
                  body=[Marshalled("as", [["x"]])])
    with pytest.raises(ValueError, match="marshalled as"):
        as_reply(msg)
    plain = Message(message_type=MessageType.METHOD_RETURN, reply_serial=3, signature="s",
                    body=["x"])
    assert as_reply(plain) is plain


class Kept(ServiceInterface):
    """Returns one reply marshalled once, again and again."""

    def __init__(self) -> None:
        super().__init__("org.btrfsd1.Kept")
        self.reply = Marshalled(SUBVOLUME_COLUMNS, [COLUMNS])

    @dbus_method(name="Columns")
    async def columns(self) -> SubvolumeColumns:
        return self.reply


async def test_a_kept_reply_reaches_each_caller_whole(bus_address: str) -> None:
    server = await CallerAwareBus(bus_address=bus_address, bus_type=BusType.SESSION).connect()
    clients = [await MessageBus(bus_address=bus_address, bus_type=BusType.SESSION).connect()
               for _ in range(2)]
    try:
        server.export("/kept", Kept())
        calls = [c.call(Message(destination=server.unique_name, path="/kept",
                                interface="org.btrfsd1.Kept", member="Columns"))
                 for c in clients for _ in range(3)]
        replies = await asyncio.wait_for(asyncio.gather(*calls), 30)
        for r in replies:
            assert r is not None and r.message_type == MessageType.METHOD_RETURN
            assert r.signature == SUBVOLUME_COLUMNS and list(r.body[0]) == COLUMNS
    finally:
        for c in clients:
            c.disconnect()
        server.disconnect()


async def test_kept_replies_are_reused_only_with_equal_values() -> None:
    from btrfsd.bus import marshalled

    kept = marshalled.KeptReplies()
    one = Marshalled("s", ["one"])
    assert kept.put((1, ""), {5: "usage"}, one) is one
    assert kept.get((1, ""), {5: "usage"}) is one
    assert kept.get((1, ""), {5: "other usage"}) is None  # usage moved: made again
    assert kept.get((2, ""), {5: "usage"}) is None  # another listing
    for i in range(marshalled.KEEP_AT_MOST):
        kept.put((1, f"source {i}"), {}, Marshalled("s", [str(i)]))
    assert kept.get((1, ""), {5: "usage"}) is None, "the oldest is dropped past the bound"
    assert kept.get((1, "source 1"), {}) is not None
    kept.clear()  # what the KEEP_FOR timer calls
    assert kept.get((1, "source 1"), {}) is None


@pytest.mark.parametrize("rows", [0, 1, 2, 3, 7, 1000])
def test_columns_are_marshalled_as_dbus_fast_would(rows: int) -> None:
    """bus/marshalled.py marshals a struct of arrays itself (a column at a time): the
    bytes must be dbus-fast's own, for every string length modulo 4, empty columns,
    non-ASCII text, negative times and the largest numbers."""
    import random

    rnd = random.Random(rows)
    names = ["", "a", "ab", "abc", "abcd", "é", "home/é/.snapshots/" + "x" * rows, "\\xff"]

    def column(kind: str) -> list[Any]:
        if kind == "s":
            return [rnd.choice(names) + str(i) * (i % 5) for i in range(rows)]
        if kind == "b":
            return [rnd.random() < 0.5 for _ in range(rows)]
        if kind == "x":
            return [rnd.choice([-(1 << 63), -1, 0, 1 << 40, (1 << 63) - 1]) for _ in range(rows)]
        return [rnd.choice([0, 1, 1 << 32, (1 << 64) - 1]) for _ in range(rows)]

    types = SUBVOLUME_COLUMNS[2:-1:2]
    value = [column(t) for t in types]
    ours = Marshalled(SUBVOLUME_COLUMNS, [value]).body
    from dbus_fast._private.marshaller import Marshaller

    assert ours == bytes(Marshaller(SUBVOLUME_COLUMNS, [value]).marshall())
    for other in ("(as)", "(at)", "(asat)", "(atas)", "(abas)", "(asab)"):
        v = [column(t) for t in other[2:-1:2]]
        assert Marshalled(other, [v]).body == bytes(Marshaller(other, [v]).marshall()), other

    # the same columns given as arrays (numbers) and in pieces (strings, some empty)
    def pieces(strings: list[str]) -> Pieces:
        cuts = sorted(rnd.randrange(len(strings) + 1) for _ in range(rnd.randrange(4)))
        bounds = [0, *cuts, len(strings)]
        return Pieces(lambda: [(b - a, "\0".join(strings[a:b]))
                               for a, b in itertools.pairwise(bounds)])

    given = [pieces(c) if t == "s" else array(_NUMBERS[t][0], c)
             for t, c in zip(types, value, strict=True)]
    assert Marshalled(SUBVOLUME_COLUMNS, [given]).body == ours
    assert [c.strings() if isinstance(c, Pieces) else list(c) for c in given] == [
        list(map(int, c)) if t == "b" else c for t, c in zip(types, value, strict=True)]


def test_columns_that_cannot_be_marshalled_are_refused() -> None:
    for bad in (["a\0b"], ["\udcff"]):
        with pytest.raises(ValueError):
            Marshalled("(as)", [[bad]])
    with pytest.raises(Exception):  # noqa: B017 (struct.error)
        Marshalled("(at)", [[[-1]]])
    with pytest.raises(ValueError):
        Marshalled("(atat)", [[[1]]])
    with pytest.raises(TypeError):  # an array of another size than the wire's
        Marshalled("(at)", [[array("I", [1])]])
    with pytest.raises(TypeError):
        Marshalled("(at)", [[Pieces(lambda: [(1, "1")])]])
    for count, joined in ((2, "a"), (1, "a\0b"), (3, "ab\0cd")):  # a NUL in a string
        with pytest.raises(ValueError):
            Marshalled("(as)", [[Pieces(lambda c=count, j=joined: [(c, j)])]])
