"""Run a long blocking kernel call in a thread of its own.

A scrub or balance ioctl blocks for minutes to hours. Running it in asyncio's default
executor would tie up one of its few workers per device, and short calls of other callers
(listing, info) would queue behind them. A dedicated daemon thread per long call keeps
the executor free; daemon=True so a stuck ioctl never holds up process exit.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def _resolve(fut: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if fut.done():  # the awaiting task was cancelled meanwhile
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)


async def in_own_thread(name: str, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` in a new thread and return its result; raises what it raises.

    Cancelling the awaiting task does not stop the call: stop the kernel operation
    itself (scrub cancel, balance pause) to end the thread.
    """
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def target() -> None:
        try:
            result = fn(*args)
        except BaseException as e:  # handed to the awaiting task, nothing is lost
            loop.call_soon_threadsafe(_resolve, fut, None, e)
        else:
            loop.call_soon_threadsafe(_resolve, fut, result, None)

    threading.Thread(target=target, name=name, daemon=True).start()
    return await fut


_background: set[asyncio.Task[Any]] = set()


def in_background(coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    """Start a fire-and-forget task and keep a reference until it ends: the event loop
    holds only weak references to tasks, so an unreferenced one can vanish mid-way."""
    task = asyncio.get_running_loop().create_task(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)
    return task
