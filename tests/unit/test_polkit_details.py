"""What polkit is told about a call (bus/auth.py call_details), without polkitd."""

from __future__ import annotations

import re
import unicodedata
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from dbus_fast import Message, MessageFlag
from dbus_fast.errors import DBusError
from dbus_fast.service import ServiceInterface

from btrfsd.bus import context
from btrfsd.bus.auth import (
    ACTION_ATTR,
    DETAIL_TRUNCATED,
    MAX_DETAIL_CHARS,
    OTHER_USER_ACTION_ATTR,
    call_details,
    detail_positions,
    escape_detail,
)
from btrfsd.bus.introspect import interfaces
from btrfsd.constants import Action
from btrfsd.core.filesystems import Filesystem
from btrfsd.core.limits import PerCallerLimit
from btrfsd.fs.mounts import MountEntry

REPO = Path(__file__).resolve().parents[2]
UUID = "0f0e0d0c-0b0a-0908-0706-050403020100"


def _valid_detail(s: str) -> bool:
    """What polkit's a{ss} needs (UTF-8, no NUL), and what a dialog shows on one line."""
    s.encode("utf-8")  # strict: raises on a surrogate
    return not any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") for ch in s)


# -- escaping ---------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["/srv/data/home", "/srv/ünïcødé/日本", "/a b/c", "", "/🙂"])
def test_ordinary_values_pass_unchanged(value: str) -> None:
    assert escape_detail(value) == value


@pytest.mark.parametrize(("value", "escaped"), [
    ("/a\nAuthentication is required", "/a\\u000aAuthentication is required"),
    ("/a\0b", "/a\\u0000b"),
    ("/a\\b", "/a\\\\b"),
    ("/x\u202etxt.exe", "/x\\u202etxt.exe"),  # right-to-left override
    ("/x\u200by", "/x\\u200by"),  # zero-width space
    ("/l\u2028m", "/l\\u2028m"),  # line separator
    ("/lab" + b"\xff\xfe".decode("utf-8", "surrogateescape"), "/lab\\xff\\xfe"),
    ("/lone\ud800", "/lone\\ud800"),
    ("/tag\U000e0041", "/tag\\U000e0041"),  # an invisible tag character (Cf, astral)
])
def test_odd_values_are_escaped(value: str, escaped: str) -> None:
    assert escape_detail(value) == escaped
    assert _valid_detail(escape_detail(value))


def test_escaping_is_one_to_one() -> None:
    tricky = ["/a\nb", "/a\\nb", "/a\\u000ab", "/a\\\nb", "/a\u000ab\\",
              "/x" + b"\x85".decode("utf-8", "surrogateescape"), "/x\x85", "/x\\x85",
              "/x\\u0085", "/y\\", "/y\\\\", "/z\\[truncated]"]
    out = [escape_detail(v) for v in tricky]
    assert len(set(out)) == len(tricky), out


def test_long_values_are_cut_and_marked() -> None:
    long = "/" + "a" * (10 * MAX_DETAIL_CHARS)
    out = escape_detail(long)
    assert out == long[:MAX_DETAIL_CHARS] + DETAIL_TRUNCATED
    # escapes count towards the limit and are never cut in half
    out = escape_detail("\n" * MAX_DETAIL_CHARS)
    assert out.endswith("\\u000a" + DETAIL_TRUNCATED)
    assert len(out) <= MAX_DETAIL_CHARS + len(DETAIL_TRUNCATED)
    assert escape_detail("a" * MAX_DETAIL_CHARS) == "a" * MAX_DETAIL_CHARS


# -- the builder --------------------------------------------------------------------------
class _Explodes:
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


def _fs(label: Any = "data", mount_points: tuple[str, ...] = ("/srv/data",)) -> Filesystem:
    mounts = [_mount(mp) for mp in mount_points]
    return Filesystem(uuid=UUID, mounts=mounts, label=label)


def _mount(mount_point: str) -> MountEntry:
    return MountEntry(mount_id=1, device_number="0:42", root="/", mount_point=mount_point,
                      source="/dev/loop0", options={})


async def _delete(self: object, path: str, options: dict[str, Any]) -> None: ...


async def _snapshot(self: object, source: str, destination: str,
                    options: dict[str, Any]) -> None: ...


async def _schedule(self: object, name: str, spec: dict[str, Any],
                    options: dict[str, Any]) -> None: ...


async def _limit(self: object, path: str, referenced: int, exclusive: int,
                 options: dict[str, Any]) -> None: ...


def test_positions_are_the_named_string_parameters() -> None:
    assert detail_positions(_delete) == ((0, "path"),)
    assert detail_positions(_snapshot) == ((0, "source"), (1, "destination"))
    assert detail_positions(_schedule) == ((0, "name"),)
    assert detail_positions(_limit) == ((0, "path"),)


class _FsObject:
    def __init__(self, fs: object) -> None:
        self.fs = fs


def test_filesystem_method_details() -> None:
    d = call_details(_FsObject(_fs()), ["/srv/data/a", "/srv/data/.snapshots/a", {}],
                     detail_positions(_snapshot))
    assert d == {"source": "/srv/data/a", "destination": "/srv/data/.snapshots/a",
                 "filesystem": UUID, "label": "data", "mount_point": "/srv/data"}


def test_paths_lose_repeated_and_trailing_slashes_only() -> None:
    d = call_details(object(), ["//srv//data/a/", {}], detail_positions(_delete))
    assert d == {"path": "/srv/data/a"}
    # "" (the default snapshot place) and relative paths stay as the caller sent them
    d = call_details(object(), ["rel//x/", "", {}], detail_positions(_snapshot))
    assert d == {"source": "rel//x/", "destination": ""}
    # a name is not a path
    assert call_details(object(), ["a//b/", {}, {}], detail_positions(_schedule)) == {
        "name": "a//b/"}


