"""fs/treesearch.py block_digest: equal bytes, equal digests however the search split
them; other bytes, another digest; keyed (this process's hash secret), and blake2b when
the key is not random (PYTHONHASHSEED set)."""

from __future__ import annotations

import hashlib
import itertools
import os
import subprocess
import sys

import pytest

from btrfsd.fs import treesearch
from btrfsd.fs.treesearch import block_digest


def views(data: bytes, *cuts: int) -> list[memoryview]:
    bounds = [0, *cuts, len(data)]
    buf = bytearray(data)  # as the search calls leave them: views of bytearrays
    return [memoryview(buf)[a:b] for a, b in itertools.pairwise(bounds)]


def test_equal_bytes_equal_digest_other_bytes_another() -> None:
    data = os.urandom(70_000)
    assert block_digest(views(data)) == block_digest(views(data, 30_000, 50_000))
    changed = data[:1234] + bytes([data[1234] ^ 1]) + data[1235:]
    assert block_digest(views(changed)) != block_digest(views(data))
    assert block_digest(views(data[:-1])) != block_digest(views(data))


def test_the_digest_is_keyed_per_process() -> None:
    """Another process (another random key) digests the same bytes differently: a user
    who can name subvolumes cannot work out colliding bytes."""
    code = ("from btrfsd.fs.treesearch import block_digest; "
            "print(block_digest([memoryview(bytearray(b'same bytes' * 100))]).hex())")
    run = [sys.executable, "-c", code]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
    got = {subprocess.run(run, env=env, capture_output=True, text=True, check=True)
           .stdout.strip() for _ in range(3)}
    assert len(got) == 3


def test_without_a_random_key_blake2b(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(treesearch, "_KEYED_HASH", False)
    data = os.urandom(5000)
    assert block_digest(views(data, 100)) == hashlib.blake2b(data, digest_size=16).digest()
    # a fixed PYTHONHASHSEED (also a nonzero one, which keeps randomization "on"): the
    # key follows from it, so the digest is blake2b's
    code = "from btrfsd.fs import treesearch; print(treesearch._KEYED_HASH)"
    for seed, keyed in (("1234", "False"), ("0", "False"), ("random", "True")):
        got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**os.environ, "PYTHONHASHSEED": seed}, check=True)
        assert got.stdout.strip() == keyed, seed
