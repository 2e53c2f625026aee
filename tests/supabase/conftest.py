"""Supabase tests: a local PostgreSQL prepared like Supabase, with a real PgBouncer in front.

* ``supabase_server``: a PostgreSQL server of these tests' own (the embedded
  binaries, as ``tests/reliability`` starts them) with ``wal_level=logical``,
  which the realtime test's replication slot needs and the session's shared
  server does not have.
* ``supabase_db``: a fresh database on it, prepared by
  ``supabase_fixture.sql`` (roles ``anon``/``authenticated``/``service_role``,
  ``auth.uid()``/``auth.jwt()``, the ``supabase_realtime`` publication).
* ``pooler`` / ``pooled``: a PgBouncer in transaction mode in front of the
  server (as Supabase's pooler on 6543), and the DSN of ``supabase_db``
  through it. Skipped, with the reason and how to install it, when
  PgBouncer is missing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import conninfo

from haive_langgraph.db import PersistenceConfig
from tests._pgbouncer import PgBouncer, require_pgbouncer
from tests.reliability._server import PrivateServer

FIXTURE_SQL = Path(__file__).with_name("supabase_fixture.sql")

# What the Supabase classes get behind our PgBouncer: it listens on a random
# port, so transaction mode is named instead of inferred from port 6543.
POOLED = PersistenceConfig(
    pooler_mode="transaction", pool_min_size=1, pool_max_size=4, pool_timeout=10
)


@pytest.fixture(scope="session")
def supabase_server() -> Iterator[PrivateServer]:
    server = PrivateServer()
    with (server.data / "postgresql.conf").open("a") as conf:
        conf.write(
            "wal_level = logical\nmax_replication_slots = 4\nfsync = off\nfull_page_writes = off\n"
        )
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


def prepare_like_supabase(dsn: str) -> None:
    """Run ``supabase_fixture.sql`` in the database ``dsn`` names."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(FIXTURE_SQL.read_bytes())


@pytest.fixture(scope="module")
def supabase_db(supabase_server: PrivateServer) -> str:
    """Direct (superuser) DSN of a fresh database prepared like Supabase."""
    if not supabase_server.is_running():
        supabase_server.start()
    dsn = supabase_server.create_database("supa")
    prepare_like_supabase(dsn)
    return dsn


@pytest.fixture(scope="session")
def pooler(supabase_server: PrivateServer) -> Iterator[PgBouncer]:
    require_pgbouncer()
    bouncer = PgBouncer(supabase_server.port)
    try:
        bouncer.start()
        yield bouncer
    finally:
        bouncer.cleanup()


@pytest.fixture(scope="module")
def pooled(supabase_db: str, pooler: PgBouncer) -> str:
    """DSN of ``supabase_db`` through PgBouncer (transaction mode)."""
    return pooler.dsn(str(conninfo.conninfo_to_dict(supabase_db)["dbname"]))


def new_uid() -> str:
    """A user id as Supabase's ``auth.uid()`` returns it (a uuid, as text)."""
    return str(uuid.uuid4())


def act_as_user(conn: psycopg.Connection[Any], claims: dict[str, Any]) -> None:
    """Within the current transaction, act as PostgREST does for a signed-in user."""
    conn.execute("SET LOCAL ROLE authenticated")
    conn.execute("SELECT set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
