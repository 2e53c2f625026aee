"""Query analysis over ``pg_stat_statements``: a time window, by feature, with index advice.

``pg_stat_statements`` only counts since its last reset, so a window needs
readings: :func:`snapshot_queries` records one (``haive-lg analyze
snapshot``; run it on a schedule, e.g. hourly), and :func:`analyze_queries`
(``haive-lg analyze --since 7d --min-ms 100``) subtracts the snapshot at the
window's start from the live counters. Our statements (those naming a table
of the schema) are grouped by the feature owning the tables they touch, with
their mean and estimated p95 time; the plans of the slow ones (generic plans,
``EXPLAIN (GENERIC_PLAN)``: the plan a prepared statement runs, which is how
our statements run) give index recommendations, each checked with a
hypothetical index when the server has ``hypopg``. See ``docs/operations.md``.
"""

from __future__ import annotations

import datetime as dt

from haive_langgraph.db._async_connections import AsyncConnectionSource
from haive_langgraph.db._config import PersistenceConfig
from haive_langgraph.db._connections import ConnectionSource
from haive_langgraph.db._dsn import resolve_dsn
from haive_langgraph.db._identifiers import validate_identifier
from haive_langgraph.ops.queries._ops import (
    IndexAdvice,
    QueryAnalysis,
    QuerySnapshot,
    analyze_op,
    snapshot_op,
)
from haive_langgraph.ops.queries._stats import FeatureStats, StatementStats

__all__ = [
    "FeatureStats",
    "IndexAdvice",
    "QueryAnalysis",
    "QuerySnapshot",
    "StatementStats",
    "aanalyze_queries",
    "analyze_queries",
    "asnapshot_queries",
    "snapshot_queries",
]

KEEP = dt.timedelta(days=90)
SINCE = dt.timedelta(days=7)


def _target(
    dsn: str | None, schema: str | None, config: PersistenceConfig | None
) -> tuple[str, str, PersistenceConfig]:
    config = config or PersistenceConfig()
    target = validate_identifier(schema or config.schema_name, what="schema name")
    return resolve_dsn(dsn, config=config), target, config


def snapshot_queries(
    dsn: str | None = None,
    *,
    schema: str | None = None,
    config: PersistenceConfig | None = None,
    keep: dt.timedelta = KEEP,
) -> QuerySnapshot:
    """Record the counters of our statements in ``pg_stat_statements`` now.

    Sets up the ``query_stats`` tables if they are missing, and deletes the
    snapshots older than ``keep``.

    Args:
        dsn: The server (default: ``HAIVE_DATABASE_URL``, ``DATABASE_URL``,
            the embedded server).
        schema: Our schema (default from the config: ``haive``).
        config: Connection settings.
        keep: How long snapshots are kept (at least the longest window you analyse).

    Raises:
        QueryStatsUnavailableError: ``pg_stat_statements`` is not loaded or
            not created (the message says how to enable it).
    """
    resolved, target, config = _target(dsn, schema, config)
    source = ConnectionSource(resolved, config=config)
    try:
        return source.run(lambda: snapshot_op(target, keep), transaction=True)
    finally:
        source.close()


async def asnapshot_queries(
    dsn: str | None = None,
    *,
    schema: str | None = None,
    config: PersistenceConfig | None = None,
    keep: dt.timedelta = KEEP,
) -> QuerySnapshot:
    """Async twin of :func:`snapshot_queries`."""
    resolved, target, config = _target(dsn, schema, config)
    source = AsyncConnectionSource(resolved, config=config)
    try:
        return await source.run(lambda: snapshot_op(target, keep), transaction=True)
    finally:
        await source.close()


def analyze_queries(
    dsn: str | None = None,
    *,
    schema: str | None = None,
    config: PersistenceConfig | None = None,
    since: dt.timedelta = SINCE,
    min_ms: float = 100.0,
    explain: bool = True,
    large_rows: int = 10_000,
) -> QueryAnalysis:
    """Our statements over the last ``since``: by feature, the slow ones, indexes to create.

    Reads only (in a read-only transaction, rolled back; hypothetical
    indexes live in the session and are reset).

    Args:
        dsn: The server.
        schema: Our schema.
        config: Connection settings.
        since: The window, ending now; it starts at the newest snapshot
            taken at or before its start (else the oldest one).
        min_ms: The mean time from which a statement is listed as slow and
            its plan read.
        explain: Read the slow statements' plans for index advice.
        large_rows: The estimated rows from which a scanned table counts as large.

    Raises:
        QueryStatsUnavailableError: ``pg_stat_statements`` is not loaded or not created.
        MigrationError: The snapshots table is missing (take a snapshot first).
    """
    resolved, target, config = _target(dsn, schema, config)
    source = ConnectionSource(resolved, config=config)
    try:
        return source.run(
            lambda: analyze_op(target, since, min_ms, explain=explain, large_rows=large_rows),
            rollback=True,
        )
    finally:
        source.close()


async def aanalyze_queries(
    dsn: str | None = None,
    *,
    schema: str | None = None,
    config: PersistenceConfig | None = None,
    since: dt.timedelta = SINCE,
    min_ms: float = 100.0,
    explain: bool = True,
    large_rows: int = 10_000,
) -> QueryAnalysis:
    """Async twin of :func:`analyze_queries`."""
    resolved, target, config = _target(dsn, schema, config)
    source = AsyncConnectionSource(resolved, config=config)
    try:
        return await source.run(
            lambda: analyze_op(target, since, min_ms, explain=explain, large_rows=large_rows),
            rollback=True,
        )
    finally:
        await source.close()
