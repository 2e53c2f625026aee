"""Which rows of which tables a backup covers: the selection and each table's scope.

A selection names tables (include/exclude patterns), tenants, and rows by
column value (``threads`` is ``thread_id``, ``users`` is ``user_id``). Rows
selected by value are followed through the key columns of the live schema
(:mod:`haive_langgraph.ops._schema`): a thread brings its checkpoints and
writes, its thread family's stored values, the threads of that family
(copies and branches share values) and the threads it branched from; a user
brings the conversations with a row naming them, and all of those
conversations' rows. Nothing here knows a feature's tables by name.

Each table ends up with a :class:`TableScope`: what part of it the archive
holds. Restore uses the same scope to find rows already in the target
(refuse or replace) with the same predicate.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from psycopg import sql

from haive_langgraph.db._arrays import TextArray
from haive_langgraph.db._driver import Op, Step
from haive_langgraph.errors import ConfigurationError, NotFoundError
from haive_langgraph.ops._keys_sql import TENANT_KEYS
from haive_langgraph.ops._schema import TENANT_COLUMN, Schema, Table

ScopeKind = Literal["all", "tenants", "entities", "values", "shared"]


@dataclass(frozen=True, slots=True)
class Selection:
    """What a backup covers.

    Attributes:
        include: Table name patterns (``fnmatch``) to back up.
        exclude: Table name patterns to leave out.
        tenants: Only these tenants' rows (``None``: every tenant).
        where: Only rows reached from rows whose column holds one of the
            values, e.g. ``{"thread_id": ("t1",)}``.
        global_tables: Back up tables without ``tenant_id``. ``None``: only
            when nothing selects rows (a full backup).
    """

    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    tenants: tuple[str, ...] | None = None
    where: tuple[tuple[str, tuple[str, ...]], ...] = ()
    global_tables: bool | None = None

    @classmethod
    def build(
        cls,
        include: Sequence[str] | None,
        exclude: Sequence[str] | None,
        tenants: Sequence[str] | None,
        users: Sequence[str] | None,
        threads: Sequence[str] | None,
        where: Mapping[str, Sequence[str]] | None,
        global_tables: bool | None,
        tenant_keys: bool,
    ) -> Selection:
        """Validate and normalise the options of :func:`~haive_langgraph.ops.backup.backup`
        (in its order; the defaults are its)."""
        columns: dict[str, set[str]] = {}
        for column, values in (
            *(where or {}).items(),
            *((("user_id", users),) if users is not None else ()),
            *((("thread_id", threads),) if threads is not None else ()),
        ):
            if not isinstance(column, str) or not column:
                raise ConfigurationError(f"selection column {column!r} is not a column name")
            values = _strings(values, f"values of {column}")
            if not values:
                raise ConfigurationError(f"the selection by {column} names no value")
            columns.setdefault(column, set()).update(values)
        tenant_list = None
        if tenants is not None:
            tenant_list = tuple(sorted(set(_strings(tenants, "tenants"))))
            if not tenant_list:
                raise ConfigurationError("--tenant selection names no tenant")
        excluded = _strings(exclude, "exclude patterns") if exclude else []
        # Tenant keys stay out unless asked for: a crypto-shred must reach every archive.
        if not tenant_keys and TENANT_KEYS not in excluded:
            excluded.append(TENANT_KEYS)
        return cls(
            include=tuple(_strings(include, "include patterns")) if include else ("*",),
            exclude=tuple(excluded),
            tenants=tenant_list,
            where=tuple(sorted((c, tuple(sorted(v))) for c, v in columns.items())),
            global_tables=global_tables,
        )

    @property
    def selects_rows(self) -> bool:
        return self.tenants is not None or bool(self.where)

    @property
    def includes_global(self) -> bool:
        return self.global_tables if self.global_tables is not None else not self.selects_rows

    def wants(self, table: str) -> bool:
        return any(fnmatch.fnmatchcase(table, p) for p in self.include) and not any(
            fnmatch.fnmatchcase(table, p) for p in self.exclude
        )

    def canonical(self) -> dict[str, Any]:
        return self._shown(list)

    def digest(self) -> str:
        body = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(body).hexdigest()

    def summary(self) -> dict[str, Any]:
        """What the manifest shows in clear: counts, not the selected ids."""
        return self._shown(len)

    def _shown(self, values: Callable[[tuple[str, ...]], Any]) -> dict[str, Any]:
        """The selection, its selected ids (tenants, ``where`` values) shown by ``values``."""
        return {
            "include": list(self.include),
            "exclude": list(self.exclude),
            "tenants": values(self.tenants) if self.tenants is not None else None,
            "where": {c: values(v) for c, v in self.where},
            "global_tables": self.includes_global,
        }


def _strings(values: Iterable[Any] | None, what: str) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str | bytes):
        raise ConfigurationError(f"{what} must be a list of strings, not one string")
    out = []
    for v in values:
        if not isinstance(v, str):
            raise ConfigurationError(f"{what} must be strings, got {type(v).__name__} {v!r}")
        if "\x00" in v:
            raise ConfigurationError(f"{what}: {v!r} contains a NUL character")
        out.append(v)
    return out


@dataclass(slots=True)
class TableScope:
    """The part of a table an archive holds.

    Kinds:
        ``all``: every row. ``tenants``: rows of ``tenants``. ``entities``:
        rows whose (``tenant_id``, ``column``) is one of ``pairs``.
        ``values``: rows whose ``column`` is one of ``values`` (within
        ``tenants`` if given). ``shared``: the tenant-level rows of the
        tenants involved (a tenant's keys): restored only where absent,
        never replaced.
    """

    table: str
    kind: ScopeKind
    tenants: list[str] | None = None
    column: str | None = None
    pairs: list[tuple[str, str]] = field(default_factory=list)
    values: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"table": self.table, "kind": self.kind}
        if self.tenants is not None:
            out["tenants"] = self.tenants
        if self.column is not None:
            out["column"] = self.column
        if self.kind == "entities":
            out["pairs"] = [list(p) for p in self.pairs]
        if self.kind == "values":
            out["values"] = self.values
        return out

    @classmethod
    def from_dict(cls, data: Any) -> TableScope:
        """A scope as :meth:`as_dict` wrote it.

        Raises:
            ValueError: A field is missing, of the wrong type, or not one
                this kind of scope has.
        """
        if not isinstance(data, dict):
            raise ValueError("a scope is not an object")
        kind = data.get("kind")
        if not isinstance(kind, str) or kind not in _WIDTH:
            raise ValueError(f"unknown scope kind {kind!r}")
        allowed = {"table", "kind", "tenants", "column"} | (
            {"pairs"} if kind == "entities" else {"values"} if kind == "values" else set()
        )
        if set(data) - allowed:
            raise ValueError(
                f"fields {sorted(set(data) - allowed)} do not belong to a {kind} scope"
            )
        table, column = data.get("table"), data.get("column")
        tenants = data.get("tenants")
        if not isinstance(table, str) or not (column is None or isinstance(column, str)):
            raise ValueError("table or column is not a name")
        if tenants is not None and not _all_strings(tenants):
            raise ValueError("tenants is not a list of strings")
        if (kind in ("tenants", "shared") and tenants is None) or (
            kind in ("all", "entities") and tenants is not None
        ):
            raise ValueError(f"a {kind} scope has tenants where it must not, or none")
        if (column is None) != (kind not in ("entities", "values")):
            raise ValueError(f"a {kind} scope names a column only if it is entities or values")
        pairs = data.get("pairs", [])
        if not isinstance(pairs, list) or not all(
            isinstance(p, list) and len(p) == 2 and _all_strings(p) for p in pairs
        ):
            raise ValueError("pairs is not a list of [tenant, value] pairs")
        values = data.get("values", [])
        if not _all_strings(values):
            raise ValueError("values is not a list of strings")
        return cls(
            table=table,
            kind=cast(ScopeKind, kind),
            tenants=list(tenants) if tenants is not None else None,
            column=column,
            pairs=[(str(a), str(b)) for a, b in pairs],
            values=list(values),
        )

    def merged(self, other: TableScope) -> TableScope:
        """The union of two scopes of the same table (an incremental chain)."""
        if self.kind != other.kind or self.column != other.column:
            # Different shapes: the wider one wins; "all" covers everything.
            return self if _WIDTH[self.kind] >= _WIDTH[other.kind] else other
        tenants = (
            sorted(set(self.tenants or ()) | set(other.tenants or ()))
            if self.tenants is not None or other.tenants is not None
            else None
        )
        return TableScope(
            table=self.table,
            kind=self.kind,
            tenants=tenants,
            column=self.column,
            pairs=sorted(set(self.pairs) | set(other.pairs)),
            values=sorted(set(self.values) | set(other.values)),
        )

    def predicate(self, table: Table, alias: str = "t") -> tuple[sql.Composable, dict[str, Any]]:
        """A condition on ``table`` (as ``alias``) selecting the scope's rows, with parameters."""
        a = sql.Identifier(alias)
        if self.kind == "all":
            return sql.SQL("true"), {}
        tenant_cond = sql.SQL("{}.{} = ANY(%(scope_tenants)s::text[])").format(
            a, sql.Identifier(TENANT_COLUMN)
        )
        if self.kind in ("tenants", "shared"):
            return tenant_cond, {"scope_tenants": TextArray(self.tenants or [])}
        assert self.column is not None
        col = sql.Identifier(self.column)
        if self.kind == "entities":
            return (
                sql.SQL(
                    "({a}.{t}, {a}.{c}) IN (SELECT * FROM unnest("
                    "%(scope_pair_tenants)s::text[], %(scope_pair_values)s::text[]))"
                ).format(a=a, t=sql.Identifier(TENANT_COLUMN), c=col),
                {
                    "scope_pair_tenants": TextArray(p[0] for p in self.pairs),
                    "scope_pair_values": TextArray(p[1] for p in self.pairs),
                },
            )
        cond = sql.SQL("{}.{}::text = ANY(%(scope_values)s::text[])").format(a, col)
        params: dict[str, Any] = {"scope_values": TextArray(self.values)}
        if self.tenants is not None and table.has_tenant:
            cond = sql.SQL("({} AND {})").format(cond, tenant_cond)
            params["scope_tenants"] = TextArray(self.tenants)
        return cond, params


_WIDTH = {"all": 4, "tenants": 3, "shared": 2, "values": 1, "entities": 0}


def _all_strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


# -- computing scopes ---------------------------------------------------------------------


def _refs_where(
    schema: str, table: Table, refs: Sequence[str], where: sql.Composable
) -> sql.Composed:
    """The distinct (tenant, key references) of ``table``'s rows matching ``where``."""
    return sql.SQL("SELECT DISTINCT {tenant}, {refs} FROM {table} WHERE {where}").format(
        tenant=_tenant_of(table),
        refs=sql.SQL(", ").join(sql.Identifier(r) for r in refs),
        table=sql.Identifier(schema, table.name),
        where=where,
    )


def _tenant_of(table: Table) -> sql.Composable:
    return sql.Identifier(TENANT_COLUMN) if table.has_tenant else sql.SQL("''::text")


def scopes_op(schema: Schema, selection: Selection) -> Op[list[TableScope]]:
    """The scope of every table the selection covers, in the schema's table order.

    Run it in the backup's snapshot: the values it follows are read there.
    """
    tables = [t for t in schema.tables if selection.wants(t.name)]
    if not selection.selects_rows:
        return [
            TableScope(t.name, "all") for t in tables if selection.includes_global or t.has_tenant
        ]
    tenants = list(selection.tenants) if selection.tenants is not None else None
    where = dict(selection.where)
    if not where:
        out = []
        for t in tables:
            if t.has_tenant:
                out.append(TableScope(t.name, "tenants", tenants=tenants))
            elif selection.includes_global:
                out.append(TableScope(t.name, "all"))
        return out

    keys = schema.key_columns()
    found: dict[str, set[tuple[str, str]]] = {k: set() for k in keys}
    # Every tenant table of the schema is followed, selected or not: the
    # closure is a property of the data, the include patterns only decide
    # what is written.
    followed = [t for t in schema.tables if t.has_tenant]

    def tenant_filter(table: Table) -> tuple[sql.Composable, dict[str, Any]]:
        if tenants is None:
            return sql.SQL("true"), {}
        return sql.SQL("tenant_id = ANY(%(tenants)s::text[])"), {"tenants": TextArray(tenants)}

    def collect(rows: list[Any], refs: list[str], table: Table) -> bool:
        grew = False
        ref_map = schema.key_references(table)
        for row in rows:
            tenant = row[0]
            for value, column in zip(row[1:], refs, strict=True):
                if value is None:
                    continue
                pair = (str(tenant), str(value))
                bucket = found[ref_map[column]]
                if pair not in bucket:
                    bucket.add(pair)
                    grew = True
        return grew

    values_scopes: dict[str, TableScope] = {}
    matched: dict[str, bool] = dict.fromkeys(where, False)
    # Seeds: rows naming a selected value.
    for table in followed:
        for column, values in where.items():
            if table.column(column) is None:
                continue
            refs = sorted(schema.key_references(table))
            tf, tparams = tenant_filter(table)
            if not refs:
                hit = yield Step(
                    sql.SQL(
                        "SELECT EXISTS (SELECT 1 FROM {table} "
                        "WHERE {col}::text = ANY(%(v)s::text[]) AND {tf})"
                    ).format(
                        table=sql.Identifier(schema.name, table.name),
                        col=sql.Identifier(column),
                        tf=tf,
                    ),
                    {"v": TextArray(values), **tparams},
                    fetch="one",
                )
                matched[column] = matched[column] or bool(hit[0])
                if selection.wants(table.name):
                    values_scopes[table.name] = TableScope(
                        table.name, "values", tenants=tenants, column=column, values=list(values)
                    )
                continue
            rows = yield Step(
                _refs_where(
                    schema.name,
                    table,
                    refs,
                    sql.SQL("{col}::text = ANY(%(v)s::text[]) AND {tf}").format(
                        col=sql.Identifier(column), tf=tf
                    ),
                ),
                {"v": TextArray(values), **tparams},
            )
            matched[column] = matched[column] or bool(rows)
            collect(rows, refs, table)
    missing = [c for c, hit in matched.items() if not hit]
    if missing:
        shown = "; ".join(f"{c} in {list(where[c])[:5]!r}" for c in missing)
        scope = f" of tenants {tenants!r}" if tenants is not None else ""
        raise NotFoundError(f"no rows{scope} match the selection {shown}")

    # Closure: rows holding a found key value bring their other key values.
    queried: dict[tuple[str, str], set[tuple[str, str]]] = {}
    grew = True
    while grew:
        grew = False
        for table in followed:
            ref_map = schema.key_references(table)
            refs = sorted(ref_map)
            for column in refs:
                seen = queried.setdefault((table.name, column), set())
                new = found[ref_map[column]] - seen
                if not new:
                    continue
                seen |= new
                batch = sorted(new)
                rows = yield Step(
                    _refs_where(
                        schema.name,
                        table,
                        refs,
                        sql.SQL(
                            "({tenant}, {col}) IN (SELECT * FROM unnest(%(t)s::text[], %(v)s::text[]))"
                        ).format(tenant=_tenant_of(table), col=sql.Identifier(column)),
                    ),
                    {"t": TextArray(p[0] for p in batch), "v": TextArray(p[1] for p in batch)},
                )
                grew = collect(rows, refs, table) or grew

    involved = sorted({p[0] for pairs in found.values() for p in pairs} | set(tenants or ()))
    out = []
    for table in tables:
        entity = table.entity
        if table.is_global:
            if selection.includes_global:
                out.append(TableScope(table.name, "all"))
        elif entity is not None and entity in keys:
            out.append(
                TableScope(table.name, "entities", column=entity, pairs=sorted(found[entity]))
            )
        elif table.name in values_scopes:
            out.append(values_scopes[table.name])
        elif table.is_tenant_level:
            out.append(TableScope(table.name, "shared", tenants=involved))
    return out
