"""The system-bus side: btrfsd's signals in, the few reads the agent needs out.

Reads go to btrfsd *as the user* (the agent's own connection), so btrfsd answers with
what this user may see (docs/api.md, "What a read shows"). The agent never polls: it
reads only when a signal arrives, shares one GetQuotaUsage among the signals of one
pass, and backs off when btrfsd says Busy (expensive reads are limited per uid,
core/limits.py on the daemon's side).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusError

from ..constants import (
    BUS_NAME,
    ERROR_PREFIX,
    FILESYSTEM_IFACE,
    JOB_IFACE,
    POLKIT_BUS_NAME,
    POLKIT_IFACE,
    POLKIT_PATH,
    Action,
)
from ..replies import unwrap

log = logging.getLogger("btrfsd-notify")

BUSY = ERROR_PREFIX + "Busy"
PROPERTIES = "org.freedesktop.DBus.Properties"
QUOTA_RULE = (f"type='signal',sender='{BUS_NAME}',interface='{FILESYSTEM_IFACE}',"
              "member='QuotaWarning'")
JOB_RULE = f"type='signal',sender='{BUS_NAME}',interface='{JOB_IFACE}',member='Completed'"
ADMIN_CACHE = 300.0  # seconds an answer about read-all is kept (rules rarely change)


def busy_delay(message: str, attempt: int) -> float:
    """How long to wait after a Busy reply: what btrfsd asked for ("ask again in N s")
    when it said, else 1, 2, 4, ... seconds; at most 30."""
    m = re.search(r"in (\d+(?:\.\d+)?) ?s", message)
    return min(30.0, float(m.group(1)) if m else 2.0 ** attempt)


class Btrfsd:
    """btrfsd as this user sees it, over one system-bus connection."""

    def __init__(self, bus: MessageBus, *, clock: Callable[[], float],
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 attempts: int = 5) -> None:
        self.bus = bus
        self.clock = clock
        self.sleep = sleep
        self.attempts = attempts
        self._usage: dict[str, asyncio.Future[list[Any]]] = {}
        self._admin: tuple[float, bool] | None = None

    async def call(self, path: str, iface: str, member: str, signature: str = "",
                   body: list[Any] | None = None, dest: str = BUS_NAME) -> list[Any]:
        """One method call; on Busy it waits and asks again (``attempts`` times in all).
        Raises DBusError for any other error, or Busy on the last attempt."""
        for attempt in range(self.attempts):
            reply = await self.bus.call(Message(destination=dest, path=path, interface=iface,
                                                member=member, signature=signature,
                                                body=body or []))
            assert reply is not None
            if reply.message_type != MessageType.ERROR:
                return unwrap(reply.body)  # type: ignore[no-any-return]
            text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
            if reply.error_name != BUSY or attempt == self.attempts - 1:
                raise DBusError(reply.error_name or "", text, reply)
            delay = busy_delay(text, attempt)
            log.info("btrfsd is busy for us (%s); asking again in %.1f s", text, delay)
            await self.sleep(delay)
        raise AssertionError("unreachable")

    async def subscribe(self, on_signal: Callable[[Message], None]) -> None:
        """Deliver QuotaWarning and Job.Completed from btrfsd to ``on_signal``."""
        for rule in (QUOTA_RULE, JOB_RULE):
            await self.call("/org/freedesktop/DBus", "org.freedesktop.DBus", "AddMatch", "s",
                            [rule], dest="org.freedesktop.DBus")

        def handler(msg: Message) -> None:
            if msg.message_type == MessageType.SIGNAL and \
                    (msg.interface, msg.member) in ((FILESYSTEM_IFACE, "QuotaWarning"),
                                                    (JOB_IFACE, "Completed")):
                on_signal(msg)

        self.bus.add_message_handler(handler)

    async def quota_rows(self, fs_path: str) -> list[Any]:
        """GetQuotaUsage's qgroup rows this user may see; concurrent askers for the same
        filesystem share one call (the signals of one pass come together)."""
        pending = self._usage.get(fs_path)
        if pending is None:
            pending = asyncio.ensure_future(self.call(fs_path, FILESYSTEM_IFACE,
                                                      "GetQuotaUsage", "a{sv}", [{}]))
            self._usage[fs_path] = pending
            pending.add_done_callback(lambda _: self._usage.pop(fs_path, None))
        _mode, _inconsistent, rows = await asyncio.shield(pending)
        return rows  # type: ignore[no-any-return]

    async def properties(self, path: str, iface: str) -> dict[str, Any]:
        """All properties of an object (read-level data, no polkit check)."""
        (props,) = await self.call(path, PROPERTIES, "GetAll", "s", [iface])
        return props  # type: ignore[no-any-return]

    async def mount_points(self, fs_path: str) -> list[str]:
        """Where the filesystem is mounted ([] when it went away)."""
        try:
            return list((await self.properties(fs_path, FILESYSTEM_IFACE))["MountPoints"])
        except DBusError:
            return []

    async def sees_everything(self) -> bool:
        """Whether polkit grants this user org.btrfsd1.read-all (admins; never asks for a
        password). Polkit answers a process about itself; any failure counts as no."""
        now = self.clock()
        if self._admin is not None and now - self._admin[0] < ADMIN_CACHE:
            return self._admin[1]
        subject = ["system-bus-name", {"name": Variant("s", self.bus.unique_name)}]
        try:
            (result,) = await self.call(POLKIT_PATH, POLKIT_IFACE, "CheckAuthorization",
                                        "(sa{sv})sa{ss}us",
                                        [subject, Action.READ_ALL, {}, 0, ""],
                                        dest=POLKIT_BUS_NAME)
            allowed = bool(result[0])
        except DBusError as e:
            log.info("cannot ask polkit about %s: %s", Action.READ_ALL, e)
            allowed = False
        self._admin = (now, allowed)
        return allowed
