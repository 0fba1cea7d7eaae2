"""Events a fleet client must not miss, kept in the JetStream stream BTRFSD_EVENTS
(docs/fleet.md, "Durable events").

A plain NATS publish is at most once: what nats-py has written to a connection that then
drops is gone, and a subscriber away at that moment never sees it. Job ends, quota
warnings and filesystems coming or going matter later, so the bridge publishes them with
a JetStream ack from a bounded queue of its own (DurableQueue), one at a time and in
order, retrying the head until the server has stored it (a server restart included).
Each event carries a Nats-Msg-Id, so a retry whose first copy did arrive (the ack was
lost) is dropped by the stream's duplicate window: a reader gets each event once.

Job progress stays a plain publish: each update supersedes the last.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.errors import MaxPayloadError
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import APIError, NoStreamResponseError, NotFoundError

from . import protocol

log = logging.getLogger("btrfsd.fleet")

STREAM = "BTRFSD_EVENTS"
# kinds kept in the stream; the rest (progress, job-added/-removed, filesystem
# PropertiesChanged) are superseded by the next update or by the status bucket
DURABLE_KINDS = ("completed", "quota-warning", "filesystem-added", "filesystem-removed")
MAX_AGE = 7 * 24 * 3600.0  # seconds: a week of history for clients that were away
MAX_BYTES = 256 * 1024 * 1024  # the oldest go first past this
MAX_MSG_SIZE = 64 * 1024
# a retry whose first copy was stored is dropped if it comes within this window
DUPLICATE_WINDOW = 300.0
ACK_TIMEOUT = 5.0  # seconds to wait for the server's ack before trying again
RETRY_WAIT = 0.5  # seconds between attempts after a failure
MSG_ID = "Nats-Msg-Id"
STREAM_EXISTS = 10058  # JetStream: "stream name already in use with a different configuration"


def stream_config() -> StreamConfig:
    """The stream a bridge creates when it is missing (an administrator may create it
    beforehand, e.g. with 3 replicas: the bridges then use it as it is)."""
    return StreamConfig(
        name=STREAM, subjects=[protocol.event_subject("*", k) for k in DURABLE_KINDS],
        retention=RetentionPolicy.LIMITS, storage=StorageType.FILE,
        discard=DiscardPolicy.OLD, max_age=MAX_AGE, max_bytes=MAX_BYTES,
        max_msg_size=MAX_MSG_SIZE, duplicate_window=DUPLICATE_WINDOW, allow_direct=True,
        description="btrfsd-fleet: job ends, quota warnings, filesystems added/removed")


async def ensure_stream(nc: NATS) -> bool:
    """Create the events stream unless it exists: True if it has this configuration now
    (made, or there already), False if one of another configuration exists (an
    administrator's: used as it is). Raises nats errors (TimeoutError when the NATS user
    may not create it: the server refuses only asynchronously)."""
    try:
        await nc.jetstream(timeout=ACK_TIMEOUT).add_stream(stream_config())
    except APIError as e:
        if e.err_code != STREAM_EXISTS:
            raise
        return False
    return True


@dataclass(frozen=True)
class Pending:
    subject: str
    data: bytes
    msg_id: str


Send = Callable[[Pending], Awaitable[None]]


def _refused(e: APIError) -> bool:
    """The server's answer says the event can never be stored (a 4xx: too big for the
    stream, a bad header); a 5xx (no stream leader yet, no responders) may pass."""
    return e.code is not None and 400 <= e.code < 500


class DurableQueue:
    """Events waiting for the server's ack, oldest first, at most ``limit`` of them
    (past that the oldest is dropped, with a warning: memory stays bounded however long
    NATS is away). run() sends them one at a time, in order, while ``connected`` is set,
    retrying the head until ``send`` returns."""

    def __init__(self, host: str, send: Send, connected: asyncio.Event, limit: int) -> None:
        self.send = send
        self.connected = connected
        self.limit = limit
        self.dropped = 0
        self.refused = 0  # events the server refused for good (dropped, logged)
        self._queue: collections.deque[Pending] = collections.deque()
        self._waiting = asyncio.Event()
        # unique per bridge start: ids never repeat across restarts of the bridge
        self._prefix = f"{host}.{secrets.token_hex(6)}."
        self._seq = 0
        self._failed: Pending | None = None  # the last event whose send failed

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, subject: str, data: bytes) -> None:
        self._seq += 1
        if len(self._queue) >= self.limit:
            self._queue.popleft()
            self.dropped += 1
            log.warning("event queue full (%d): dropped the oldest event (%d so far)",
                        self.limit, self.dropped)
        self._queue.append(Pending(subject, data, f"{self._prefix}{self._seq}"))
        self._waiting.set()

    async def run(self) -> None:
        """Send until cancelled. Raises nothing else."""
        while True:
            if not self._queue:
                self._waiting.clear()
                await self._waiting.wait()
                continue
            await self.connected.wait()
            head = self._queue[0]
            try:
                await self.send(head)
            except (APIError, MaxPayloadError) as e:
                if isinstance(e, APIError) and not _refused(e):
                    await self._retry(head, e)
                    continue
                # the server answered and will never take this one (too big for the
                # stream, say): retrying it would hold every later event back for ever
                log.error("event %s on %s refused by the server, dropped: %s",
                          head.msg_id, head.subject, e)
                self.refused += 1
            except (NatsError, TimeoutError, OSError) as e:
                await self._retry(head, e)
                continue
            except Exception:
                # a bug must not stop the queue for good: this event is lost, not the rest
                log.exception("event %s could not be sent, dropped", head.msg_id)
                self.refused += 1
            # the head may have been dropped meanwhile (queue full): remove it only if
            # it is still there
            if self._queue and self._queue[0] is head:
                self._queue.popleft()

    async def _retry(self, head: Pending, e: BaseException) -> None:
        # once per event at warning level: a long outage would flood the log
        level = logging.DEBUG if head is self._failed else logging.WARNING
        self._failed = head
        log.log(level, "event %s not stored yet (%s): trying again", head.msg_id,
                e or type(e).__name__)
        await asyncio.sleep(RETRY_WAIT)

    async def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the queue to empty (a clean stop)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self._queue and self.connected.is_set():
                    await asyncio.sleep(0.05)


def jetstream_sender(nc: NATS) -> Send:
    """A Send that publishes with an ack, creating the stream if nobody stores the
    subject yet."""
    js = nc.jetstream(timeout=ACK_TIMEOUT)

    async def send(p: Pending) -> None:
        try:
            await js.publish(p.subject, p.data, timeout=ACK_TIMEOUT,
                             headers={MSG_ID: p.msg_id})
        except NoStreamResponseError:
            # No stream takes the subject (deleted, or never made). Live subscribers got
            # the event all the same: make the stream and send it again (stored once),
            # or, if it cannot be made, leave it at that rather than repeat it to them.
            try:
                made = await ensure_stream(nc)
            except (NatsError, TimeoutError, APIError) as e:
                made, why = False, str(e) or type(e).__name__
            else:
                why = "the existing stream does not take that subject"
            if made:
                raise
            log.warning("no stream keeps %s (%s): sent to live subscribers only",
                        p.subject, why)
    return send


async def read_after(nc: NATS, subject: str, after: int, limit: int = 1000,
                     timeout: float = ACK_TIMEOUT) -> list[tuple[int, bytes]]:
    """The stored events on ``subject`` (wildcards allowed) with a stream sequence above
    ``after``, oldest first, as (sequence, data); at most ``limit``. Direct gets only:
    a reader needs ``$JS.API.DIRECT.GET.BTRFSD_EVENTS``, no consumer. Raises nats
    errors (TimeoutError when not permitted)."""
    js = nc.jetstream(timeout=timeout)
    found: list[tuple[int, bytes]] = []
    while len(found) < limit:
        try:
            msg = await js.get_msg(STREAM, seq=after + 1, subject=subject, direct=True,
                                   next=True)
        except NotFoundError:
            break
        after = int(msg.seq or after + 1)
        found.append((after, bytes(msg.data or b"")))
    return found


async def last_seq(nc: NATS, subject: str, timeout: float = ACK_TIMEOUT) -> int | None:
    """The stream sequence of the last stored event on ``subject`` (no wildcards), 0 if
    there is none, None when the stream cannot be read (missing, or the NATS user may
    not: ``$JS.API.DIRECT.GET.BTRFSD_EVENTS.>``). Raises nothing."""
    try:
        msg = await nc.jetstream(timeout=timeout).get_msg(STREAM, subject=subject,
                                                          direct=True)
    except NotFoundError:
        return 0
    except (NatsError, TimeoutError, APIError):
        return None
    return int(msg.seq or 0)

