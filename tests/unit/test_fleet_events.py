"""The bridge's queue of events that must reach the events stream
(btrfsd/fleet/events.py): in order, each retried until stored, bounded."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from nats.errors import MaxPayloadError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import APIError, NoStreamResponseError

from btrfsd.fleet import events


class FlakyServer:
    """Stores what it is sent, failing the first attempt of every other message (its
    ack lost: the copy may or may not have been stored, like a real restart)."""

    def __init__(self) -> None:
        self.stored: dict[str, bytes] = {}  # msg id -> data, as the duplicate window keeps
        self.order: list[bytes] = []
        self.attempts = 0
        self.done = asyncio.Event()
        self.expect = 0

    async def send(self, p: events.Pending) -> None:
        self.attempts += 1
        if p.msg_id not in self.stored:
            self.stored[p.msg_id] = p.data
            self.order.append(p.data)
        if self.attempts % 2:
            raise NatsTimeout
        if len(self.order) >= self.expect:
            self.done.set()


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "RETRY_WAIT", 0.001)


async def test_events_are_stored_once_and_in_order_despite_failures() -> None:
    server = FlakyServer()
    server.expect = 5
    connected = asyncio.Event()
    q = events.DurableQueue("h1", server.send, connected, limit=100)
    for i in range(5):
        q.put("btrfsd.h1.events.completed", str(i).encode())
    runner = asyncio.create_task(q.run())
    try:
        await asyncio.sleep(0.01)
        assert server.attempts == 0  # nothing is sent while NATS is away
        connected.set()
        async with asyncio.timeout(5):
            await server.done.wait()
            while len(q):
                await asyncio.sleep(0.001)
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
    assert server.order == [str(i).encode() for i in range(5)]
    assert server.attempts > 5  # the failed ones were tried again
    assert len(set(server.stored)) == 5


async def test_the_queue_is_bounded_and_drops_the_oldest() -> None:
    q = events.DurableQueue("h1", FlakyServer().send, asyncio.Event(), limit=10)
    for i in range(15):
        q.put("s", str(i).encode())
    assert len(q) == 10 and q.dropped == 5
    assert [p.data for p in q._queue] == [str(i).encode() for i in range(5, 15)]


def test_message_ids_differ_across_bridge_starts() -> None:
    a = events.DurableQueue("h1", FlakyServer().send, asyncio.Event(), limit=10)
    b = events.DurableQueue("h1", FlakyServer().send, asyncio.Event(), limit=10)
    a.put("s", b"x")
    b.put("s", b"x")
    assert a._queue[0].msg_id != b._queue[0].msg_id


def test_the_stream_takes_only_the_durable_kinds() -> None:
    cfg = events.stream_config()
    assert cfg.name == events.STREAM and cfg.allow_direct
    assert cfg.subjects == ["btrfsd.*.events.completed", "btrfsd.*.events.quota-warning",
                            "btrfsd.*.events.filesystem-added",
                            "btrfsd.*.events.filesystem-removed"]


class FakeJetStream:
    """publish finds no stream until add_stream made one (or not, if ``other``)."""

    def __init__(self, other: bool) -> None:
        self.other = other
        self.exists = False
        self.published = 0

    def jetstream(self, timeout: float = 5.0) -> FakeJetStream:
        return self

    async def publish(self, subject: str, data: bytes, timeout: float,
                      headers: dict[str, str]) -> None:
        self.published += 1
        if not self.exists:
            raise NoStreamResponseError

    async def add_stream(self, config: object) -> None:
        if self.other:
            raise APIError(code=400, err_code=events.STREAM_EXISTS, description="in use")
        self.exists = True


@pytest.mark.parametrize("other", [False, True])
async def test_a_missing_stream_is_made_or_the_event_goes_live_only(other: bool) -> None:
    nc = FakeJetStream(other)
    send = events.jetstream_sender(nc)  # type: ignore[arg-type]
    p = events.Pending("btrfsd.h1.events.completed", b"{}", "h1.x.1")
    if other:
        # another stream is there that does not take the subject: no endless repeats
        await send(p)
        assert nc.published == 1
    else:
        with pytest.raises(NoStreamResponseError):
            await send(p)  # made the stream; the queue sends it again
        await send(p)
        assert nc.published == 2 and nc.exists


@pytest.mark.parametrize("poison", [
    APIError(code=400, err_code=10054, description="message size exceeds maximum allowed"),
    MaxPayloadError(), ValueError("a bug")])
async def test_an_event_the_server_refuses_for_good_does_not_block_the_rest(
        poison: Exception) -> None:
    sent: list[bytes] = []
    done = asyncio.Event()

    async def send(p: events.Pending) -> None:
        if p.data == b"poison":
            raise poison
        sent.append(p.data)
        done.set()

    connected = asyncio.Event()
    connected.set()
    q = events.DurableQueue("h1", send, connected, limit=10)
    q.put("s", b"poison")
    q.put("s", b"after")
    runner = asyncio.create_task(q.run())
    try:
        async with asyncio.timeout(5):
            await done.wait()
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
    assert sent == [b"after"] and len(q) == 0 and q.refused == 1


async def test_a_server_error_that_may_pass_is_retried() -> None:
    tries = 0

    async def send(p: events.Pending) -> None:
        nonlocal tries
        tries += 1
        if tries < 3:
            raise APIError(code=503, description="no leader")

    connected = asyncio.Event()
    connected.set()
    q = events.DurableQueue("h1", send, connected, limit=10)
    q.put("s", b"x")
    runner = asyncio.create_task(q.run())
    try:
        async with asyncio.timeout(5):
            while len(q):
                await asyncio.sleep(0.001)
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
    assert tries == 3 and q.refused == 0
