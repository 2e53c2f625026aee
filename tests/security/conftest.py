"""Fixtures shared by the attacks: our checkpointer, sync and async, on the module's database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from haive_langgraph.checkpointers import AsyncPostgresCheckpointer, PostgresCheckpointer
from tests.checkpointers.conftest import Driver


@pytest.fixture(scope="module")
def sync_saver(dsn: str) -> Iterator[PostgresCheckpointer]:
    with PostgresCheckpointer.from_conn_string(dsn) as saver:
        saver.setup()
        yield saver


@pytest.fixture(scope="module")
async def async_saver(
    dsn: str, sync_saver: PostgresCheckpointer
) -> AsyncIterator[AsyncPostgresCheckpointer]:
    async with AsyncPostgresCheckpointer.from_conn_string(dsn) as saver:
        yield saver


@pytest.fixture(params=["sync", "async"])
def cp(request: pytest.FixtureRequest) -> Driver:
    """Our checkpointer, sync (in a worker thread) or async."""
    return Driver(request.getfixturevalue(f"{request.param}_saver"), request.param)
