"""PolicyKit client: asks polkitd whether the *calling* connection may perform an action."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusError

from ..constants import POLKIT_BUS_NAME, POLKIT_IFACE, POLKIT_PATH

log = logging.getLogger(__name__)

ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied"
INTERACTIVE_REQUIRED = "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired"
# Error names that mean "polkitd is not there", as opposed to "polkitd said no".
_UNREACHABLE = {
    "org.freedesktop.DBus.Error.ServiceUnknown",
    "org.freedesktop.DBus.Error.NameHasNoOwner",
    "org.freedesktop.DBus.Error.NoReply",
    "org.freedesktop.DBus.Error.Disconnected",
    "org.freedesktop.DBus.Error.TimedOut",
}
# The bus could not start polkitd: its own spawn errors (Spawn.ChildExited,
# Spawn.ExecFailed, ...) or systemd's answer to an activation request (a masked or
# failed polkit.service). Also "not there": root keeps working.
_UNREACHABLE_PREFIXES = ("org.freedesktop.DBus.Error.Spawn.", "org.freedesktop.systemd1.")
_ALLOW_USER_INTERACTION = 1
# A check without interaction answers in milliseconds once polkitd runs. The bus starts
# polkitd for the first call that needs it (polkit.service is static under systemd and
# starts only by D-Bus activation): ~40 ms in the test sandbox. The bus gives up on an
# activation after its service_start_timeout (25 s by default). The limit stays below
# the 25 s default reply timeout of callers (libdbus, GDBus, sd-bus), so a caller whose
# check cannot be answered hears btrfsd's "PolicyKit is not reachable" instead of a bare
# NoReply; an activation still under way goes on without us and serves the next call.
_TIMEOUT = 20.0
# One with a password prompt waits for a person, so it gets much longer.
_INTERACTIVE_TIMEOUT = 300.0
# The longest authorize() may take: its uid look-up and polkit's answer, each bounded
LONGEST_QUESTION = _TIMEOUT + _INTERACTIVE_TIMEOUT


class PolkitUnavailable(Exception):
    """polkitd could not be asked (not running, or did not answer in time)."""


@dataclass(frozen=True)
class Caller:
    """Who made a call: the sender's unique bus name and its uid."""

    sender: str
    uid: int


@dataclass(frozen=True)
class Identity:
    """Who a connection is, from the bus daemon's record of it."""

    uid: int
    groups: tuple[int, ...]


Details = tuple[tuple[str, str], ...]


def _frozen(details: Mapping[str, str]) -> Details:
    return tuple(sorted(details.items()))


# How long a connection polkit allowed an action counts as "allowed lately" (see
# Authority.allowed_lately): a hint for when to start work early, never a decision.
ALLOWED_LATELY_FOR = 60.0
_KEPT_AT_MOST = 4096  # identities and "allowed lately" entries each


