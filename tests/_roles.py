"""A login role that uses the tables without owning them, so row-level security binds it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import psycopg
from psycopg import conninfo, sql

ALL_TABLES = (
    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA haive TO {r}",
    "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA haive TO {r}",
)


@contextmanager
def application_role(dsn: str, grants: Sequence[str] = ALL_TABLES) -> Iterator[str]:
    """A DSN for a new role with ``USAGE`` on schema ``haive`` and ``grants`` (``{r}``: the role).

    The role is dropped, with what it owns, on exit.
    """
    role = f"haive_app_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        for grant in ("GRANT USAGE ON SCHEMA haive TO {r}", *grants):
            conn.execute(sql.SQL(grant).format(r=sql.Identifier(role)))  # type: ignore[arg-type]
    try:
        yield conninfo.make_conninfo(dsn, user=role)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
