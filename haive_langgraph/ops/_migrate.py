"""Apply (or print) the migrations of every feature at once; check a schema is migrated."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from haive_langgraph.db._config import PersistenceConfig
from haive_langgraph.db._connections import ConnectionSource
from haive_langgraph.db._driver import Op, Step
from haive_langgraph.db._dsn import describe_dsn, resolve_dsn
from haive_langgraph.db._features import FramedTable
from haive_langgraph.db._identifiers import validate_identifier
from haive_langgraph.db._migrations import Component, migrate_op, status_op
from haive_langgraph.errors import MigrationError


def all_components() -> list[Component]:
    """Every feature's component, in dependency order: the one registry of features.

    Each component declares its migrations, its tables and its framed
    columns (see :mod:`haive_langgraph.db._features`); migration, tenant
    erasure (:func:`tenant_tables`), key rotation (:func:`framed_tables`),
    backup and restore (:func:`archived_tables`) and Supabase iterate it.
    """
    # Imported here: the features build on this package's siblings.
    from haive_langgraph.checkpointers._sql import COMPONENT as checkpoints
    from haive_langgraph.memory.conversations._sql import COMPONENT as conversations
    from haive_langgraph.ops._keys_sql import COMPONENT as keys
    from haive_langgraph.ops._query_stats_sql import COMPONENT as query_stats
    from haive_langgraph.ops.audit._sql import COMPONENT as audit
    from haive_langgraph.ops.cache._sql import COMPONENT as cache
    from haive_langgraph.stores._sql import COMPONENT as store
    from haive_langgraph.tenants._analytics_sql import COMPONENT as tenant_analytics
    from haive_langgraph.tenants._quota_sql import COMPONENT as tenant_quotas
    from haive_langgraph.tenants._sql import COMPONENT as tenants

    return [
        *(checkpoints, store, keys, conversations, audit, cache),
        *(tenants, tenant_quotas, tenant_analytics, query_stats),
    ]


def tenant_tables() -> tuple[str, ...]:
    """Every table whose rows belong to tenants: what tenant erasure empties, what
    row-level security and Supabase's policies cover. A table referencing
    another comes first (its rows go first)."""
    return tuple(name for c in all_components() for name in c.tenant_tables)


def framed_tables() -> tuple[FramedTable, ...]:
    """Every column holding codec frames: what key rotation and ``keys status`` cover."""
    return tuple(f for c in all_components() for f in c.framed)


def archived_tables() -> frozenset[str]:
    """The tables of data: backup writes only these, restore accepts only these."""
    return frozenset(t.name for c in all_components() for t in c.tables if t.archived)


def migrate_all(
    dsn: str | None = None,
    *,
    schema: str | None = None,
    config: PersistenceConfig | None = None,
    partitions: int | None = None,
) -> dict[str, list[int]]:
    """Apply every feature's pending migrations; returns the versions applied now.

    ``partitions`` hash-partitions the tables with the most rows (a fresh
    schema only; see ``docs/scaling.md``).
    """
    config = config or PersistenceConfig()
    target = schema or config.schema_name
    source = ConnectionSource(resolve_dsn(dsn, config=config), config=config)
    try:
        return source.run(
            lambda: migrate_op(all_components(), target, partitions=partitions), transaction=True
        )
    finally:
        source.close()


@dataclass(frozen=True, slots=True)
class SchemaState:
    """What a schema holds of ours, read without changing anything.

    Attributes:
        database: The database's name (``current_database()``).
        schema: The schema.
        exists: Whether the schema exists.
        versions: ``{component: (applied version, latest version)}``.
    """

    database: str
    schema: str
    exists: bool
    versions: dict[str, tuple[int, int]]

    def problem(self, needs: Iterable[str] = (), *, server: str = "") -> str | None:
        """Why a command that creates nothing cannot use this schema, or ``None``.

        The schema must exist and hold our tables (some component migrated),
        and each component in ``needs`` must be at this code's version.
        """
        where = f"database {self.database!r}" + (f" ({server})" if server else "")
        run = (
            f"run `haive-lg migrate --schema {self.schema}` on that database first "
            "(this command creates nothing)"
        )
        if not self.exists:
            return f"schema {self.schema!r} does not exist in {where}: {run}"
        if not any(applied for applied, _ in self.versions.values()):
            return f"schema {self.schema!r} in {where} holds no haive-langgraph tables: {run}"
        for name in needs:
            applied, latest = self.versions[name]
            if applied > latest:
                return (
                    f"the {name} tables in schema {self.schema!r} of {where} are at version "
                    f"{applied}, newer than this haive-langgraph knows ({latest}): upgrade "
                    "haive-langgraph"
                )
            if applied == 0:
                return (
                    f"the {name} tables are not set up in schema {self.schema!r} of {where}: {run}"
                )
            if applied < latest:
                return (
                    f"the {name} tables in schema {self.schema!r} of {where} are at version "
                    f"{applied}, this haive-langgraph needs {latest}: {run}"
                )
        return None


def schema_state_op(schema: str) -> Op[SchemaState]:
    """Read :class:`SchemaState` (catalog and migration records only)."""
    row = yield Step(
        "SELECT current_database(), EXISTS (SELECT FROM pg_namespace WHERE nspname = %s)",
        (schema,),
        fetch="one",
    )
    versions = yield from status_op(all_components(), schema)
    return SchemaState(str(row[0]), schema, bool(row[1]), versions)


def check_schema(
    dsn: str | None = None,
    *,
    schema: str | None = None,
    needs: Iterable[str] = (),
    config: PersistenceConfig | None = None,
) -> SchemaState:
    """Check, without creating anything, that ``schema`` holds migrated tables.

    For commands that must not create what they do not find (``haive-lg
    threads``, ``history`` ... on a mistyped ``--schema`` or ``--dsn``).

    Args:
        dsn: The server (default: ``HAIVE_DATABASE_URL``, ``DATABASE_URL``,
            the embedded server).
        schema: The schema (default from the config: ``haive``).
        needs: Components (``"checkpoints"``, ``"audit"`` ...) that must be
            at this code's version.
        config: Connection settings.

    Raises:
        MigrationError: The schema is missing, holds none of our tables, or
            a needed component is not migrated (or newer than this code);
            the message names the schema and the database (never a password)
            and says to run ``haive-lg migrate``.
    """
    config = config or PersistenceConfig()
    target = validate_identifier(schema or config.schema_name, what="schema name")
    resolved = resolve_dsn(dsn, config=config)
    needed = list(needs)
    known = {c.name for c in all_components()}
    if unknown := [n for n in needed if n not in known]:
        raise ValueError(f"unknown components {unknown}; known: {sorted(known)}")
    source = ConnectionSource(resolved, config=config)
    try:
        state = source.run(lambda: schema_state_op(target), read=True)
    finally:
        source.close()
    if (problem := state.problem(needed, server=describe_dsn(resolved))) is not None:
        raise MigrationError(problem)
    return state
