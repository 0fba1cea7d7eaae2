"""A minimal blocking D-Bus client for btrfsctl's one-shot commands (the lean path).

A command such as ``btrfsctl snapshot PATH`` makes two calls and exits. Importing
dbus-fast and asyncio for them cost ~100 ms of a ~150 ms run (python -X importtime), so
this module speaks the wire protocol itself with the standard library's C parts only
(``_socket``, ``struct``): connect, authenticate (EXTERNAL) and Hello in one write, then
method calls, each waiting for its reply. The full client (client.py) still serves
everything else: signals, progress bars, several calls at once.

Anything this client does not handle before a method call has been sent (an address it
does not understand, a refused authentication, an odd Hello) raises ``Unsupported``: the
caller then runs the command through the full client, which behaves as btrfsctl always
did. Nothing has happened on the daemon's side by then.

Values: a Variant is written from a ``(signature, value)`` tuple and read as its plain
value (as client.unwrap gives them); a struct is read as a list, ``ay`` as bytes.
"""

from __future__ import annotations

import _socket
import os
import struct

from .callerror import CallError

TYPE_CHECKING = False  # typing costs ~5 ms at start-up; mypy still reads the block below
if TYPE_CHECKING:
    from typing import Any

DEFAULT_ADDRESS = "unix:path=/var/run/dbus/system_bus_socket"  # as dbus-fast's default
NO_SERVER = "org.freedesktop.DBus.Error.NoServer"
# characters dbus-fast accepts in an address value, less '%' (its unquoting is left to it)
_PLAIN = frozenset("-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_/.")

METHOD_CALL, METHOD_RETURN, ERROR = 1, 2, 3
ALLOW_INTERACTIVE_AUTHORIZATION = 0x4
# header field codes (D-Bus specification, "Message Format")
_PATH, _INTERFACE, _MEMBER, _ERROR_NAME, _REPLY_SERIAL, _DESTINATION, _SIGNATURE = (
    1, 2, 3, 4, 5, 6, 8)

_ALIGN = {"y": 1, "b": 4, "n": 2, "q": 2, "i": 4, "u": 4, "x": 8, "t": 8, "d": 8, "h": 4,
          "s": 4, "o": 4, "g": 1, "a": 4, "(": 8, "{": 8, "v": 1}
_FIXED = {"y": "B", "b": "I", "n": "h", "q": "H", "i": "i", "u": "I", "x": "q", "t": "Q",
          "d": "d", "h": "I"}


class Unsupported(Exception):
    """Something this client leaves to the full one; nothing was called yet."""


class ConnectionLost(EOFError):
    """The bus closed the connection while a reply was awaited."""


# -- signatures ----------------------------------------------------------------------
def parse_signature(sig: str) -> list[Any]:
    """The complete types of ``sig``, each a type code ("s", "t", "v", ...),
    ``("a", element)``, ``("(", [fields])`` or ``("{", key, value)``. Raises ValueError
    (or IndexError) for a malformed signature."""
    types, i = [], 0
    while i < len(sig):
        t, i = _parse_one(sig, i)
        types.append(t)
    return types


def _parse_one(sig: str, i: int) -> tuple[Any, int]:
    c = sig[i]
    if c in _FIXED or c in "sogv":
        return c, i + 1
    if c == "a":
        if sig[i + 1] == "{":
            key, j = _parse_one(sig, i + 2)
            value, j = _parse_one(sig, j)
            if sig[j] != "}":
                raise ValueError(f"bad signature {sig!r}")
            return ("{", key, value), j + 1
        element, j = _parse_one(sig, i + 1)
        return ("a", element), j
    if c == "(":
        fields, j = [], i + 1
        while sig[j] != ")":
            t, j = _parse_one(sig, j)
            fields.append(t)
        return ("(", fields), j + 1
    raise ValueError(f"bad signature {sig!r}")


def _code(t: Any) -> str:
    return t if isinstance(t, str) else t[0] if t[0] != "{" else "a"


