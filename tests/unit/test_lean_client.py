"""btrfsctl's lean path (lean.py, wire.py) does what the full path does, or hands the
command line to it (no btrfsd needed; a private dbus-daemon for the wire client)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import Message, MessageFlag, MessageType, Variant
from test_dbus_fast_internals import bus_address

from btrfsd import constants
from btrfsd.cli import commands, lean, wire
from btrfsd.cli.callerror import CallError
from btrfsd.cli.client import Client

__all__ = ["bus_address"]  # a fixture, used by name


def test_names_are_the_constants() -> None:
    from btrfsd.bus.paths import filesystem_path
    from btrfsd.fs.ioctl import BTRFS_IOC_FS_INFO

    assert (lean.BUS_NAME, lean.ROOT_PATH, lean.MANAGER_IFACE, lean.FILESYSTEM_IFACE,
            lean.FILESYSTEMS_PATH) == (
        constants.BUS_NAME, constants.ROOT_PATH, constants.MANAGER_IFACE,
        constants.FILESYSTEM_IFACE, constants.FILESYSTEMS_PATH)
    assert lean._FS_INFO == BTRFS_IOC_FS_INFO
    # the object path the lean client names from an fsid is the daemon's for that uuid
    assert filesystem_path("0123abcd-0000-4111-8222-0123456789ab") == (
        lean.FILESYSTEMS_PATH + "/0123abcd_0000_4111_8222_0123456789ab")


def test_the_filesystem_of_a_directory_not_on_btrfs_is_left_to_the_daemon(
        tmp_path: Path) -> None:
    assert lean._local_filesystem(str(tmp_path / "missing")) is None
    kind = subprocess.run(["stat", "-f", "-c", "%T", str(tmp_path)], capture_output=True,
                          text=True).stdout.strip()
    if kind != "btrfs":
        assert lean._local_filesystem(str(tmp_path)) is None


def test_the_lean_path_imports_nothing_heavy() -> None:
    # ...nor does drawing what the lean commands print (a table with times, JSON)
    code = ("import sys; from btrfsd.cli import main, lean, plain; "
            "rows = plain.subvolume_cells([{'id': 257, 'parent_id': 5, 'path': 'a:b', "
            "'read_only': True, 'is_snapshot': True, 'otime': 1764325580000000}]); "
            "assert plain.table(plain.SUBVOLUME_COLUMNS, rows, 250, False) is None; "
            "assert plain.table(plain.SUBVOLUME_COLUMNS, rows[:0], 250, False); "
            "rows[0][2] = 'a'; assert plain.table(plain.SUBVOLUME_COLUMNS, rows, 250, False); "
            "assert plain.records_json(['path', 'id'], [['a', 'b'], [1, 2]]); "
            "assert plain.dumps({'path': 'x', 'read_only': True}); "
            "print(' '.join(sorted(sys.modules)))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout.split())
    heavy = {"argparse", "asyncio", "dbus_fast", "rich", "typing", "dataclasses", "json",
             "socket", "btrfsd.constants", "btrfsd.cli.commands", "btrfsd.cli.output",
             "re", "enum"}
    assert not loaded & heavy


LEAN = [
    ["snapshot", "/srv/data"],
    ["snapshot", "/srv/data", "/srv/copy"],
    ["snapshot", "/srv/data", "/srv/copy", "--writable", "--recursive"],
    ["--json", "snapshot", "--writable", "/srv/data"],
    ["--no-ask", "--json", "snapshot", "rel/path", "--json"],
    ["snapshot", "list"],  # a source named "list"... is "snapshot list" without SOURCE
    ["snapshot", "list", "/srv/data"],
    ["snapshot", "list", "/srv/data", "--json"],
    ["--json", "--no-ask", "snapshot", "list", "--json", "/srv/data"],
    ["snapshot", "--json", "list", "/srv/data"],  # argparse: SOURCE list, DEST /srv/data
    ["snapshot", "list", "list"],
    ["snapshot", "a b", "c\udcffd"],
]
FULL = [
    [], ["-h"], ["--version"], ["snapshot"], ["snapshot", "-h"], ["snapshot", "--help"],
    ["snapshot", "delete", "/x"], ["snapshot", "a", "--writable", "b"],
    ["snapshot", "--writ", "a"], ["snapshot", "a", "b", "c"], ["snapshot", "--", "a"],
    ["snapshot", "a", "--no-ask"], ["snapshot", "-x"], ["snapshot", ""],
    ["snapshot", "list", "a", "b"], ["snapshot", "list", "a", "--writable"],
    ["subvolume", "list", "/x"], ["--no-ask", "-h"], ["--jso", "snapshot", "a"],
    ["snapshot", "-1"], ["snapshot", "a", "--recursive=1"], ["fs", "list"],
]


@pytest.mark.parametrize("argv", LEAN)
def test_lean_command_lines_parse_as_argparse_does(argv: list[str]) -> None:
    cmd = lean.parse(argv)
    try:
        args = commands.build_parser().parse_args(commands._rewrite(argv))
    except SystemExit:
        assert cmd is None  # a usage error: argparse says it
        return
    assert cmd is not None
    assert cmd.json == getattr(args, "json", False)
    assert cmd.no_ask == args.no_ask
    if cmd.action == "list":
        assert args.handler is commands.snapshot_list
        assert cmd.paths == [args.source]
    else:
        assert args.handler is commands.snapshot_create
        assert cmd.paths == [args.source, *([args.dest] if args.dest else [])]
        assert (cmd.writable, cmd.recursive) == (args.writable, args.recursive)


@pytest.mark.parametrize("argv", FULL)
def test_other_command_lines_go_to_the_full_path(argv: list[str]) -> None:
    assert lean.parse(argv) is None


def test_marshalled_calls_are_dbus_fasts() -> None:
    ours = wire.method_call(7, "org.btrfsd1", "/org/btrfsd1/filesystems/x",
                            "org.btrfsd1.Filesystem", "CreateSnapshot", "ssa{sv}",
                            ["/a\\xff", "", {"read_only": ("b", True),
                                             "snapshots_of": ("s", "/ü"),
                                             "columns": ("as", ["id", "path"])}],
                            flags=wire.ALLOW_INTERACTIVE_AUTHORIZATION)
    theirs = Message(destination="org.btrfsd1", path="/org/btrfsd1/filesystems/x",
                     interface="org.btrfsd1.Filesystem", member="CreateSnapshot",
                     signature="ssa{sv}", serial=7,
                     flags=MessageFlag.ALLOW_INTERACTIVE_AUTHORIZATION,
                     body=["/a\\xff", "", {"read_only": Variant("b", True),
                                           "snapshots_of": Variant("s", "/ü"),
                                           "columns": Variant("as", ["id", "path"])}])
    assert ours == bytes(theirs._marshall(False))
    assert wire.method_call(1, "a.b", "/", "i.f", "M") == bytes(
        Message(destination="a.b", path="/", interface="i.f", member="M", serial=1
                )._marshall(False))


def test_replies_read_as_client_unwraps_them() -> None:
    columns = [[257, 258], [256, 256], ["a", "b\\xff"], ["u", "v"], ["", "p"], ["", ""],
               [7, 8], [1, 2], [-3, 4], [True, False], [True, True], [0, 1], [0, 2],
               [0, 3], [0, 2**64 - 1]]
    reply = Message(message_type=MessageType.METHOD_RETURN, reply_serial=3, serial=9,
                    signature="(atatasasasasataxaxababatatatat)", body=[columns])
    got = wire.parse_message(bytes(reply._marshall(False)))
    assert (got.kind, got.reply_serial, got.body) == (wire.METHOD_RETURN, 3, [columns])
    error = Message(message_type=MessageType.ERROR, error_name="org.btrfsd1.Error.Busy",
                    reply_serial=4, serial=10, signature="sa{sv}", body=["full", {
                        "message": Variant("s", "core"), "job_id": Variant("t", 7),
                        "ids": Variant("au", [1, 2]), "v": Variant("v", Variant("i", -1)),
                        "m": Variant("a{sv}", {"x": Variant("b", False)}),
                        "raw": Variant("ay", b"\xff\0")}])
    got = wire.parse_message(bytes(error._marshall(False)))
    assert got.kind == wire.ERROR and got.error_name == "org.btrfsd1.Error.Busy"
    assert CallError.from_body(got.error_name, got.body).details == CallError.from_reply(
        error).details == {"message": "core", "job_id": 7, "ids": [1, 2], "v": -1,
                           "m": {"x": False}, "raw": b"\xff\0"}


@pytest.mark.parametrize("strings", [
    [], [""], ["", ""], ["a"], ["abc", "def", "ghi"], ["abcd", "efgh"], ["ab", "abc"],
    ["abc", "ab"], ["é", "ab"], ["日本", "日本"], [f"{k:036d}" for k in range(1000)],
    [""] * 1000, ["x" * 5] * 3 + ["y" * 6], ["a", "b\xff"],
])
def test_string_arrays_are_read_as_dbus_fast_writes_them(strings: list[str]) -> None:
    # the same-length read (one unpack) and the loop must agree, around other values too
    body = [7, strings, "tail", [1, 2], strings]
    reply = Message(message_type=MessageType.METHOD_RETURN, reply_serial=3, serial=9,
                    signature="yassatas", body=body)
    assert wire.parse_message(bytes(reply._marshall(False))).body == body


def big_endian(kind: int, serial: int, reply_serial: int, body: bytes, sig: str) -> bytes:
    """A reply as a big-endian peer writes it (dbus-fast writes only little-endian)."""
    import struct

    fields = struct.pack(">BBBB", 5, 1, ord("u"), 0) + struct.pack(">I", reply_serial)
    fields += struct.pack(">BBBB", 8, 1, ord("g"), 0) + bytes([len(sig)]) + sig.encode() + b"\0"
    head = struct.pack(">cBBBIII", b"B", kind, 0, 1, len(body), serial, len(fields)) + fields
    return head + bytes(-len(head) % 8) + body


def test_big_endian_replies_are_read() -> None:
    import struct

    # "ok" (4 + 3 bytes, 1 to align), the array's length (4, then 4 to align its items)
    body = (struct.pack(">I", 2) + b"ok\0" + bytes(1) + struct.pack(">I", 16) + bytes(4)
            + struct.pack(">QQ", 5, 2**63))
    got = wire.parse_message(big_endian(wire.METHOD_RETURN, 3, 1, body, "sat"))
    assert got.reply_serial == 1 and got.body == ["ok", [5, 2**63]]
    # strings of one length, big-endian: the array's length (26), then "ab\0" (7 + 1 to
    # align), "cd\0" and "ef\0" (the last unpadded)
    strings = b"".join(struct.pack(">I", 2) + t + b"\0" for t in (b"ab", b"cd", b"ef"))
    body = struct.pack(">I", 8 + 8 + 7) + strings[:7] + b"\0" + strings[7:14] + b"\0" + strings[14:]
    got = wire.parse_message(big_endian(wire.METHOD_RETURN, 3, 1, body, "as"))
    assert got.body == [["ab", "cd", "ef"]]


@pytest.mark.parametrize(("text", "expected"), [
    ("unix:path=/run/dbus/system_bus_socket", ["/run/dbus/system_bus_socket"]),
    ("unix:abstract=/tmp/x,guid=0f", [b"\0/tmp/x"]),
    ("unix:path=/a;unix:path=/b;", ["/a", "/b"]),
])
def test_plain_addresses_are_read(text: str, expected: list[Any]) -> None:
    assert wire.bus_addresses(text) == expected


@pytest.mark.parametrize("text", ["tcp:host=localhost,port=1", "unix:path=/a%20b", "",
                                  "unix:tmpdir=/tmp", "nonsense", "unix:path=/a;tcp:port=1"])
def test_other_addresses_are_left_to_dbus_fast(text: str) -> None:
    with pytest.raises(wire.Unsupported):
        wire.bus_addresses(text)


async def full_client_error(address: str) -> CallError:
    os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = address
    try:
        async with Client(interactive=False):
            pass
    except CallError as e:
        return e
    raise AssertionError("connected")


def test_no_bus_is_worded_as_the_full_client_does(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    address = f"unix:path={tmp_path}/nobus"
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", address)
    with pytest.raises(CallError) as lean_error:
        wire.Connection.open()
    full = asyncio.run(full_client_error(address))
    assert (lean_error.value.name, lean_error.value.text) == (full.name, full.text)
    assert full.text.startswith(f"cannot connect to {address}: [Errno 2]")


async def test_calls_and_errors_on_a_real_bus(bus_address: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bus_address)
    with wire.Connection.open() as bus:
        (names,) = bus.call("org.freedesktop.DBus", "/org/freedesktop/DBus",
                            "org.freedesktop.DBus", "ListNames")
        assert "org.freedesktop.DBus" in names
        with pytest.raises(CallError) as e:
            bus.call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                     "GetNameOwner", "s", ["org.btrfsd1"], interactive=True)
        assert e.value.name == "org.freedesktop.DBus.Error.NameHasNoOwner"
        with pytest.raises(CallError) as e:  # no owner, no activation: as btrfsd gone
            bus.call("org.btrfsd1", "/org/btrfsd1", "org.btrfsd1.Manager", "GetStatus",
                     "a{sv}", [{}])
        assert e.value.name == "org.freedesktop.DBus.Error.ServiceUnknown"


def test_a_bus_that_refuses_us_goes_to_the_full_path(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import socket
    import threading

    path = tmp_path / "refusing"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def refuse() -> None:
        conn, _ = server.accept()
        conn.recv(1024)
        conn.sendall(b"REJECTED ANONYMOUS\r\n")
        conn.close()

    t = threading.Thread(target=refuse)
    t.start()
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={path}")
    try:
        with pytest.raises(wire.Unsupported):
            wire.Connection.open()
    finally:
        t.join(5)
        server.close()


def test_a_filesystem_object_that_is_not_there_is_found_through_resolve_path(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The lean client names the filesystem object from the fsid it reads itself; where
    btrfsd has no such object (a filesystem it does not serve), it asks ResolvePath,
    whose error (or object) decides, as before."""
    calls: list[tuple[str, str]] = []

    class Bus:
        def call(self, dest: str, path: str, iface: str, member: str, sig: str,
                 body: list[Any], interactive: bool) -> list[Any]:
            calls.append((path, member))
            if path == "/org/btrfsd1/filesystems/guess":
                raise CallError("org.freedesktop.DBus.Error.UnknownObject", "no object")
            if member == "ResolvePath":
                return ["/org/btrfsd1/filesystems/real", "/"]
            return ["made"]

    monkeypatch.setattr(lean, "_local_filesystem",
                        lambda path: "/org/btrfsd1/filesystems/guess")
    bus: Any = Bus()
    assert lean._call_on_filesystem(bus, "/x", "CreateSnapshot", "ssa{sv}", [], False) == [
        "made"]
    assert calls == [("/org/btrfsd1/filesystems/guess", "CreateSnapshot"),
                     ("/org/btrfsd1", "ResolvePath"),
                     ("/org/btrfsd1/filesystems/real", "CreateSnapshot")]
    calls.clear()  # any other error is the answer: no second call
    monkeypatch.setattr(lean, "_local_filesystem",
                        lambda path: "/org/btrfsd1/filesystems/real")

    def refused(*args: Any) -> list[Any]:
        calls.append((args[1], args[3]))
        raise CallError("org.btrfsd1.Error.AlreadyExists", "exists")

    monkeypatch.setattr(Bus, "call", lambda self, *args: refused(*args))
    with pytest.raises(CallError, match="AlreadyExists"):
        lean._call_on_filesystem(bus, "/x", "CreateSnapshot", "ssa{sv}", [], False)
    assert calls == [("/org/btrfsd1/filesystems/real", "CreateSnapshot")]


