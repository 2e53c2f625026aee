"""Query analysis over pg_stat_statements: snapshots, windows, features, p95, index advice.

The test session's server does not preload pg_stat_statements, so these tests
start their own embedded server with it in ``shared_preload_libraries``
(written with ALTER SYSTEM, then a restart): the same wheel, PostgreSQL 18.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from haive_langgraph.cli import app
from haive_langgraph.db import start_embedded
from haive_langgraph.errors import QueryStatsUnavailableError
from haive_langgraph.ops import migrate_all
from haive_langgraph.ops.queries import (
    aanalyze_queries,
    analyze_queries,
    asnapshot_queries,
    snapshot_queries,
)
from haive_langgraph.ops.queries._plans import Candidate, candidates, conditions
from haive_langgraph.ops.queries._stats import Z95, p95
from tests.conftest import create_database

HYPOPG_ENV = "HAIVE_TEST_HYPOPG_DIR"
"""A directory holding a hypopg build for PostgreSQL 18 (``extension/``, ``lib/``): the
advice is then checked with hypothetical indexes. The embedded wheel has no hypopg."""


@pytest.fixture(scope="module")
def pgss_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An embedded server with pg_stat_statements preloaded."""
    data: Path = tmp_path_factory.mktemp("pgss") / "data"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = start_embedded(data, cleanup_mode="stop")
            with psycopg.connect(str(server.get_uri()), autocommit=True) as conn:
                conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
                conn.execute("ALTER SYSTEM SET pg_stat_statements.track = 'top'")
                if hypopg := os.environ.get(HYPOPG_ENV):
                    # A hypopg build outside the server's directories (PostgreSQL 18's
                    # extension_control_path): DIR/extension/hypopg.control, DIR/lib/hypopg.so.
                    conn.execute(f"ALTER SYSTEM SET extension_control_path = '$system:{hypopg}'")
                    conn.execute(f"ALTER SYSTEM SET dynamic_library_path = '$libdir:{hypopg}/lib'")
            server.cleanup()  # stops it: the library loads at the next start
            server = start_embedded(data, cleanup_mode="delete")
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"cannot start an embedded server with pg_stat_statements preloaded: {exc}")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def pgss(pgss_server: str) -> str:
    """A database there, migrated, with the extension created."""
    dsn = create_database(pgss_server)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_stat_statements")
        hypopg = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'hypopg'")
        if hypopg.fetchone() is not None:
            conn.execute("CREATE EXTENSION hypopg")
    migrate_all(dsn)
    return dsn


