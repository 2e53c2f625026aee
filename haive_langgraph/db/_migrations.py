"""One migration runner for every feature.

Each feature (checkpoints, store, conversations ...) declares a
:class:`Component`: an append-only list of migrations whose position is the
version. The runner applies what is missing, in order, in one transaction
under ``pg_advisory_xact_lock`` (so eight processes calling ``setup()`` at
once apply each migration exactly once), records version and checksum of
each, and refuses to continue when an applied migration's text has changed
since, or when the database is ahead of this code.

Migration SQL is written with a ``{schema}`` placeholder that is filled in
with ``psycopg.sql.Identifier``; literal braces are doubled. The same
statements can be printed as a plain SQL script (``haive-lg migrate --sql``)
for teams that migrate outside the application.

A component may let deployments hash-partition some of its tables
(``partitioned=``, see :mod:`haive_langgraph.db._partitions`); the runner
then rewrites their ``CREATE TABLE`` as it applies it, without touching the
recorded checksums.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from psycopg import sql

from haive_langgraph.db import _migrations_sql as SQL
from haive_langgraph.db._driver import Op, Step
from haive_langgraph.db._features import FramedTable, Table
from haive_langgraph.db._identifiers import validate_identifier
from haive_langgraph.db._partitions import (
    LAYOUT,
    PartitionKey,
    check_count,
    check_partition_keys,
    choose_partitions,
    creates_partitionable,
    expand,
)
from haive_langgraph.db._render import render_sql
from haive_langgraph.errors import MigrationError

# Advisory lock namespace of haive-langgraph (two-key form: this, hash of schema).
LOCK_CLASS_MIGRATIONS = 0x48560001
# Held (exclusive, for the session) by an online run; taken shared, without
# waiting, by the one-transaction runner. A session waiting for a lock while a
# CREATE INDEX CONCURRENTLY runs would deadlock with it (the build waits for every
# transaction holding a snapshot, the waiter for the build's session): so nothing
# waits for an online run, it is refused with a message instead.
LOCK_CLASS_ONLINE = 0x48560004

MIGRATIONS_TABLE = "haive_migrations"


MigrationKind = Literal["transaction", "backfill", "concurrent"]
"""How a migration runs (see :class:`Migration`)."""

BATCH_SIZE = "%(batch_size)s"
"""The placeholder of a backfill statement's batch size (its ``LIMIT``)."""