# -- writing -------------------------------------------------------------------------
class _Writer:
    def __init__(self) -> None:
        self.buf = bytearray()

    def align(self, n: int) -> None:
        self.buf += bytes(-len(self.buf) % n)

    def write(self, t: Any, value: Any) -> None:
        buf = self.buf
        if isinstance(t, str):
            if t in _FIXED:
                self.align(_ALIGN[t])
                buf += struct.pack("<" + _FIXED[t], value)
            elif t in "so":
                data = value.encode()
                self.align(4)
                buf += struct.pack("<I", len(data)) + data + b"\0"
            elif t == "g":
                data = value.encode()
                buf += bytes((len(data),)) + data + b"\0"
            else:  # "v": (signature, value)
                sig, inner = value
                self.write("g", sig)
                (inner_type,) = parse_signature(sig)
                self.write(inner_type, inner)
            return
        if t[0] == "(":
            self.align(8)
            for field, v in zip(t[1], value, strict=True):
                self.write(field, v)
            return
        self.align(4)
        at = len(buf)
        buf += b"\0\0\0\0"
        if t[0] == "{":
            self.align(8)
            start = len(buf)
            for k, v in value.items():
                self.align(8)
                self.write(t[1], k)
                self.write(t[2], v)
        else:
            self.align(_ALIGN[_code(t[1])])
            start = len(buf)
            for v in value:
                self.write(t[1], v)
        struct.pack_into("<I", buf, at, len(buf) - start)


def method_call(serial: int, destination: str, path: str, interface: str, member: str,
                signature: str = "", body: list[Any] | tuple[Any, ...] = (),
                flags: int = 0) -> bytes:
    """A METHOD_CALL message, little-endian. Raises ValueError/struct.error for a body
    that does not fit ``signature``."""
    w = _Writer()
    for t, v in zip(parse_signature(signature), body, strict=True):
        w.write(t, v)
    fields: list[tuple[int, tuple[str, str]]] = [
        (_PATH, ("o", path)), (_INTERFACE, ("s", interface)), (_MEMBER, ("s", member)),
        (_DESTINATION, ("s", destination))]
    if signature:
        fields.append((_SIGNATURE, ("g", signature)))
    h = _Writer()
    h.buf += struct.pack("<cBBBII", b"l", METHOD_CALL, flags, 1, len(w.buf), serial)
    h.write(("a", ("(", ["y", "v"])), fields)
    h.align(8)
    return bytes(h.buf + w.buf)


