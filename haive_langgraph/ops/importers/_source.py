"""The source database of an import: opened read-only, looked at, and its values decoded.

A source is trusted as data only. Its connection runs every transaction
``READ ONLY`` (nothing of the source is ever changed), no SQL is taken from
it, identifiers the user names go through ``psycopg.sql.Identifier``, and
serialised values are checked by the target's :class:`ValueGuard` (the
allow-list its own reads use) before LangGraph's serde sees them: an import
admits exactly what the target would read back.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import IsolationLevel
from psycopg.rows import tuple_row

from haive_langgraph.codec._guard import ValueGuard
from haive_langgraph.db._connections import connect_error
from haive_langgraph.db._dsn import describe_dsn, normalize_dsn
from haive_langgraph.errors import ConfigurationError, CorruptDataError
from haive_langgraph.ops.importers import _sql as Q


@contextmanager
def open_source(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """A read-only connection to the source; each unit of work is one snapshot.

    Transactions are ``REPEATABLE READ READ ONLY``: what one unit (a thread,
    a session, a page) reads is consistent, and a source still in use keeps
    working. The caller commits between units.

    Raises:
        ConfigurationError: The DSN does not parse (never showing it).
        ConnectionFailedError: The server cannot be reached.
    """
    dsn = normalize_dsn(dsn, where="the source DSN")
    try:
        conn = psycopg.connect(dsn, autocommit=False, row_factory=tuple_row)
    except psycopg.Error as exc:
        raise connect_error(dsn, exc) from None
    try:
        conn.isolation_level = IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        yield conn
    finally:
        conn.close()


def check_batch(batch_size: int) -> int:
    """``batch_size`` (rows read per query), checked."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigurationError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


def source_name(dsn: str) -> str:
    """``host:port/dbname`` of a DSN, for reports (never the password)."""
    return describe_dsn(dsn)


def columns(conn: psycopg.Connection[Any], schema: str, table: str) -> set[str]:
    """The columns of a source table (empty when the table does not exist)."""
    rows = conn.execute(Q.SOURCE_COLUMNS, (schema, table)).fetchall()
    return {str(r[0]) for r in rows}


def vector_type(conn: psycopg.Connection[Any], schema: str, table: str) -> tuple[str, int | None]:
    """``("vector" | "halfvec" | ..., dims)`` of a table's ``embedding`` column (dims
    ``None`` when the column declares none)."""
    row = conn.execute(Q.SOURCE_VECTOR_TYPE, (schema, table)).fetchone()
    if row is None:
        return "vector", None
    name, typmod = str(row[0]), int(row[1])
    return name, typmod if typmod > 0 else None


def parse_vector(text: str, where: str) -> list[float]:
    """A pgvector value read as text (``[0.1,0.2]``) as floats."""
    try:
        values = json.loads(text)
        return [float(x) for x in values]
    except (ValueError, TypeError):
        raise CorruptDataError(f"{where}: the embedding is not a vector") from None


def decode_value(serde: Any, guard: ValueGuard, type_tag: str, data: bytes, where: str) -> Any:
    """A serialised source value, checked by ``guard`` then loaded by ``serde``.

    Raises:
        CorruptDataError: The value is refused (a pickle, a record naming a
            module outside the allow-list) or malformed; the message names
            the source row and how to admit the types of your own state.
    """
    try:
        guard.check(type_tag, data)
        return serde.loads_typed((type_tag, data))
    except CorruptDataError as exc:
        raise CorruptDataError(
            f"{where}: {exc}. Nothing after this row was imported; if the value holds "
            "types of your own state, allow their modules (HAIVE_ALLOWED_MODULES, or "
            "HaiveCodec(allowed_modules=...)) and run the import again: it continues"
        ) from None
    except Exception as exc:
        raise CorruptDataError(
            f"{where}: the value cannot be decoded ({type(exc).__name__}: {exc}). Nothing "
            "after this row was imported; fix or delete the row and run the import again"
        ) from None