# "CREATE [UNIQUE] INDEX CONCURRENTLY IF NOT EXISTS <name> ON [ONLY] {schema}.<table>"
CONCURRENT_INDEX = re.compile(
    r"^\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+IF\s+NOT\s+EXISTS\s+"
    r"([a-z_][a-z0-9_]*)\s+ON\s+(?:ONLY\s+)?\{schema\}\.([a-z_][a-z0-9_]*)",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema change: a description and its statements.

    Attributes:
        description: What it does (recorded with it).
        statements: Its statements, with ``{schema}`` placeholders.
        kind: ``"transaction"`` (default): the statements run in one
            transaction. ``"backfill"``: one data-rewriting statement that
            takes ``%(batch_size)s`` as its ``LIMIT`` and changes only rows
            that still need it; the online runner (:mod:`~haive_langgraph.db.
            _online_migrations`) runs it again and again, each batch its own
            transaction, until it touches no row, so it is resumable after a
            crash. ``"concurrent"``: one ``CREATE [UNIQUE] INDEX CONCURRENTLY
            IF NOT EXISTS name ON {schema}.table ...``, run outside a
            transaction (an invalid leftover of a failed build is dropped first).
            Inside one transaction (``migrate_op``: ``setup()``, ``--sql``), a
            backfill runs once without a limit and an index is built without
            ``CONCURRENTLY``.
    """

    description: str
    statements: tuple[str, ...]
    kind: MigrationKind = "transaction"

    def __post_init__(self) -> None:
        if self.kind == "transaction":
            return
        if len(self.statements) != 1:
            raise ValueError(f"a {self.kind} migration has exactly one statement")
        (statement,) = self.statements
        if self.kind == "backfill" and BATCH_SIZE not in statement:
            raise ValueError(
                f"a backfill statement takes its batch size as {BATCH_SIZE} (its LIMIT)"
            )
        if self.kind == "concurrent" and not CONCURRENT_INDEX.match(statement):
            raise ValueError(
                "a concurrent migration is one 'CREATE [UNIQUE] INDEX CONCURRENTLY IF NOT "
                "EXISTS name ON {schema}.table ...'"
            )
        if self.kind not in ("backfill", "concurrent"):
            raise ValueError(f"unknown migration kind {self.kind!r}")

    @classmethod
    def backfill(cls, description: str, statement: str) -> Migration:
        """A batched data rewrite (see ``kind``)."""
        return cls(description, (statement,), kind="backfill")

    @classmethod
    def concurrent_index(cls, description: str, statement: str) -> Migration:
        """An index built with ``CREATE INDEX CONCURRENTLY`` (see ``kind``)."""
        return cls(description, (statement,), kind="concurrent")

    @property
    def checksum(self) -> str:
        text = "\n;\n".join(s.strip() for s in self.statements)
        if self.kind != "transaction":
            # Only the new kinds add their name: older checksums stay what they were.
            text = f"{self.kind}\n;\n{text}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def in_transaction(self, statement: str) -> tuple[str, dict[str, Any] | None]:
        """``statement`` as one transaction runs it, and its parameters.

        A backfill runs once with no limit (``LIMIT NULL`` is ``LIMIT ALL``);
        an index is built without ``CONCURRENTLY``.
        """
        if self.kind == "backfill":
            return statement, {"batch_size": None}
        if self.kind == "concurrent":
            return re.sub(r"\s+CONCURRENTLY\s+", " ", statement, count=1), None
        return statement, None


@dataclass(frozen=True, slots=True)
class Component:
    """A feature's migrations, in order; version N is ``migrations[N - 1]``, and its tables.

    The feature's entry in the one registry of tables (see
    :mod:`haive_langgraph.db._features`): a component that declares its
    ``tables`` must declare every table its migrations create.

    Attributes:
        name: The feature, as recorded in the migrations table.
        migrations: Append-only; the position is the version.
        requires: Components to migrate first.
        partitioned: Tables a deployment may hash-partition by their
            leading key columns (``haive-lg migrate --partitions N``).
        tables: Its tables and what erasure, backup, Supabase ... do with each.
        framed: Its columns holding codec frames (key rotation, ``keys status``).
    """

    name: str
    migrations: tuple[Migration, ...]
    requires: tuple[str, ...] = field(default=())
    partitioned: tuple[PartitionKey, ...] = field(default=())
    tables: tuple[Table, ...] = field(default=())
    framed: tuple[FramedTable, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.partitioned:
            check_partition_keys(
                self.name, self.partitioned, (s for m in self.migrations for s in m.statements)
            )
        if self.tables or self.framed:
            self._check_tables()

    def _check_tables(self) -> None:
        created = created_tables(s for m in self.migrations for s in m.statements)
        declared = {t.name for t in self.tables if t.migrated}
        if created != declared:
            raise ValueError(
                f"component {self.name!r}: its migrations create {sorted(created)} but it "
                f"declares {sorted(declared)} as migrated tables"
            )
        names = {t.name for t in self.tables}
        framed = {f.name for f in self.framed} | {o for f in self.framed for o in f.copy_tables}
        if unknown := sorted(framed - names):
            raise ValueError(
                f"component {self.name!r}: framed entries name {unknown}, not its tables"
            )

    @property
    def tenant_tables(self) -> tuple[str, ...]:
        """Its tables whose rows belong to tenants (row-level security, erasure, Supabase)."""
        return tuple(t.name for t in self.tables if t.tenant)

    @property
    def latest_version(self) -> int:
        return len(self.migrations)


# "CREATE [UNLOGGED] TABLE [IF NOT EXISTS] {schema}.<name>" in a migration statement.
_CREATES = re.compile(
    r"CREATE\s+(?:UNLOGGED\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?"
    r"\{schema\}\.([a-z_][a-z0-9_]*)\s*\(",
    re.IGNORECASE,
)


def created_tables(statements: Iterable[str]) -> set[str]:
    """The tables that migration statements create (``CREATE TABLE {schema}.name (``)."""
    return {match.group(1) for s in statements for match in _CREATES.finditer(s)}


def _bootstrap(schema: str) -> list[sql.SQL]:
    return [
        render_sql("CREATE SCHEMA IF NOT EXISTS {schema}", schema),
        render_sql(
            f"""
            CREATE TABLE IF NOT EXISTS {{schema}}.{MIGRATIONS_TABLE} (
                component   text COLLATE "C" NOT NULL,
                version     integer NOT NULL,
                checksum    text NOT NULL,
                description text NOT NULL,
                applied_at  timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (component, version)
            )
            """,
            schema,
        ),
    ]


Pending = list[tuple[Component, list[tuple[int, Migration]]]]
"""Each component with its migrations not applied yet (version, migration), in order."""


def migrate_op(
    components: Sequence[Component], schema: str, *, partitions: int | None = None
) -> Op[dict[str, list[int]]]:
    """The migration operation; run it inside one transaction.

    Every migration runs in that transaction, whatever its kind (see
    :meth:`Migration.in_transaction`); the online runner of
    :mod:`haive_langgraph.db._online_migrations` runs them one transaction
    (or batch) at a time instead.

    Args:
        components: What to migrate.
        schema: Target schema.
        partitions: Hash-partition the components' partitionable tables
            into this many partitions (a fresh schema only). Without it, a
            schema already partitioned keeps its count for new tables.

    Returns:
        The versions applied now, per component.

    Raises:
        MigrationError: an applied migration changed, the database is
            newer, or partitions cannot be chosen for this schema.
    """
    if partitions is not None:
        check_count(partitions)
    free = yield Step(SQL.TRY_ONLINE_SHARED, (LOCK_CLASS_ONLINE, schema), fetch="one")
    if not free[0]:
        return (yield from _during_online_run(components, schema))
    yield lock_step(schema, session=False)
    for bootstrap in _bootstrap(schema):
        yield Step(bootstrap, fetch="none")
    pending = yield from pending_op(components, schema, bootstrapped=True)
    chosen = yield from partitions_op(pending, schema, partitions)
    applied_now: dict[str, list[int]] = {}
    for component, todo in pending:
        applied_now[component.name] = []
        for version, migration in todo:
            for statement in migration.statements:
                for part in expand(statement, component.partitioned, chosen):
                    query, params = migration.in_transaction(part)
                    yield Step(render_sql(query, schema), params, fetch="none", prepare=False)
            yield record_step(schema, component, version, migration)
            applied_now[component.name].append(version)
    return applied_now


def _during_online_run(components: Sequence[Component], schema: str) -> Op[dict[str, list[int]]]:
    """Nothing to do, or a refusal: an online run holds the schema (see LOCK_CLASS_ONLINE)."""
    pending = yield from pending_op(components, schema)
    if needed := [f"{c.name} {v}" for c, todo in pending for v, _ in todo]:
        raise MigrationError(
            f"an online migration (haive-lg migrate) is running on schema {schema!r} and "
            f"this process needs migrations it has not applied yet ({', '.join(needed)}): "
            "start it again once that migration is done"
        )
    return {c.name: [] for c in components}


def lock_step(schema: str, *, session: bool, unlock: bool = False) -> Step:
    """Take (or release) the migrations lock of ``schema``: for the transaction, or for
    the session (the online runner, which commits many transactions under it)."""
    function = (
        "pg_advisory_unlock"
        if unlock
        else ("pg_advisory_lock" if session else "pg_advisory_xact_lock")
    )
    return Step(
        sql.SQL("SELECT {}(%s, hashtext(%s))").format(sql.Identifier(function)),
        (LOCK_CLASS_MIGRATIONS, schema),
        fetch="none",
    )


def bootstrap_steps(schema: str) -> list[Step]:
    """Create the schema and the migrations table if missing (one round)."""
    return [Step(statement, fetch="none") for statement in _bootstrap(schema)]


def pending_op(
    components: Sequence[Component], schema: str, *, bootstrapped: bool = False
) -> Op[Pending]:
    """The migrations not applied yet, checksums of the applied ones verified; reads only.

    Args:
        components: What to look at.
        schema: The schema.
        bootstrapped: The migrations table is known to exist (else asked).

    Raises:
        MigrationError: an applied migration changed, or the database is newer.
    """
    exists = bootstrapped
    if not bootstrapped:
        row = yield Step(
            "SELECT to_regclass(%s) IS NOT NULL", (f"{schema}.{MIGRATIONS_TABLE}",), fetch="one"
        )
        exists = bool(row and row[0])
    table = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(MIGRATIONS_TABLE))
    pending: Pending = []
    for component in components:
        rows = []
        if exists:
            rows = yield Step(
                sql.SQL(
                    "SELECT version, checksum FROM {} WHERE component = %s ORDER BY version"
                ).format(table),
                (component.name,),
            )
        recorded = {int(v): str(c) for v, c in rows}
        _verify(component, recorded)
        todo = [(v, m) for v, m in enumerate(component.migrations, start=1) if v not in recorded]
        pending.append((component, todo))
    return pending


def partitions_op(pending: Pending, schema: str, partitions: int | None) -> Op[int | None]:
    """The partition count for the tables the pending migrations create (or ``None``)."""
    keys = [k for c, _ in pending for k in c.partitioned]
    creates = any(
        creates_partitionable(s, c.partitioned)
        for c, todo in pending
        for _, m in todo
        for s in m.statements
    )
    if partitions is None and not (keys and creates):
        return None
    layout = yield Step(LAYOUT, (schema,))
    return choose_partitions(schema, keys, layout, partitions)


def record_step(schema: str, component: Component, version: int, migration: Migration) -> Step:
    """Record ``migration`` as applied (version, checksum, description)."""
    return Step(
        sql.SQL(
            "INSERT INTO {}.{} (component, version, checksum, description) VALUES (%s, %s, %s, %s)"
        ).format(sql.Identifier(schema), sql.Identifier(MIGRATIONS_TABLE)),
        (component.name, version, migration.checksum, migration.description),
        fetch="none",
    )


def status_op(components: Sequence[Component], schema: str) -> Op[dict[str, tuple[int, int]]]:
    """``{component: (applied version, latest version)}`` without changing anything."""
    exists = yield Step(
        "SELECT to_regclass(%s) IS NOT NULL",
        (f"{schema}.{MIGRATIONS_TABLE}",),
        fetch="one",
    )
    result: dict[str, tuple[int, int]] = {}
    for component in components:
        current = 0
        if exists and exists[0]:
            row = yield Step(
                sql.SQL("SELECT coalesce(max(version), 0) FROM {}.{} WHERE component = %s").format(
                    sql.Identifier(schema), sql.Identifier(MIGRATIONS_TABLE)
                ),
                (component.name,),
                fetch="one",
            )
            current = int(row[0])
        result[component.name] = (current, component.latest_version)
    return result


def _verify(component: Component, recorded: dict[int, str]) -> None:
    latest = component.latest_version
    if recorded and max(recorded) > latest:
        raise MigrationError(
            f"the database has {component.name} schema version {max(recorded)}, newer than "
            f"this haive-langgraph knows ({latest}); upgrade haive-langgraph"
        )
    for version, checksum in recorded.items():
        expected = component.migrations[version - 1].checksum
        if checksum != expected:
            raise MigrationError(
                f"{component.name} migration {version} "
                f"({component.migrations[version - 1].description!r}) was applied with "
                f"checksum {checksum}, but this code has {expected}: the migration changed "
                "after it was applied. Migrations are append-only; restore the original text."
            )


def migration_script(
    components: Iterable[Component],
    schema: str,
    conn: Any = None,
    *,
    partitions: int | None = None,
) -> str:
    """The full migration as a plain SQL script, for running outside the app.

    Args:
        components: What to include.
        schema: Target schema.
        conn: Any psycopg connection, used only to quote identifiers and
            literals exactly as the server expects. Without one, identifiers
            are quoted by psycopg's client-side rules.
        partitions: Create the partitionable tables hash-partitioned into
            this many partitions (for a fresh schema: on one whose tables
            exist unpartitioned, the script stops at the first partition).
    """
    validate_identifier(schema)
    if partitions is not None:
        check_count(partitions)
    parts = [
        "-- haive-langgraph schema migration",
        "BEGIN;",
        f"SELECT pg_advisory_xact_lock({LOCK_CLASS_MIGRATIONS}, hashtext({_literal(schema)}));",
    ]
    parts += [f"{s.as_string(conn).strip()};" for s in _bootstrap(schema)]
    for component in components:
        for version, migration in enumerate(component.migrations, start=1):
            parts.append(f"\n-- {component.name} {version}: {migration.description}")
            parts += [
                f"{_scripted(migration, render_sql(p, schema).as_string(conn))};"
                for s in migration.statements
                for p in expand(s, component.partitioned, partitions)
            ]
            # A printed script has no parameters: identifier quoted by psycopg,
            # literals by _literal (our own constants, quotes doubled).
            parts.append(
                f"INSERT INTO {sql.Identifier(schema).as_string(conn)}.{MIGRATIONS_TABLE} "  # noqa: S608
                "(component, version, checksum, description) VALUES ("
                f"{_literal(component.name)}, {version}, {_literal(migration.checksum)}, "
                f"{_literal(migration.description)}) ON CONFLICT DO NOTHING;"
            )
    parts.append("COMMIT;")
    return "\n".join(parts) + "\n"


def _scripted(migration: Migration, statement: str) -> str:
    """A statement of ``migration`` as the one-transaction script runs it."""
    text, params = migration.in_transaction(statement.strip())
    # The batch size is the only parameter: NULL, no limit.
    return text.replace(BATCH_SIZE, "NULL") if params else text


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