# -- reading -------------------------------------------------------------------------
class _Reader:
    def __init__(self, data: bytes, pos: int, little: bool) -> None:
        self.data, self.pos = data, pos
        self.e = "<" if little else ">"

    def align(self, n: int) -> None:
        self.pos += -self.pos % n

    def read(self, t: Any) -> Any:
        data = self.data
        if isinstance(t, str):
            if t in _FIXED:
                self.align(_ALIGN[t])
                (v,) = struct.unpack_from(self.e + _FIXED[t], data, self.pos)
                self.pos += struct.calcsize(_FIXED[t])
                return bool(v) if t == "b" else v
            if t in "so":
                self.align(4)
                (n,) = struct.unpack_from(self.e + "I", data, self.pos)
                start = self.pos + 4
                self.pos = start + n + 1
                return data[start:start + n].decode()
            if t == "g":
                n = data[self.pos]
                start = self.pos + 1
                self.pos = start + n + 1
                return data[start:start + n].decode()
            (inner,) = parse_signature(self.read("g"))  # "v"
            return self.read(inner)
        if t[0] == "(":
            self.align(8)
            return [self.read(field) for field in t[1]]
        self.align(4)
        (n,) = struct.unpack_from(self.e + "I", data, self.pos)
        self.pos += 4
        if t[0] == "{":
            self.align(8)
            end = self.pos + n
            out = {}
            while self.pos < end:
                self.align(8)
                k = self.read(t[1])
                out[k] = self.read(t[2])
            return out
        element = t[1]
        self.align(_ALIGN[_code(element)])
        end = self.pos + n
        if element == "y":
            self.pos = end
            return data[end - n:end]
        if isinstance(element, str) and element in _FIXED:
            # a column of numbers in one unpack: ListSubvolumes sends 1,000s of them
            fmt = _FIXED[element]
            count = n // struct.calcsize(fmt)
            values = list(struct.unpack_from(f"{self.e}{count}{fmt}", data, self.pos))
            self.pos = end
            return [bool(v) for v in values] if element == "b" else values
        if element in ("s", "o"):
            return self._strings(end)
        items = []
        while self.pos < end:
            items.append(self.read(element))
        return items

    def _strings(self, end: int) -> list[str]:
        """An array of strings up to ``end``: read(t) for each costs ~4x as much."""
        same = self._same_length_strings(end)
        if same is not None:
            return same
        data, pos, items = self.data, self.pos, []
        length = struct.Struct(self.e + "I").unpack_from
        while pos < end:
            pos += -pos % 4
            (n,) = length(data, pos)
            pos += 4
            items.append(data[pos:pos + n].decode())
            pos += n + 1
        self.pos = pos
        return items

    def _same_length_strings(self, end: int) -> list[str] | None:
        """The array of strings up to ``end`` if all are as long as its first (UUIDs, or
        all empty: a third of a listing's strings), read with one unpack (~3x faster
        than a loop); None when they are not."""
        data, pos = self.data, self.pos
        if end - pos < 5:
            return None
        (n,) = struct.unpack_from(self.e + "I", data, pos)
        stride = (n + 8) & ~3  # length, the string, its NUL, padding to 4
        count, rest = divmod(end - pos - (n + 5), stride)
        if rest or not 0 <= count <= 100_000:
            return None
        one = f"I{n}s{stride - n - 4}x"
        values = struct.unpack_from(f"{self.e}{one * count}I{n}s", data, pos)
        if values[0::2].count(n) != count + 1:
            return None
        self.pos = end
        return [v.decode() for v in values[1::2]]


class Reply:
    """A message read from the bus: its type, header fields and body."""

    def __init__(self, kind: int, fields: dict[int, Any], body: list[Any]) -> None:
        self.kind, self.fields, self.body = kind, fields, body

    @property
    def reply_serial(self) -> int | None:
        value = self.fields.get(_REPLY_SERIAL)
        return value if isinstance(value, int) else None

    @property
    def error_name(self) -> str | None:
        value = self.fields.get(_ERROR_NAME)
        return value if isinstance(value, str) else None


def parse_message(data: bytes) -> Reply:
    """One whole message (``message_size`` bytes). Raises ValueError, struct.error,
    IndexError or UnicodeDecodeError for a malformed one."""
    if data[:1] not in (b"l", b"B"):
        raise ValueError("not a D-Bus message")
    r = _Reader(data, 12, data[:1] == b"l")
    fields = dict(r.read(("a", ("(", ["y", "v"]))))
    r.align(8)
    sig = fields.get(_SIGNATURE, "")
    body = [r.read(t) for t in parse_signature(sig)]
    return Reply(data[1], fields, body)


def message_size(head: bytes) -> int:
    """Size of the whole message whose first 16 bytes are ``head``."""
    e = "<" if head[:1] == b"l" else ">"
    body_len, _serial, fields_len = struct.unpack_from(e + "III", head, 4)
    return int(16 + fields_len + (-fields_len % 8) + body_len)


# -- the connection ------------------------------------------------------------------
def bus_addresses(text: str) -> list[str | bytes]:
    """Socket addresses of a D-Bus address string, as dbus-fast would connect to them.
    Raises Unsupported for anything but plain unix:path= and unix:abstract= entries."""
    found: list[str | bytes] = []
    for entry in text.split(";"):
        if not entry:
            continue
        transport, _, opts = entry.partition(":")
        options = dict(kv.partition("=")[::2] for kv in opts.split(",") if kv)
        if transport != "unix" or any(not set(v) <= _PLAIN for v in options.values()):
            raise Unsupported(entry)
        if "path" in options:
            found.append(options["path"])
        elif "abstract" in options:
            found.append(b"\0" + options["abstract"].encode())
        else:
            raise Unsupported(entry)
    if not found:
        raise Unsupported(text)
    return found


