"""Background retention: apply a policy every so often (on :mod:`haive_langgraph.db._periodic`,
as the stores' TTL sweepers)."""

from __future__ import annotations

import asyncio
import logging
from typing import Generic, TypeVar

from haive_langgraph.checkpointers._retention import RetentionPolicy, RetentionReport
from haive_langgraph.checkpointers.aio import AsyncPostgresCheckpointer
from haive_langgraph.checkpointers.postgres import PostgresCheckpointer
from haive_langgraph.db._periodic import PeriodicThread, periodic_task

logger = logging.getLogger("haive_langgraph.retention")

S = TypeVar("S")


def _logged(report: RetentionReport) -> None:
    logger.info("retention: %s", report.as_dict())


class _Sweeper(Generic[S]):
    """What both sweepers hold: the saver, its policy, the interval, the last report."""

    def __init__(self, saver: S, policy: RetentionPolicy, *, interval: float = 3600.0) -> None:
        self.saver = saver
        self.policy = policy
        self.interval = interval
        self.last_report: RetentionReport | None = None


class RetentionSweeper(_Sweeper[PostgresCheckpointer]):
    """Runs ``saver.apply_retention(policy)`` every ``interval`` seconds in a daemon thread.

    Example:
        >>> sweeper = RetentionSweeper(saver, RetentionPolicy(retention_days=30), interval=3600)
        >>> sweeper.start()
        >>> ...
        >>> sweeper.stop()
    """

    _rounds: PeriodicThread | None = None

    def run_once(self) -> RetentionReport:
        """Apply the policy now."""
        self.last_report = self.saver.apply_retention(self.policy)
        return self.last_report

    def _round(self) -> None:
        try:
            _logged(self.run_once())
        except Exception:  # keep sweeping; the next run may succeed
            logger.exception("retention sweep failed")

    def start(self) -> None:
        """Apply the policy now and then every ``interval`` seconds (no-op if running)."""
        if self._rounds is not None and self._rounds.is_alive():
            return
        self._rounds = PeriodicThread(
            self._round, self.interval, name="haive-retention", first_now=True
        )

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop after the current round (waiting at most ``timeout`` seconds for it)."""
        if self._rounds is not None:
            self._rounds.stop(timeout)
            self._rounds = None


class AsyncRetentionSweeper(_Sweeper[AsyncPostgresCheckpointer]):
    """Runs ``saver.aapply_retention(policy)`` every ``interval`` seconds in an asyncio task."""

    _task: asyncio.Task[None] | None = None

    async def run_once(self) -> RetentionReport:
        """Apply the policy now."""
        self.last_report = await self.saver.aapply_retention(self.policy)
        return self.last_report

    async def _round(self) -> None:
        try:
            _logged(await self.run_once())
        except Exception:  # keep sweeping; the next run may succeed
            logger.exception("retention sweep failed")

    def start(self) -> None:
        """Apply the policy now and then every ``interval`` seconds (no-op if running)."""
        if self._task is None or self._task.done():
            self._task = periodic_task(
                self._round, self.interval, name="haive-retention", first_now=True
            )

    async def stop(self) -> None:
        """Cancel the task (and wait for it to end)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
