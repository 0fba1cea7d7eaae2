"""The error every btrfsctl call raises (standard library only: the lean path imports it)."""

from __future__ import annotations

from ..replies import unwrap

TYPE_CHECKING = False  # typing costs ~5 ms at start-up; mypy still reads the block below
if TYPE_CHECKING:
    from typing import Any


class CallError(Exception):
    """A call failed.

    ``name`` is the D-Bus error name and ``text`` the reply's sentence for a person.
    ``details`` is the reply's optional second argument (a{sv}, unwrapped; ``{}`` when the
    daemon sent none, as older daemons do): ``message``, the core's sentence without
    front-end advice; ``hint``, a kind of advice each front end words itself; other keys
    are facts (errors.advice words the hints for btrfsctl).
    """

    def __init__(self, name: str, text: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{name}: {text}")
        self.name = name
        self.text = text
        self.details: dict[str, Any] = details or {}

    @classmethod
    def from_reply(cls, reply: Any) -> CallError:
        """The error an ERROR reply (a dbus-fast Message) stands for. Raises nothing: a
        missing or malformed part becomes "" or ``{}``."""
        return cls.from_body(reply.error_name, unwrap(list(reply.body or [])))

    @classmethod
    def from_body(cls, name: str | None, body: list[Any]) -> CallError:
        """The error an ERROR reply named ``name`` with ``body`` (``s`` or ``s a{sv}``,
        Variants already unwrapped) stands for. Raises nothing: a missing or malformed
        part becomes "" or ``{}``."""
        text = str(body[0]) if body else ""
        details = body[1] if len(body) > 1 else {}
        return cls(name or "unknown", text, details if isinstance(details, dict) else {})
