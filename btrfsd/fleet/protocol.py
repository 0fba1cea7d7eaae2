"""The fleet's wire format over NATS (docs/fleet.md): subjects, JSON bodies, error bodies,
and the conversion between JSON values and D-Bus values of a known signature.

Shared by the bridge (btrfsd-fleet) and its clients (btrfsctl --host); no NATS and no
D-Bus connection here, only dbus-fast's signature parser and Variant.
"""

from __future__ import annotations

import json
import re
from typing import Any

from dbus_fast import Variant
from dbus_fast.signature import SignatureType, get_signature_tree

from ..constants import ERROR_PREFIX, FILESYSTEM_IFACE, JOB_IFACE, MANAGER_IFACE, ROOT_PATH

PREFIX = "btrfsd"
PROPERTIES_IFACE = "org.freedesktop.DBus.Properties"
OBJECT_MANAGER_IFACE = "org.freedesktop.DBus.ObjectManager"
# subject token -> D-Bus interface; only these are served (Properties: Get/GetAll only)
INTERFACES: dict[str, str] = {
    "Manager": MANAGER_IFACE,
    "Filesystem": FILESYSTEM_IFACE,
    "Job": JOB_IFACE,
    "Properties": PROPERTIES_IFACE,
    "ObjectManager": OBJECT_MANAGER_IFACE,
}
TOKENS: dict[str, str] = {v: k for k, v in INTERFACES.items()}
# Methods of the freedesktop interfaces the bridge answers (the rest would let a caller
# change or listen to things that are not btrfsd's API).
FREEDESKTOP_METHODS: dict[str, dict[str, str]] = {
    "Properties": {"Get": "ss", "GetAll": "s"},
    "ObjectManager": {"GetManagedObjects": ""},
}
# event kinds, the last token of btrfsd.<host>.events.<kind>
EVENT_KINDS = ("job", "completed", "quota-warning", "filesystem", "filesystem-added",
               "filesystem-removed", "job-added", "job-removed")

# A host name is one subject token: no dots, wildcards or spaces.
HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
METHOD_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")

# Errors of the fleet layer itself (not btrfsd's, whose names stay the D-Bus ones).
INVALID_ARGUMENT = ERROR_PREFIX + "InvalidArgument"
UNKNOWN_METHOD = "org.freedesktop.DBus.Error.UnknownMethod"
FAILED = ERROR_PREFIX + "Failed"
FLEET_ERROR = "org.btrfsd1.Fleet.Error."
NO_RESPONDERS = FLEET_ERROR + "NoResponders"  # no bridge listens for that host
TIMEOUT = FLEET_ERROR + "Timeout"
NOT_PERMITTED = FLEET_ERROR + "NotPermitted"  # NATS subject permissions refused it
NO_SERVER = FLEET_ERROR + "NoServer"  # cannot connect to NATS

INT_RANGES: dict[str, tuple[int, int]] = {
    "y": (0, 2**8), "n": (-2**15, 2**15), "q": (0, 2**16), "i": (-2**31, 2**31),
    "u": (0, 2**32), "x": (-2**63, 2**63), "t": (0, 2**64),
}
MAX_DEPTH = 32


