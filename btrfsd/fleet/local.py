"""The bridge's side towards the local btrfsd: a D-Bus client connection as the bridge's
own user, so polkit judges every call the fleet makes like any other caller's.

Method signatures come from btrfsd's own introspection (asked once per interface), so the
bridge knows no method list of its own and serves whatever the daemon exports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.introspection import Node

from ..constants import BUS_NAME, FILESYSTEM_IFACE, JOB_IFACE, MANAGER_IFACE
from . import protocol

log = logging.getLogger("btrfsd.fleet")

BTRFSD_IFACES = (MANAGER_IFACE, FILESYSTEM_IFACE, JOB_IFACE)
NO_REPLY = "org.freedesktop.DBus.Error.NoReply"


class DBusCallError(Exception):
    """An error reply from btrfsd (or the bus): its name, sentence and details."""

    def __init__(self, name: str, text: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{name}: {text}")
        self.name, self.text, self.details = name, text, details or {}


class LocalBtrfsd:
    """A connection to btrfsd on the system bus (DBUS_SYSTEM_BUS_ADDRESS honoured)."""

    def __init__(self, call_timeout: float) -> None:
        self.call_timeout = call_timeout
        self.bus: MessageBus | None = None
        # (interface, method) -> input signature, from introspection
        self._signatures: dict[tuple[str, str], str] = {}

    async def connect(self) -> None:
        """Raises OSError/EOFError when the bus cannot be reached."""
        self.bus = await MessageBus(bus_type=BusType.SYSTEM).connect()

    async def wait_for_disconnect(self) -> None:
        """Return when the bus connection ends (raises nothing a caller must handle)."""
        assert self.bus is not None
        with contextlib.suppress(Exception):
            await self.bus.wait_for_disconnect()  # type: ignore[no-untyped-call]

    def disconnect(self) -> None:
        if self.bus is not None:
            self.bus.disconnect()

    async def raw_call(self, path: str, interface: str, member: str, signature: str,
                       body: list[Any]) -> list[Any]:
        """One call to btrfsd, never interactive (nobody could answer polkit's question).
        Raises DBusCallError (NoReply after call_timeout)."""
        assert self.bus is not None
        msg = Message(destination=BUS_NAME, path=path, interface=interface, member=member,
                      signature=signature, body=body)
        try:
            async with asyncio.timeout(self.call_timeout):
                reply = await self.bus.call(msg)
        except TimeoutError:
            raise DBusCallError(NO_REPLY, f"btrfsd did not answer within "
                                f"{self.call_timeout:g} s") from None
        assert reply is not None
        if reply.message_type == MessageType.ERROR:
            body = protocol.from_dbus(list(reply.body or []))
            text = str(body[0]) if body else ""
            details = body[1] if len(body) > 1 and isinstance(body[1], dict) else {}
            raise DBusCallError(reply.error_name or protocol.FAILED, text, details)
        return list(reply.body)

    async def signature(self, path: str, interface: str, method: str) -> str:
        """The input signature of ``interface.method``, introspecting ``path`` the first
        time. Raises protocol.ProtocolError (UnknownMethod)."""
        key = (interface, method)
        if key not in self._signatures:
            try:
                (xml,) = await self.raw_call(path, "org.freedesktop.DBus.Introspectable",
                                             "Introspect", "", [])
                self._learn(Node.parse(xml))
            except DBusCallError as e:
                log.debug("introspecting %s: %s", path, e)
            except Exception:  # a malformed document must not end the bridge
                log.exception("introspecting %s", path)
        if key not in self._signatures:
            raise protocol.ProtocolError(protocol.UNKNOWN_METHOD,
                                         f"{interface} has no method {method!r}")
        return self._signatures[key]

    def _learn(self, node: Node) -> None:
        for iface in node.interfaces:
            if iface.name in BTRFSD_IFACES:
                for m in iface.methods:
                    self._signatures[(iface.name, m.name)] = "".join(
                        str(a.signature) for a in m.in_args)

    async def subscribe(self, handler: Callable[[Message], None]) -> None:
        """Receive btrfsd's signals in ``handler``. Raises DBusCallError."""
        assert self.bus is not None
        self.bus.add_message_handler(handler)
        await self.raw_call_bus("AddMatch", "s", [f"type='signal',sender='{BUS_NAME}'"])

    async def raw_call_bus(self, member: str, signature: str, body: list[Any]) -> None:
        assert self.bus is not None
        reply = await self.bus.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus", member=member, signature=signature, body=body))
        if reply is not None and reply.message_type == MessageType.ERROR:
            raise DBusCallError(reply.error_name or protocol.FAILED, str(reply.body))
