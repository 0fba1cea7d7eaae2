"""One NATS connection from NatsSettings, for the bridge and for btrfsctl, plus requests
that fail fast and clearly.

NATS tells a client about a publish its permissions refuse only as an asynchronous
error (``-ERR 'Permissions Violation for Publish to "subject"'``); the request itself
would wait for its timeout. Requester keeps the subjects of requests in flight and
fails the matching one at once with NOT_PERMITTED; a subject nobody listens on gives
NO_RESPONDERS (the server answers that at once, status 503).
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError, NoServersError
from nats.errors import TimeoutError as NatsTimeout

from . import protocol
from .settings import NatsSettings

log = logging.getLogger("btrfsd.fleet")

# nats-py hands the server's error on lowercased, subject included: requests in flight
# are matched by their lowercased subject (a permitted request whose subject differs only
# in case, in flight at the same moment, would fail with it: never in btrfsd's subjects)
PERMISSION_RE = re.compile(r'permissions violation for (publish|subscription) to "?([^"\']+)"?',
                           re.IGNORECASE)


class FleetCallError(Exception):
    """A request over NATS that got no answer from btrfsd (the fleet's own error names,
    protocol.FLEET_ERROR) or an error answer (the D-Bus name btrfsd or the bridge gave)."""

    def __init__(self, name: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message
        self.details = details or {}


def _tls(s: NatsSettings) -> ssl.SSLContext | None:
    if s.tls_ca is None and s.tls_cert is None:
        return None
    ctx = ssl.create_default_context(cafile=str(s.tls_ca) if s.tls_ca else None)
    if s.tls_cert is not None:
        ctx.load_cert_chain(str(s.tls_cert), str(s.tls_key) if s.tls_key else None)
    return ctx


def options(s: NatsSettings) -> dict[str, Any]:
    """nats.connect keyword arguments for ``s``. Raises OSError reading a password file."""
    opts: dict[str, Any] = {
        "servers": s.servers, "connect_timeout": s.connect_timeout,
        "reconnect_time_wait": s.reconnect_wait, "max_reconnect_attempts": -1,
        "tls": _tls(s),
    }
    if s.creds is not None:
        opts["user_credentials"] = str(s.creds)
    if s.nkey_seed is not None:
        opts["nkeys_seed"] = str(s.nkey_seed)
    if s.user is not None:
        opts["user"] = s.user
        if s.password_file is not None:
            opts["password"] = s.password_file.read_text().strip()
    return opts


class Requester:
    """A NATS connection for requests that end quickly with a named error."""

    def __init__(self, settings: NatsSettings) -> None:
        self.settings = settings
        self.nc: NATS | None = None
        self._pending: dict[str, list[asyncio.Future[None]]] = {}
        self._names: dict[str, str] = {}  # lowercased subject -> as sent
        self.on_error: Callable[[Exception], Awaitable[None]] | None = None
        # called after nats-py lost the server / got one back (subscriptions replayed)
        self.on_disconnect: Callable[[], Awaitable[None]] | None = None
        self.on_reconnect: Callable[[], Awaitable[None]] | None = None

    async def connect(self, name: str = "btrfsctl", retry: bool = False) -> NATS:
        """Connect (``retry``: keep trying at first too, as the bridge does). Raises
        FleetCallError (NO_SERVER)."""
        try:
            opts = options(self.settings)
        except OSError as e:
            raise FleetCallError(protocol.NO_SERVER, f"cannot read the password file: "
                                 f"{e.strerror}") from None
        opts.update(name=name, error_cb=self._error, disconnected_cb=self._disconnected,
                    reconnected_cb=self._reconnected)
        if not retry:
            # A command line gives up soon; the bridge keeps trying. nats-py retries a
            # server forever at max_reconnect_attempts 0 and gives up only past a
            # positive count: 1 is two quick attempts per server.
            opts.update(allow_reconnect=False, max_reconnect_attempts=1,
                        reconnect_time_wait=0.1)
        try:
            if retry:
                self.nc = await nats.connect(**opts)
            else:
                limit = (self.settings.connect_timeout + 0.2) * 2 * len(self.settings.servers)
                async with asyncio.timeout(limit):
                    self.nc = await nats.connect(**opts)
        except (TimeoutError, NoServersError, OSError, NatsError) as e:
            servers = ", ".join(self.settings.servers)
            raise FleetCallError(protocol.NO_SERVER, f"cannot connect to NATS at {servers}: "
                                 f"{e or type(e).__name__}") from None
        return self.nc

    def keep_reconnecting(self) -> None:
        """From now on, reconnect after losing the server, without end, as the bridge
        does (a command that watches a job must outlive a server restart; its start
        still gives up soon). nats-py reads these options at each attempt."""
        if self.nc is not None:
            self.nc.options.update(allow_reconnect=True, max_reconnect_attempts=-1,
                                   reconnect_time_wait=self.settings.reconnect_wait)

    async def _disconnected(self) -> None:
        if self.on_disconnect is not None:
            await self.on_disconnect()

    async def _reconnected(self) -> None:
        if self.on_reconnect is not None:
            await self.on_reconnect()

    async def _error(self, e: Exception) -> None:
        m = PERMISSION_RE.search(str(e))
        if m:
            key = m.group(2).lower()
            subject = self._names.pop(key, m.group(2))
            for fut in self._pending.pop(key, []):
                if not fut.done():
                    fut.set_exception(FleetCallError(
                        protocol.NOT_PERMITTED, f"NATS refused: your NATS user may not "
                        f"{m.group(1).lower()} to {subject} (subject permissions in the "
                        "NATS server's configuration)"))
            return
        if self.on_error is not None:
            await self.on_error(e)
        else:
            log.debug("NATS: %s", e)

    async def request(self, subject: str, data: bytes, timeout: float | None = None) -> bytes:
        """Send a request and return the reply's data. Raises FleetCallError:
        NOT_PERMITTED, NO_RESPONDERS, TIMEOUT."""
        assert self.nc is not None
        refused: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        key = subject.lower()
        self._pending.setdefault(key, []).append(refused)
        self._names[key] = subject
        timeout = timeout or self.settings.request_timeout
        call: asyncio.Future[Msg] = asyncio.ensure_future(
            self.nc.request(subject, data, timeout=timeout))
        try:
            waits: set[asyncio.Future[Any]] = {call, refused}
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if refused in done:
                call.cancel()
                refused.result()  # raises NOT_PERMITTED
            try:
                msg = call.result()
            except NoRespondersError:
                raise FleetCallError(protocol.NO_RESPONDERS, f"nobody answers on {subject}: "
                                     "the host's btrfsd-fleet is not connected") from None
            except NatsTimeout:
                raise FleetCallError(protocol.TIMEOUT, f"no answer on {subject} within "
                                     f"{timeout:g} s") from None
            return bytes(msg.data)
        finally:
            for fut in (call, refused):
                if not fut.done():
                    fut.cancel()
            waiting = self._pending.get(key, [])
            if refused in waiting:
                waiting.remove(refused)
            if not waiting:
                self._pending.pop(key, None)
                self._names.pop(key, None)

    async def call(self, subject: str, path: str, args: list[Any],
                   timeout: float | None = None) -> list[Any]:
        """One btrfsd call over NATS; its result values (plain JSON). Raises
        FleetCallError (the D-Bus error name for an error reply)."""
        data = await self.request(subject, protocol.request_body(path, args), timeout)
        result, error = protocol.parse_reply(data)
        if error is not None:
            raise FleetCallError(*error)
        assert result is not None
        return result

    async def close(self) -> None:
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.close()
