"""btrfsctl's lean path: ``snapshot SOURCE [DEST]`` and ``snapshot list SOURCE`` (the
commands people run most, from timers and scripts too) on the standard library alone.

The full path (commands.py) spends ~130 ms importing argparse, asyncio, dbus-fast and
rich before it calls anything; here a command line is recognised by hand, the calls go
through wire.py and the output through plain.py. What this path does not recognise
exactly as argparse would parse it (help, abbreviations, a misplaced word, a usage
error) goes to the full path, as does a bus it cannot talk to before its first call, so
behaviour, output and exit codes stay those of the full path (tests/unit/test_lean_client.py
compares the parsing, tests/integration/test_cli_lean.py the output). Rich is imported only
for output plain.py cannot draw and for errors.
"""

from __future__ import annotations

import os
import sys

from ..names import to_bus
from . import plain, wire
from .callerror import CallError

TYPE_CHECKING = False  # typing costs ~5 ms at start-up; mypy still reads the block below
if TYPE_CHECKING:
    from typing import Any

# The same names as btrfsd.constants (tests/unit/test_lean_client.py checks it): importing
# that module pulls in typing (~5 ms).
BUS_NAME = "org.btrfsd1"
ROOT_PATH = "/org/btrfsd1"
MANAGER_IFACE = "org.btrfsd1.Manager"
FILESYSTEM_IFACE = "org.btrfsd1.Filesystem"
FILESYSTEMS_PATH = ROOT_PATH + "/filesystems"
# BTRFS_IOC_FS_INFO, _IOR(0x94, 31, struct btrfs_ioctl_fs_info_args): 1,024 bytes, the
# fsid at byte 16. Any process may ask it of a directory it can open.
_FS_INFO = (2 << 30) | (1024 << 16) | (0x94 << 8) | 31
# errors of a call made on a filesystem object that is not there (not btrfsd's, gone)
_NO_SUCH_OBJECT = frozenset({"org.freedesktop.DBus.Error.UnknownObject",
                             "org.freedesktop.DBus.Error.UnknownMethod",
                             "org.freedesktop.DBus.Error.UnknownInterface"})

EXIT_INTERRUPTED = 130


class Command:
    """A command line the lean path runs: ``action`` is "snapshot" or "list"."""

    def __init__(self, action: str, paths: list[str], flags: set[str],
                 no_ask: bool) -> None:
        self.action, self.paths, self.no_ask = action, paths, no_ask
        self.json = "--json" in flags
        self.writable = "--writable" in flags
        self.recursive = "--recursive" in flags


def parse(argv: list[str]) -> Command | None:
    """The lean command ``argv`` is, or None when the full parser must read it (any
    other command, help, unknown or abbreviated options, a word argparse would take
    differently or refuse). Raises nothing."""
    i, no_ask, flags = 0, False, set()
    while i < len(argv) and argv[i] in ("--json", "--no-ask"):
        no_ask |= argv[i] == "--no-ask"
        flags.add(argv[i])
        i += 1
    if argv[i:i + 1] != ["snapshot"]:
        return None
    rest = argv[i + 1:]
    if rest[:1] == ["delete"]:  # commands._rewrite: "snapshot delete" is another command
        return None
    if rest[:1] == ["list"]:  # commands._rewrite: "snapshot list" is its own command
        action, rest, allowed, most = "list", rest[1:], {"--json"}, 1
    else:
        action, allowed, most = "snapshot", {"--json", "--writable", "--recursive"}, 2
    words = [k for k, w in enumerate(rest) if not w.startswith("-")]
    for w in rest:
        if w.startswith("-") and w not in allowed:
            return None
        if w == "":
            return None
    # argparse takes positionals in one run: SOURCE --flag DEST would be a usage error
    if not 1 <= len(words) <= most or words[-1] - words[0] != len(words) - 1:
        return None
    return Command(action, [rest[k] for k in words], flags | set(rest), no_ask)


def absolute(path: str) -> str:
    """client.absolute without importing client (dbus-fast)."""
    return to_bus(os.path.abspath(path))


def run(argv: list[str]) -> int | None:
    """Run ``argv`` if it is a lean command; its exit code, or None when the full path
    must run it (nothing has been called on the bus then)."""
    cmd = parse(argv)
    if cmd is None:
        return None
    try:
        bus = wire.Connection.open()
    except wire.Unsupported:
        return None
    except CallError as e:
        return failed(e, cmd.json)
    interactive = False if cmd.no_ask else sys.stdin.isatty()
    try:
        with bus:
            if cmd.action == "snapshot":
                return snapshot(bus, cmd, interactive)
            return snapshot_list(bus, cmd, interactive)
    except CallError as e:
        return failed(e, cmd.json)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _filesystem_of(bus: wire.Connection, path: str, interactive: bool) -> str:
    fs_path, _subvolume = bus.call(BUS_NAME, ROOT_PATH, MANAGER_IFACE, "ResolvePath",
                                   "sa{sv}", [path, {}], interactive)
    return str(fs_path)


