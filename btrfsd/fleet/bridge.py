"""btrfsd-fleet: the local btrfsd's API as NATS request/reply, its signals as NATS events,
and the host's status in a JetStream key-value bucket (docs/fleet.md).

Every request is one D-Bus call to the local btrfsd as the bridge's own user, so polkit
decides it as for any other caller; NATS subject permissions decide who may send it.
Nothing a caller sends may end the bridge: every request ends in a reply, an error
reply at worst.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from dbus_fast import Message, MessageType
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue

from ..constants import (
    FILESYSTEM_IFACE,
    FILESYSTEMS_PATH,
    JOB_IFACE,
    JOBS_PATH,
    MANAGER_IFACE,
    ROOT_PATH,
)
from . import events, protocol
from .connect import Requester
from .local import DBusCallError, LocalBtrfsd
from .settings import BridgeSettings
from .status import HostStatus, QuotaWarningRecord

log = logging.getLogger("btrfsd.fleet")

OM_IFACE = protocol.OBJECT_MANAGER_IFACE
PROPS_IFACE = protocol.PROPERTIES_IFACE


def event_kind(msg: Message) -> str | None:
    """The event kind a btrfsd signal is published as, or None to drop it."""
    if msg.member == "PropertiesChanged" and msg.interface == PROPS_IFACE and msg.body:
        if msg.body[0] == JOB_IFACE:
            return "job"
        if msg.body[0] == FILESYSTEM_IFACE:
            return "filesystem"
    elif msg.member == "Completed" and msg.interface == JOB_IFACE:
        return "completed"
    elif msg.member == "QuotaWarning" and msg.interface == FILESYSTEM_IFACE:
        return "quota-warning"
    elif msg.member in ("InterfacesAdded", "InterfacesRemoved") and msg.interface == OM_IFACE \
            and msg.body:
        what = "added" if msg.member == "InterfacesAdded" else "removed"
        target = str(msg.body[0])
        if target.startswith(FILESYSTEMS_PATH + "/"):
            return f"filesystem-{what}"
        if target.startswith(JOBS_PATH + "/"):
            return f"job-{what}"
    return None


def _encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


class BusUnavailable(Exception):
    """The system bus (or btrfsd's signals on it) cannot be reached at the start."""


class Bridge:
    """One host's bridge: run() serves until stop() is called."""

    def __init__(self, settings: BridgeSettings) -> None:
        self.settings = settings
        self.host = settings.host
        self.local = LocalBtrfsd(settings.call_timeout)
        self.nats = Requester(settings.nats)
        self.kv: KeyValue | None = None
        self.status = HostStatus(host=self.host, heartbeat=settings.heartbeat)
        self._slots = asyncio.Semaphore(settings.max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._refresh = asyncio.Event()  # write the status now, not at the next beat
        self.bus_lost = False
        self._connected = asyncio.Event()  # NATS is there (cleared while reconnecting)
        self._send: events.Send | None = None  # set once NATS is connected
        self.durable = events.DurableQueue(self.host, self._send_durable, self._connected,
                                           settings.event_queue)

    # -- life cycle -------------------------------------------------------------------
    async def run(self) -> None:
        """Connect to the bus and NATS, serve until stop(). Raises BusUnavailable if the
        system bus cannot be reached (systemd starts the bridge again)."""
        try:
            await self.local.connect()
            await self.local.subscribe(self._on_signal)
        except (OSError, EOFError, DBusCallError) as e:
            raise BusUnavailable(str(e)) from None
        # NATS may be away at start: keep trying, but a stop meanwhile ends the bridge
        connecting = asyncio.create_task(
            self.nats.connect(name=f"btrfsd-fleet {self.host}", retry=True))
        stopped = asyncio.create_task(self._stopping.wait())
        await asyncio.wait({connecting, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not connecting.done():
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await connecting
            self.local.disconnect()
            return
        nc = connecting.result()
        self.nats.on_error = self._nats_error
        self.nats.on_disconnect = self._nats_lost
        self.nats.on_reconnect = self._nats_back
        self._send = events.jetstream_sender(nc)
        self._connected.set()
        for subject in protocol.request_subjects(self.host):
            await nc.subscribe(subject, cb=self._on_request)
        await nc.flush()
        log.info("serving host %s on %s", self.host, ", ".join(self.settings.nats.servers))
        beat = asyncio.create_task(self._heartbeat())
        sender = asyncio.create_task(self.durable.run())
        self._spawn(self._ensure_stream())
        # the system bus going away ends the bridge (systemd starts it again): it could
        # only answer Failed until then
        gone = asyncio.create_task(self.local.wait_for_disconnect())
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait({gone, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if gone.done():
                self.bus_lost = True
                log.error("the system bus connection is gone")
        finally:
            # events still queued get a moment to reach the server; past that they are
            # lost with the bridge (the queue lives in memory)
            await self.durable.drain(2.0)
            if len(self.durable):
                log.warning("stopping with %d events not stored", len(self.durable))
            for task in (beat, sender, gone, stopping):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self._final_status()
            for t in list(self._tasks):
                t.cancel()
            with contextlib.suppress(Exception):  # ending anyway: nothing left to tell
                await self.nats.close()
            with contextlib.suppress(Exception):
                self.local.disconnect()

    def stop(self) -> None:
        self._stopping.set()

    async def _nats_error(self, e: Exception) -> None:
        log.warning("NATS: %s", e)

    async def _nats_lost(self) -> None:
        self._connected.clear()
        log.warning("NATS connection lost; reconnecting")

    async def _nats_back(self) -> None:
        log.info("NATS connection back")
        self._connected.set()
        # the bucket's record and the progress watchers saw nothing while NATS was away
        self._refresh_soon()
        self._spawn(self._publish_running_jobs())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ensure_stream(self) -> None:
        nc = self.nats.nc
        if nc is None:
            return
        try:
            await events.ensure_stream(nc)
        except (TimeoutError, NatsError) as e:
            # not permitted, or JetStream off: the queue retries, and says so in the log
            log.warning("cannot create the events stream %s: %s", events.STREAM,
                        e or type(e).__name__)

    async def _send_durable(self, p: events.Pending) -> None:
        assert self._send is not None  # the queue sends only once connected
        await self._send(p)

    # -- requests ---------------------------------------------------------------------
    async def _on_request(self, msg: Msg) -> None:
        # nats-py awaits a subscription's callbacks one after another: hand each request
        # to a task of its own so a slow call does not hold up the others
        if not msg.reply:
            return
        task = asyncio.create_task(self._serve(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, msg: Msg) -> None:
        async with self._slots:
            try:
                data = await self.answer(msg.subject, msg.data)
            except Exception:  # the last line of defence: a reply, never a dead bridge
                log.exception("request on %s", msg.subject)
                data = protocol.error_body(protocol.FAILED, "the bridge failed to handle "
                                           "this request; its log has the details")
            try:
                await msg.respond(data)
            except NatsError as e:
                if "payload" in str(e).lower():
                    with contextlib.suppress(NatsError):
                        await msg.respond(protocol.error_body(
                            protocol.FAILED, f"the reply ({len(data)} bytes) is larger than "
                            "the NATS server's max_payload"))
                else:
                    log.warning("cannot reply on %s: %s", msg.reply, e)

    async def answer(self, subject: str, data: bytes) -> bytes:
        """The reply body for a request on ``subject`` with body ``data``. Raises
        nothing but unexpected bugs (the caller turns those into Failed)."""
        try:
            _host, token, method = protocol.parse_subject(subject)
            interface = protocol.INTERFACES[token]
            fixed = protocol.FREEDESKTOP_METHODS.get(token)
            if fixed is not None and method not in fixed:
                raise protocol.ProtocolError(protocol.UNKNOWN_METHOD,
                                             f"{interface} has no method {method!r} here")
            path, args = protocol.parse_request(data, token)
            if fixed is not None:
                signature = fixed[method]
                body = protocol.to_dbus_args(signature, args)
                if token == "Properties" and body[0] not in (MANAGER_IFACE, FILESYSTEM_IFACE,
                                                             JOB_IFACE):
                    raise protocol.ProtocolError(protocol.INVALID_ARGUMENT,
                                                 "only btrfsd's interfaces' properties")
            else:
                signature = await self.local.signature(path, interface, method)
                body = protocol.to_dbus_args(signature, args)
            result = await self.local.raw_call(path, interface, method, signature, body)
            return protocol.reply_body(result)
        except protocol.ProtocolError as e:
            return protocol.error_body(e.name, e.message)
        except DBusCallError as e:
            return protocol.error_body(e.name, e.text, e.details)

    # -- events -----------------------------------------------------------------------
    def _on_signal(self, msg: Message) -> None:
        if msg.message_type != MessageType.SIGNAL:
            return
        kind = event_kind(msg)
        if kind is None:
            return
        body = protocol.from_dbus(list(msg.body))
        if kind == "quota-warning" and len(body) == 5:
            self.status.quota_warning(QuotaWarningRecord(
                filesystem=msg.path or "", path=str(body[0]), qgroupid=int(body[1]),
                used=int(body[2]), limit=int(body[3]), level=str(body[4]), time=time.time()))
        # "object": what the event is about; "path": the signal's own object path
        event = {"host": self.host, "object": body[0] if kind.endswith(("-added", "-removed"))
                 else msg.path, "path": msg.path, "interface": msg.interface,
                 "member": msg.member, "args": body, "time": time.time()}
        if kind in events.DURABLE_KINDS:
            self.durable.put(protocol.event_subject(self.host, kind), _encode(event))
        else:
            self._spawn(self._publish(kind, event))
        if kind in ("completed", "filesystem-added", "filesystem-removed"):
            self._refresh_soon()

    async def _publish(self, kind: str, event: dict[str, Any]) -> None:
        nc = self.nats.nc
        # while NATS is away a progress update is dropped, not buffered: the next one
        # supersedes it, and the reconnect publishes each running job's state once
        if nc is None or not nc.is_connected:
            return
        try:
            await nc.publish(protocol.event_subject(self.host, kind), _encode(event))
        except NatsError as e:
            log.warning("cannot publish a %s event: %s", kind, e)

    async def _publish_running_jobs(self) -> None:
        """Each running job's current properties once, as a progress event, so a watcher
        that lost updates while NATS was away catches up."""
        try:
            (paths,) = await self.local.raw_call(ROOT_PATH, MANAGER_IFACE, "GetJobs", "a{sv}",
                                                 [{}])
            for p in paths:
                (props,) = await self.local.raw_call(p, PROPS_IFACE, "GetAll", "s",
                                                     [JOB_IFACE])
                props = protocol.from_dbus(props)
                if props.get("State") not in ("running", "paused"):
                    continue
                await self._publish("job", {
                    "host": self.host, "object": p, "path": p, "interface": PROPS_IFACE,
                    "member": "PropertiesChanged", "args": [JOB_IFACE, props, []],
                    "time": time.time()})
        except DBusCallError as e:  # a job gone meanwhile, or btrfsd away: nothing to tell
            log.debug("running jobs after the reconnect: %s", e)

    # -- status -----------------------------------------------------------------------
    def _refresh_soon(self) -> None:
        self._refresh.set()

    async def _heartbeat(self) -> None:
        while True:
            await self._write_status()
            self._refresh.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.heartbeat):
                    await self._refresh.wait()

    async def _collect(self) -> None:
        st = self.status
        try:
            (info,) = await self.local.raw_call(ROOT_PATH, MANAGER_IFACE, "GetStatus",
                                                "a{sv}", [{}])
            st.version = str(protocol.from_dbus(info).get("version", ""))
            (paths,) = await self.local.raw_call(ROOT_PATH, MANAGER_IFACE, "GetFilesystems",
                                                 "a{sv}", [{}])
            filesystems = []
            for p in paths:
                (props,) = await self.local.raw_call(p, PROPS_IFACE, "GetAll", "s",
                                                     [FILESYSTEM_IFACE])
                (last,) = await self.local.raw_call(p, FILESYSTEM_IFACE, "GetLastResults",
                                                    "a{sv}", [{}])
                filesystems.append(st.filesystem(str(p), protocol.from_dbus(props),
                                                 protocol.from_dbus(last)))
            st.filesystems = filesystems
            st.btrfsd = "running"
            st.error = ""
        except DBusCallError as e:
            st.btrfsd = "unreachable"
            st.error = f"{e.name}: {e.text}"

    async def _write_status(self) -> None:
        await self._collect()
        self.status.state = "up"
        self.status.last_seen = time.time()
        await self._put_status()

    async def _final_status(self) -> None:
        self.status.state = "stopped"
        self.status.last_seen = time.time()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await self._put_status()

    async def _put_status(self) -> None:
        nc = self.nats.nc
        if nc is None or not nc.is_connected:
            return
        try:
            if self.kv is None:
                js = nc.jetstream()
                try:
                    self.kv = await js.key_value(self.settings.status_bucket)
                except BucketNotFoundError:
                    self.kv = await js.create_key_value(bucket=self.settings.status_bucket,
                                                        history=1, direct=True)
            await self.kv.put(self.host, self.status.to_json())
        except (TimeoutError, NatsError) as e:
            log.warning("cannot write the status to %s: %s", self.settings.status_bucket, e)