class ProtocolError(Exception):
    """A request the bridge cannot turn into a D-Bus call; ``name`` is the error name the
    caller gets."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.message = message


def valid_host(host: str) -> bool:
    return bool(HOST_RE.match(host))


def method_subject(host: str, token: str, method: str) -> str:
    """``btrfsd.<host>.<Interface>.<Method>``. Raises ValueError for a bad host name."""
    if not valid_host(host):
        raise ValueError(f"not a valid fleet host name: {host!r}")
    return f"{PREFIX}.{host}.{token}.{method}"


def event_subject(host: str, kind: str) -> str:
    return f"{PREFIX}.{host}.events.{kind}"


def request_subjects(host: str) -> list[str]:
    """What a bridge for ``host`` subscribes to (one per interface, so its own events under
    ``btrfsd.<host>.events`` never reach it)."""
    return [f"{PREFIX}.{host}.{token}.*" for token in INTERFACES]


def parse_subject(subject: str) -> tuple[str, str, str]:
    """(host, interface token, method) of a request subject. Raises ProtocolError
    (UnknownMethod) for a subject that names nothing the bridge serves."""
    parts = subject.split(".")
    if len(parts) != 4 or parts[0] != PREFIX or parts[2] not in INTERFACES:
        raise ProtocolError(UNKNOWN_METHOD, f"no such interface or method: {subject}")
    if not METHOD_RE.match(parts[3]):
        raise ProtocolError(UNKNOWN_METHOD, f"not a method name: {parts[3]!r}")
    return parts[1], parts[2], parts[3]


def parse_request(data: bytes, token: str) -> tuple[str, list[Any]]:
    """(object path, JSON arguments) of a request body ``{"object": ..., "args": [...]}``.
    An empty body means no arguments on the default object. Raises ProtocolError
    (InvalidArgument)."""
    if not data.strip():
        body: Any = {}
    else:
        try:
            body = json.loads(data)
        except (ValueError, RecursionError) as e:
            raise ProtocolError(INVALID_ARGUMENT, f"the request is not JSON: {e}") from None
    if not isinstance(body, dict):
        raise ProtocolError(INVALID_ARGUMENT, 'the request must be a JSON object '
                            '{"object": PATH, "args": [...]}')
    unknown = set(body) - {"object", "args"}
    if unknown:
        raise ProtocolError(INVALID_ARGUMENT, f"unknown request keys: {sorted(unknown)}")
    default = ROOT_PATH if token in ("Manager", "ObjectManager") else None
    path = body.get("object", default)
    if not isinstance(path, str) or not (path == ROOT_PATH or path.startswith(ROOT_PATH + "/")):
        raise ProtocolError(INVALID_ARGUMENT, f'"object" must name a btrfsd object path '
                            f"under {ROOT_PATH} (e.g. {ROOT_PATH}/filesystems/<uuid>)")
    if token == "Manager" and path != ROOT_PATH:
        raise ProtocolError(INVALID_ARGUMENT, f"the Manager is at {ROOT_PATH}")
    args = body.get("args", [])
    if not isinstance(args, list):
        raise ProtocolError(INVALID_ARGUMENT, '"args" must be a JSON array')
    return path, args


def to_dbus_args(signature: str, args: list[Any]) -> list[Any]:
    """JSON arguments as D-Bus values of ``signature``. A missing trailing ``a{sv}``
    (every btrfsd method's options) counts as ``{}``. Raises ProtocolError
    (InvalidArgument) naming the argument that does not fit."""
    types = get_signature_tree(signature).types
    if len(args) == len(types) - 1 and types and types[-1].signature == "a{sv}":
        args = [*args, {}]
    if len(args) != len(types):
        raise ProtocolError(INVALID_ARGUMENT, f"expected {len(types)} arguments "
                            f"({signature or 'none'}), got {len(args)}")
    out = []
    for i, (t, v) in enumerate(zip(types, args, strict=True)):
        try:
            out.append(_to_dbus(t, v, 0))
        except (TypeError, ValueError) as e:
            raise ProtocolError(INVALID_ARGUMENT, f"argument {i} ({t.signature}): {e}") from None
    return out


def _to_dbus(t: SignatureType, v: Any, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise ValueError("nested too deeply")
    tok = t.token
    if tok == "b":
        if not isinstance(v, bool):
            raise TypeError(f"expected true or false, got {_kind(v)}")
        return v
    if tok in INT_RANGES:
        if not isinstance(v, int) or isinstance(v, bool):
            raise TypeError(f"expected an integer, got {_kind(v)}")
        low, high = INT_RANGES[tok]
        if not low <= v < high:
            raise ValueError(f"{v} is out of range for type {tok}")
        return v
    if tok == "d":
        if not isinstance(v, int | float) or isinstance(v, bool):
            raise TypeError(f"expected a number, got {_kind(v)}")
        return float(v)
    if tok in "sog":
        if not isinstance(v, str):
            raise TypeError(f"expected a string, got {_kind(v)}")
        if "\0" in v:
            raise ValueError("a string may not contain NUL")
        if not t.verify(v):  # object path and signature syntax
            raise ValueError(f"not a valid {tok}: {v!r}")
        return v
    if tok == "v":
        return to_variant(v, depth + 1)
    if tok == "a":
        child = t.children[0]
        if child.token == "{":
            if not isinstance(v, dict):
                raise TypeError(f"expected an object, got {_kind(v)}")
            key_t, val_t = child.children
            return {_key(key_t, k): _to_dbus(val_t, x, depth + 1) for k, x in v.items()}
        if child.token == "y" and isinstance(v, str):
            return v.encode()
        if not isinstance(v, list):
            raise TypeError(f"expected an array, got {_kind(v)}")
        items = [_to_dbus(child, x, depth + 1) for x in v]
        return bytes(items) if child.token == "y" else items
    if tok == "(":
        if not isinstance(v, list) or len(v) != len(t.children):
            raise TypeError(f"expected an array of {len(t.children)} values, got {_kind(v)}")
        return [_to_dbus(c, x, depth + 1) for c, x in zip(t.children, v, strict=True)]
    raise TypeError(f"type {tok} cannot be sent over the fleet")


def _key(t: SignatureType, k: str) -> Any:
    # JSON object keys are strings: integer keys come as their decimal text
    if t.token in INT_RANGES:
        try:
            k2: Any = int(k)
        except ValueError:
            raise TypeError(f"key {k!r} is not an integer") from None
        return _to_dbus(t, k2, 0)
    return _to_dbus(t, k, 0)


def to_variant(v: Any, depth: int = 0) -> Variant:
    """A JSON value as a Variant: ``{"$v": [signature, value]}`` gives the type exactly;
    otherwise it is inferred (true/false b, integer x (t above 2**63), number d, string s,
    object a{sv}, array of one such kind as, ax, ab, ad, else av). Raises TypeError or
    ValueError."""
    if isinstance(v, dict) and set(v) == {"$v"}:
        pair = v["$v"]
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
            raise TypeError('"$v" must be [signature, value]')
        tree = get_signature_tree(pair[0])
        if len(tree.types) != 1:
            raise ValueError(f"a variant holds one complete type, not {pair[0]!r}")
        return Variant(tree.types[0], _to_dbus(tree.types[0], pair[1], depth + 1))
    sig = _infer(v, depth)
    return Variant(sig, _to_dbus(get_signature_tree(sig).types[0], v, depth + 1))


def _infer(v: Any, depth: int) -> str:
    if depth > MAX_DEPTH:
        raise ValueError("nested too deeply")
    if isinstance(v, bool):
        return "b"
    if isinstance(v, int):
        return "x" if v < 2**63 else "t"
    if isinstance(v, float):
        return "d"
    if isinstance(v, str):
        return "s"
    if isinstance(v, dict):
        return "a{sv}"
    if isinstance(v, list):
        kinds = {_infer(x, depth + 1) for x in v}
        if len(kinds) == 1 and (kind := kinds.pop()) in ("b", "x", "t", "d", "s"):
            return "a" + kind
        return "av"
    raise TypeError(f"{_kind(v)} has no D-Bus type")


def _kind(v: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "an object", type(None): "null"}.get(type(v), type(v).__name__)


def from_dbus(value: Any) -> Any:
    """A D-Bus reply value as JSON-able data: Variants unwrapped, structs as arrays, byte
    arrays as arrays of numbers. Raises nothing."""
    if isinstance(value, Variant):
        return from_dbus(value.value)
    if isinstance(value, dict):
        return {str(k): from_dbus(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [from_dbus(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return list(value)
    return value


def faithful(value: Any) -> Any:
    """A D-Bus argument as JSON that keeps every Variant's type (``{"$v": [sig, value]}``),
    so the bridge sends exactly what a local client would. Raises nothing."""
    if isinstance(value, Variant):
        return {"$v": [value.signature, faithful(value.value)]}
    if isinstance(value, dict):
        return {str(k): faithful(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [faithful(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return list(value)
    return value


def request_body(path: str, args: list[Any]) -> bytes:
    return json.dumps({"object": path, "args": faithful(args)},
                      separators=(",", ":")).encode()


def reply_body(values: list[Any]) -> bytes:
    """A successful reply: ``{"result": [...]}`` (the D-Bus reply's values)."""
    return json.dumps({"result": from_dbus(values)}, separators=(",", ":")).encode()


def error_body(name: str, message: str, details: dict[str, Any] | None = None) -> bytes:
    """An error reply: ``{"error": name, "message": text, "details": {...}}``."""
    return json.dumps({"error": name, "message": message, "details": from_dbus(details or {})},
                      separators=(",", ":")).encode()


def parse_reply(data: bytes) -> tuple[list[Any] | None, tuple[str, str, dict[str, Any]] | None]:
    """(result, None) or (None, (error name, message, details)) of a reply body. Raises
    nothing: a reply that is neither is an error named Failed."""
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        return None, (FAILED, "the bridge sent a reply that is not JSON", {})
    if isinstance(body, dict) and isinstance(body.get("result"), list):
        return body["result"], None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        details = body.get("details")
        return None, (body["error"], str(body.get("message", "")),
                      details if isinstance(details, dict) else {})
    return None, (FAILED, "the bridge sent a reply of an unknown form", {})
