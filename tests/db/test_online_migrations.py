"""Online migrations: batched backfills under concurrent writers, concurrent indexes,
target versions, progress, the lock plan and ``haive-lg migrate --to/--plan``."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from haive_langgraph.cli import app
from haive_langgraph.db._driver import arun, run
from haive_langgraph.db._lock_plan import describe_statement
from haive_langgraph.db._migrations import Component, Migration, migrate_op, migration_script
from haive_langgraph.db._online_migrations import (
    MigrationProgress,
    online_migrate_op,
    parse_target,
)
from haive_langgraph.errors import MigrationError
from haive_langgraph.ops import all_components
from haive_langgraph.ops._online import amigrate, migrate, migration_plan, plan_op

CREATE = Migration(
    "items",
    ("CREATE TABLE {schema}.items (id bigserial PRIMARY KEY, a text NOT NULL)",),
)
# Expand: the new column, and a trigger that fills it on every write from now on,
# so rows written during the backfill need no backfill.
EXPAND = Migration(
    "items.a_lower, filled by writers",
    (
        "ALTER TABLE {schema}.items ADD COLUMN a_lower text",
        """
        CREATE FUNCTION {schema}.items_a_lower() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN NEW.a_lower := lower(NEW.a); RETURN NEW; END $$
        """,
        """
        CREATE TRIGGER items_a_lower BEFORE INSERT OR UPDATE OF a ON {schema}.items
        FOR EACH ROW EXECUTE FUNCTION {schema}.items_a_lower()
        """,
    ),
)
BACKFILL = Migration.backfill(
    "items.a_lower of the older rows",
    """
    UPDATE {schema}.items SET a_lower = lower(a)
    WHERE id IN (SELECT id FROM {schema}.items WHERE a_lower IS NULL LIMIT %(batch_size)s)
      AND a_lower IS NULL
    """,
)
INDEX = Migration.concurrent_index(
    "index on items.a_lower",
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS items_a_lower_idx ON {schema}.items (a_lower)",
)
# Contract: NOT NULL as a constraint added without a scan, then validated
# under SHARE UPDATE EXCLUSIVE (writes go on).
CONTRACT = Migration(
    "items.a_lower is set",
    (
        "ALTER TABLE {schema}.items ADD CONSTRAINT items_a_lower_set "
        "CHECK (a_lower IS NOT NULL) NOT VALID",
    ),
)
VALIDATE = Migration(
    "items.a_lower checked", ("ALTER TABLE {schema}.items VALIDATE CONSTRAINT items_a_lower_set",)
)
DEMO = Component("demo", (CREATE, EXPAND, BACKFILL, INDEX, CONTRACT, VALIDATE))

ROWS = 100_000
BATCH = 2_000
WRITERS = 4
# The longest a single write may wait. A backfill batch of 2,000 rows commits
# in a few tens of milliseconds, and the expand/contract steps hold their
# ACCESS EXCLUSIVE lock for a catalog change only: measured 31-64 ms on a
# loaded 2-core machine; 0.5 s leaves room for its hiccups. The same
# migrations in one transaction (what setup() does) keep the expand step's
# ACCESS EXCLUSIVE lock until the commit: writers waited 964 ms of a 0.99 s
# run (test_the_same_backfill_in_one_transaction_makes_writers_wait).
MAX_WAIT = 0.5


def online(dsn: str, schema: str, component: Component, **kwargs: Any) -> dict[str, list[int]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return run(conn, online_migrate_op([component], schema, **kwargs))


def scalar(dsn: str, query: str, schema: str) -> Any:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(sql.SQL(query).format(schema=sql.Identifier(schema))).fetchone()
    assert row is not None
    return row[0]


def fill(dsn: str, schema: str, rows: int = ROWS) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.items (a) SELECT 'Row ' || g FROM generate_series(1, %s) g"
            ).format(sql.Identifier(schema)),
            (rows,),
        )


class Writers:
    """Threads inserting rows and updating old ones until stopped; the longest wait."""

    def __init__(self, dsn: str, schema: str, count: int = WRITERS) -> None:
        self.dsn, self.schema = dsn, schema
        self.stop = threading.Event()
        self.waits: list[float] = []
        self.errors: list[BaseException] = []
        self.writes = 0
        self.threads = [threading.Thread(target=self._write, args=(i,)) for i in range(count)]

    def _write(self, n: int) -> None:
        table = sql.SQL("{}.items").format(sql.Identifier(self.schema))
        insert = sql.SQL("INSERT INTO {} (a) VALUES (%s)").format(table)
        update = sql.SQL("UPDATE {} SET a = %s WHERE id = %s").format(table)
        longest, i = 0.0, 0
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                while not self.stop.is_set():
                    i += 1
                    started = time.perf_counter()
                    conn.execute(insert, (f"New {n}-{i}",))
                    # Old rows spread over the table, ahead of and behind the backfill.
                    conn.execute(update, (f"Changed {n}-{i}", (i * 7919 + n * 104729) % ROWS + 1))
                    longest = max(longest, time.perf_counter() - started)
        except BaseException as exc:  # reported by the test
            self.errors.append(exc)
        self.waits.append(longest)
        self.writes += i

    def __enter__(self) -> Writers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


def test_backfill_with_writers_running(dsn: str) -> None:
    schema = "online_writers"
    assert online(dsn, schema, DEMO, target={"demo": 1}) == {"demo": [1]}
    fill(dsn, schema)
    events: list[MigrationProgress] = []
    with Writers(dsn, schema) as writers:
        time.sleep(0.3)  # writers under way before the expand step

        started = time.perf_counter()
        applied = online(dsn, schema, DEMO, batch_size=BATCH, on_progress=events.append)
        took = time.perf_counter() - started
        time.sleep(0.2)
    batches = [e for e in events if e.kind == "backfill" and not e.done]
    print(
        f"\nonline migration {took:.2f}s, {writers.writes} writes, longest wait "
        f"{max(writers.waits) * 1000:.0f} ms, {len(batches)} batches"
    )
    assert not writers.errors, writers.errors
    assert applied == {"demo": [2, 3, 4, 5, 6]}
    # No row missed: the old rows by the backfill, the new ones by the trigger.
    assert scalar(dsn, "SELECT count(*) FROM {schema}.items WHERE a_lower IS NULL", schema) == 0
    assert (
        scalar(
            dsn,
            "SELECT count(*) FROM {schema}.items WHERE a_lower IS DISTINCT FROM lower(a)",
            schema,
        )
        == 0
    )
    total = scalar(dsn, "SELECT count(*) FROM {schema}.items", schema)
    assert total >= ROWS + writers.writes - WRITERS  # every insert is there
    assert len(batches) >= ROWS // BATCH  # the rows were done in batches, not at once
    assert all(e.rows - p.rows <= BATCH for p, e in itertools.pairwise(batches))
    # Rows inserted after the expand step were filled by its trigger, not by the
    # backfill (which also does the few inserted between fill() and that step).
    assert batches[-1].rows < total
    assert writers.writes > 0
    assert max(writers.waits) < MAX_WAIT, (max(writers.waits), took)
    assert max(writers.waits) < took / 4  # never for a sizeable part of the migration
    assert scalar(
        dsn,
        "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('{schema}.items_a_lower_idx')".replace(
            "{schema}", schema
        ),
        schema,
    )


def test_a_crashed_backfill_resumes_where_it_stopped(dsn: str) -> None:
    schema = "online_resume"
    online(dsn, schema, DEMO, target={"demo": 1})
    fill(dsn, schema, 10_000)  # before the trigger: rows to backfill
    online(dsn, schema, DEMO, target={"demo": 2})

    def crash(event: MigrationProgress) -> None:
        if event.batches == 3:
            raise KeyboardInterrupt  # the process dies between batches

    with pytest.raises(KeyboardInterrupt):
        online(dsn, schema, DEMO, batch_size=1000, on_progress=crash)
    # Three committed batches stay; the backfill is not recorded.
    assert scalar(dsn, "SELECT count(*) FROM {schema}.items WHERE a_lower IS NULL", schema) == 7000
    events: list[MigrationProgress] = []
    assert online(dsn, schema, DEMO, batch_size=1000, on_progress=events.append) == {
        "demo": [3, 4, 5, 6]
    }
    backfill = [e for e in events if e.kind == "backfill" and not e.done]
    assert [e.rows for e in backfill] == [1000 * i for i in range(1, 8)]
    assert scalar(dsn, "SELECT count(*) FROM {schema}.items WHERE a_lower IS NULL", schema) == 0


def test_progress_reports_every_batch_and_step(dsn: str) -> None:
    schema = "online_progress"
    online(dsn, schema, DEMO, target={"demo": 1})
    fill(dsn, schema, 2500)  # before the trigger: rows to backfill
    online(dsn, schema, DEMO, target={"demo": 2})
    events: list[MigrationProgress] = []
    online(dsn, schema, DEMO, batch_size=1000, on_progress=events.append)
    assert [(e.step, e.steps, e.version, e.batches, e.rows, e.done) for e in events] == [
        (1, 4, 3, 1, 1000, False),
        (1, 4, 3, 2, 2000, False),
        (1, 4, 3, 3, 2500, False),
        (1, 4, 3, 3, 2500, True),
        (2, 4, 4, 0, 0, True),
        (3, 4, 5, 0, 0, True),
        (4, 4, 6, 0, 0, True),
    ]
    assert {e.kind for e in events} == {"backfill", "concurrent", "transaction"}


def test_target_version_stops_at_the_version(dsn: str) -> None:
    schema = "online_target"
    assert online(dsn, schema, DEMO, target={"demo": 3}) == {"demo": [1, 2, 3]}
    assert (
        scalar(
            dsn,
            "SELECT max(version) FROM {schema}.haive_migrations WHERE component = 'demo'",
            schema,
        )
        == 3
    )
    assert (
        scalar(
            dsn,
            "SELECT to_regclass('{schema}.items_a_lower_idx')".replace("{schema}", schema),
            schema,
        )
        is None
    )
    assert online(dsn, schema, DEMO, target={"demo": 3}) == {"demo": []}
    with pytest.raises(MigrationError, match="past the target 2: migrations are never undone"):
        online(dsn, schema, DEMO, target={"demo": 2})
    with pytest.raises(MigrationError, match="versions 1 to 6, not 9"):
        online(dsn, schema, DEMO, target={"demo": 9})
    with pytest.raises(MigrationError, match=r"unknown components \['nope'\]"):
        online(dsn, schema, DEMO, target={"nope": 1})
    assert online(dsn, schema, DEMO) == {"demo": [4, 5, 6]}


def test_public_migrate_stops_each_named_component(dsn: str) -> None:
    schema = "online_public"
    latest = {c.name: c.latest_version for c in all_components()}
    applied = migrate(dsn, schema=schema, target_version={"conversations": 2})
    assert applied["conversations"] == [1, 2]
    # Those requiring the conversations wait for them; the others go to their latest.
    dependent = {c.name for c in all_components() if "conversations" in c.requires}
    assert dependent and all(applied[name] == [] for name in dependent)
    assert all(
        applied[name] == list(range(1, v + 1))
        for name, v in latest.items()
        if name not in dependent | {"conversations"}
    )
    plan = migration_plan(dsn, schema=schema)
    assert [(s.component, s.version) for s in plan] == [
        ("conversations", v) for v in range(3, latest["conversations"] + 1)
    ] + [(c.name, 1) for c in all_components() if c.name in dependent]
    assert asyncio.run(amigrate(dsn, schema=schema))["conversations"] == list(
        range(3, latest["conversations"] + 1)
    )
    assert migration_plan(dsn, schema=schema) == []


def test_async_runner_is_the_same_operation(dsn: str) -> None:
    schema = "online_async"

    async def go() -> dict[str, list[int]]:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await arun(conn, online_migrate_op([DEMO], schema, target={"demo": 1}))
            await conn.execute(
                sql.SQL(
                    "INSERT INTO {}.items (a) SELECT 'X' || g FROM generate_series(1, 50) g"
                ).format(sql.Identifier(schema))
            )
            await arun(conn, online_migrate_op([DEMO], schema, target={"demo": 2}))
            return await arun(conn, online_migrate_op([DEMO], schema, batch_size=7))

    assert asyncio.run(go()) == {"demo": [3, 4, 5, 6]}
    assert scalar(dsn, "SELECT count(*) FROM {schema}.items WHERE a_lower = lower(a)", schema) == 50


def test_an_invalid_index_left_by_a_failed_build_is_rebuilt(dsn: str) -> None:
    schema = "online_invalid"
    unique = Migration.concurrent_index(
        "unique a",
        "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS items_a_key ON {schema}.items (a)",
    )
    component = Component("demo", (CREATE, unique))
    online(dsn, schema, component, target={"demo": 1})
    fill(dsn, schema, 100)
    fill(dsn, schema, 1)  # a duplicate: the build fails and leaves an invalid index
    with pytest.raises(psycopg.errors.UniqueViolation):
        online(dsn, schema, component)
    index = f"to_regclass('{schema}.items_a_key')"
    assert (
        scalar(dsn, f"SELECT indisvalid FROM pg_index WHERE indexrelid = {index}", schema) is False
    )
    with psycopg.connect(dsn) as conn:
        conn.execute(sql.SQL("DELETE FROM {}.items WHERE id = 101").format(sql.Identifier(schema)))
    assert online(dsn, schema, component) == {"demo": [2]}
    assert scalar(dsn, f"SELECT indisvalid FROM pg_index WHERE indexrelid = {index}", schema)


def test_one_transaction_runs_the_new_kinds_too(dsn: str) -> None:
    """setup() and --sql apply everything in one transaction: a backfill at once,
    an index without CONCURRENTLY."""
    schema = "online_tx"
    online(dsn, schema, DEMO, target={"demo": 1})
    fill(dsn, schema, 500)  # before the trigger: rows to backfill
    online(dsn, schema, DEMO, target={"demo": 2})
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        assert run(conn, migrate_op([DEMO], schema)) == {"demo": [3, 4, 5, 6]}
    assert scalar(dsn, "SELECT count(*) FROM {schema}.items WHERE a_lower IS NULL", schema) == 0


def test_checksums_of_plain_migrations_are_unchanged() -> None:
    # The formula every recorded checksum was computed with.
    import hashlib

    for component in all_components():
        for migration in component.migrations:
            text = "\n;\n".join(s.strip() for s in migration.statements)
            assert migration.checksum == hashlib.sha256(text.encode()).hexdigest()[:16]
    same = Migration("x", INDEX.statements)
    assert INDEX.checksum != same.checksum  # the kind is part of a new kind's checksum


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Migration.backfill("b", "UPDATE {schema}.t SET a = 1"), "batch size"),
        (
            lambda: Migration.concurrent_index("i", "CREATE INDEX i ON {schema}.t (a)"),
            "CONCURRENTLY",
        ),
        (lambda: Migration("b", ("a", "b"), kind="backfill"), "exactly one statement"),
    ],
)
def test_bad_online_migrations_are_refused(make: Callable[[], Migration], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    ("statement", "kind", "lock", "duration"),
    [
        ("CREATE INDEX IF NOT EXISTS i ON {schema}.t (a)", "transaction", "SHARE", "whole build"),
        (INDEX.statements[0], "concurrent", "SHARE UPDATE EXCLUSIVE", "two scans"),
        ("ALTER TABLE {schema}.t ADD COLUMN b text", "transaction", "ACCESS EXCLUSIVE", "brief"),
        (
            "ALTER TABLE {schema}.t ADD COLUMN b int DEFAULT 0",
            "transaction",
            "ACCESS EXCLUSIVE",
            "brief",
        ),
        (
            "ALTER TABLE {schema}.t ADD COLUMN b uuid DEFAULT gen_random_uuid()",
            "transaction",
            "ACCESS EXCLUSIVE",
            "rewrite",
        ),
        (
            "ALTER TABLE {schema}.t ALTER COLUMN b TYPE bigint",
            "transaction",
            "ACCESS EXCLUSIVE",
            "rewrite",
        ),
        (
            "ALTER TABLE {schema}.t ALTER COLUMN b SET NOT NULL",
            "transaction",
            "ACCESS EXCLUSIVE",
            "scan",
        ),
        (CONTRACT.statements[0], "transaction", "ACCESS EXCLUSIVE", "brief"),
        (VALIDATE.statements[0], "transaction", "SHARE UPDATE EXCLUSIVE", "scan"),
        ("UPDATE {schema}.t SET b = 1", "transaction", "ROW EXCLUSIVE", "until the migration"),
        (BACKFILL.statements[0], "backfill", "ROW EXCLUSIVE", "one batch"),
        (EXPAND.statements[2], "transaction", "SHARE ROW EXCLUSIVE", "brief"),
        (EXPAND.statements[1], "transaction", None, "no table lock"),
        ("CREATE TABLE {schema}.n (a int)", "transaction", None, "no table lock"),
    ],
)
def test_lock_levels_come_from_the_statement(
    statement: str, kind: Any, lock: str | None, duration: str
) -> None:
    described = describe_statement(statement, kind)
    assert described.lock == lock
    assert duration in described.duration


def test_parse_target() -> None:
    assert parse_target(["checkpoints:3", "store:0"]) == {"checkpoints": 3, "store": 0}
    for bad in ("3", "checkpoints", "checkpoints:x"):
        with pytest.raises(ValueError, match="COMPONENT:VERSION"):
            parse_target([bad])


def test_cli_plan_to_and_json(dsn: str) -> None:
    runner = CliRunner()
    schema = "online_cli"
    latest = {c.name: c.latest_version for c in all_components()}
    result = runner.invoke(app, ["migrate", "--dsn", dsn, "--schema", schema, "--plan", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert [(s["component"], s["version"]) for s in plan] == [
        (c.name, v) for c in all_components() for v in range(1, c.latest_version + 1)
    ]
    first = plan[0]["statements"]
    assert {"action", "table", "lock", "blocks", "duration"} <= set(first[0])
    locks = {st["lock"] for s in plan for st in s["statements"]}
    assert {"SHARE", "ACCESS EXCLUSIVE", None} <= locks
    result = runner.invoke(app, ["migrate", "--dsn", dsn, "--schema", schema, "--plan"])
    assert result.exit_code == 0 and "Pending migrations" in result.stdout
    assert "SHARE" in result.stdout
    # Stop the conversations at 2 (and what requires them where it is).
    result = runner.invoke(
        app, ["migrate", "--dsn", dsn, "--schema", schema, "--to", "conversations:2", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["applied"]["conversations"] == [1, 2]
    result = runner.invoke(app, ["migrate", "--dsn", dsn, "--schema", schema, "--plan", "--json"])
    assert [(s["component"], s["version"]) for s in json.loads(result.stdout)][:2] == [
        ("conversations", 3),
        ("conversations", 4),
    ]  # then the later ones, and the components requiring the conversations
    result = runner.invoke(app, ["migrate", "--dsn", dsn, "--schema", schema, "--to", "3"])
    assert result.exit_code == 2 and "COMPONENT:VERSION" in result.output
    result = runner.invoke(app, ["migrate", "--dsn", dsn, "--schema", schema, "--to", "nope:1"])
    assert result.exit_code == 1 and "unknown components ['nope']" in result.output
    result = runner.invoke(app, ["migrate", "--dsn", dsn, "--schema", schema])
    assert result.exit_code == 0, result.output
    applied = ", ".join(map(str, range(3, latest["conversations"] + 1)))
    assert f"conversations: applied {applied}" in result.stdout
    result = runner.invoke(app, ["migrate", "--dsn", dsn, "--schema", schema, "--plan"])
    assert "nothing to apply" in result.stdout


def test_the_same_backfill_in_one_transaction_makes_writers_wait(dsn: str) -> None:
    """The contrast that gives the bound its meaning: setup()'s one transaction."""
    schema = "online_contrast"
    online(dsn, schema, DEMO, target={"demo": 1})
    fill(dsn, schema)
    with Writers(dsn, schema) as writers:
        time.sleep(0.3)
        started = time.perf_counter()
        with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
            run(conn, migrate_op([DEMO], schema))
        took = time.perf_counter() - started
        time.sleep(0.2)
    assert not writers.errors, writers.errors
    print(f"\none transaction {took:.2f}s, longest wait {max(writers.waits) * 1000:.0f} ms")
    # A writer waits for most of the transaction: what the online runner avoids.
    assert max(writers.waits) >= took / 2


