"""Work repeated at an interval in the background: in a daemon thread or an asyncio task.

The checkpointers' retention sweepers, the tenants' retention sweepers, the
server's thread-TTL sweeper (all on :class:`Sweeper` or :class:`AsyncSweeper`)
and the stores' TTL sweepers run on these. (The store's background indexer is
another thing: writes wake it, not a clock.) A round logs its own errors; one
that escapes ends the rounds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import ClassVar, Generic, TypeVar

R = TypeVar("R")


class PeriodicThread:
    """Calls ``work()`` every ``interval`` seconds in a daemon thread, until stopped.

    Args:
        work: One round.
        interval: Seconds from the end of a round to the start of the next.
        name: The thread's name.
        first_now: Run the first round at once (else after one interval).
    """

    def __init__(
        self, work: Callable[[], object], interval: float, *, name: str, first_now: bool
    ) -> None:
        self.work = work
        self.interval = interval
        self.first_now = first_now
        self.finished: concurrent.futures.Future[None] = concurrent.futures.Future()
        """Resolved when the rounds end; cancelling it stops them."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.finished.add_done_callback(lambda f: self.request_stop() if f.cancelled() else None)
        self._thread.start()

    def _loop(self) -> None:
        wait = 0.0 if self.first_now else self.interval
        while not self._stop.wait(wait):
            self.work()
            wait = self.interval
        if not self.finished.done():
            self.finished.set_result(None)

    def is_alive(self) -> bool:
        """Whether the thread still runs."""
        return self._thread.is_alive()

    def request_stop(self) -> None:
        """Stop after the current round, without waiting for it."""
        self._stop.set()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop after the current round; ``True`` once the thread has ended (waits at
        most ``timeout`` seconds)."""
        self.request_stop()
        self._thread.join(timeout)
        return not self._thread.is_alive()


def periodic_task(
    work: Callable[[], Awaitable[object]], interval: float, *, name: str, first_now: bool
) -> asyncio.Task[None]:
    """An asyncio task awaiting ``work()`` every ``interval`` seconds until it is cancelled.

    Args:
        work: One round.
        interval: Seconds from the end of a round to the start of the next.
        name: The task's name.
        first_now: Run the first round at once (else after one interval).
    """

    async def rounds() -> None:
        if not first_now:
            await asyncio.sleep(interval)
        while True:
            await work()
            await asyncio.sleep(interval)

    return asyncio.get_running_loop().create_task(rounds(), name=name)


class _Rounds(Generic[R]):
    """What both sweeper bases declare: the interval, the last report, and how a round
    is named and logged."""

    interval: float
    """Seconds from the end of a round to the start of the next."""
    last_report: R | None = None
    """The report of the last round that applied anything (``None`` before)."""
    _name: ClassVar[str]
    """The thread's or task's name."""
    _logger: ClassVar[logging.Logger]
    _failed: ClassVar[str]
    """What the log says when a round fails."""

    def _logged(self, report: R) -> None:
        """Log a round's report (default: nothing)."""


class Sweeper(_Rounds[R]):
    """A sweeper in a daemon thread: :meth:`run_once` now and then every ``interval``
    seconds; a round's report is logged, a round's error too (the next round still runs)."""

    _rounds: PeriodicThread | None = None

    def run_once(self) -> R:
        """One round, now."""
        raise NotImplementedError

    def _round(self) -> None:
        try:
            self._logged(self.run_once())
        except Exception:  # keep sweeping; the next round may succeed
            self._logger.exception(self._failed)

    def start(self) -> None:
        """Sweep now and then every ``interval`` seconds (no-op if running)."""
        if self._rounds is not None and self._rounds.is_alive():
            return
        self._rounds = PeriodicThread(self._round, self.interval, name=self._name, first_now=True)

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop after the current round (waiting at most ``timeout`` seconds for it)."""
        if self._rounds is not None:
            self._rounds.stop(timeout)
            self._rounds = None


class AsyncSweeper(_Rounds[R]):
    """A sweeper in an asyncio task: :meth:`run_once` now and then every ``interval``
    seconds; a round's report is logged, a round's error too (the next round still runs)."""

    _task: asyncio.Task[None] | None = None

    async def run_once(self) -> R:
        """One round, now."""
        raise NotImplementedError

    async def _round(self) -> None:
        try:
            self._logged(await self.run_once())
        except Exception:  # keep sweeping; the next round may succeed
            self._logger.exception(self._failed)

    def start(self) -> None:
        """Sweep now and then every ``interval`` seconds (no-op if running)."""
        if self._task is None or self._task.done():
            self._task = periodic_task(self._round, self.interval, name=self._name, first_now=True)

    async def stop(self) -> None:
        """Cancel the task (and wait for it to end)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
