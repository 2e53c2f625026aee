"""Connections and their settings: the DSN, the embedded default server, replicas.

What users need is listed in ``__all__``; the connection sources, the
sans-I/O driver, calls and migrations are internal (``db._connections``,
``db._driver``, ``db._call``, ``db._migrations`` ...) and may change.
"""

from __future__ import annotations

from typing import Any

import psycopg

from haive_langgraph.db._config import PersistenceConfig, PoolerMode
from haive_langgraph.db._connections import connect_error, connection_kwargs
from haive_langgraph.db._dsn import (
    describe_dsn,
    normalize_dsn,
    resolve_dsn,
    uses_transaction_pooler,
)
from haive_langgraph.db._embedded import default_data_dir, embedded_dsn, start_embedded
from haive_langgraph.db._partitions import PartitionKey
from haive_langgraph.db._replicas import ReplicaStats, Route
from haive_langgraph.db._stats import CallStats, stats

__all__ = [
    "CallStats",
    "PartitionKey",
    "PersistenceConfig",
    "PoolerMode",
    "ReplicaStats",
    "Route",
    "connect",
    "default_data_dir",
    "describe_dsn",
    "embedded_dsn",
    "normalize_dsn",
    "resolve_dsn",
    "start_embedded",
    "stats",
    "uses_transaction_pooler",
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
