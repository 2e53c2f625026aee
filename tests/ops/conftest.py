"""Fixtures the backup tests share: a migrated database, a second one to restore into,
and an S3 protocol server (moto, started once per module)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from haive_langgraph.ops import migrate_all
from tests.conftest import create_database, drop_database
from tests.ops._s3 import S3Server, s3_server


@pytest.fixture(scope="module")
def migrated(dsn: str) -> str:
    migrate_all(dsn)
    return dsn


@pytest.fixture
def other_db(pg_server: str) -> Iterator[str]:
    url = create_database(pg_server, "haive_restore")
    try:
        yield url
    finally:
        drop_database(pg_server, url)


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    yield from s3_server()