class Connection:
    """One connection to the system bus (honours DBUS_SYSTEM_BUS_ADDRESS); use
    ``with Connection.open() as bus:``."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buf = b""
        self._serial = 0

    @classmethod
    def open(cls) -> Connection:
        """Connect, authenticate and say Hello. Raises CallError (NoServer, worded as
        client.Client words it) when no address can be connected to, Unsupported for
        anything else that goes wrong."""
        text = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or DEFAULT_ADDRESS
        last: OSError | None = None
        for address in bus_addresses(text):
            sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
            try:
                sock.connect(address)
            except OSError as e:
                sock.close()
                last = e
                continue
            bus = cls(sock)
            try:
                bus._hello()
            except Exception as e:  # the full client will meet it again and say what
                bus.close()
                raise Unsupported(str(e)) from e
            return bus
        where = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS", "the system bus")
        raise CallError(NO_SERVER, f"cannot connect to {where}: {last}")

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def _hello(self) -> None:
        # AUTH, BEGIN and Hello in one write, as sd-bus does (the specification allows a
        # client to pipeline them): one round trip instead of two. Should the bus refuse
        # the AUTH, it takes the rest for a bad command and the full client takes over.
        self._serial += 1
        self._sock.sendall(
            b"\0AUTH EXTERNAL " + str(os.getuid()).encode().hex().encode() + b"\r\nBEGIN\r\n"
            + method_call(self._serial, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                          "org.freedesktop.DBus", "Hello"))
        line = self._line()
        if not line.startswith(b"OK "):
            raise Unsupported(f"authentication refused: {line!r}")
        reply = self._reply(self._serial)
        if reply.kind != METHOD_RETURN:
            raise Unsupported(f"Hello failed: {reply.error_name}")

    def _line(self) -> bytes:
        while b"\r\n" not in self._buf:
            self._recv()
        line, self._buf = self._buf.split(b"\r\n", 1)
        return line

    def _recv(self) -> None:
        chunk = self._sock.recv(1 << 16)
        if not chunk:
            raise ConnectionLost("the bus closed the connection")
        self._buf += chunk

    def _message(self) -> Reply:
        while len(self._buf) < 16:
            self._recv()
        size = message_size(self._buf[:16])
        chunks, have = [self._buf], len(self._buf)
        while have < size:  # a large reply arrives in many pieces: join them once
            chunk = self._sock.recv(max(size - have, 1 << 16))
            if not chunk:
                raise ConnectionLost("the bus closed the connection")
            chunks.append(chunk)
            have += len(chunk)
        data = b"".join(chunks)
        self._buf = data[size:]
        return parse_message(data[:size])

    def _call(self, destination: str, path: str, interface: str, member: str,
              signature: str = "", body: list[Any] | tuple[Any, ...] = (),
              flags: int = 0) -> Reply:
        self._serial += 1
        serial = self._serial
        self._sock.sendall(method_call(serial, destination, path, interface, member,
                                       signature, body, flags))
        return self._reply(serial)

    def _reply(self, serial: int) -> Reply:
        while True:  # signals (NameAcquired) and other traffic are not ours
            reply = self._message()
            if reply.kind in (METHOD_RETURN, ERROR) and reply.reply_serial == serial:
                return reply

    def call(self, destination: str, path: str, interface: str, member: str,
             signature: str = "", body: list[Any] | tuple[Any, ...] = (),
             interactive: bool = False) -> list[Any]:
        """Call a method and return the reply's body. Raises CallError for an error
        reply, ConnectionLost or OSError when the connection breaks."""
        flags = ALLOW_INTERACTIVE_AUTHORIZATION if interactive else 0
        reply = self._call(destination, path, interface, member, signature, body, flags)
        if reply.kind == ERROR:
            raise CallError.from_body(reply.error_name, reply.body)
        return reply.body
