"""The send stream reader and the change list, on hand-built streams."""

from __future__ import annotations

import random
import struct

import pytest

from btrfsd.fs import sendstream as s
from btrfsd.fs.changes import ChangeTracker
from btrfsd.fs.sendstream import BadStream, StreamReader, crc32c


def command(cmd: int, *attrs: tuple[int, bytes], crc: int | None = None) -> bytes:
    body = b"".join(struct.pack("<HH", t, len(v)) + v for t, v in attrs)
    head = struct.pack("<IHI", len(body), cmd, 0)
    if crc is None:
        crc = crc32c(body, crc32c(head))
    return struct.pack("<IHI", len(body), cmd, crc) + body


def stream(*cmds: bytes, end: bool = True, version: int = 1) -> bytes:
    out = s.MAGIC + struct.pack("<I", version) + b"".join(cmds)
    return out + command(s.END) if end else out


def p(path: str, key: int = s.A_PATH) -> tuple[int, bytes]:
    return key, path.encode()


def read(data: bytes, step: int = 0) -> list[tuple[int, dict[int, bytes]]]:
    seen: list[tuple[int, dict[int, bytes]]] = []
    r = StreamReader(lambda c, a: seen.append((c, a)))
    if step:
        for i in range(0, len(data), step):
            r.feed(data[i:i + step])
    else:
        r.feed(data)
    r.finish()
    return seen


def test_crc_is_the_castagnoli_crc() -> None:
    # the standard check value of CRC-32C, which inverts before and after
    assert crc32c(b"123456789", 0xFFFFFFFF) ^ 0xFFFFFFFF == 0xE3069283


def test_commands_arrive_whole_whatever_the_pieces() -> None:
    data = stream(command(s.SNAPSHOT, p("snap")), command(s.MKFILE, p("o257-5-0")),
                  command(s.RENAME, p("o257-5-0"), p("a/f", s.A_PATH_TO)))
    expect = [(s.SNAPSHOT, {s.A_PATH: b"snap"}), (s.MKFILE, {s.A_PATH: b"o257-5-0"}),
              (s.RENAME, {s.A_PATH: b"o257-5-0", s.A_PATH_TO: b"a/f"})]
    assert read(data) == expect
    assert read(data, step=1) == expect
    assert read(data, step=7) == expect


@pytest.mark.parametrize("data, words", [
    (stream(command(s.CHMOD, p("f"), crc=1)), "bad checksum"),
    (stream(command(s.CHMOD, p("f")), end=False), "truncated"),
    (stream(command(s.CHMOD, p("f")))[:-3], "truncated"),
    (stream(command(99, p("f"))), "command 99"),
    (b"not-a-stream-at-all", "not a btrfs send stream"),
    (stream(version=2), "version 2"),
    (stream() + command(s.CHMOD, p("f")), "after its end"),
    (s.MAGIC + struct.pack("<I", 1) + struct.pack("<IHI", 1 << 30, s.CHMOD, 0),
     "damaged"),
])
def test_broken_streams_are_named_errors(data: bytes, words: str) -> None:
    with pytest.raises(BadStream, match=words) as e:
        read(data)
    assert e.value.name == "Failed"


def test_random_bytes_give_bad_stream_or_nothing() -> None:
    rng = random.Random(13)
    good = stream(command(s.MKDIR, p("o257-5-0")), command(s.RENAME, p("o257-5-0"),
                                                          p("d", s.A_PATH_TO)))
    for _ in range(300):
        data = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            rows = ChangeTracker()
            r = StreamReader(rows.apply, verify=rng.random() < 0.5)
            r.feed(bytes(data))
            r.finish()
            rows.changes()
        except BadStream:
            pass


def changes(*cmds: bytes) -> list[tuple[str, str, str, str]]:
    t = ChangeTracker()
    r = StreamReader(t.apply)
    r.feed(stream(command(s.SNAPSHOT, p("new")), *cmds))
    r.finish()
    return [(c.path, c.change, c.old_path, c.type) for c in t.changes()]


def test_orphan_names_resolve_to_final_paths() -> None:
    assert changes(
        command(s.MKDIR, p("o260-9-0")), command(s.RENAME, p("o260-9-0"), p("a/new", s.A_PATH_TO)),
        command(s.MKFILE, p("o261-9-0")),
        command(s.RENAME, p("o261-9-0"), p("a/new/f", s.A_PATH_TO)),
        command(s.UPDATE_EXTENT, p("a/new/f")), command(s.UTIMES, p("a")),
    ) == [("a", "metadata", "", ""), ("a/new", "added", "", "dir"),
          ("a/new/f", "added", "", "file")]


def test_renamed_directory_carries_its_contents() -> None:
    assert changes(
        command(s.RENAME, p("a/b"), p("c/b2", s.A_PATH_TO)),
        command(s.TRUNCATE, p("c/b2/f")), command(s.CHOWN, p("c/b2/g")),
    ) == [("c/b2", "renamed", "a/b", ""), ("c/b2/f", "modified", "a/b/f", ""),
          ("c/b2/g", "metadata", "a/b/g", "")]


def test_deleted_directory_parked_as_orphan() -> None:
    assert changes(
        command(s.RENAME, p("gone"), p("o300-4-0", s.A_PATH_TO)),
        command(s.UNLINK, p("o300-4-0/f")), command(s.RMDIR, p("o300-4-0")),
    ) == [("gone", "deleted", "", "dir"), ("gone/f", "deleted", "", "")]


def test_file_replaced_by_directory_and_hard_links() -> None:
    assert changes(
        command(s.MKDIR, p("o271-8-0")), command(s.UNLINK, p("x")),
        command(s.RENAME, p("o271-8-0"), p("x", s.A_PATH_TO)),
        command(s.LINK, p("a/glink"), p("c/g", s.A_PATH_LINK)), command(s.UNLINK, p("hl2")),
    ) == [("a/glink", "linked", "c/g", "file"), ("hl2", "deleted", "", ""),
          ("x", "deleted", "", ""), ("x", "added", "", "dir")]


@pytest.mark.parametrize("cmds, words", [
    ((command(s.MKDIR, p("d")), command(s.CHMOD, p("d/never"))), "never made"),
    ((command(s.RENAME, p("a"), p("b", s.A_PATH_TO)), command(s.CHMOD, p("a/x"))),
     "after moving it away"),
    ((command(s.CHMOD),), "lacks its path"),
    ((command(s.UNLINK, p("")),), "root"),
])
def test_inconsistent_streams_are_named_errors(cmds: tuple[bytes, ...], words: str) -> None:
    with pytest.raises(BadStream, match=words):
        changes(*cmds)


def test_file_moved_across_directories_as_link_and_unlink() -> None:
    assert changes(
        command(s.LINK, p("d/moved2"), p("e/moved", s.A_PATH_LINK)),
        command(s.UNLINK, p("e/moved")), command(s.UTIMES, p("d/moved2")),
    ) == [("d/moved2", "renamed", "e/moved", "file")]
