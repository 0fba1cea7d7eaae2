"""core/subvolumes.py: kept listings are forgotten once no big listing was made or
answered again for KEEP_BIG_LISTING_FOR seconds, whoever listed (a caller through
list_versioned, a quota pass through listed() in its own thread), and kept while they
keep coming (issue 11: memory a daemon that idles gives back)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from btrfsd.core import subvolumes as module
from btrfsd.core.filesystems import Registry
from btrfsd.core.subvolumes import Subvolumes

KEEP = 0.5


def test_kept_while_listed_then_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "KEEP_BIG_LISTING_FOR", KEEP)
    trims: list[int] = []
    monkeypatch.setattr(module.memory, "trim", lambda: trims.append(1))
    big = SimpleNamespace(items=list(range(module.TRIM_AFTER_ROWS)))
    # the scan finds the tree unchanged (the listing kept is answered again) or not
    monkeypatch.setattr(module.subvol, "list_all", lambda fd, earlier: earlier or big)
    monkeypatch.setattr(module, "_decoded_rows", lambda listing, earlier: 0)
    fs = SimpleNamespace(uuid="fs-1")

    async def go() -> None:
        subs = Subvolumes(Registry())  # made on the loop, as the daemon makes it
        assert subs._forget_big is None
        # a quota pass lists in a worker thread: the timer starts all the same
        await asyncio.to_thread(subs.listed, fs, -1)  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        assert subs._forget_big is not None and "fs-1" in subs._listings
        await asyncio.sleep(KEEP * 0.6)
        await asyncio.to_thread(subs.listed, fs, -1)  # type: ignore[arg-type]
        await asyncio.sleep(KEEP * 0.6)  # past the first listing's time, not the second's
        assert "fs-1" in subs._listings and not trims
        await asyncio.sleep(KEEP * 0.8)
        assert not subs._listings and trims == [1] and subs._forget_big is None

    asyncio.run(go())


def test_small_listings_start_no_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    small = SimpleNamespace(items=list(range(module.TRIM_AFTER_ROWS - 1)))
    monkeypatch.setattr(module.subvol, "list_all", lambda fd, earlier: small)
    monkeypatch.setattr(module, "_decoded_rows", lambda listing, earlier: 0)

    async def go() -> None:
        subs = Subvolumes(Registry())
        await asyncio.to_thread(subs.listed, SimpleNamespace(uuid="fs-1"), -1)  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        assert subs._forget_big is None and "fs-1" in subs._listings

    asyncio.run(go())
