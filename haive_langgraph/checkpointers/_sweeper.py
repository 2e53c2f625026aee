"""Background retention: apply a policy every so often (on :mod:`haive_langgraph.db._periodic`,
as the stores' TTL sweepers)."""

from __future__ import annotations

import logging
from typing import Generic, TypeVar

from haive_langgraph.checkpointers._retention import RetentionPolicy, RetentionReport
from haive_langgraph.checkpointers.aio import AsyncPostgresCheckpointer
from haive_langgraph.checkpointers.postgres import PostgresCheckpointer
from haive_langgraph.db._periodic import AsyncSweeper, Sweeper

logger = logging.getLogger("haive_langgraph.retention")

S = TypeVar("S")


class _Sweeper(Generic[S]):
    """What both sweepers hold: the saver, its policy, the interval, the last report."""

    _name = "haive-retention"
    _logger = logger
    _failed = "retention sweep failed"

    def __init__(self, saver: S, policy: RetentionPolicy, *, interval: float = 3600.0) -> None:
        self.saver = saver
        self.policy = policy
        self.interval = interval
        self.last_report: RetentionReport | None = None

    def _logged(self, report: RetentionReport) -> None:
        logger.info("retention: %s", report.as_dict())


class RetentionSweeper(_Sweeper[PostgresCheckpointer], Sweeper[RetentionReport]):
    """Runs ``saver.apply_retention(policy)`` every ``interval`` seconds in a daemon thread.

    Example:
        >>> sweeper = RetentionSweeper(saver, RetentionPolicy(retention_days=30), interval=3600)
        >>> sweeper.start()
        >>> ...
        >>> sweeper.stop()
    """

    def run_once(self) -> RetentionReport:
        """Apply the policy now."""
        self.last_report = self.saver.apply_retention(self.policy)
        return self.last_report


class AsyncRetentionSweeper(_Sweeper[AsyncPostgresCheckpointer], AsyncSweeper[RetentionReport]):
    """Runs ``saver.aapply_retention(policy)`` every ``interval`` seconds in an asyncio task."""

    async def run_once(self) -> RetentionReport:
        """Apply the policy now."""
        self.last_report = await self.saver.aapply_retention(self.policy)
        return self.last_report
