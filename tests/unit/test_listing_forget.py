"""core/subvolumes.py: a kept listing of a big filesystem is forgotten once nobody asked
for one for KEEP_BIG_LISTING_FOR seconds, and kept while people keep asking (issue 11:
memory a daemon that idles gives back)."""

from __future__ import annotations

import asyncio

import pytest

from btrfsd.core import subvolumes as module
from btrfsd.core.filesystems import Registry
from btrfsd.core.subvolumes import Subvolumes


def test_kept_while_asked_for_then_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "KEEP_BIG_LISTING_FOR", 0.2)
    trims: list[int] = []
    monkeypatch.setattr(module.memory, "trim", lambda: trims.append(1))

    async def go() -> None:
        subs = Subvolumes(Registry())
        loop = asyncio.get_running_loop()
        subs._listings["fs"] = object()  # type: ignore[assignment]
        subs._selections["fs"] = {}
        subs._big_listed = loop.time()
        subs._forget_big = loop.call_later(0.2, subs._forget_idle)
        await asyncio.sleep(0.1)
        subs._big_listed = loop.time()  # asked for again: kept 0.2 s from now
        await asyncio.sleep(0.15)
        assert "fs" in subs._listings and not trims
        await asyncio.sleep(0.2)
        assert not subs._listings and not subs._selections and trims == [1]
        assert subs._forget_big is None

    asyncio.run(go())