def test_job_method_details() -> None:
    job_object = SimpleNamespace(job=SimpleNamespace(operation="scrub", id=7, filesystem=UUID))
    assert call_details(job_object, [{}], ()) == {"operation": "scrub", "job": "7",
                                                   "filesystem": UUID}


def test_odd_values_never_break_the_call() -> None:
    label = b"\xffbad".decode("utf-8", "surrogateescape")
    positions = detail_positions(_snapshot)
    d = call_details(_FsObject(_fs(label=label, mount_points=())),
                     [_Explodes(), None, {}], positions)
    assert d == {"source": "", "destination": "", "filesystem": UUID, "label": "\\xffbad",
                 "mount_point": ""}
    # bytes and numbers become text; a short argument list leaves the key empty
    d = call_details(object(), [b"/a\xff"], detail_positions(_snapshot))
    assert d == {"source": "/a\\xff", "destination": ""}
    d = call_details(object(), [12, {}], detail_positions(_delete))
    assert d == {"path": "12"}
    assert all(_valid_detail(v) for v in d.values())


def test_missing_attributes_leave_the_keys_empty() -> None:
    class Bare:
        uuid = UUID  # no label, no mounts

    class Job:
        operation = "balance"  # no id, no filesystem

    class Both:
        fs = Bare()
        job = Job()

    assert call_details(Both(), [], ()) == {"filesystem": "", "label": "", "mount_point": "",
                                            "operation": "balance", "job": ""}


def test_an_object_whose_attributes_raise_gives_what_it_can() -> None:
    class Hostile:
        @property
        def fs(self) -> object:
            raise RuntimeError("boom")

    d = call_details(Hostile(), ["/p", {}], detail_positions(_delete))
    assert d == {"path": "/p"}
    assert call_details(object(), None, ((0, "path"),)) == {"path": ""}  # type: ignore[arg-type]


# -- the wrapper sends them, and the policy's messages only use keys that are sent ---------
class _RecordingAuthority:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Mapping[str, str]]] = []

    async def uid_of(self, sender: str) -> int:
        return 1000

    async def check(self, sender: str, action: str, interactive: bool,
                    details: Mapping[str, str] | None = None) -> tuple[bool, bool]:
        self.calls.append((action, dict(details or {})))
        return False, False  # denied: the method body never runs

    def allowed_lately(self, sender: str, action: str, details: object) -> bool:
        return False  # so a read does not start before the answer either

    def note_allowed(self, sender: str, action: str, details: object) -> None:
        raise AssertionError("never allowed here")

    def note_refused(self, sender: str, action: str) -> None:
        pass


def _methods(iface: ServiceInterface) -> list[Any]:
    return [m for m in ServiceInterface._get_methods(iface) if not m.disabled]


async def _details_sent(iface: ServiceInterface, method: Any) -> tuple[str, Mapping[str, str]]:
    authority = _RecordingAuthority()
    iface.authority = authority  # type: ignore[attr-defined]
    if hasattr(iface, "_service"):  # expensive reads hold a place first (core/limits.py)
        iface._service = SimpleNamespace(read_limit=PerCallerLimit(8, "reads"))
    args = [f"/arg{i}" if t.token == "s" else None for i, t in
            enumerate(method.in_signature_tree.types)]
    msg = Message(destination="org.btrfsd1", path="/org/btrfsd1", member=method.name,
                  sender=":1.42", flags=MessageFlag.NONE)
    token = context._current_message.set(msg)
    try:
        with pytest.raises(DBusError):
            await method.fn(iface, *args)
    finally:
        context._current_message.reset(token)
    # a method with an own-objects action asks for both without a question first; the
    # last call is the one that decides (the method's own action), and every call
    # carries the same details
    action, details = authority.calls[-1]
    assert all(d == details for _, d in authority.calls), authority.calls
    return action, details


def _message_keys() -> dict[str, set[str]]:
    tree = ET.parse(REPO / "polkit-actions" / "org.btrfsd1.policy")
    return {a.get("id", ""): set(re.findall(r"\$\((\w+)\)", a.findtext("message") or ""))
            for a in tree.iter("action")}


async def test_every_method_sends_the_keys_its_action_message_names() -> None:
    keys = _message_keys()
    seen = set()
    for iface in interfaces():
        for method in _methods(iface):
            action, details = await _details_sent(iface, method)
            assert action in (getattr(method.fn, ACTION_ATTR),
                              getattr(method.fn, OTHER_USER_ACTION_ATTR))
            actions = {getattr(method.fn, ACTION_ATTR),
                       getattr(method.fn, OTHER_USER_ACTION_ATTR)} - {None}
            for a in actions:
                missing = keys[a] - set(details)
                assert not missing, f"{iface.name}.{method.name} ({a}) sends no {missing}"
                seen.add(a)
            assert all(isinstance(v, str) and _valid_detail(v) for v in details.values())
    assert keys[Action.SUBVOLUME_DELETE] == {"path"}  # the dialog names what goes
    assert Action.JOB_CANCEL_OTHER_USER in seen


async def test_delete_tells_polkit_the_path_and_filesystem() -> None:
    fs_iface = next(i for i in interfaces() if i.name == "org.btrfsd1.Filesystem")
    fs_iface.fs = _fs()  # type: ignore[attr-defined]
    method = next(m for m in _methods(fs_iface) if m.name == "DeleteSubvolume")
    action, details = await _details_sent(fs_iface, method)
    assert action == Action.SUBVOLUME_DELETE
    assert details == {"path": "/arg0", "filesystem": UUID, "label": "data",
                       "mount_point": "/srv/data"}
