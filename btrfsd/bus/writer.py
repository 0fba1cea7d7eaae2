"""A bus writer that waits for a full socket instead of dropping the connection.

dbus-fast 5.2's writer sends a queued message at once when its queue looks empty, even
while an earlier, larger message is only half written; the socket is then full, send()
raises EAGAIN, and the writer treats that as a lost connection: btrfsd left the bus.
Two concurrent listings of 10,000 subvolumes (replies of about a megabyte each) from one
unprivileged user were enough (measured: bench `--sections limit`). This writer keeps
dbus-fast's queue and buffers but treats EAGAIN/EINTR as "wait until writable".
tests/unit/test_dbus_fast_internals.py pins the parts of dbus-fast it relies on and
checks large concurrent replies on a private bus.
"""

from __future__ import annotations

import array
import asyncio
import logging
import socket
from typing import Any

from dbus_fast import Message, MessageType
from dbus_fast.aio.message_bus import _MessageWriter

from .errors import failed_reply

log = logging.getLogger(__name__)

# dbus-daemon drops a connection that sends a message over its max_message_size, 32 MiB
# on the system bus by default: one reply that big (a listing of subvolumes with very
# long paths, say) would take btrfsd off the bus. Such a reply becomes an error instead.
MAX_MESSAGE = 32 << 20


def _settle(fut: Any, error: Exception | None = None) -> None:
    if fut is not None and not fut.done():
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(error)


def _too_big(msg: Message, size: int) -> Message | None:
    """What is sent instead of ``msg``, ``size`` bytes marshalled: for a reply or an error
    reply (one that echoes a very long path, say), a short error saying why; anything
    else (a signal) is left out (None). Both are logged."""
    if msg.message_type not in (MessageType.METHOD_RETURN, MessageType.ERROR):
        log.warning("not sent: a %s of %d bytes, over the bus's limit of %d (member=%s)",
                    msg.message_type.name, size, MAX_MESSAGE, msg.member)
        return None
    log.warning("a reply of %d bytes is over the bus's limit of %d; sent an error instead "
                "(reply_serial=%d destination=%s)", size, MAX_MESSAGE, msg.reply_serial,
                msg.destination)
    return failed_reply(
        f"The answer would be {size / (1 << 20):.0f} MiB, more than the bus carries "
        f"({MAX_MESSAGE >> 20} MiB). Ask for less: ListSubvolumes' options columns or "
        "snapshots_of.", reply_serial=msg.reply_serial, destination=msg.destination,
        serial=msg.serial)


class PatientWriter(_MessageWriter):
    """dbus-fast's message writer, minus the EAGAIN disconnect, and with no message over
    MAX_MESSAGE."""

    def buffer_message(self, msg: Message, future: asyncio.Future[Any] | None = None
                       ) -> None:
        """Queue ``msg`` as dbus-fast does; one over MAX_MESSAGE as _too_big says."""
        data = msg._marshall(self.negotiate_unix_fd)
        if len(data) > MAX_MESSAGE:
            instead = _too_big(msg, len(data))
            if instead is None:
                _settle(future)
                return
            msg, data = instead, instead._marshall(self.negotiate_unix_fd)
        self.messages.append((data, list(msg.unix_fds) if msg.unix_fds else None, future))

    def _wait_writable(self) -> None:
        assert self.fd is not None
        self.loop.add_writer(self.fd, self.write_callback)

    def write_callback(self, remove_writer: bool = True) -> None:
        """Write queued messages until done or the socket is full (then wait for it)."""
        sock, fd = self.sock, self.fd
        assert sock is not None and fd is not None  # made by connect() with both
        while True:
            if self.buf is None:
                if not self.messages:
                    if remove_writer:
                        self.loop.remove_writer(fd)
                    return
                buf, unix_fds, fut = self.messages.popleft()
                self.buf, self.unix_fds, self.fut, self.offset = memoryview(buf), unix_fds, fut, 0
            try:
                if self.unix_fds and self.negotiate_unix_fd:
                    rights = array.array("i", self.unix_fds)
                    sent = sock.sendmsg([self.buf[self.offset:]],
                                             [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)])
                    self.unix_fds = None
                else:
                    sent = sock.send(self.buf[self.offset:])
            except (BlockingIOError, InterruptedError):
                self._wait_writable()  # full for now: the rest when it can take more
                return
            except Exception as e:  # the connection is really gone
                _settle(self.fut, None if self.bus._user_disconnect else e)
                self.bus._finalize(e)
                return
            self.offset += sent
            if self.offset < len(self.buf):
                self._wait_writable()
                return
            self.buf = None
            _settle(self.fut)
