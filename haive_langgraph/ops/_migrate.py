"""Apply (or print) the migrations of every feature at once."""

from __future__ import annotations

from haive_langgraph.db import (
    Component,
    ConnectionSource,
    PersistenceConfig,
    migrate_op,
    resolve_dsn,
)


def all_components() -> list[Component]:
    """Every feature's migrations, in dependency order."""
    from haive_langgraph.checkpointers._sql import COMPONENT as checkpoints
    from haive_langgraph.memory._history_sql import COMPONENT as conversations
    from haive_langgraph.ops.audit._sql import COMPONENT as audit
    from haive_langgraph.ops.keys import COMPONENT as keys
    from haive_langgraph.stores._sql import COMPONENT as store

    return [checkpoints, store, keys, conversations, audit]


def migrate_all(
    dsn: str | None = None,
    *,
    schema: str | None = None,
    config: PersistenceConfig | None = None,
    partitions: int | None = None,
) -> dict[str, list[int]]:
    """Apply every feature's pending migrations; returns the versions applied now.

    ``partitions`` hash-partitions the tables with the most rows (a fresh
    schema only; see ``docs/scaling.md``).
    """
    config = config or PersistenceConfig()
    target = schema or config.schema_name
    source = ConnectionSource(resolve_dsn(dsn, config=config), config=config)
    try:
        return source.run(
            lambda: migrate_op(all_components(), target, partitions=partitions), transaction=True
        )
    finally:
        source.close()