def _exit_now(code: str) -> subprocess.CompletedProcess[str]:
    prelude = ("import sys\nfrom btrfsd.cli.main import exit_now\n"
               "class Late:\n    def __del__(self): sys.stderr.write('shut down\\n')\n"
               "late = Late()\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True,
                          text=True, env=env)


def test_the_launcher_ends_a_lean_command_without_the_interpreters_shutdown() -> None:
    r = _exit_now("print('out', end=''); sys.stderr.write('err'); exit_now(4)")
    assert (r.returncode, r.stdout, r.stderr) == (4, "out", "err")  # flushed, no shutdown


@pytest.mark.parametrize("code", [
    "import atexit; atexit.register(print, 'at exit'); exit_now(3)",
    "import threading; exit_now(3)",
    "import btrfsd.cli.commands; exit_now(3)",
])
def test_the_launcher_shuts_down_as_usual_after_other_work(code: str) -> None:
    r = _exit_now(code)
    assert r.returncode == 3 and r.stderr.endswith("shut down\n"), r


def test_the_launcher_reports_output_it_could_not_write_as_usual() -> None:
    # the output waits in stdout's buffer; its reader is gone by the time it is flushed
    code = ("import os; print('x' * 100); r, w = os.pipe(); os.dup2(w, 1); os.close(r); "
            "exit_now(0)")
    r = _exit_now(code)
    usual = _exit_now(code.replace("exit_now(0)", "sys.exit(0)"))
    assert (r.returncode, r.stderr) == (usual.returncode, usual.stderr) != (0, "")
