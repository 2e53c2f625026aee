"""Connections and pools the caller lends, as LangGraph's documentation opens them.

Every public class runs a real round trip (``tests/db/round_trips.py``) on
{connection, pool} x {tuple_row, dict_row} x {sync, async}, and the lent
connection keeps its row factory. A lent connection in pipeline mode or not
in autocommit mode is refused with an error that says what to do; a pool not
in autocommit mode works (the pool commits each operation).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
import pytest
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.base import empty_checkpoint
from psycopg.rows import dict_row, tuple_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from haive_langgraph.checkpointers import PostgresCheckpointer
from haive_langgraph.errors import ConfigurationError
from haive_langgraph.memory import ConversationStore, PostgresChatMessageHistory
from haive_langgraph.stores import AsyncPostgresStore, PostgresStore
from tests.db.round_trips import KINDS, Caller, new_id

ROW_FACTORIES: dict[str, Any] = {"tuple_row": tuple_row, "dict_row": dict_row}
VARIANTS = list(itertools.product(("sync", "async"), ("connection", "pool"), ROW_FACTORIES))


@pytest.fixture(params=VARIANTS, ids=["-".join(v) for v in VARIANTS])
async def lent(request: pytest.FixtureRequest, dsn: str) -> AsyncIterator[tuple[Any, bool, Any]]:
    """(connection or pool, is_async, row factory), opened as LangGraph's docs open them:
    autocommit, prepare_threshold=0, the caller's row factory."""
    side, kind, rows = request.param
    factory = ROW_FACTORIES[rows]
    kwargs: dict[str, Any] = {"autocommit": True, "prepare_threshold": 0, "row_factory": factory}
    if side == "sync" and kind == "connection":
        with psycopg.Connection.connect(dsn, **kwargs) as conn:
            yield conn, False, factory
    elif side == "sync":
        with ConnectionPool(dsn, min_size=1, max_size=2, kwargs=kwargs, open=True) as pool:
            yield pool, False, factory
    elif kind == "connection":
        async with await psycopg.AsyncConnection.connect(dsn, **kwargs) as aconn:
            yield aconn, True, factory
    else:
        apool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            dsn, min_size=1, max_size=2, kwargs=kwargs, open=False
        )
        async with apool:
            yield apool, True, factory


@pytest.mark.parametrize("kind", KINDS)
async def test_round_trip_on_a_lent_connection_or_pool(
    kind: str, lent: tuple[Any, bool, Any]
) -> None:
    obj, is_async, row_factory = lent
    spec = KINDS[kind]
    await spec.trip(Caller(is_async), spec.cls(is_async)(*spec.args(), obj, **spec.kwargs))
    # The caller's connections still hand out the caller's rows.
    if isinstance(obj, psycopg.Connection | psycopg.AsyncConnection):
        assert obj.row_factory is row_factory and not obj.closed
    elif is_async:
        async with obj.connection() as conn:
            assert conn.row_factory is row_factory
    else:
        with obj.connection() as conn:
            assert conn.row_factory is row_factory


# -- pipeline mode and autocommit ------------------------------------------------------


SYNC_CLASSES: list[Callable[[Any], Any]] = [
    PostgresCheckpointer,
    PostgresStore,
    ConversationStore,
    lambda conn: PostgresChatMessageHistory("s", conn),
]


@pytest.mark.parametrize("make", SYNC_CLASSES, ids=["checkpointer", "store", "conv", "history"])
def test_pipeline_mode_is_refused_not_silently_joined(dsn: str, make: Any) -> None:
    with psycopg.Connection.connect(dsn, autocommit=True) as conn:
        obj = make(conn)
        obj.setup()
        with conn.pipeline(), pytest.raises(ConfigurationError, match="pipeline mode"):
            obj.setup()
        obj.setup()  # outside the pipeline block it works again
        assert conn.pgconn.pipeline_status == psycopg.pq.PipelineStatus.OFF


async def test_pipeline_mode_is_refused_async(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        store = AsyncPostgresStore(conn)
        await store.setup()
        async with conn.pipeline():
            with pytest.raises(ConfigurationError, match="pipeline mode"):
                await store.aget(("p",), "k")
        assert await store.aget(("p",), "k") is None


async def test_pool_without_autocommit_commits_each_operation(dsn: str) -> None:
    """A pool's connections need not be autocommit: psycopg_pool commits each
    operation as its connection comes back, so other connections see it at once."""
    config = {"configurable": {"thread_id": new_id("t"), "checkpoint_ns": ""}}
    with ConnectionPool(dsn, min_size=1, max_size=1, open=True) as pool:
        saver = PostgresCheckpointer(pool)
        saver.setup()
        saver.put(config, empty_checkpoint(), {}, {})
        PostgresChatMessageHistory("plain-pool", pool).add_messages([HumanMessage("kept")])
    async with AsyncConnectionPool(dsn, min_size=1, max_size=1, open=False) as apool:
        await AsyncPostgresStore(apool).aput(("plain",), "k", {"v": 1})
    with PostgresCheckpointer.from_conn_string(dsn) as other:
        assert other.get_tuple(config) is not None
    with PostgresChatMessageHistory.from_conn_string(dsn, "plain-pool") as history:
        assert [m.content for m in history.messages] == ["kept"]
    with PostgresStore.from_conn_string(dsn) as store:
        item = store.get(("plain",), "k")
        assert item is not None and item.value == {"v": 1}


def test_connection_switched_out_of_autocommit_is_refused(dsn: str) -> None:
    with psycopg.Connection.connect(dsn, autocommit=True) as conn:
        saver = PostgresCheckpointer(conn)
        saver.setup()
        conn.autocommit = False
        with pytest.raises(ConfigurationError, match="no longer in autocommit"):
            saver.get_tuple({"configurable": {"thread_id": "x"}})
        conn.rollback()
