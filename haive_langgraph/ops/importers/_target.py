"""Statements an importer runs on the target, through a saver's or store's own connections.

They run on the instance's :class:`~haive_langgraph.db.ConnectionSource` with
its tenant scope, so row-level security, poolers and retries apply as they do
to the instance's own statements.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import conninfo, sql

from haive_langgraph.db._config import PersistenceConfig
from haive_langgraph.db._connections import ConnectionSource
from haive_langgraph.db._driver import Query, Step
from haive_langgraph.db._dsn import resolve_dsn, uses_transaction_pooler
from haive_langgraph.db._tenancy import TenantScope
from haive_langgraph.ops.importers import _sql as Q

# The import's own connections commit without waiting for the WAL flush: a
# checkpoint costs two commits, and waiting for each flush halved the import
# rate (96 -> 170 checkpoints/s on the benchmark's small run). A server crash
# can lose the import's last fraction of a second; the next run (idempotent)
# redoes it, and the verification would show it. Other sessions are unaffected.
ASYNC_COMMIT = "-c synchronous_commit=off"


def import_dsn(target: str | None, argument: str = "target") -> str:
    """The target's DSN for the import's connections (asynchronous commits where the
    server takes startup options: not behind a transaction pooler)."""
    config = PersistenceConfig()
    dsn = resolve_dsn(target, config=config, argument=argument)
    if uses_transaction_pooler(dsn, config.pooler_mode):
        return dsn
    options = conninfo.conninfo_to_dict(dsn).get("options")
    joined = f"{options} {ASYNC_COMMIT}" if options else ASYNC_COMMIT
    return conninfo.make_conninfo(dsn, options=joined)


def rows(
    source: ConnectionSource,
    query: Query,
    params: Sequence[Any],
    *,
    scope: TenantScope | None = None,
) -> list[tuple[Any, ...]]:
    """The rows of one read."""

    def op() -> Any:
        found = yield Step(query, params, "all")
        return found

    result: list[tuple[Any, ...]] = source.run(op, read=True, scope=scope)
    return result


def execute(
    source: ConnectionSource,
    steps: Sequence[tuple[Query, Sequence[Any]]],
    *,
    scope: TenantScope | None = None,
) -> None:
    """Run statements in one transaction."""

    def op() -> Any:
        for query, params in steps:
            yield Step(query, params, "none")

    source.run(op, transaction=True, scope=scope)


def table_exists(source: ConnectionSource, schema: str, table: str) -> bool:
    """Whether the target holds a table yet (a dry run creates nothing)."""
    name = sql.Identifier(schema, table).as_string(None)
    found = rows(source, Q.TABLE_EXISTS, (name,))
    return bool(found and found[0][0])
