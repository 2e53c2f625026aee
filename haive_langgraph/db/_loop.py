"""Sync calls on an async object: its coroutine run on the object's event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def call_on_loop(
    coro: Coroutine[Any, Any, T], loop: asyncio.AbstractEventLoop | None, refusal: str
) -> T:
    """Run ``coro`` on ``loop`` and wait for its result, from a thread other than the loop's.

    What the sync methods of an async object do. On the loop's own thread the
    wait would block the loop forever, and without a running loop nothing would
    run the coroutine: then ``coro`` is closed unrun and
    ``asyncio.InvalidStateError(refusal)`` is raised.
    """
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if loop is None or running is loop or not loop.is_running():
        coro.close()
        raise asyncio.InvalidStateError(refusal)
    return asyncio.run_coroutine_threadsafe(coro, loop).result()
