"""Background retention: apply a policy every so often."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING

from haive_langgraph.checkpointers._retention import RetentionPolicy, RetentionReport

if TYPE_CHECKING:
    from haive_langgraph.checkpointers.aio import AsyncPostgresCheckpointer
    from haive_langgraph.checkpointers.postgres import PostgresCheckpointer

logger = logging.getLogger("haive_langgraph.retention")


class RetentionSweeper:
    """Runs ``saver.apply_retention(policy)`` every ``interval`` seconds in a daemon thread.

    Example:
        >>> sweeper = RetentionSweeper(saver, RetentionPolicy(retention_days=30), interval=3600)
        >>> sweeper.start()
        >>> ...
        >>> sweeper.stop()
    """

    def __init__(
        self, saver: PostgresCheckpointer, policy: RetentionPolicy, *, interval: float = 3600.0
    ) -> None:
        self.saver = saver
        self.policy = policy
        self.interval = interval
        self.last_report: RetentionReport | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> RetentionReport:
        self.last_report = self.saver.apply_retention(self.policy)
        return self.last_report

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                report = self.run_once()
                logger.info("retention: %s", report.as_dict())
            except Exception:  # keep sweeping; the next run may succeed
                logger.exception("retention sweep failed")
            self._stop.wait(self.interval)

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="haive-retention", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None


class AsyncRetentionSweeper:
    """Runs ``saver.aapply_retention(policy)`` every ``interval`` seconds in an asyncio task."""

    def __init__(
        self, saver: AsyncPostgresCheckpointer, policy: RetentionPolicy, *, interval: float = 3600.0
    ) -> None:
        self.saver = saver
        self.policy = policy
        self.interval = interval
        self.last_report: RetentionReport | None = None
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> RetentionReport:
        self.last_report = await self.saver.aapply_retention(self.policy)
        return self.last_report

    async def _loop(self) -> None:
        while True:
            try:
                report = await self.run_once()
                logger.info("retention: %s", report.as_dict())
            except Exception:  # keep sweeping; the next run may succeed
                logger.exception("retention sweep failed")
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