def run_many(dsn: str, query: str, values: list[Any]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for value in values:
            conn.execute(query, (value,))


THREADS = 'SELECT count(*) FROM "haive"."threads" WHERE thread_id = %s'
SLEEPY = 'SELECT pg_sleep(%s), count(*) FROM "haive"."threads"'


def find(analysis: Any, text: str) -> Any:
    return next((s for s in analysis.statements if text in s.query), None)


def test_not_loaded_says_how_to_enable_it(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT current_setting('shared_preload_libraries')").fetchone()
    if row and "pg_stat_statements" in str(row[0]):
        pytest.skip("this test server preloads pg_stat_statements")
    with pytest.raises(QueryStatsUnavailableError, match="shared_preload_libraries") as info:
        analyze_queries(dsn)
    assert "restart PostgreSQL" in str(info.value)
    with pytest.raises(QueryStatsUnavailableError, match="shared_preload_libraries"):
        snapshot_queries(dsn)
    result = CliRunner().invoke(app, ["analyze", "--dsn", dsn, "--json"])
    assert result.exit_code == 1 and "shared_preload_libraries" in result.output


def test_loaded_but_not_created(pgss_server: str) -> None:
    fresh = create_database(pgss_server)
    with pytest.raises(QueryStatsUnavailableError, match="CREATE EXTENSION pg_stat_statements"):
        snapshot_queries(fresh)


def test_window_features_mean_and_p95(pgss: str) -> None:
    run_many(pgss, THREADS, [f"t{i}" for i in range(40)])
    # No snapshot yet: the counters since the statistics were reset.
    first = analyze_queries(pgss, since=dt.timedelta(hours=1), min_ms=0)
    assert first.baseline == "reset" and any("no snapshot yet" in n for n in first.notes)
    assert find(first, '"haive"."threads" WHERE thread_id').calls == 40
    taken = snapshot_queries(pgss)
    assert taken.statements >= 1
    time.sleep(1.5)
    run_many(pgss, THREADS, [f"t{i}" for i in range(25)])
    sleeps = [0.01] * 19 + [0.2]
    run_many(pgss, SLEEPY, sleeps)
    analysis = analyze_queries(pgss, since=dt.timedelta(seconds=1), min_ms=0)
    assert analysis.baseline == "snapshot" and analysis.start == taken.taken_at
    threads = find(analysis, '"haive"."threads" WHERE thread_id')
    assert threads.calls == 25  # the window only: 40 calls came before the snapshot
    assert threads.feature == "checkpoints" and threads.tables == ("threads",)
    sleepy = find(analysis, "pg_sleep")
    assert sleepy.calls == 20
    expected_mean = sum(sleeps) / len(sleeps) * 1000
    assert expected_mean * 0.9 < sleepy.mean_ms < expected_mean * 1.5
    sd = math.sqrt(sum((s * 1000 - expected_mean) ** 2 for s in sleeps) / len(sleeps))
    assert sleepy.p95_ms == pytest.approx(min(sleepy.max_ms, sleepy.mean_ms + Z95 * sd), rel=0.25)
    assert sleepy.mean_ms < sleepy.p95_ms <= sleepy.max_ms
    feature = next(f for f in analysis.features if f.feature == "checkpoints")
    assert feature.calls >= 45 and feature.statements >= 2
    assert feature.mean_ms <= feature.p95_ms
    # --min-ms filters the listed statements, not the features.
    strict = analyze_queries(pgss, since=dt.timedelta(seconds=1), min_ms=5, explain=False)
    assert find(strict, "pg_sleep") and not find(strict, "thread_id = $1")
    # A window older than every snapshot starts at the oldest one, and says so.
    wide = analyze_queries(pgss, since=dt.timedelta(days=7), min_ms=0, explain=False)
    assert wide.start == taken.taken_at and any("no snapshot is" in n for n in wide.notes)


def test_index_advice_from_plans(pgss: str) -> None:
    with psycopg.connect(pgss, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO "haive"."store_items" (namespace, key, value, doc)
            SELECT ARRAY['docs'], 'k' || g, '\\x00',
                   jsonb_build_object('status', CASE WHEN g % 500 = 0 THEN 'open' ELSE 'done' END)
            FROM generate_series(1, 30000) AS g
            """
        )
        conn.execute('ANALYZE "haive"."store_items"')
        hypopg = conn.execute("SELECT * FROM pg_available_extensions WHERE name = 'hypopg'")
        has_hypopg = hypopg.fetchone() is not None
    query = 'SELECT key FROM "haive"."store_items" WHERE tenant_id = %s AND doc ->> \'status\' = %s'
    with psycopg.connect(pgss, autocommit=True) as conn:
        for _ in range(5):
            conn.execute(query, ("", "open"))
    analysis = analyze_queries(pgss, since=dt.timedelta(hours=1), min_ms=0)
    store = find(analysis, "doc ->> $")
    assert store is not None and store.feature == "store"
    advice = [a for a in analysis.advice if store.queryid in a.queryids]
    assert len(advice) == 1, (analysis.advice, analysis.notes)
    (one,) = advice
    assert one.table == "store_items" and "Seq Scan" in one.reason
    # pg_stat_statements keeps the key as a parameter ($2): a key of the data stands in.
    assert "'status' is the most common key of doc" in one.reason
    assert one.create == (
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS store_items_tenant_id_doc_status_idx ON "
        '"haive"."store_items" (tenant_id, ((doc ->> \'status\'::text)))'
    )
    if has_hypopg:  # with HAIVE_TEST_HYPOPG_DIR
        assert one.method == "hypopg" and one.cost_after is not None
        assert one.cost_after < one.cost_before * 0.9
    else:
        assert one.method == "plan"
        assert any("hypopg is not installed" in n for n in analysis.notes)
    print(f"\nadvice ({one.method}): cost {one.cost_before:,.0f} -> {one.cost_after}")
    # The advice runs as given, and is not given again.
    with psycopg.connect(pgss, autocommit=True) as conn:
        conn.execute(one.create)
        conn.execute('ANALYZE "haive"."store_items"')
        plan = conn.execute(f"EXPLAIN {query}", ("", "open")).fetchall()
    assert "store_items_tenant_id_doc_status_idx" in str(plan)
    again = analyze_queries(pgss, since=dt.timedelta(hours=1), min_ms=0)
    assert not [a for a in again.advice if a.table == "store_items"]


def test_cli_snapshot_and_analyze(pgss: str) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["analyze", "--dsn", pgss, "snapshot", "--json"])
    assert result.exit_code == 0, result.output
    taken = json.loads(result.stdout)
    assert {"id", "taken_at", "statements", "pruned"} <= set(taken)
    result = runner.invoke(
        app, ["analyze", "--dsn", pgss, "--since", "7d", "--min-ms", "0", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["baseline"] == "snapshot"
    assert {f["feature"] for f in data["features"]} >= {"checkpoints"}
    assert all({"mean_ms", "p95_ms", "calls"} <= set(s) for s in data["statements"])
    result = runner.invoke(app, ["analyze", "--dsn", pgss, "--since", "7d", "--min-ms", "0"])
    assert result.exit_code == 0, result.output
    assert "Statements by feature" in result.stdout and "checkpoints" in result.stdout
    result = runner.invoke(app, ["analyze", "--dsn", pgss, "--since", "seven days"])
    assert result.exit_code == 2


def test_async_twins(pgss: str) -> None:
    async def go() -> Any:
        taken = await asnapshot_queries(pgss, keep=dt.timedelta(days=1))
        return taken, await aanalyze_queries(pgss, since=dt.timedelta(hours=1), min_ms=0)

    taken, analysis = asyncio.run(go())
    assert taken.id > 0 and analysis.features


def test_a_reset_in_the_window_counts_from_the_reset(pgss: str) -> None:
    snapshot_queries(pgss)
    run_many(pgss, THREADS, [f"r{i}" for i in range(30)])
    with psycopg.connect(pgss, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")
    run_many(pgss, THREADS, [f"s{i}" for i in range(7)])
    analysis = analyze_queries(pgss, since=dt.timedelta(hours=1), min_ms=0, explain=False)
    assert any("reset during the window" in n for n in analysis.notes)
    assert find(analysis, '"haive"."threads" WHERE thread_id').calls == 7


def test_p95_estimate() -> None:
    # 100 calls: mean 10, stddev 2 -> p95 = 10 + 1.645 * 2, bounded by the max.
    sumsq = 100 * (2**2 + 10**2)
    assert p95(100, 1000.0, sumsq, 50.0) == pytest.approx((10.0, 10 + Z95 * 2))
    assert p95(100, 1000.0, sumsq, 12.0) == (10.0, 12.0)
    assert p95(0, 0.0, 0.0, 0.0) == (0.0, 0.0)


def test_plan_shapes() -> None:
    assert conditions("((t.a = $1) OR (t.b = $2))") is None
    assert conditions("((a = $1) AND ((doc ->> 'k'::text) = $2) AND (c > $3))") == [
        ("a", "="),
        ("doc ->> 'k'::text", "="),
        ("c", ">"),
    ]
    assert conditions("(a = b.c)") is None  # a join condition
    seq = {
        "Plan": {
            "Node Type": "Seq Scan",
            "Schema": "haive",
            "Relation Name": "items",
            "Alias": "i",
            "Filter": "((i.created > $2) AND (i.tenant_id = $1))",
        }
    }
    assert candidates(seq, "haive", {"items": 50_000}, 10_000) == [
        Candidate(
            "items",
            ("tenant_id", "created"),
            "btree",
            "Seq Scan on items (~50,000 rows) filtering on ((created > $2) AND (tenant_id = $1))",
        )
    ]
    assert candidates(seq, "haive", {"items": 500}, 10_000) == []  # a small table
    contains = {"Plan": {**seq["Plan"], "Filter": "(i.doc @> $1)"}}
    (gin,) = candidates(contains, "haive", {"items": 50_000}, 10_000)
    assert gin.ddl("haive").endswith('ON "haive"."items" USING gin (doc jsonb_path_ops)')
    index_then_json = {
        "Plan": {
            "Node Type": "Index Scan",
            "Schema": "haive",
            "Relation Name": "items",
            "Alias": "items",
            "Index Cond": "(items.tenant_id = $1)",
            "Filter": "((items.doc ->> 'kind'::text) = $2)",
        }
    }
    (json_key,) = candidates(index_then_json, "haive", {"items": 50_000}, 10_000)
    assert json_key.elements == ("tenant_id", "((doc ->> 'kind'::text))")
