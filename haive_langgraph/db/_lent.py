"""What a connection or pool the caller lends us must be, checked when given and when used.

We accept any row factory (our cursors set their own, and we never change
the caller's), any ``prepare_threshold`` and any adapters. We refuse, with a
:class:`~haive_langgraph.errors.ConfigurationError` naming the fix, a lent
connection that is:

* closed, or not in autocommit mode (checked when it is given and before
  each operation): our statements would open a transaction that nothing of
  ours commits;
* in pipeline mode (inside the caller's ``with conn.pipeline():``, checked
  before each operation): our statements would join one implicit transaction
  that lasts until the caller's pipeline syncs (``now()`` frozen, so
  timestamps and TTLs go wrong), and a failing statement of ours would abort
  the statements the caller queued.

A lent connection inside a transaction the caller opened (``with
conn.transaction():``) is used as it is: our writes commit or roll back with
the caller's transaction, never before. A lent pool may hand out connections
not in autocommit mode: psycopg_pool commits each operation when its
connection comes back (rolls it back if the operation failed).
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection, Connection
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from haive_langgraph.errors import ConfigurationError

_NOT_AUTOCOMMIT = (
    "{what} in autocommit mode; open it with autocommit=True (haive-langgraph runs "
    "its own transactions and never commits one the caller owns: without autocommit its "
    "statements would stay in a transaction nothing commits)"
)


def check_lent_connection(conn: Connection[Any] | AsyncConnection[Any]) -> None:
    """Refuse a lent connection that is closed or not in autocommit mode."""
    if conn.closed:
        raise ConfigurationError("the connection passed in is closed")
    if not conn.autocommit:
        raise ConfigurationError(_NOT_AUTOCOMMIT.format(what="the connection passed in is not"))


def check_lent_in_use(conn: Connection[Any] | AsyncConnection[Any]) -> None:
    """Before each operation on a lent connection: still autocommit, not in pipeline mode.

    Two attribute reads; no round trip.
    """
    if conn.pgconn.pipeline_status:
        raise ConfigurationError(
            "the connection passed in is in pipeline mode (a `with conn.pipeline():` block "
            "of the caller's is open): haive-langgraph does not run inside a caller's "
            "pipeline, where its statements would share one implicit transaction until the "
            "pipeline syncs (now() frozen: wrong timestamps, TTLs that never expire) and a "
            "failing statement would abort the statements queued before it. Call it outside "
            "the pipeline block, or lend a ConnectionPool"
        )
    if not conn.autocommit:
        raise ConfigurationError(
            _NOT_AUTOCOMMIT.format(what="the connection passed in is no longer")
        )


def wrong_kind(conn: object, *, want_async: bool) -> ConfigurationError:
    """The error for a ``conn`` argument that is neither a DSN nor a connection or pool
    of the right kind (the type is named, never the value: it may be a DSN)."""
    if want_async:
        hint = (
            " (use the sync class for sync connections)"
            if isinstance(conn, Connection | ConnectionPool)
            else ""
        )
        kinds = "an AsyncConnection or an AsyncConnectionPool"
    else:
        hint = (
            " (use the Async class for async connections)"
            if isinstance(conn, AsyncConnection | AsyncConnectionPool)
            else ""
        )
        kinds = "a Connection or a ConnectionPool"
    return ConfigurationError(
        f"expected a DSN string, None (the default server) or a psycopg {kinds}, "
        f"got {type(conn).__name__}{hint}"
    )
