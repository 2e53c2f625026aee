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
from typing import Any

from psycopg import sql

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

MIGRATIONS_TABLE = "haive_migrations"


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema change: a description and its statements."""

    description: str
    statements: tuple[str, ...]

    @property
    def checksum(self) -> str:
        text = "\n;\n".join(s.strip() for s in self.statements)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


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


def migrate_op(
    components: Sequence[Component], schema: str, *, partitions: int | None = None
) -> Op[dict[str, list[int]]]:
    """The migration operation; run it inside one transaction.

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
    yield Step(
        "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
        (LOCK_CLASS_MIGRATIONS, schema),
        fetch="none",
    )
    for bootstrap in _bootstrap(schema):
        yield Step(bootstrap, fetch="none")
    applied_now: dict[str, list[int]] = {}
    table = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(MIGRATIONS_TABLE))
    pending: list[tuple[Component, list[tuple[int, Migration]]]] = []
    for component in components:
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
    keys = [k for c in components for k in c.partitioned]
    creates = any(
        creates_partitionable(s, c.partitioned)
        for c, todo in pending
        for _, m in todo
        for s in m.statements
    )
    chosen: int | None = None
    if partitions is not None or (keys and creates):
        layout = yield Step(LAYOUT, (schema,))
        chosen = choose_partitions(schema, keys, layout, partitions)
    for component, todo in pending:
        applied_now[component.name] = []
        for version, migration in todo:
            for statement in migration.statements:
                for part in expand(statement, component.partitioned, chosen):
                    yield Step(render_sql(part, schema), fetch="none", prepare=False)
            yield Step(
                sql.SQL(
                    "INSERT INTO {} (component, version, checksum, description) "
                    "VALUES (%s, %s, %s, %s)"
                ).format(table),
                (component.name, version, migration.checksum, migration.description),
                fetch="none",
            )
            applied_now[component.name].append(version)
    return applied_now


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
                f"{render_sql(p, schema).as_string(conn).strip()};"
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


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
