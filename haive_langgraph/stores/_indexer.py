"""The background indexer of ``write_mode="background"``: when it runs, not what it does.

Puts in that mode skip the ANN index; their vectors are *pending* (searched
exactly) until the indexer adds them (:func:`~haive_langgraph.stores._index_ops.backlog`
decides how, the store runs it). A write wakes the indexer, naming its
tenant; the indexer works through every tenant that wrote, then sleeps. It
is started by the first write, stops by itself after :data:`IDLE_SECONDS`
without one (so that a store nobody closes leaves nothing running) and when
the store is closed, or its pool is closed under it. Any other failure (the
server away) is logged and retried after a pause that doubles up to
:data:`MAX_BACKOFF`; the sweeper and ``index_pending()`` index the same
vectors too.

:class:`ThreadIndexer` serves the sync store (a daemon thread),
:class:`TaskIndexer` the async one (a task on its event loop).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable

from psycopg_pool import PoolClosed

logger = logging.getLogger("haive_langgraph.stores")

IDLE_SECONDS = 60.0
MAX_BACKOFF = 60.0

# The indexer starts once writes have been quiet for QUIET_SECONDS, or
# MAX_DELAY_SECONDS after the first write it has not indexed: a burst of
# writes (a bulk import) is indexed after it, in bulk when that is cheaper,
# instead of competing with it vector by vector, and a steady stream of
# writes still sees its vectors indexed within seconds.
QUIET_SECONDS = 0.5
MAX_DELAY_SECONDS = 5.0

Drain = Callable[[set[str], Callable[[], bool]], None]
AsyncDrain = Callable[[set[str], Callable[[], bool]], Awaitable[None]]


def _closed_under_it() -> None:
    logger.info(
        "the store's pool was closed while its vectors were pending: background indexing "
        "stops (close the store before its pool; index_pending() indexes what is left)"
    )


def _backoff(previous: float) -> float:
    return min(MAX_BACKOFF, max(1.0, previous * 2))


class _Writes:
    """When the writes the indexer has not indexed yet came: first and last."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.last = 0.0

    def seen(self) -> None:
        self.last = time.monotonic()
        if self.first is None:
            self.first = self.last

    def wait_left(self) -> float:
        """Seconds until the indexer should start (0: now)."""
        if self.first is None:
            return 0.0
        due = min(self.last + QUIET_SECONDS, self.first + MAX_DELAY_SECONDS)
        return max(0.0, due - time.monotonic())


class ThreadIndexer:
    """Runs ``drain(tenants, stopping)`` in a daemon thread whenever a write wakes it."""

    def __init__(self, drain: Drain) -> None:
        self._drain = drain
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._halt = threading.Event()
        self._dirty: set[str] = set()
        self._writes = _Writes()
        self._thread: threading.Thread | None = None

    def wake(self, tenant: str) -> None:
        """Index ``tenant``'s pending vectors soon (starting the thread if needed)."""
        with self._lock:
            if self._halt.is_set():
                return
            self._dirty.add(tenant)
            self._writes.seen()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="haive-store-indexer", daemon=True
                )
                self._thread.start()
            self._wake.set()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop after the current step; ``True`` when the thread has ended."""
        with self._lock:
            self._halt.set()
            self._wake.set()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def _loop(self) -> None:
        delay = 0.0
        while True:
            woken = self._wake.wait(IDLE_SECONDS)
            with self._lock:
                if self._halt.is_set() or (not woken and not self._dirty):
                    self._thread = None
                    return
                self._wake.clear()
            while True:
                with self._lock:
                    left = self._writes.wait_left()
                if not left or self._halt.wait(left):
                    break
            with self._lock:
                tenants, self._dirty = self._dirty, set()
                self._writes = _Writes()
            if self._halt.is_set():
                return
            try:
                self._drain(tenants, self._halt.is_set)
                delay = 0.0
            except PoolClosed:
                _closed_under_it()
                with self._lock:
                    self._halt.set()
                    self._thread = None
                return
            except Exception:
                delay = _backoff(delay)
                logger.exception("background indexing failed; retrying in %.0f s", delay)
                with self._lock:
                    self._dirty |= tenants
                    self._wake.set()
                self._halt.wait(delay)


class TaskIndexer:
    """Async twin of :class:`ThreadIndexer`: a task on the running event loop."""

    def __init__(self, drain: AsyncDrain) -> None:
        self._drain = drain
        self._wake = asyncio.Event()
        self._halt = asyncio.Event()
        self._halted = False
        self._dirty: set[str] = set()
        self._writes = _Writes()
        self._task: asyncio.Task[None] | None = None

    def wake(self, tenant: str) -> None:
        """Index ``tenant``'s pending vectors soon (starting the task if needed)."""
        if self._halted:
            return
        self._dirty.add(tenant)
        self._writes.seen()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._loop(), name="haive-store-indexer"
            )
        self._wake.set()

    async def stop(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Stop after the current step (cancel it after ``timeout``); ``True`` when ended."""
        self._halted = True
        self._halt.set()
        self._wake.set()
        task = self._task
        if task is None or task is asyncio.current_task():
            return True
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            task.cancel()
        except asyncio.CancelledError:
            if not task.cancelled():
                raise
        return task.done()

    def _stopping(self) -> bool:
        return self._halted

    async def _loop(self) -> None:
        delay = 0.0
        try:
            while True:
                try:
                    await asyncio.wait_for(self._wake.wait(), IDLE_SECONDS)
                except TimeoutError:
                    if not self._dirty:
                        return
                if self._halted:
                    return
                self._wake.clear()
                while left := self._writes.wait_left():
                    try:
                        await asyncio.wait_for(self._halt.wait(), left)
                    except TimeoutError:
                        continue
                    return
                tenants, self._dirty = self._dirty, set()
                self._writes = _Writes()
                try:
                    await self._drain(tenants, self._stopping)
                    delay = 0.0
                except PoolClosed:
                    _closed_under_it()
                    self._halted = True
                    return
                except Exception:
                    delay = _backoff(delay)
                    logger.exception("background indexing failed; retrying in %.0f s", delay)
                    self._dirty |= tenants
                    self._wake.set()
                    try:
                        await asyncio.wait_for(self._halt.wait(), delay)
                    except TimeoutError:
                        pass
        finally:
            self._task = None


__all__ = ["IDLE_SECONDS", "TaskIndexer", "ThreadIndexer"]
