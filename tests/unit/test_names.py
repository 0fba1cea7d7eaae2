"""Names and paths on the bus: always valid UTF-8, and exact both ways."""

from __future__ import annotations

import os
import random

import pytest

from btrfsd.names import display, from_bus, to_bus


@pytest.mark.parametrize("raw,bus", [
    (b"/srv/data", "/srv/data"),
    (b"/bad\xffname", "/bad\\xffname"),
    (b"/back\\slash", "/back\\\\slash"),
    (b"/looks\\xffescaped", "/looks\\\\xffescaped"),
    (b"/caf\xc3\xa9", "/caf\u00e9"),
])
def test_to_bus_and_back(raw: bytes, bus: str) -> None:
    assert to_bus(os.fsdecode(raw)) == bus
    assert os.fsencode(from_bus(bus)) == raw


def test_every_byte_string_goes_there_and_back() -> None:
    rng = random.Random(19)
    alphabet = [b"\\", b"x", b"f", b"F", b"0", b"/", b"a", b"\xff", b"\xc3", b"\xa9", b"\x80"]
    for _ in range(5000):
        raw = b"".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))
        bus = to_bus(os.fsdecode(raw))
        bus.encode("utf-8")  # valid UTF-8: marshals
        assert os.fsencode(from_bus(bus)) == raw, (raw, bus)


def test_a_stray_backslash_from_a_caller_stands_for_itself() -> None:
    assert from_bus("/a\\q") == "/a\\q" and from_bus("/a\\x4") == "/a\\x4"


def test_display_keeps_text_readable() -> None:
    assert display(os.fsdecode(b"cannot open /x\xff: no")) == "cannot open /x\\xff: no"
    assert display("a\\b caf\u00e9") == "a\\b caf\u00e9"
    display(os.fsdecode(b"\xfe\xff")).encode("utf-8")
