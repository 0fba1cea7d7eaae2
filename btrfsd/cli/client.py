"""A thin D-Bus client for btrfsd (the CLI never touches filesystems itself)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from dbus_fast import BusType, Message, MessageFlag, MessageType
from dbus_fast.aio import MessageBus

from ..constants import BUS_NAME, FILESYSTEM_IFACE, MANAGER_IFACE, ROOT_PATH
from ..names import to_bus
from ..replies import unwrap
from .callerror import CallError

__all__ = ["CallError", "Client", "absolute"]


def absolute(path: str) -> str:
    """``path`` made absolute against the working directory, lexically only, in its bus
    form (names.py: any byte of a name survives the trip).

    Symlinks are left alone on purpose: the daemon walks the path itself and refuses
    them, and resolving them here would hide that refusal.
    """
    return to_bus(os.path.abspath(path))


class Client:
    """Connection to btrfsd on the system bus (honours DBUS_SYSTEM_BUS_ADDRESS)."""

    def __init__(self, interactive: bool | None = None) -> None:
        self._bus: MessageBus | None = None
        # Let polkit ask for a password only when a person can answer.
        self.interactive = sys.stdin.isatty() if interactive is None else interactive

    async def __aenter__(self) -> Client:
        try:
            self._bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
        except (OSError, EOFError) as e:
            addr = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS", "the system bus")
            raise CallError("org.freedesktop.DBus.Error.NoServer",
                            f"cannot connect to {addr}: {e}") from e
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._bus is not None:
            self._bus.disconnect()

    async def call(self, path: str, interface: str, member: str, signature: str = "",
                   body: list[Any] | None = None) -> list[Any]:
        """Call a method on btrfsd; return the reply body. Raises CallError."""
        assert self._bus is not None
        flags = MessageFlag.NONE
        if self.interactive:
            flags = MessageFlag.ALLOW_INTERACTIVE_AUTHORIZATION
        reply = await self._bus.call(Message(
            destination=BUS_NAME, path=path, interface=interface, member=member,
            signature=signature, body=body or [], flags=flags,
        ))
        assert reply is not None
        if reply.message_type == MessageType.ERROR:
            raise CallError.from_reply(reply)
        return list(reply.body)

    async def subscribe(self, rule: str, handler: Callable[[Message], None]) -> None:
        """Receive signals matching ``rule`` (a D-Bus match rule) in ``handler``."""
        assert self._bus is not None
        self._bus.add_message_handler(handler)
        reply = await self._bus.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus", member="AddMatch", signature="s", body=[rule]))
        if reply is not None and reply.message_type == MessageType.ERROR:
            raise CallError.from_reply(reply)

    async def manager(self, member: str, signature: str = "", *args: Any) -> list[Any]:
        return await self.call(ROOT_PATH, MANAGER_IFACE, member, signature, list(args))

    async def filesystem(self, fs_path: str, member: str, signature: str = "",
                         *args: Any) -> list[Any]:
        return await self.call(fs_path, FILESYSTEM_IFACE, member, signature, list(args))

    async def filesystem_of(self, path: str) -> str:
        """Object path of the filesystem holding ``path`` (as ``absolute`` gives it).
        Raises CallError (NotFound, NotBtrfs, ...) from ResolvePath."""
        fs_path, _subvolume = await self.manager("ResolvePath", "sa{sv}", path, {})
        return str(fs_path)

    async def properties(self, path: str, interface: str) -> dict[str, Any]:
        (props,) = await self.call(path, "org.freedesktop.DBus.Properties", "GetAll", "s",
                                   [interface])
        return dict(unwrap(props))

    @staticmethod
    def plain(value: Any) -> Any:
        return unwrap(value)
