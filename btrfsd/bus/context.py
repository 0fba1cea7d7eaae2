"""The calling message of the method being served, and the bus class that provides it.

dbus-fast hands a method handler only the arguments. The subclass below stores the
incoming message in a ContextVar around dispatch; asyncio copies the context into the
task that runs an async method, so each concurrent call sees its own message.
tests/integration/test_auth.py pins this with concurrent callers of different uids.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.constants import ErrorType
from dbus_fast.service import ServiceInterface

from ..constants import ROOT_PATH
from .errors import failed_reply
from .marshalled import as_reply
from .writer import PatientWriter

_current_message: ContextVar[Message | None] = ContextVar("btrfsd_message", default=None)


def current_message() -> Message:
    """Return the method-call message being served. Raises RuntimeError outside a call."""
    msg = _current_message.get()
    if msg is None:
        raise RuntimeError("no D-Bus call is being served in this context")
    return msg


class CallerAwareBus(MessageBus):
    """A MessageBus whose method handlers can see their message via current_message(),
    and whose writer waits for a full socket (bus/writer.py)."""

    async def connect(self) -> CallerAwareBus:
        """Connect, then put the patient writer in place (nothing large is sent before).
        Raises what MessageBus.connect raises."""
        await super().connect()
        self._writer.__class__ = PatientWriter
        return self

    def _make_method_handler(self, interface: ServiceInterface, method: Any) -> Callable[..., None]:
        inner = super()._make_method_handler(interface, method)

        def handler(msg: Message, send_reply: Any) -> None:
            token = _current_message.set(msg)
            try:
                inner(msg, send_reply)
            finally:
                _current_message.reset(token)

        return handler

    def send(self, msg: Message) -> Any:
        # Last line of defence: whatever failed while a reply was built or sent (a value
        # that does not marshal, a property getter that raised), the caller gets one of
        # btrfsd's named errors, never a library's; dbus-fast has logged the traceback.
        if (msg.message_type == MessageType.ERROR
                and msg.error_name == ErrorType.SERVICE_ERROR.value):
            msg = failed_reply("The call failed inside btrfsd; the btrfsd log has the "
                               "details.", reply_serial=msg.reply_serial,
                               destination=msg.destination)
        return super().send(as_reply(msg))

    # The ObjectManager lives at ROOT_PATH, so its signals must come from there: clients
    # such as GDBusObjectManagerClient listen on the manager's path, not the object's.
    def _object_manager_signal(self, member: str, signature: str, body: list[Any]) -> None:
        if self._disconnected:
            return
        self.send(Message(message_type=MessageType.SIGNAL, path=ROOT_PATH,
                          interface="org.freedesktop.DBus.ObjectManager", member=member,
                          signature=signature, body=body))

    def _emit_interface_added(self, path: str, interface: ServiceInterface) -> None:
        props = _read_properties(interface)
        self._object_manager_signal("InterfacesAdded", "oa{sa{sv}}",
                                    [path, {interface.name: props}])

    def _emit_interface_removed(self, path: str, removed_interfaces: list[str]) -> None:
        self._object_manager_signal("InterfacesRemoved", "oas", [path, removed_interfaces])


def _read_properties(interface: ServiceInterface) -> dict[str, Any]:
    """Current property values of an interface as variants (our getters are synchronous)."""
    result: dict[str, Any] = {}

    def done(_iface: ServiceInterface, values: Any, _user: Any, err: Exception | None) -> None:
        if err is None:
            result.update(values)

    ServiceInterface._get_all_property_values(interface, done)
    return result
