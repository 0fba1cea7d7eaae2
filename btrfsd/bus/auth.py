"""Fail-closed authorization and error translation for every exported method.

Each exported method is wrapped by ``authorized(ACTION)``; ``check_interface`` refuses
an interface with a method that lacks it, and the server runs that check before export.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, Protocol, TypeVar, cast

from dbus_fast import Message, MessageFlag
from dbus_fast.errors import DBusError
from dbus_fast.service import ServiceInterface

from ..constants import ALL_ACTIONS, ERROR_PREFIX
from ..errors import BtrfsdError
from .context import current_message
from .errors import to_dbus_error
from .polkit import ACCESS_DENIED, INTERACTIVE_REQUIRED, Authority, Caller, PolkitUnavailable

log = logging.getLogger(__name__)

ACTION_ATTR = "__btrfsd_action__"
OTHER_USER_ACTION_ATTR = "__btrfsd_other_user_action__"
_current_caller: ContextVar[Caller | None] = ContextVar("btrfsd_caller", default=None)

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


class HasAuthority(Protocol):
    authority: Authority


class HasOwner(Protocol):
    authority: Authority

    @property
    def owner_uid(self) -> int: ...


def current_caller() -> Caller:
    """The authorized caller of the method being served. Raises RuntimeError outside one."""
    caller = _current_caller.get()
    if caller is None:
        raise RuntimeError("no authorized call in this context")
    return caller


async def authorize(authority: Authority, msg: Message,
                    action: str | Callable[[int], str]) -> Caller:
    """Authorize the sender of ``msg`` for ``action`` (or for ``action(uid)``, when the
    action depends on who calls).

    Raises DBusError AccessDenied or InteractiveAuthorizationRequired.
    """
    sender = msg.sender or ""
    uid = await authority.uid_of(sender)
    caller = Caller(sender=sender, uid=uid)
    if callable(action):
        action = action(uid)
    interactive = bool(msg.flags & MessageFlag.ALLOW_INTERACTIVE_AUTHORIZATION)
    try:
        allowed, challenge = await authority.check(sender, action, interactive)
    except PolkitUnavailable as e:
        # Without polkitd nobody can be asked, so only root keeps working.
        log.warning("polkit unreachable (%s); uid=%d %s", e, uid,
                    "allowed as root" if uid == 0 else "refused")
        if uid == 0:
            return caller
        raise DBusError(
            ACCESS_DENIED,
            f"PolicyKit is not reachable, so only root may call {msg.member}; start polkitd.",
        ) from None
    if allowed:
        return caller
    log.info("denied uid=%d action=%s method=%s challenge=%s", uid, action, msg.member, challenge)
    if challenge and not interactive:
        raise DBusError(
            INTERACTIVE_REQUIRED,
            f"{action} needs authentication; call again allowing interactive authorization.",
        )
    raise DBusError(ACCESS_DENIED, f"Not authorized to perform {action}.")


def authorized(action: str, *, other_user_action: str | None = None) -> Callable[[F], F]:
    """Mark an async interface method as needing ``action`` and wrap it.

    With ``other_user_action``, the object has an owner (``owner_uid``): its owner needs
    ``action``, anyone else ``other_user_action`` (a job's cancel, for instance).
    The wrapper authorizes the caller with polkit, runs the method, and turns core errors
    into named D-Bus errors; anything unexpected is logged with its traceback and the
    caller gets org.btrfsd1.Error.Failed without internals.
    """
    for a in (action, other_user_action or action):
        if a not in ALL_ACTIONS:
            raise ValueError(f"unknown polkit action {a}")

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        async def wrapper(self: HasAuthority, *args: Any) -> Any:
            msg = current_message()
            uid: int | str = "?"
            token = None
            needed: str | Callable[[int], str] = action
            if other_user_action is not None:
                owner = cast("HasOwner", self).owner_uid
                needed = lambda uid: action if uid == owner else other_user_action  # noqa: E731
            try:
                caller = await authorize(self.authority, msg, needed)
                uid = caller.uid
                token = _current_caller.set(caller)
                return await fn(self, *args)
            except BtrfsdError as e:
                log.info("call failed method=%s uid=%s error=%s: %s", msg.member, uid,
                         e.name, e.message)
                raise to_dbus_error(e) from None
            except DBusError:
                raise
            except Exception:
                log.exception("internal error in %s (uid=%s)", msg.member, uid)
                raise DBusError(
                    ERROR_PREFIX + "Failed",
                    f"{msg.member} failed with an internal error; the btrfsd log "
                    "(journalctl -u btrfsd) has the details.",
                ) from None
            finally:
                if token is not None:
                    _current_caller.reset(token)

        setattr(wrapper, ACTION_ATTR, action)
        setattr(wrapper, OTHER_USER_ACTION_ATTR, other_user_action)
        return wrapper  # type: ignore[return-value]

    return decorate


def method_actions(interface: ServiceInterface) -> dict[str, str | None]:
    """Map each exported method of an interface to its declared action (None if missing)."""
    return {
        m.name: getattr(m.fn, ACTION_ATTR, None)
        for m in ServiceInterface._get_methods(interface)
        if not m.disabled
    }


def check_interface(interface: ServiceInterface) -> None:
    """Refuse (RuntimeError) an interface with a method that declares no polkit action."""
    missing = [name for name, action in method_actions(interface).items() if action is None]
    if missing:
        raise RuntimeError(
            f"{interface.name}: methods {missing} declare no polkit action; refusing to export"
        )
