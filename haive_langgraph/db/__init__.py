"""Connections, configuration, the embedded default server and migrations."""

from __future__ import annotations

from typing import Any

import psycopg

from haive_langgraph.db._async_connections import AsyncConnectionSource
from haive_langgraph.db._call import Call, ErrorMap
from haive_langgraph.db._config import PersistenceConfig, PoolerMode
from haive_langgraph.db._connections import (
    ConnectionSource,
    connect_error,
    connection_kwargs,
)
from haive_langgraph.db._driver import Op, Step, arun, run
from haive_langgraph.db._dsn import (
    describe_dsn,
    normalize_dsn,
    resolve_dsn,
    uses_transaction_pooler,
)
from haive_langgraph.db._embedded import default_data_dir, embedded_dsn, start_embedded
from haive_langgraph.db._identifiers import validate_identifier
from haive_langgraph.db._migrations import (
    Component,
    Migration,
    migrate_op,
    migration_script,
    status_op,
)
from haive_langgraph.db._partitions import PartitionKey
from haive_langgraph.db._replicas import ReplicaStats, Route
from haive_langgraph.db._tenancy import TenantScope

__all__ = [
    "AsyncConnectionSource",
    "Call",
    "Component",
    "ConnectionSource",
    "ErrorMap",
    "Migration",
    "Op",
    "PartitionKey",
    "PersistenceConfig",
    "PoolerMode",
    "ReplicaStats",
    "Route",
    "Step",
    "TenantScope",
    "arun",
    "connect",
    "connection_kwargs",
    "default_data_dir",
    "describe_dsn",
    "embedded_dsn",
    "migrate_op",
    "migration_script",
    "normalize_dsn",
    "resolve_dsn",
    "run",
    "start_embedded",
    "status_op",
    "uses_transaction_pooler",
    "validate_identifier",
]


def connect(
    dsn: str | None = None, *, config: PersistenceConfig | None = None
) -> psycopg.Connection[Any]:
    """Open one autocommit connection to the resolved server.

    ``dsn`` wins over ``HAIVE_DATABASE_URL`` and ``DATABASE_URL``; with none of
    them the embedded PostgreSQL is started (once per process) and used.
    SQLAlchemy URLs (``postgresql+psycopg://`` ...) are accepted.

    Raises:
        ConfigurationError: the DSN does not parse (naming where it came from).
        ConnectionFailedError: naming host and port (never the password).
    """
    config = config or PersistenceConfig()
    resolved = resolve_dsn(dsn, config=config)
    try:
        return psycopg.connect(resolved, **connection_kwargs(resolved, config))
    except psycopg.Error as exc:
        raise connect_error(resolved, exc) from None
