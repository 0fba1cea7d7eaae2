"""Core errors as D-Bus errors: the name ``org.btrfsd1.Error.<Name>``, a sentence for a
person (the core's message plus its hint worded for D-Bus callers), and the structured
details front ends word for themselves.

The reply body is ``(s text, a{sv} details)``: clients that read only the first string
(gdbus, busctl, most bindings) get the whole sentence; ``details`` holds ``message`` (the
core's sentence without advice), ``hint`` (a HintKind name) and the hint's facts.
"""

from __future__ import annotations

import logging

from dbus_fast import Message, MessageType, Variant
from dbus_fast.errors import DBusError

from ..constants import ERROR_PREFIX
from ..errors import BtrfsdError, FactValue, Failed, Hint, HintKind, NotPermitted
from ..names import display, to_bus
from .paths import filesystem_path, job_path
from .polkit import ACCESS_DENIED
from .variants import to_variant

log = logging.getLogger(__name__)


def advice(hint: Hint) -> str:
    """What a D-Bus caller can do, in the API's own terms. Raises KeyError/ValueError
    for a hint without its facts (to_dbus_error falls back to the plain message)."""
    f = hint.facts
    match hint.kind:
        case HintKind.ENABLE_QUOTA:
            return f"Call EnableQuota on {filesystem_path(str(f['filesystem']))} first."
        case HintKind.JOB_RUNNING:
            return (f"It is {job_path(int(f['job_id']))}: wait for its Completed signal, or "
                    "call its Cancel method where its kind can be cancelled.")
        case HintKind.OTHER_FILESYSTEM:
            return (f"Call that filesystem's object, {filesystem_path(str(f['filesystem']))}"
                    " (Manager.ResolvePath finds it).")
        case HintKind.LIST_SCHEDULES:
            return "Manager.GetSchedules lists the schedules."
    return ""


class DetailedError(DBusError):
    """A DBusError whose reply carries the details dictionary after the text."""

    def __init__(self, type_: str, text: str, details: dict[str, Variant]) -> None:
        super().__init__(type_, text)
        self.details = details

    # dbus-fast builds the error reply with _as_message (pinned by
    # tests/unit/test_dbus_fast_internals.py); the base class sends only the text.
    def _as_message(self, msg: Message) -> Message:
        return Message(message_type=MessageType.ERROR, reply_serial=msg.serial,
                       destination=msg.sender, error_name=self.type, signature="sa{sv}",
                       body=[self.text, self.details])


def to_dbus_error(err: BtrfsdError) -> DBusError:
    """Translate a core error into its ``org.btrfsd1.Error.<name>`` D-Bus error."""
    message = display(err.message)
    details: dict[str, Variant] = {"message": Variant("s", message)}
    text = message
    if err.hint is not None:
        try:
            facts: dict[str, FactValue] = dict(err.hint.facts)
            extra = {k: Variant("s", to_bus(v)) if k == "path" and isinstance(v, str)
                     else to_variant(v) for k, v in facts.items()}
            extra["hint"] = Variant("s", str(err.hint.kind))
            text = f"{message} {advice(err.hint)}".rstrip()
        except (KeyError, ValueError, TypeError):
            # a hint missing its facts is a bug of ours: the caller still gets the error
            log.exception("cannot word the hint of %s", err.name)
            extra, text = {}, message
        details.update(extra)
        details["message"] = Variant("s", message)
    if isinstance(err, NotPermitted):
        return DetailedError(ACCESS_DENIED, text, details)
    return DetailedError(ERROR_PREFIX + err.name, text, details)


def failed_reply(text: str, *, reply_serial: int, destination: str | None,
                 serial: int = 0) -> Message:
    """An org.btrfsd1.Error.Failed reply saying ``text``, with the (text, details) body
    every btrfsd error has: for a reply that could not be made or sent as it was."""
    error = to_dbus_error(Failed(text))
    assert isinstance(error, DetailedError)  # a Failed is never AccessDenied
    return Message(message_type=MessageType.ERROR, serial=serial, reply_serial=reply_serial,
                   destination=destination, error_name=error.type, signature="sa{sv}",
                   body=[error.text, error.details])
