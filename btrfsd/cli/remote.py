"""btrfsctl's NATS transport: the same Client interface, talking to a host's btrfsd-fleet
bridge instead of the local bus (``btrfsctl --host NAME ...``, docs/fleet.md).

Replies come back as plain values (the bridge unwraps Variants), which every command
already turns plain with Client.plain; errors keep their D-Bus names, so btrfsctl
explains them and exits with the same codes as locally.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from dbus_fast import Message, MessageType
from nats.aio.msg import Msg
from nats.errors import Error as NatsError

from ..constants import JOB_IFACE
from ..fleet import events, protocol
from ..fleet.connect import FleetCallError, Requester
from ..fleet.settings import NatsSettings
from .callerror import CallError
from .client import Client


def signal_of(event: dict[str, Any]) -> Message | None:
    """The D-Bus signal a fleet event stands for (for the handlers btrfsctl's job and
    quota watchers already have), or None for an event of an unknown form."""
    try:
        return Message(message_type=MessageType.SIGNAL, path=str(event["path"]),
                       interface=str(event["interface"]), member=str(event["member"]),
                       body=list(event["args"]))
    except (KeyError, TypeError, ValueError):
        return None


# reading the events stream: a user who may not gets no answer, only a timeout
REPLAY_TIMEOUT = 2.0


class RemoteClient(Client):
    """A Client whose calls go to ``host``'s bridge over NATS. Calls are never
    interactive: nobody on the far side could answer polkit."""

    def __init__(self, host: str, settings: NatsSettings) -> None:
        super().__init__(interactive=False)
        if not protocol.valid_host(host):
            raise CallError(protocol.INVALID_ARGUMENT, f"not a valid fleet host name: {host!r}")
        self.host = host
        self.requester = Requester(settings)
        self._owned = True
        self._tasks: set[asyncio.Task[Any]] = set()

    @classmethod
    def sharing(cls, host: str, requester: Requester) -> RemoteClient:
        """A client for ``host`` on an open connection (``--hosts``: one connection for
        all hosts); closing it leaves the connection open."""
        c = cls(host, requester.settings)
        c.requester, c._owned = requester, False
        return c

    async def __aenter__(self) -> RemoteClient:
        if self._owned:
            try:
                await self.requester.connect()
            except FleetCallError as e:
                raise CallError(e.name, e.message) from None
        return self

    async def __aexit__(self, *exc: object) -> None:
        for t in self._tasks:
            t.cancel()
        if self._owned:
            await self.requester.close()

    async def call(self, path: str, interface: str, member: str, signature: str = "",
                   body: list[Any] | None = None) -> list[Any]:
        """Call a method on the host's btrfsd; return the reply body. Raises CallError."""
        token = protocol.TOKENS.get(interface)
        if token is None:
            raise CallError(protocol.UNKNOWN_METHOD, f"{interface} is not served over NATS")
        subject = protocol.method_subject(self.host, token, member)
        try:
            return await self.requester.call(subject, path, body or [])
        except FleetCallError as e:
            raise CallError(e.name, e.message, e.details) from None

    async def subscribe(self, rule: str, handler: Callable[[Message], None]) -> None:
        """Receive the host's events as D-Bus signals in ``handler`` (the rule is not
        applied: every handler btrfsctl has filters by path and member itself).

        A watcher outlives a NATS server restart: the connection reconnects, job ends
        stored meanwhile in the events stream are handed over after the reconnect, and
        after a reconnect each job end comes with the job's current properties first
        (its last progress updates, plain publishes, may be lost). A job end seen twice,
        live and from the stream, is harmless to every watcher."""
        nc = self.requester.nc
        assert nc is not None
        gap = False  # a reconnect happened: progress updates may be missing

        async def hand_over(data: bytes) -> None:
            try:
                event = json.loads(data)
            except ValueError:
                return
            signal = signal_of(event) if isinstance(event, dict) else None
            if signal is None:
                return
            if gap and signal.member == "Completed" and signal.interface == JOB_IFACE:
                await self._job_state(signal.path or "", handler)
            handler(signal)

        async def deliver(msg: Msg) -> None:
            await hand_over(msg.data)

        await nc.subscribe(protocol.event_subject(self.host, ">"), cb=deliver)
        await nc.flush()
        completed = protocol.event_subject(self.host, "completed")
        # where the stream stands now (None: not readable, then live events only), asked
        # in the background: a user who may not read it waits for a timeout
        start = asyncio.create_task(events.last_seq(nc, completed, timeout=REPLAY_TIMEOUT))
        self._tasks.add(start)
        seen: list[int] = []

        async def replay() -> None:
            nonlocal gap
            gap = True
            if not seen:
                first = await start
                if first is None:
                    return
                seen.append(first)
            try:
                stored = await events.read_after(nc, completed, seen[0], timeout=REPLAY_TIMEOUT)
            except (NatsError, TimeoutError):
                return
            for seq, data in stored:
                seen[0] = seq
                await hand_over(data)

        async def reconnected() -> None:
            # not in nats-py's callback itself: it holds up the reconnect's end
            task = asyncio.create_task(replay())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        self.requester.on_reconnect = reconnected
        self.requester.keep_reconnecting()

    async def _job_state(self, path: str, handler: Callable[[Message], None]) -> None:
        """Hand ``handler`` the job's current properties as a PropertiesChanged (none if
        the job is gone)."""
        try:
            (props,) = await self.call(path, protocol.PROPERTIES_IFACE, "GetAll", "s",
                                       [JOB_IFACE])
        except CallError:
            return
        signal = signal_of({"path": path, "interface": protocol.PROPERTIES_IFACE,
                            "member": "PropertiesChanged", "args": [JOB_IFACE, props, []]})
        if signal is not None:
            handler(signal)