def test_nothing_waits_for_a_running_online_migration(dsn: str) -> None:
    """A session waiting for a lock would deadlock with CREATE INDEX CONCURRENTLY (it
    waits for every transaction holding a snapshot): during an online run, another
    runner is refused, setup() returns at once when it has nothing to apply and is
    refused when it has; afterwards each migration is recorded once."""
    schema = "online_lock"
    side = Component("side", (Migration("side", ("CREATE TABLE {schema}.side (a int)",)),))
    online(dsn, schema, DEMO, target={"demo": 1})
    online(dsn, schema, side)
    fill(dsn, schema, 5000)
    results: dict[str, Any] = {}

    def in_one_transaction(component: Component) -> Any:
        with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
            return run(conn, migrate_op([component], schema))

    def meanwhile(event: MigrationProgress) -> None:
        if event.batches != 1 or results:
            return
        for name, attempt in (
            ("second run", lambda: online(dsn, schema, DEMO)),
            ("setup, behind", lambda: in_one_transaction(DEMO)),
            ("setup, up to date", lambda: in_one_transaction(side)),
        ):
            started = time.perf_counter()
            try:
                results[name] = attempt()
            except MigrationError as exc:
                results[name] = str(exc)
            assert time.perf_counter() - started < 5  # nobody waited

    assert online(dsn, schema, DEMO, batch_size=1000, on_progress=meanwhile) == {
        "demo": [2, 3, 4, 5, 6]
    }
    assert "another online migration is running on schema 'online_lock'" in results["second run"]
    assert "an online migration (haive-lg migrate) is running" in results["setup, behind"]
    assert "needs migrations it has not applied yet (demo 3, demo 4" in results["setup, behind"]
    assert results["setup, up to date"] == {"side": []}
    versions = scalar(
        dsn,
        "SELECT array_agg(version ORDER BY version) FROM {schema}.haive_migrations "
        "WHERE component = 'demo'",
        schema,
    )
    assert versions == [1, 2, 3, 4, 5, 6]
    # The locks went with the run: setup() and another run go ahead.
    assert in_one_transaction(DEMO) == {"demo": []}
    assert online(dsn, schema, DEMO) == {"demo": []}


