"""Online migrations of every feature: up to a target version, in batches, with progress.

:func:`migrate` is what ``haive-lg migrate`` runs: each pending migration
applied on its own (data rewrites in committed batches, indexes built
concurrently; see :mod:`haive_langgraph.db._online_migrations`), optionally
stopping components at a version. :func:`migration_plan` lists what it would
apply and what each statement locks (``haive-lg migrate --plan``).

Versions are per component: ``target_version={"checkpoints": 3}`` stops the
checkpoint tables at version 3 and brings every other component to its
latest version. A single ordinal across components would change meaning
whenever a component earlier in the list gains a migration; a component's
version never does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from haive_langgraph.db import _migrations_sql as SQL
from haive_langgraph.db._config import PersistenceConfig
from haive_langgraph.db._connections import connect_error, connection_kwargs
from haive_langgraph.db._driver import Op, Step, arun, run
from haive_langgraph.db._dsn import resolve_dsn, uses_transaction_pooler
from haive_langgraph.db._identifiers import validate_identifier
from haive_langgraph.db._lock_plan import StatementLock, describe_statement
from haive_langgraph.db._migrations import Component, MigrationKind, pending_op
from haive_langgraph.db._online_migrations import (
    DEFAULT_BATCH_SIZE,
    MigrationProgress,
    ProgressCallback,
    check_target,
    online_migrate_op,
    select_steps,
)
from haive_langgraph.errors import MigrationError
from haive_langgraph.ops._migrate import all_components

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "MigrationProgress",
    "PlannedStep",
    "amigrate",
    "amigration_plan",
    "migrate",
    "migration_plan",
]


@dataclass(frozen=True, slots=True)
class PlannedStep:
    """One pending migration and what its statements lock.

    Attributes:
        component: The component.
        version: The version it brings the component to.
        description: What it does.
        kind: ``"transaction"``, ``"backfill"`` or ``"concurrent"``.
        locks: Per statement, the table, lock mode, what waits and how long.
    """

    component: str
    version: int
    description: str
    kind: MigrationKind
    locks: tuple[StatementLock, ...]

    def as_dict(self) -> dict[str, Any]:
        """The step as JSON-ready data (``haive-lg migrate --plan --json``)."""
        return {
            "component": self.component,
            "version": self.version,
            "description": self.description,
            "kind": self.kind,
            "statements": [
                {
                    "action": lock.action,
                    "table": lock.table,
                    "lock": lock.lock,
                    "blocks": lock.blocks,
                    "duration": lock.duration,
                }
                for lock in self.locks
            ],
        }


def plan_op(
    schema: str,
    target: Mapping[str, int] | None,
    components: Sequence[Component] | None = None,
) -> Op[list[PlannedStep]]:
    """The pending steps up to ``target`` and their locks (every component by default)."""
    pending = yield from pending_op(all_components() if components is None else components, schema)
    rows = yield Step(SQL.PARTITIONED, (schema,))
    partitioned = {str(name) for (name,) in rows}
    steps = []
    for component, version, migration in select_steps(pending, target):
        locks = [describe_statement(s, migration.kind) for s in migration.statements]
        if migration.kind == "concurrent" and locks[0].table in partitioned:
            # No CONCURRENTLY on a partitioned table: the runner builds it in one statement.
            query, _ = migration.in_transaction(migration.statements[0])
            locks = [describe_statement(query)]
        steps.append(
            PlannedStep(
                component.name, version, migration.description, migration.kind, tuple(locks)
            )
        )
    return steps


def _connect_args(
    dsn: str | None,
    schema: str | None,
    config: PersistenceConfig | None,
    target_version: Mapping[str, int] | None,
) -> tuple[str, str, dict[str, Any]]:
    """The DSN, schema and connection arguments (checked before connecting)."""
    check_target(all_components(), target_version)
    config = config or PersistenceConfig()
    target = validate_identifier(schema or config.schema_name, what="schema name")
    resolved = resolve_dsn(dsn, config=config)
    if uses_transaction_pooler(resolved, config.pooler_mode):
        raise MigrationError(
            "online migrations hold a session lock across transactions: connect to the "
            "server directly, not through a transaction-mode pooler"
        )
    return resolved, target, connection_kwargs(resolved, config)


def _connect(resolved: str, kwargs: dict[str, Any]) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(resolved, **kwargs)
    except psycopg.OperationalError as exc:
        raise connect_error(resolved, exc) from None


async def _aconnect(resolved: str, kwargs: dict[str, Any]) -> psycopg.AsyncConnection[Any]:
    try:
        return await psycopg.AsyncConnection.connect(resolved, **kwargs)
    except psycopg.OperationalError as exc:
        raise connect_error(resolved, exc) from None


def migrate(
    dsn: str | None = None,
    *,
    schema: str | None = None,
    config: PersistenceConfig | None = None,
    target_version: Mapping[str, int] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_progress: ProgressCallback | None = None,
    partitions: int | None = None,
) -> dict[str, list[int]]:
    """Apply every feature's pending migrations online, one at a time.

    Unlike :func:`~haive_langgraph.ops.migrate_all` (one transaction), each
    migration commits on its own: a backfill in batches of ``batch_size``
    rows, each its own transaction, an index with ``CREATE INDEX
    CONCURRENTLY``, so writers keep working. After a failure or a crash,
    what was applied stays applied and a new run continues from there (a
    backfill from its last committed batch).

    Args:
        dsn: The server (default: ``HAIVE_DATABASE_URL``, ``DATABASE_URL``,
            the embedded server). A direct connection, not a transaction pooler.
        schema: Target schema (default from the config: ``haive``).
        config: Connection settings (its ``lock_timeout`` applies to each
            statement: a good guard for the brief ``ACCESS EXCLUSIVE`` steps).
        target_version: ``{component: version}`` to stop at; other components
            go to their latest version. Never below an applied version.
        batch_size: Rows per backfill batch.
        on_progress: Called with a :class:`MigrationProgress` after each
            backfill batch and each applied migration.
        partitions: Hash-partition new tables (a fresh schema; see ``migrate_all``).

    Returns:
        The versions applied now, per component.

    Raises:
        MigrationError: A changed or newer migration, or a bad target.
        ConnectionFailedError: The server cannot be reached.

    Example:
        >>> migrate(target_version={"checkpoints": 3}, on_progress=print)  # doctest: +SKIP
    """
    resolved, target, kwargs = _connect_args(dsn, schema, config, target_version)
    conn = _connect(resolved, kwargs)
    # Closing the connection, even after an error, releases the session lock.
    with conn:
        return run(
            conn,
            online_migrate_op(
                all_components(),
                target,
                target=target_version,
                batch_size=batch_size,
                on_progress=on_progress,
                partitions=partitions,
            ),
        )


async def amigrate(
    dsn: str | None = None,
    *,
    schema: str | None = None,
    config: PersistenceConfig | None = None,
    target_version: Mapping[str, int] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_progress: ProgressCallback | None = None,
    partitions: int | None = None,
) -> dict[str, list[int]]:
    """Async twin of :func:`migrate` (same operation, run on an ``AsyncConnection``)."""
    resolved, target, kwargs = _connect_args(dsn, schema, config, target_version)
    conn = await _aconnect(resolved, kwargs)
    async with conn:
        return await arun(
            conn,
            online_migrate_op(
                all_components(),
                target,
                target=target_version,
                batch_size=batch_size,
                on_progress=on_progress,
                partitions=partitions,
            ),
        )


def migration_plan(
    dsn: str | None = None,
    *,
    schema: str | None = None,
    config: PersistenceConfig | None = None,
    target_version: Mapping[str, int] | None = None,
) -> list[PlannedStep]:
    """What :func:`migrate` would apply, in order, and what each statement locks.

    Reads only. Lock modes come from the statements' shapes (see
    :mod:`haive_langgraph.db._lock_plan`).

    Raises:
        MigrationError: As :func:`migrate` (a changed migration, a bad target).
    """
    resolved, target, kwargs = _connect_args(dsn, schema, config, target_version)
    conn = _connect(resolved, kwargs)
    with conn:
        return run(conn, plan_op(target, target_version))


async def amigration_plan(
    dsn: str | None = None,
    *,
    schema: str | None = None,
    config: PersistenceConfig | None = None,
    target_version: Mapping[str, int] | None = None,
) -> list[PlannedStep]:
    """Async twin of :func:`migration_plan`."""
    resolved, target, kwargs = _connect_args(dsn, schema, config, target_version)
    conn = await _aconnect(resolved, kwargs)
    async with conn:
        return await arun(conn, plan_op(target, target_version))