def _local_filesystem(path: str) -> str | None:
    """The object path btrfsd gives the filesystem holding directory ``path``, found with
    this process's own rights (FS_INFO); None when it cannot tell."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        import fcntl

        buf = bytearray(1024)
        fcntl.ioctl(fd, _FS_INFO, buf, True)
    except OSError:  # not btrfs, or a kernel without it
        return None
    finally:
        os.close(fd)
    h = bytes(buf[16:32]).hex()
    return f"{FILESYSTEMS_PATH}/{h[:8]}_{h[8:12]}_{h[12:16]}_{h[16:20]}_{h[20:]}"


def _call_on_filesystem(bus: wire.Connection, path: str, member: str, signature: str,
                        body: list[Any], interactive: bool) -> list[Any]:
    """A Filesystem method of the filesystem holding ``path``. Its object is named from
    the filesystem's own fsid, read here (one round trip and one polkit check fewer than
    ResolvePath); where that object is not btrfsd's, ResolvePath finds it (or says why
    not) as before: the daemon still resolves ``path`` itself in the call. Raises
    CallError."""
    guess = _local_filesystem(path)
    if guess is not None:
        try:
            return bus.call(BUS_NAME, guess, FILESYSTEM_IFACE, member, signature, body,
                            interactive)
        except CallError as e:
            if e.name not in _NO_SUCH_OBJECT:
                raise
    fs = _filesystem_of(bus, path, interactive)
    return bus.call(BUS_NAME, fs, FILESYSTEM_IFACE, member, signature, body, interactive)


def snapshot(bus: wire.Connection, cmd: Command, interactive: bool) -> int:
    """commands.snapshot_create. Raises CallError."""
    source = absolute(cmd.paths[0])
    dest = absolute(cmd.paths[1]) if len(cmd.paths) > 1 else ""
    (made,) = _call_on_filesystem(bus, source, "CreateSnapshot", "ssa{sv}", [
        source, dest, {"read_only": ("b", not cmd.writable),
                       "recursive": ("b", cmd.recursive)}], interactive)
    if cmd.json:
        emit_json({"source": source, "path": made, "read_only": not cmd.writable})
    else:
        kind = "writable" if cmd.writable else "read-only"
        say(f"Created {kind} snapshot {made}")
    return 0


def snapshot_list(bus: wire.Connection, cmd: Command, interactive: bool) -> int:
    """commands.snapshot_list. Raises CallError."""
    source = absolute(cmd.paths[0])
    options: dict[str, tuple[str, Any]] = {"snapshots_of": ("s", source)}
    if not cmd.json:  # JSON has every field
        options["columns"] = ("as", list(plain.TABLE_FIELDS))
    (columns,) = _call_on_filesystem(bus, source, "ListSubvolumes", "a{sv}", [options],
                                     interactive)
    if cmd.json:
        sys.stdout.write(plain.records_json(plain.SUBVOLUME_FIELDS, columns) + "\n")
    else:
        subvolume_table(plain.subvolume_columns(columns))
    return 0


# -- output, as output.py words it ----------------------------------------------------
def subvolume_table(cells: list[list[str]]) -> None:
    """output.subvolume_table, of plain.subvolume_columns' cells."""
    mode = plain.console_mode(sys.stdout)
    text = plain.table_columns(plain.SUBVOLUME_COLUMNS, cells, *mode) if mode else None
    if text is None:
        from . import output

        output.table(None, plain.SUBVOLUME_COLUMNS, [list(r) for r in zip(*cells, strict=True)])
        return
    sys.stdout.write(text)
    sys.stdout.flush()


def say(text: str) -> None:
    """output.console.print(text)."""
    mode = plain.console_mode(sys.stdout)
    out = plain.line(text, *mode) if mode else None
    if out is None:
        from . import output

        output.console.print(text)
        return
    sys.stdout.write(out)
    sys.stdout.flush()


def emit_json(data: Any) -> None:
    """output.emit_json."""
    sys.stdout.write(plain.dumps(data) + "\n")


def failed(e: CallError, as_json: bool) -> int:
    """Report a failed call as commands.run does; return its exit code."""
    from . import output
    from .errors import error_json, error_line, explain

    if as_json:
        output.emit_json(error_json(e))
    output.err_console.print(error_line(e), markup=False, highlight=False)
    return explain(e.name).exit_code
