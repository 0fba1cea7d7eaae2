"""The session-bus side: org.freedesktop.Notifications (any server: GNOME Shell, Plasma,
dunst, ...). One action, "default" ("Show details"), which a click invokes."""

from __future__ import annotations

import logging
from collections.abc import Callable

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusError

from .messages import Note

log = logging.getLogger("btrfsd-notify")

NAME = "org.freedesktop.Notifications"
PATH = "/org/freedesktop/Notifications"
APP_NAME = "btrfsd"
ICON = "drive-harddisk"
ACTION = "default"  # what a click on the notification invokes (the spec's default key)


class Desktop:
    """Notifications shown by this agent and what their action opens."""

    def __init__(self, bus: MessageBus, on_action: Callable[[Note], None]) -> None:
        self.bus = bus
        self.on_action = on_action
        self.actions = True
        self._shown: dict[int, Note] = {}

    async def _call(self, member: str, signature: str = "",
                    body: list[object] | None = None) -> list[object]:
        reply = await self.bus.call(Message(destination=NAME, path=PATH, interface=NAME,
                                            member=member, signature=signature,
                                            body=body or []))
        assert reply is not None
        if reply.message_type == MessageType.ERROR:
            raise DBusError(reply.error_name or "", str(reply.body[:1]), reply)
        return reply.body  # type: ignore[no-any-return]

    async def start(self) -> None:
        """Listen for ActionInvoked and NotificationClosed (they are sent to this
        connection); learn whether the server shows actions. Raises DBusError when no
        notification server answers."""
        for member in ("ActionInvoked", "NotificationClosed"):
            rule = f"type='signal',interface='{NAME}',member='{member}'"
            await self.bus.call(Message(destination="org.freedesktop.DBus",
                                        path="/org/freedesktop/DBus",
                                        interface="org.freedesktop.DBus", member="AddMatch",
                                        signature="s", body=[rule]))
        self.bus.add_message_handler(self._signal)
        (caps,) = await self._call("GetCapabilities")
        self.actions = "actions" in caps  # type: ignore[operator]

    def _signal(self, msg: Message) -> None:
        if msg.message_type != MessageType.SIGNAL or msg.interface != NAME:
            return
        if msg.member == "ActionInvoked" and msg.body[0] in self._shown:
            if msg.body[1] == ACTION:
                self.on_action(self._shown[msg.body[0]])
        elif msg.member == "NotificationClosed":
            self._shown.pop(msg.body[0], None)

    async def show(self, note: Note, replaces: int = 0) -> int:
        """Show ``note`` (replacing notification ``replaces`` when not 0); return its id.
        Raises DBusError when the server refuses."""
        actions = [ACTION, "Show details"] if self.actions else []
        hints = {"urgency": Variant("y", note.urgency), "category": Variant("s", "device"),
                 "desktop-entry": Variant("s", "btrfsd-notify")}
        (nid,) = await self._call("Notify", "susssasa{sv}i",
                                  [APP_NAME, replaces, ICON, note.summary, note.body, actions,
                                   hints, -1])
        self._shown.pop(replaces, None)
        self._shown[int(str(nid))] = note
        return int(str(nid))