class Authority:
    """Authorizes method calls with polkitd, failing closed (only uid 0) without it."""

    def __init__(self, bus: MessageBus) -> None:
        self._bus = bus
        # Unique names are never reused on a bus, so a cached identity cannot go stale.
        self._ids: OrderedDict[str, Identity] = OrderedDict()
        # (sender, action, details) -> when polkit last allowed it; (sender, action)
        # polkit ever refused, for any details (sticky: unique names are never reused)
        self._allowed: OrderedDict[tuple[str, str, Details], float] = OrderedDict()
        self._refused: OrderedDict[tuple[str, str], None] = OrderedDict()

    def note_allowed(self, sender: str, action: str, details: Mapping[str, str]) -> None:
        """Remember that polkit allowed ``sender`` ``action`` with ``details`` just now
        (nothing, once it refused ``sender`` ``action`` for any details)."""
        if (sender, action) in self._refused:
            return
        key = (sender, action, _frozen(details))
        self._allowed[key] = time.monotonic()
        self._allowed.move_to_end(key)
        if len(self._allowed) > _KEPT_AT_MOST:
            self._allowed.popitem(last=False)

    def note_refused(self, sender: str, action: str) -> None:
        """Remember that polkit refused ``sender`` ``action`` (whatever the details): it
        is never allowed lately again."""
        if (sender, action) in self._refused:  # nothing allowed lately to drop since
            self._refused.move_to_end((sender, action))
            return
        self._refused[(sender, action)] = None
        if len(self._refused) > _KEPT_AT_MOST:
            self._refused.popitem(last=False)
        for key in [k for k in self._allowed if k[:2] == (sender, action)]:
            del self._allowed[key]

    def allowed_lately(self, sender: str, action: str, details: Mapping[str, str]) -> bool:
        """Whether polkit allowed ``sender`` ``action`` with these very ``details`` (a
        rule may decide on the path) in the last ALLOWED_LATELY_FOR seconds and never
        refused ``sender`` ``action``. Only a hint: polkit decides every call."""
        if (sender, action) in self._refused:
            return False
        when = self._allowed.get((sender, action, _frozen(details)))
        return when is not None and time.monotonic() - when < ALLOWED_LATELY_FOR

    async def _call(self, msg: Message, timeout: float) -> Message:
        # asyncio.timeout, not wait_for: no extra Task per call on this hot path.
        async with asyncio.timeout(timeout):
            reply = await self._bus.call(msg)
        assert reply is not None
        return reply

    async def identity_of(self, sender: str) -> Identity:
        """The uid and groups of a connection, as the bus daemon saw it connect (never
        what the caller says). Raises DBusError if the bus does not know the sender (it
        has gone away)."""
        if (known := self._ids.get(sender)) is not None:
            return known
        reply = await self._call(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="GetConnectionCredentials",
                signature="s",
                body=[sender],
            ),
            _TIMEOUT,
        )
        found = reply.body[0] if reply.message_type != MessageType.ERROR else {}
        if "UnixUserID" not in found:
            raise DBusError(reply.error_name or ACCESS_DENIED, "cannot identify the caller")
        groups = found.get("UnixGroupIDs")  # a bus without them: no groups, fail closed
        identity = Identity(uid=int(found["UnixUserID"].value),
                            groups=tuple(int(g) for g in groups.value) if groups else ())
        self._ids[sender] = identity
        if len(self._ids) > _KEPT_AT_MOST:
            self._ids.popitem(last=False)
        return identity

    async def uid_of(self, sender: str) -> int:
        """The uid of a connection (see identity_of). Raises DBusError."""
        return (await self.identity_of(sender)).uid

    async def check(self, sender: str, action: str, interactive: bool,
                    details: Mapping[str, str] | None = None) -> tuple[bool, bool]:
        """Ask polkitd; return (authorized, challenge).

        ``details`` (valid UTF-8 strings; see auth.call_details) tell polkit what is at
        stake: rules read them with ``action.lookup(key)``, and the action's message
        shows them as ``$(key)``.
        Raises PolkitUnavailable when polkitd cannot be reached (not running and the bus
        could not start it, or no answer in time).
        """
        subject = ("system-bus-name", {"name": Variant("s", sender)})
        msg = Message(
            destination=POLKIT_BUS_NAME,
            path=POLKIT_PATH,
            interface=POLKIT_IFACE,
            member="CheckAuthorization",
            signature="(sa{sv})sa{ss}us",
            body=[subject, action, dict(details or {}),
                  _ALLOW_USER_INTERACTION if interactive else 0, ""],
            # No NO_AUTOSTART: under systemd polkitd runs only once the bus has activated
            # it, so a call that may not start it would refuse every non-root caller.
        )
        try:
            reply = await self._call(msg, _INTERACTIVE_TIMEOUT if interactive else _TIMEOUT)
        except (TimeoutError, OSError, EOFError) as e:
            raise PolkitUnavailable(str(e) or type(e).__name__) from e
        if reply.message_type == MessageType.ERROR:
            name = reply.error_name or ""
            if name in _UNREACHABLE or name.startswith(_UNREACHABLE_PREFIXES):
                raise PolkitUnavailable(reply.error_name or "")
            # Any other polkit error (e.g. an unknown action) means "not authorized".
            log.warning("polkit error action=%s error=%s %s", action, reply.error_name,
                        reply.body[0] if reply.body else "")
            return False, False
        authorized, challenge, _details = reply.body[0]
        return bool(authorized), bool(challenge)
