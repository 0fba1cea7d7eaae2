"""Read a btrfs send stream (version 1) as it arrives, command by command.

The stream (what ``btrfs receive`` reads): a header ``btrfs-stream\\0`` and a u32 version,
then commands, each a header (u32 length of its attributes, u16 command, u32 crc32c)
and attributes (u16 type, u16 length, value), all little endian. The crc is the
Castagnoli CRC (seed 0, no final inversion, as the kernel's btrfs_crc32c) of the header,
with its crc field zeroed, and the attributes.

Pure parsing: no kernel calls. Raises BadStream, never anything else, for any bytes.
The crc is checked (in Python) only when asked: a stream read straight from the kernel
through a pipe only this process holds has nothing a crc could catch, and checking it
would cost more than parsing it (fs/send.py reads without).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from ..errors import Failed

MAGIC = b"btrfs-stream\0"
_HEADER = struct.Struct("<13sI")
_CMD = struct.Struct("<IHI")
_ATTR = struct.Struct("<HH")
_CRC_AT = 6  # offset of the crc field in a command header
# A command carries at most a few names and a path or two (no file data is asked for);
# a length past this is a broken stream, not a reason to buffer gigabytes.
MAX_COMMAND = 1 << 20

# Commands (kernel fs/btrfs/send.h, enum btrfs_send_cmd), versions 1 to 3.
SUBVOL, SNAPSHOT = 1, 2
MKFILE, MKDIR, MKNOD, MKFIFO, MKSOCK, SYMLINK = 3, 4, 5, 6, 7, 8
RENAME, LINK, UNLINK, RMDIR = 9, 10, 11, 12
SET_XATTR, REMOVE_XATTR = 13, 14
WRITE, CLONE, TRUNCATE, CHMOD, CHOWN, UTIMES, END, UPDATE_EXTENT = (
    15, 16, 17, 18, 19, 20, 21, 22)
FALLOCATE, FILEATTR, ENCODED_WRITE, ENABLE_VERITY = 23, 24, 25, 26
KNOWN_COMMANDS = frozenset(range(1, 27))

# Attributes (enum btrfs_send_attr) this reader uses.
A_INO, A_SIZE = 3, 4
A_PATH, A_PATH_TO, A_PATH_LINK = 15, 16, 17

Attrs = dict[int, bytes]
Handler = Callable[[int, Attrs], None]


class BadStream(Failed):
    """The send stream is not one this reader understands (truncated, damaged, a command
    it does not know)."""


def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """The btrfs send stream's crc32c of ``data`` (seed ``crc``, no inversions)."""
    table = _TABLE
    for b in bytes(data):
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc


_ZERO_CRC = bytes(4)


class StreamReader:
    """Feed it the stream in pieces of any size; it calls ``handler(command, attrs)``
    for every complete command, in order, and stops at END."""

    def __init__(self, handler: Handler, *, verify: bool = True) -> None:
        self._handler = handler
        self._verify = verify
        self._buf = bytearray()
        self._started = False
        self.version = 0
        self.ended = False
        self.commands = 0

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Take the next piece. Raises BadStream."""
        if self.ended:
            if data:
                raise BadStream("The send stream goes on after its end command.")
            return
        buf = self._buf
        buf += data
        pos = 0
        if not self._started:
            if len(buf) < _HEADER.size:
                return
            magic, self.version = _HEADER.unpack_from(buf)
            if magic != MAGIC:
                raise BadStream("This is not a btrfs send stream (no stream header).")
            if self.version != 1:
                # version 2 changes how data is framed; btrfsd asks for version 1
                raise BadStream(f"The send stream has version {self.version}; only "
                                "version 1 is understood.")
            pos = _HEADER.size
            self._started = True
        size = len(buf)
        unpack_cmd, unpack_attr = _CMD.unpack_from, _ATTR.unpack_from
        while size - pos >= _CMD.size:
            length, cmd, crc = unpack_cmd(buf, pos)
            if length > MAX_COMMAND:
                raise BadStream(f"A send stream command claims {length} bytes; the stream "
                                "is damaged.")
            end = pos + _CMD.size + length
            if end > size:
                break
            if self._verify:
                whole = bytes(buf[pos:pos + _CRC_AT]) + _ZERO_CRC + bytes(
                    buf[pos + _CMD.size:end])
                if crc32c(whole) != crc:
                    raise BadStream(f"Command {self.commands + 1} of the send stream has a "
                                    "bad checksum; the stream is damaged.")
            if cmd not in KNOWN_COMMANDS:
                raise BadStream(f"The send stream has command {cmd}, which this btrfsd "
                                "does not know (a newer kernel?).")
            attrs: Attrs = {}
            apos = pos + _CMD.size
            while apos < end:
                if end - apos < _ATTR.size:
                    raise BadStream("An attribute of the send stream is cut off.")
                typ, alen = unpack_attr(buf, apos)
                apos += _ATTR.size
                if apos + alen > end:
                    raise BadStream("An attribute of the send stream runs past its command.")
                attrs[typ] = bytes(buf[apos:apos + alen])
                apos += alen
            pos = end
            self.commands += 1
            if cmd == END:
                self.ended = True
                if pos != size:
                    raise BadStream("The send stream goes on after its end command.")
                break
            self._handler(cmd, attrs)
        del buf[:pos]

    def finish(self) -> None:
        """The stream is over. Raises BadStream when it stopped before its end command."""
        if not self.ended:
            raise BadStream("The send stream stopped before its end (truncated).")
