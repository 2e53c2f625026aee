"""What the live schema holds: our tables, their columns, keys and dependencies.

Every operations feature (backup, audit, doctor) works from this
introspection instead of a list of known tables, so a feature's tables are
covered as soon as its migration created them. What it relies on is the
convention every table follows (``docs/architecture.md``):

* ``tenant_id`` leads the primary key of every tenant table; tables without
  it are *global* (configuration, bookkeeping);
* the primary-key column after ``tenant_id`` is the table's *entity*: the
  thread, thread family, conversation or namespace a row belongs to. Entity
  columns of type ``text`` (``thread_id``, ``family_id``,
  ``conversation_id`` ...) are the keys a selection follows from table to
  table;
* a column named ``<anything>_<entity column>`` (``parent_thread_id``)
  holds values of that entity.
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from haive_langgraph.db._driver import Op, Step
from haive_langgraph.db._migrations import MIGRATIONS_TABLE

TENANT_COLUMN = "tenant_id"

# Tables of ours that are never data: the migration bookkeeping.
BOOKKEEPING_TABLES = frozenset({MIGRATIONS_TABLE})


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a table, as the catalog describes it.

    Attributes:
        name: Column name.
        type: ``format_type`` of the column, relative to the table's schema
            (types of other schemas are qualified).
        not_null: Whether the column is ``NOT NULL``.
        default: Default expression, if any.
        collation: Collation name when it is not the type's default.
        generated: Expression of a ``GENERATED ALWAYS AS (...) STORED`` column.
        identity: ``"a"`` (always) or ``"d"`` (by default) for identity columns.
    """

    name: str
    type: str
    not_null: bool = False
    default: str | None = None
    collation: str | None = None
    generated: str | None = None
    identity: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type, "not_null": self.not_null}
        for key in ("default", "collation", "generated", "identity"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Column:
        return cls(
            name=str(data["name"]),
            type=str(data["type"]),
            not_null=bool(data.get("not_null", False)),
            default=data.get("default"),
            collation=data.get("collation"),
            generated=data.get("generated"),
            identity=data.get("identity"),
        )


@dataclass(frozen=True, slots=True)
class Table:
    """One of our tables.

    Attributes:
        name: Table name (unqualified).
        columns: Columns in their physical order.
        primary_key: Primary key columns, in key order (empty if none).
        references: Tables of the same schema this one has foreign keys to.
        estimated_rows: The planner's estimate of the row count.
    """

    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    references: tuple[str, ...] = ()
    estimated_rows: int = 0

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)

    @property
    def has_tenant(self) -> bool:
        return self.column(TENANT_COLUMN) is not None

    @property
    def is_global(self) -> bool:
        """Whether the table has no ``tenant_id`` (configuration, bookkeeping)."""
        return not self.has_tenant

    @property
    def is_tenant_level(self) -> bool:
        """Whether one row per tenant is all the table holds (primary key ``tenant_id``)."""
        return self.primary_key == (TENANT_COLUMN,)

    @property
    def entity(self) -> str | None:
        """The primary-key column after ``tenant_id``, if the key starts with it."""
        if len(self.primary_key) > 1 and self.primary_key[0] == TENANT_COLUMN:
            return self.primary_key[1]
        return None

    @property
    def data_columns(self) -> tuple[Column, ...]:
        """Columns whose values are stored (not generated)."""
        return tuple(c for c in self.columns if c.generated is None)


@dataclass(frozen=True, slots=True)
class Schema:
    """Our tables in one schema, in foreign-key order (referenced tables first)."""

    name: str
    tables: tuple[Table, ...]
    cycles: tuple[str, ...] = field(default=())

    def table(self, name: str) -> Table | None:
        return next((t for t in self.tables if t.name == name), None)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tables)

    def only(self, names: Iterable[str]) -> Schema:
        """The same schema reduced to the tables named."""
        keep = frozenset(names)
        return Schema(
            self.name,
            tuple(t for t in self.tables if t.name in keep),
            tuple(c for c in self.cycles if c in keep),
        )

    def key_columns(self) -> frozenset[str]:
        """Entity columns of type ``text`` of tenant tables: what selections follow."""
        keys: set[str] = set()
        for table in self.tables:
            entity = table.entity
            col = table.column(entity) if entity else None
            if col is not None and col.type == "text":
                keys.add(col.name)
        return frozenset(keys)

    def key_references(self, table: Table) -> dict[str, str]:
        """``{column: key column}`` of the columns of ``table`` holding key values."""
        keys = self.key_columns()
        out: dict[str, str] = {}
        for col in table.columns:
            if col.type != "text":
                continue
            if col.name in keys:
                out[col.name] = col.name
                continue
            for key in keys:
                if col.name.endswith(f"_{key}"):
                    out[col.name] = key
                    break
        return out


