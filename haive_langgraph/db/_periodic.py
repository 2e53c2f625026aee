"""Work repeated at an interval in the background: in a daemon thread or an asyncio task.

The checkpointers' retention sweepers and the stores' TTL sweepers both run
on these. (The store's background indexer is another thing: writes wake it,
not a clock.) A round logs its own errors; one that escapes ends the rounds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable


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