def test_the_sql_script_runs_the_new_kinds_in_its_transaction(dsn: str) -> None:
    script = migration_script([DEMO], "online_script")
    assert "LIMIT NULL" in script and "%(batch_size)s" not in script
    assert "CONCURRENTLY" not in script
    assert "CREATE INDEX IF NOT EXISTS items_a_lower_idx" in script
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(script.encode())
    assert online(dsn, "online_script", DEMO) == {"demo": []}  # checksums match


def test_a_concurrent_index_on_a_partitioned_table(dsn: str) -> None:
    """PostgreSQL builds no index CONCURRENTLY on a partitioned table: built in one
    statement, and the plan says so (SHARE, not SHARE UPDATE EXCLUSIVE)."""
    schema = "online_parted"
    parted = Migration(
        "parted",
        (
            "CREATE TABLE {schema}.parted (a int, b text) PARTITION BY HASH (a)",
            "CREATE TABLE {schema}.parted_0 PARTITION OF {schema}.parted "
            "FOR VALUES WITH (MODULUS 2, REMAINDER 0)",
            "CREATE TABLE {schema}.parted_1 PARTITION OF {schema}.parted "
            "FOR VALUES WITH (MODULUS 2, REMAINDER 1)",
        ),
    )
    index = Migration.concurrent_index(
        "b", "CREATE INDEX CONCURRENTLY IF NOT EXISTS parted_b ON {schema}.parted (b)"
    )
    component = Component("demo", (parted, index))
    online(dsn, schema, component, target={"demo": 1})
    with psycopg.connect(dsn, autocommit=True) as conn:
        plan = run(conn, plan_op(schema, None, [component]))
    assert [(lock.action, lock.lock) for lock in plan[0].locks] == [("CREATE INDEX", "SHARE")]
    assert online(dsn, schema, component) == {"demo": [2]}
    assert scalar(dsn, f"SELECT to_regclass('{schema}.parted_b') IS NOT NULL", schema)
