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

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

from haive_langgraph.db import Op, Step
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
        ddl: Statements recreating the table, relative to ``search_path``
            set to the schema (constraints, indexes, row-level security).
        estimated_rows: The planner's estimate of the row count.
    """

    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    references: tuple[str, ...] = ()
    ddl: tuple[str, ...] = ()
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
    extensions: tuple[tuple[str, str], ...] = field(default=())
    """(extension, its schema) of the extensions whose types our columns use."""

    def table(self, name: str) -> Table | None:
        return next((t for t in self.tables if t.name == name), None)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tables)

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
       c.relrowsecurity, c.relforcerowsecurity,
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

# Constraints other than NOT NULL, in an order that can be replayed: primary
# and unique keys before the foreign keys that may need them.
CONSTRAINTS = """
SELECT co.conrelid, co.conname::text, co.contype::text, pg_get_constraintdef(co.oid),
       rc.relname::text
FROM pg_constraint AS co
JOIN pg_namespace AS n ON n.oid = co.connamespace
LEFT JOIN pg_class AS rc ON rc.oid = co.confrelid AND rc.relnamespace = n.oid
WHERE n.nspname = %s AND co.contype IN ('p', 'u', 'f', 'c', 'x') AND co.conrelid <> 0
ORDER BY co.conrelid, CASE co.contype WHEN 'p' THEN 0 WHEN 'u' THEN 1 WHEN 'c' THEN 2
         WHEN 'x' THEN 3 ELSE 4 END, co.conname
"""

INDEXES = """
SELECT i.indrelid, pg_get_indexdef(i.indexrelid)
FROM pg_index AS i
JOIN pg_class AS ic ON ic.oid = i.indexrelid
JOIN pg_namespace AS n ON n.oid = ic.relnamespace
WHERE n.nspname = %s
  AND NOT EXISTS (SELECT 1 FROM pg_constraint AS co WHERE co.conindid = i.indexrelid)
ORDER BY i.indrelid, ic.relname
"""

# Extensions owning the types (or array element types) of our columns.
EXTENSIONS = """
SELECT DISTINCT e.extname::text, en.nspname::text
FROM pg_attribute AS a
JOIN pg_class AS c ON c.oid = a.attrelid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
JOIN pg_type AS t ON t.oid = a.atttypid
JOIN pg_depend AS d
  ON d.classid = 'pg_type'::regclass AND d.objid IN (t.oid, t.typelem) AND d.deptype = 'e'
JOIN pg_extension AS e ON e.oid = d.refobjid
JOIN pg_namespace AS en ON en.oid = e.extnamespace
WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY 1
"""

POLICIES = """
SELECT c.oid, p.polname::text,
       p.polpermissive,
       CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                     WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
       CASE WHEN p.polroles = '{0}' THEN 'PUBLIC'
            ELSE (SELECT string_agg(quote_ident(r.rolname), ', ')
                  FROM pg_roles AS r WHERE r.oid = ANY(p.polroles)) END,
       pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)
FROM pg_policy AS p
JOIN pg_class AS c ON c.oid = p.polrelid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = %s
ORDER BY c.oid, p.polname
"""


def introspect_op(schema: str, *, with_ddl: bool = False) -> Op[Schema]:
    """Read our tables in ``schema`` from the catalog (the migrations table excluded).

    Args:
        schema: A validated schema name.
        with_ddl: Also collect the statements that recreate each table. Run
            it with ``search_path`` set to ``schema`` only, so that names of
            the schema come out unqualified.
    """
    tables = yield Step(TABLES, (schema,))
    columns = yield Step(COLUMNS, (schema,))
    constraints = yield Step(CONSTRAINTS, (schema,))
    extensions = yield Step(EXTENSIONS, (schema,))
    indexes: list[Any] = []
    policies: list[Any] = []
    if with_ddl:
        indexes = yield Step(INDEXES, (schema,))
        policies = yield Step(POLICIES, (schema,))
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
    cons: dict[int, list[str]] = {}
    for oid, conname, contype, definition, referenced in constraints:
        cons.setdefault(int(oid), []).append(
            f"ALTER TABLE {{table}} ADD CONSTRAINT {_quote(conname)} {definition}"
        )
        if contype == "f" and referenced:
            refs.setdefault(int(oid), set()).add(referenced)
    idx: dict[int, list[str]] = {}
    for oid, definition in indexes:
        idx.setdefault(int(oid), []).append(_unqualify_index(str(definition), schema))
    pols: dict[int, list[str]] = {}
    for oid, name, permissive, cmd, roles, qual, check in policies:
        text = (
            f"CREATE POLICY {_quote(name)} ON {{table}} AS "
            f"{'PERMISSIVE' if permissive else 'RESTRICTIVE'} FOR {cmd} TO {roles}"
        )
        if qual is not None:
            text += f" USING ({qual})"
        if check is not None:
            text += f" WITH CHECK ({check})"
        pols.setdefault(int(oid), []).append(text)
    found: list[Table] = []
    for oid, name, estimate, rls, force_rls, pk in tables:
        if name in BOOKKEEPING_TABLES:
            continue
        oid = int(oid)
        cols = tuple(by_oid.get(oid, ()))
        ddl: tuple[str, ...] = ()
        if with_ddl:
            statements = [_create_table(cols), *cons.get(oid, []), *idx.get(oid, [])]
            if rls:
                statements.append("ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
            if force_rls:
                statements.append("ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
            statements += pols.get(oid, [])
            ddl = tuple(statements)
        found.append(
            Table(
                name=str(name),
                columns=cols,
                primary_key=tuple(pk),
                references=tuple(sorted(refs.get(oid, set()) - {name})),
                ddl=ddl,
                estimated_rows=int(estimate),
            )
        )
    ordered, cycles = dependency_order(found)
    return Schema(
        schema, tuple(ordered), tuple(cycles), tuple((str(e), str(n)) for e, n in extensions)
    )


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


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _create_table(columns: Sequence[Column]) -> str:
    parts = []
    for col in columns:
        text = f"{_quote(col.name)} {col.type}"
        if col.collation:
            text += f" COLLATE {col.collation}"
        if col.generated is not None:
            text += f" GENERATED ALWAYS AS ({col.generated}) STORED"
        elif col.identity is not None:
            text += (
                " GENERATED ALWAYS AS IDENTITY"
                if col.identity == "a"
                else (" GENERATED BY DEFAULT AS IDENTITY")
            )
        elif col.default is not None:
            text += f" DEFAULT {col.default}"
        if col.not_null:
            text += " NOT NULL"
        parts.append(text)
    return "CREATE TABLE {table} (\n    " + ",\n    ".join(parts) + "\n)"


def _unqualify_index(definition: str, schema: str) -> str:
    """``pg_get_indexdef`` always qualifies the table: make it relative to ``search_path``."""
    for prefix in (" ON ONLY ", " ON "):
        qualified = f"{prefix}{schema}."
        if qualified in definition:
            return definition.replace(qualified, prefix, 1)
    return definition


def render_ddl(statement: str, table: str) -> sql.Composed:
    """A captured DDL statement with ``{table}`` filled in (unqualified: ``search_path``)."""
    return sql.SQL(
        statement.replace("{", "{{").replace("}", "}}").replace("{{table}}", "{table}")
    ).format(table=sql.Identifier(table))
