"""Fail-closed authorization and error translation for every exported method.

Each exported method is wrapped by ``authorized(ACTION)``; ``check_interface`` refuses
an interface with a method that lacks it, and the server runs that check before export.
The wrapper tells polkit what a call is about (``call_details``), so rules can decide on
it and an authentication dialog can name it.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import unicodedata
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from typing import Any, Protocol, TypeVar, cast

from dbus_fast import Message, MessageFlag
from dbus_fast.errors import DBusError
from dbus_fast.service import ServiceInterface

from ..constants import ALL_ACTIONS, ERROR_PREFIX, Action
from ..core.gate import Gate
from ..core.limits import PerCallerLimit
from ..errors import BtrfsdError
from .context import current_message
from .errors import to_dbus_error
from .polkit import (
    ACCESS_DENIED,
    INTERACTIVE_REQUIRED,
    LONGEST_QUESTION,
    Authority,
    Caller,
    PolkitUnavailable,
)

log = logging.getLogger(__name__)

ACTION_ATTR = "__btrfsd_action__"
OTHER_USER_ACTION_ATTR = "__btrfsd_other_user_action__"
_current_caller: ContextVar[Caller | None] = ContextVar("btrfsd_caller", default=None)
_own_grant: ContextVar[bool] = ContextVar("btrfsd_own_grant", default=False)
# A call running while polkit is asked (_while_asking): done once polkit allowed it
_granted: ContextVar[asyncio.Future[None] | None] = ContextVar("btrfsd_granted", default=None)
# ... and the same answer as a gate its work in a worker thread waits at (core/gate.py)
_gate: ContextVar[Gate | None] = ContextVar("btrfsd_gate", default=None)
# Calls that prepare (root's, while polkit is asked) at once: each holds a worker thread
# at its gate until polkit answers, so while polkitd is slow to answer, the rest wait for
# polkit first and hold no thread (the default executor has only a few).
PREPARING_AT_MOST = 2
_preparing = 0

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
T = TypeVar("T")

# Method parameters whose values polkit is told, each under its own name as the key.
DETAIL_ARGS = ("path", "source", "destination", "name", "old", "new")
_PATH_ARGS = frozenset({"path", "source", "destination", "old", "new"})
# A detail longer than this is cut (marked with DETAIL_TRUNCATED): a caller may send a
# path of megabytes, and polkitd, its log and a dialog need no more than PATH_MAX.
MAX_DETAIL_CHARS = 4096
DETAIL_TRUNCATED = "\\[truncated]"
# Characters a dialog must not render as they are: controls and line breaks could forge
# extra lines of an authentication message, bidi and zero-width format characters could
# make one path look like another; surrogates are not UTF-8 (polkit's a{ss} needs it).
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


class HasAuthority(Protocol):
    authority: Authority


class HasOwner(Protocol):
    authority: Authority

    @property
    def owner_uid(self) -> int: ...


def current_caller() -> Caller:
    """The caller of the method being served: authorized, except in a call that runs
    while polkit is asked (_while_asking), where polkit may still refuse them (a read
    only uses it to choose what the caller may see; other calls run so only for root).
    Raises RuntimeError outside a method call."""
    caller = _current_caller.get()
    if caller is None:
        raise RuntimeError("no authorized call in this context")
    return caller


def escape_detail(value: str) -> str:
    """``value`` as printable, valid UTF-8 text of at most MAX_DETAIL_CHARS (plus the
    truncation mark), one-to-one so a rule cannot mistake one value for another:
    ``\\`` for a backslash, ``\\xNN`` for a byte that was not UTF-8 (a surrogateescape'd
    string from the kernel), ``\\uNNNN``/``\\UNNNNNNNN`` for a control, format, line
    separator or surrogate character. Raises nothing for any str.
    """
    if len(value) <= MAX_DETAIL_CHARS and value.isprintable() and "\\" not in value:
        return value  # the common case, checked at C speed
    out: list[str] = []
    size = 0
    for ch in value:
        code = ord(ch)
        if ch == "\\":
            piece = "\\\\"
        elif 0xDC80 <= code <= 0xDCFF:
            piece = f"\\x{code - 0xDC00:02x}"
        elif unicodedata.category(ch) in _ESCAPED_CATEGORIES:
            piece = f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
        else:
            piece = ch
        if size + len(piece) > MAX_DETAIL_CHARS:
            out.append(DETAIL_TRUNCATED)
            break
        out.append(piece)
        size += len(piece)
    return "".join(out)


def _text(get: Callable[[], object]) -> str:
    """``get()`` as an escaped detail; "" when it fails or gives None. Raises nothing."""
    try:
        value = get()
        if value is None:
            return ""
        if isinstance(value, bytes):
            value = value.decode("utf-8", "surrogateescape")
        return escape_detail(value if isinstance(value, str) else str(value))
    except Exception:
        # A detail is worth less than the call: a rule that needs it sees "" and says no.
        log.warning("cannot describe a call detail for polkit", exc_info=True)
        return ""


def _canonical(value: object) -> object:
    """An absolute path without repeated or trailing slashes; anything else as it is.

    The daemon walks a path by its non-empty components and refuses ``.``, ``..`` and
    symbolic links (fs/paths.py), so this is the very path it acts on, and a rule
    comparing paths need not know about ``//``.
    """
    if isinstance(value, str) and value.startswith("/"):
        return "/" + "/".join(part for part in value.split("/") if part)
    return value


def _argument(args: Sequence[object], index: int, key: str) -> object:
    """The argument at ``index``, canonical if it is a path. Raises IndexError."""
    return _canonical(args[index]) if key in _PATH_ARGS else args[index]


def detail_positions(fn: Callable[..., Any]) -> tuple[tuple[int, str], ...]:
    """(index into the call's arguments after ``self``, key) for each parameter of
    ``fn`` named in DETAIL_ARGS. Raises ValueError/TypeError if ``fn`` has no signature.
    """
    params = list(inspect.signature(fn).parameters)[1:]  # without self
    return tuple((i, name) for i, name in enumerate(params) if name in DETAIL_ARGS)


def call_details(obj: object, args: Sequence[object],
                 positions: Sequence[tuple[int, str]]) -> dict[str, str]:
    """What a call on ``obj`` with ``args`` is about, as polkit details (a{ss}).

    The arguments at ``positions`` (see detail_positions) under their names, paths
    without repeated or trailing slashes, every value escaped (escape_detail); for an
    object with a filesystem (``obj.fs``): ``filesystem`` (its UUID), ``label`` and
    ``mount_point``; for a job (``obj.job``): ``operation``, ``job`` (its id) and
    ``filesystem``. Each key is always present ("" when its value cannot be read), so a
    policy message using ``$(key)`` never shows the placeholder. Raises nothing.
    """
    details: dict[str, str] = {}
    try:
        for index, key in positions:
            details[key] = _text(functools.partial(_argument, args, index, key))
        fs = getattr(obj, "fs", None)
        if fs is not None:
            details["filesystem"] = _text(lambda: fs.uuid)
            details["label"] = _text(lambda: fs.label)
            details["mount_point"] = _text(
                lambda: fs.primary_mount.mount_point if fs.mounts else "")
        job = getattr(obj, "job", None)
        if job is not None:
            details["operation"] = _text(lambda: job.operation)
            details["job"] = _text(lambda: job.id)
            details["filesystem"] = _text(lambda: job.filesystem)
    except Exception:
        log.warning("cannot describe a call for polkit", exc_info=True)
    return details


async def authorize(authority: Authority, msg: Message,
                    action: str | Callable[[int], str],
                    details: Mapping[str, str] | None = None) -> Caller:
    """Authorize the sender of ``msg`` for ``action`` (or for ``action(uid)``, when the
    action depends on who calls), telling polkit ``details`` (see call_details).

    Raises DBusError AccessDenied or InteractiveAuthorizationRequired.
    """
    sender = msg.sender or ""
    uid = await authority.uid_of(sender)
    caller = Caller(sender=sender, uid=uid)
    if callable(action):
        action = action(uid)
    interactive = bool(msg.flags & MessageFlag.ALLOW_INTERACTIVE_AUTHORIZATION)
    try:
        allowed, challenge = await authority.check(sender, action, interactive, details)
    except PolkitUnavailable as e:
        # Without polkitd nobody can be asked, so only root keeps working.
        log.warning("polkit unreachable (%s); uid=%d %s", e, uid,
                    "allowed as root" if uid == 0 else "refused")
        if uid == 0:
            return caller
        authority.note_refused(sender, action)
        raise DBusError(
            ACCESS_DENIED,
            f"PolicyKit is not reachable, so only root may call {msg.member}; start polkitd.",
        ) from None
    if allowed:
        authority.note_allowed(sender, action, details or {})
        return caller
    authority.note_refused(sender, action)
    log.info("denied uid=%d action=%s method=%s challenge=%s", uid, action, msg.member, challenge)
    if challenge and not interactive:
        raise DBusError(
            INTERACTIVE_REQUIRED,
            f"{action} needs authentication; call again allowing interactive authorization.",
        )
    raise DBusError(ACCESS_DENIED, f"Not authorized to perform {action}.")


async def _caller(authority: Authority, msg: Message) -> Caller:
    """Who sent ``msg``, as the bus saw them connect. Raises DBusError."""
    sender = msg.sender or ""
    return Caller(sender=sender, uid=await authority.uid_of(sender))


async def _is_root(authority: Authority, msg: Message) -> bool:
    """Whether the sender of ``msg`` is root, whom polkit allows everything. Raises
    DBusError (the bus does not know the sender)."""
    return await authority.uid_of(msg.sender or "") == 0


async def _early(authority: Authority, msg: Message, action: str,
                 details: Mapping[str, str]) -> bool:
    """Whether a read of the sender of ``msg`` starts while polkit is asked: for root
    (whom polkit allows everything) and for a connection polkit allowed ``action`` with
    the same ``details`` lately and never refused ``action``. Not for anyone else: a
    caller polkit refuses must not learn from the refusal's timing how long the read
    took, nor make btrfsd do reads it then drops (reviews of issue 11's change).
    Raises DBusError (the bus does not know the sender)."""
    return (await _is_root(authority, msg)
            or authority.allowed_lately(msg.sender or "", action, details))


async def _while_asking(authority: Authority, msg: Message, action: str,
                        details: Mapping[str, str], work: Awaitable[T],
                        gated: bool = False) -> T:
    """Run ``work`` while polkit is asked whether the sender of ``msg`` may ``action``:
    the polkit round trip (1.5-3 ms) and the call's own work overlap instead of adding
    up (docs/benchmarks.md, issue 11). For whom: a read (_early) or a call that prepares
    (root only, ``gated``). Nothing changes before polkit allowed the call: a read waits
    in until_allowed() before anything that changes something (a transaction commit),
    and the work of a ``gated`` call in a worker thread waits at current_gate() before
    its first change, so a refused call changes nothing. The work's outcome is kept
    until polkit answers: a caller polkit refuses gets the refusal, never the work's
    result or error, once the work has ended, so the call holds its places
    (core/limits.py) as long as an allowed one. Raises DBusError (AccessDenied,
    InteractiveAuthorizationRequired), else what the work raises."""
    granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    # only for work that waits at it (``gated``); the limit is a backstop: authorize()
    # opens or shuts it
    gate = Gate(LONGEST_QUESTION) if gated else None
    token, gate_token = _granted.set(granted), _gate.set(gate)
    try:
        task = asyncio.ensure_future(work)  # in this context: it sees both
    finally:
        _granted.reset(token)
        _gate.reset(gate_token)
    # its outcome, when nobody awaits it (refused, cancelled), is dropped, not reported
    task.add_done_callback(_dropped)
    try:
        await authorize(authority, msg, action, details)
    except asyncio.CancelledError:
        granted.cancel()
        if gate is not None:
            gate.shut()
        task.cancel()
        raise
    except BaseException:
        granted.cancel()  # work waiting in until_allowed() ends there
        if gate is not None:
            gate.shut()  # and work in a thread at its gate
        await asyncio.wait({task})
        raise
    granted.set_result(None)
    if gate is not None:
        gate.open()
    return await task


@contextmanager
def _one_preparing() -> Iterator[None]:
    """Count a call that prepares while it runs (PREPARING_AT_MOST)."""
    global _preparing
    _preparing += 1
    try:
        yield
    finally:
        _preparing -= 1


def _dropped(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # marks it retrieved


def current_gate() -> Gate | None:
    """In a call that prepares (runs while polkit is asked, ``gated``), the gate its
    work in a worker thread waits at before its first change; None in any other call,
    reads run while polkit is asked included (nothing to wait for)."""
    return _gate.get()


async def until_allowed() -> None:
    """In a read that runs while polkit is asked (_while_asking), wait until polkit
    allowed the call: call it before anything that changes something (a transaction
    commit, say), so a refused call changes nothing. Returns at once in any other call.
    Raises CancelledError when polkit refused the call."""
    granted = _granted.get()
    if granted is not None:
        await asyncio.shield(granted)


def acting_for_caller() -> bool:
    """Whether the call being served was allowed only by its own-objects action: then
    the core acts with the caller's filesystem identity, and the kernel's own permission
    checks (write access to the directory, ownership of the source) decide."""
    return _own_grant.get()


async def _allowed_without_asking(authority: Authority, msg: Message, action: str,
                                  own_action: str, details: Mapping[str, str]
                                  ) -> tuple[Caller, bool] | None:
    """(caller, only-own) when polkit allows ``action`` or ``own_action`` without a
    question; None to fall back to authorizing ``action`` the usual way (root, a
    challenge, a denial, polkit unreachable)."""
    sender = msg.sender or ""
    uid = await authority.uid_of(sender)
    if uid == 0:
        return None
    try:
        allowed, _ = await authority.check(sender, action, False, details)
        if allowed:
            return Caller(sender=sender, uid=uid), False
        allowed, _ = await authority.check(sender, own_action, False, details)
        if allowed:
            return Caller(sender=sender, uid=uid), True
    except PolkitUnavailable:
        pass
    return None


class HasReadLimit(Protocol):
    @property
    def read_limit(self) -> PerCallerLimit: ...


async def _place(obj: object, msg: Message, expensive: bool
                 ) -> AbstractAsyncContextManager[None]:
    """The caller's place for an expensive call (nothing for others, or root); entering
    it may wait for the caller's share of time (core/limits.py). Raises DBusError when
    the bus cannot say who the caller is."""
    if not expensive:
        return nullcontext()
    uid = await cast("HasAuthority", obj).authority.uid_of(msg.sender or "")
    if uid == 0:
        return nullcontext()
    return cast("HasReadLimit", obj).read_limit.hold(uid)


def authorized(action: str, *, other_user_action: str | None = None,
               own_action: str | None = None, expensive: bool = False,
               prepares: bool = False) -> Callable[[F], F]:
    """Mark an async interface method as needing ``action`` and wrap it.

    With ``other_user_action``, the object has an owner (``owner_uid``): its owner needs
    ``action``, anyone else ``other_user_action`` (a job's cancel, for instance).
    With ``own_action``, a caller polkit allows that action (but not ``action``) may act
    on what their own file permissions allow: the call runs with ``acting_for_caller()``
    true and the core uses the caller's filesystem identity.
    With ``expensive``, an unprivileged caller holds one of their few places
    (``read_limit``, core/limits.py) for the whole call, taken *before* polkit is asked:
    a caller over the limit gets Busy for the price of a dictionary look-up, so a flood of
    refused calls costs the daemon almost nothing; a caller who used up their share of
    the daemon's time waits in that place first (the wait counts as theirs, not as work).
    With ``prepares``, a call of root (whom polkit allows everything) runs while polkit
    is asked; its work waits at current_gate() before its first change.
    The wrapper authorizes the caller with polkit, telling it what the call is about
    (call_details: the method's ``path``/``source``/``destination``/``name`` arguments,
    the object's filesystem or job), runs the method (a method of Action.READ while
    polkit is asked, its outcome kept until polkit answers), and turns core errors
    into named D-Bus errors; anything unexpected is logged with its traceback and the
    caller gets org.btrfsd1.Error.Failed without internals.
    """
    for a in (action, other_user_action or action, own_action or action):
        if a not in ALL_ACTIONS:
            raise ValueError(f"unknown polkit action {a}")
    if prepares and other_user_action is not None:
        raise ValueError("a call that prepares asks polkit for one action")

    # A read changes nothing, so it may run while polkit is asked (_early).
    overlap = action == Action.READ and other_user_action is None and own_action is None

    def decorate(fn: F) -> F:
        # Once per method, not per call: which arguments name what is at stake.
        positions = detail_positions(fn)

        @functools.wraps(fn)
        async def wrapper(self: HasAuthority, *args: Any) -> Any:
            msg = current_message()
            uid: int | str = "?"
            token = own_token = None
            needed: str | Callable[[int], str] = action
            if other_user_action is not None:
                owner = cast("HasOwner", self).owner_uid
                needed = lambda uid: action if uid == owner else other_user_action  # noqa: E731
            try:
                # before polkit is asked: a caller over the limit costs a look-up only
                async with await _place(self, msg, expensive):
                    details = call_details(self, args, positions)
                    quick = (await _allowed_without_asking(self.authority, msg, action,
                                                           own_action, details)
                             if own_action is not None else None)
                    if quick is not None:
                        caller, only_own = quick
                        own_token = _own_grant.set(only_own)
                    elif ((read := overlap and await _early(self.authority, msg, action,
                                                             details))
                          or (prepares and await _is_root(self.authority, msg)
                              and _preparing < PREPARING_AT_MOST)):
                        # a call that prepares is counted before the next await
                        with nullcontext() if read else _one_preparing():
                            caller = await _caller(self.authority, msg)
                            uid = caller.uid
                            token = _current_caller.set(caller)
                            return await _while_asking(self.authority, msg, action,
                                                       details, fn(self, *args),
                                                       gated=not read)
                    else:
                        caller = await authorize(self.authority, msg, needed, details)
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
                if own_token is not None:
                    _own_grant.reset(own_token)

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