# -- catalog queries ---------------------------------------------------------------------

TABLES = """
SELECT c.oid, c.relname, greatest(c.reltuples, 0)::bigint,
       coalesce((
           SELECT array_agg(a.attname::text ORDER BY k.ord)
           FROM pg_index AS i
           CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
           JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
           WHERE i.indrelid = c.oid AND i.indisprimary
       ), '{}') AS pk
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition
ORDER BY c.relname
"""

COLUMNS = """
SELECT a.attrelid, a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       CASE WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, d.adrelid) END,
       CASE WHEN a.attgenerated <> '' THEN pg_get_expr(d.adbin, d.adrelid) END,
       nullif(a.attidentity, ''),
       CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation
            THEN quote_ident(co.collname) END
FROM pg_attribute AS a
JOIN pg_class AS c ON c.oid = a.attrelid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
JOIN pg_type AS t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
LEFT JOIN pg_collation AS co ON co.oid = a.attcollation
WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""

# Foreign keys between tables of the schema (the dependency order).
REFERENCES = """
SELECT co.conrelid, rc.relname::text
FROM pg_constraint AS co
JOIN pg_namespace AS n ON n.oid = co.connamespace
JOIN pg_class AS rc ON rc.oid = co.confrelid AND rc.relnamespace = n.oid
WHERE n.nspname = %s AND co.contype = 'f'
ORDER BY 1, 2
"""


def introspect_op(schema: str) -> Op[Schema]:
    """Read our tables in ``schema`` from the catalog (the migrations table excluded).

    Args:
        schema: A validated schema name.
    """
    tables = yield Step(TABLES, (schema,))
    columns = yield Step(COLUMNS, (schema,))
    references = yield Step(REFERENCES, (schema,))
    by_oid: dict[int, list[Column]] = {}
    for oid, name, typ, not_null, default, generated, identity, collation in columns:
        by_oid.setdefault(int(oid), []).append(
            Column(
                name=name,
                type=str(typ),
                not_null=bool(not_null),
                default=default,
                collation=collation,
                generated=generated,
                identity=identity,
            )
        )
    refs: dict[int, set[str]] = {}
    for oid, referenced in references:
        refs.setdefault(int(oid), set()).add(str(referenced))
    found: list[Table] = []
    for oid, name, estimate, pk in tables:
        if name in BOOKKEEPING_TABLES:
            continue
        found.append(
            Table(
                name=str(name),
                columns=tuple(by_oid.get(int(oid), ())),
                primary_key=tuple(pk),
                references=tuple(sorted(refs.get(int(oid), set()) - {name})),
                estimated_rows=int(estimate),
            )
        )
    ordered, cycles = dependency_order(found)
    return Schema(schema, tuple(ordered), tuple(cycles))


def dependency_order(tables: Iterable[Table]) -> tuple[list[Table], list[str]]:
    """Tables with the ones they reference first, ties by name.

    Returns:
        The ordered tables, and the names of tables caught in a reference
        cycle (appended at the end in name order).
    """
    by_name = {t.name: t for t in tables}
    pending = {name: {r for r in t.references if r in by_name} for name, t in by_name.items()}
    ready = [name for name, deps in pending.items() if not deps]
    heapq.heapify(ready)
    out: list[Table] = []
    while ready:
        name = heapq.heappop(ready)
        out.append(by_name[name])
        del pending[name]
        for other, deps in pending.items():
            if name in deps:
                deps.discard(name)
                if not deps:
                    heapq.heappush(ready, other)
    cycles = sorted(pending)
    out += [by_name[n] for n in cycles]
    return out, cycles


@functools.cache
def our_tables() -> frozenset[str]:
    """The tables of data haive-langgraph creates: those every component declares
    archived (``ops._migrate.archived_tables()``): the tables of its migrations,
    the store's vector table (created by ``setup()`` for a configured index),
    not the cache's versions (its state, not data).

    Backup writes only these, restore accepts only these: a table someone else
    created in the schema is theirs (``pg_dump`` it).
    """
    from haive_langgraph.ops._migrate import archived_tables

    return archived_tables()
