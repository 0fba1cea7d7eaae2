"""btrfsctl's job watching: a Ctrl-C is never lost."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from btrfsd.cli.jobs import JobWatcher


async def test_a_cancel_that_meets_news_is_not_lost() -> None:
    # Ctrl-C (asyncio.run cancels the main task) in the same loop turn as a job's
    # PropertiesChanged: Python 3.11's wait_for returned the news and dropped the
    # cancellation, so `--wait` watched on to the job's end
    watcher = JobWatcher(cast(Any, None))
    waiting = asyncio.ensure_future(watcher.news(timeout=30))
    await asyncio.sleep(0)  # it waits for news now
    watcher.changed.set()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_news_or_the_timeout_end_the_wait() -> None:
    watcher = JobWatcher(cast(Any, None))
    await watcher.news(timeout=0.01)  # nothing came: returns after the timeout
    waiting = asyncio.ensure_future(watcher.news(timeout=30))
    await asyncio.sleep(0)
    watcher.changed.set()
    await asyncio.wait_for(waiting, 5)
