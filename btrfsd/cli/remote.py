"""btrfsctl's NATS transport: the same Client interface, talking to a host's btrfsd-fleet
bridge instead of the local bus (``btrfsctl --host NAME ...``, docs/fleet.md).

Replies come back as plain values (the bridge unwraps Variants), which every command
already turns plain with Client.plain; errors keep their D-Bus names, so btrfsctl
explains them and exits with the same codes as locally.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from dbus_fast import Message, MessageType
from nats.aio.msg import Msg

from ..fleet import protocol
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
        applied: every handler btrfsctl has filters by path and member itself)."""
        nc = self.requester.nc
        assert nc is not None

        async def deliver(msg: Msg) -> None:
            try:
                event = json.loads(msg.data)
            except ValueError:
                return
            signal = signal_of(event) if isinstance(event, dict) else None
            if signal is not None:
                handler(signal)

        await nc.subscribe(protocol.event_subject(self.host, ">"), cb=deliver)
        await nc.flush()
