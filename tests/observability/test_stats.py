"""``haive_langgraph.db.stats``: calls, errors, retries and replica routing of a source."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from haive_langgraph.checkpointers import AsyncPostgresCheckpointer, PostgresCheckpointer
from haive_langgraph.db import CallStats, stats
from haive_langgraph.db._driver import Op, Step
from haive_langgraph.errors import ConfigurationError
from haive_langgraph.stores import PostgresStore

from ._savers import checkpoint, config_for, put_and_get


async def test_stats(saver: Any) -> None:
    before = stats(saver)
    assert isinstance(before, CallStats)
    assert before.replicas is None
    await put_and_get(saver, "stats")
    after = stats(saver)
    assert after.calls - before.calls == 2
    assert (after.errors, after.retries) == (before.errors, before.retries)
    assert after.as_dict()["calls"] == after.calls
    assert stats(saver._source) == after  # the source itself is accepted too


def test_stats_of_a_store_and_replica_counters(dsn: str) -> None:
    with PostgresStore.from_conn_string(dsn) as store:
        store.setup()
        store.put(("ns",), "k", {"v": 1})
        assert store.search(("ns",)) != []
        s = stats(store)
        assert s.calls >= 3 and s.errors == 0 and s.replicas is None
    # A "replica" that is the primary itself: the routed reads are counted.
    saver = PostgresCheckpointer(dsn, replicas=[dsn])
    try:
        saver.setup()
        assert list(saver.list(config_for("replica-stats"))) == []
        s = stats(saver)
        assert s.replicas is not None
        assert s.replicas.replica_reads + s.replicas.primary_reads == 1
        # A fresh read after a write asks the primary for its LSN first (one lookup).
        config = saver.put(config_for("replica-stats"), checkpoint("1"), {}, {"note": 1})
        assert saver.get_tuple(config) is not None
        after = stats(saver)
        assert after.calls == s.calls + 2 and after.errors == 0
        assert after.replicas is not None and after.replicas.lsn_lookups == 1
        assert after.replicas.replica_reads + after.replicas.primary_reads == 2
        assert s.replicas.lsn_lookups == 0  # a snapshot: later calls do not change it
    finally:
        saver.close()


def test_stats_refuses_other_objects() -> None:
    with pytest.raises(ConfigurationError, match="stats\\(\\) needs"):
        stats(object())


def dying_then_fine(attempts: list[int]) -> Op[Any]:
    """A read whose first attempt loses its connection (the server ends the session)."""
    attempts.append(1)
    if len(attempts) == 1:
        yield Step("SELECT pg_terminate_backend(pg_backend_pid())")
    row = yield Step("SELECT 1", fetch="one")
    return row


async def test_retries_and_errors_are_counted(saver: Any) -> None:
    attempts: list[int] = []
    before = stats(saver)
    source = saver._source
    if isinstance(saver, AsyncPostgresCheckpointer):
        assert await source.run(lambda: dying_then_fine(attempts), read=True) == (1,)
    else:
        assert source.run(lambda: dying_then_fine(attempts), read=True) == (1,)
    after = stats(saver)
    assert len(attempts) == 2
    assert (after.calls, after.errors, after.retries) == (
        before.calls + 1,
        before.errors,
        before.retries + 1,
    )
    # A write is never retried: its lost connection is an error.
    attempts.clear()
    with pytest.raises(psycopg.OperationalError):
        if isinstance(saver, AsyncPostgresCheckpointer):
            await source.run(lambda: dying_then_fine(attempts))
        else:
            source.run(lambda: dying_then_fine(attempts))
    last = stats(saver)
    assert (last.calls, last.errors, last.retries) == (
        after.calls + 1,
        after.errors + 1,
        after.retries,
    )
