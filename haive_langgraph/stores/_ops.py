"""Store operations as sans-I/O generators, and the SQL they assemble.

Nothing here touches a connection: each operation yields steps (statements
and parameters), or rounds of steps sent together, and receives their rows.
The connection sources of :mod:`haive_langgraph.db` run them on a sync or an
async connection, binding the store's tenant where row-level security applies.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from langgraph.store.base import (
    GetOp,
    Item,
    ListNamespacesOp,
    Result,
)
from psycopg import sql

from haive_langgraph.codec import Codec
from haive_langgraph.db._arrays import BoolArray, ByteaArray, IntArray, TextArray
from haive_langgraph.db._driver import Op, Step
from haive_langgraph.db._limits import MAX_INT4, check_count
from haive_langgraph.db._migrations import migrate_op
from haive_langgraph.errors import ConfigurationError
from haive_langgraph.stores import _sql as S
from haive_langgraph.stores._config import ResourceQuota, TenantUsage, VectorIndexSpec
from haive_langgraph.stores._index_ops import index_valid_op, maintenance_batch_op
from haive_langgraph.stores._values import (
    Namespace,
    PgvectorParam,
    decode_value,
    ns_text,
    ns_upper,
    row_context,
    vector_array,
)


@dataclass(frozen=True, slots=True)
class VectorTypes:
    """OIDs of pgvector's type and its array type in this database."""

    oid: int
    array_oid: int


@dataclass(slots=True)
class Statements:
    """Statements of one schema, rendered once."""

    schema: str
    get_one: sql.Composed = field(init=False)
    get_one_refresh: sql.Composed = field(init=False)
    get_many: sql.Composed = field(init=False)

    def __post_init__(self) -> None:
        self.get_one = S.q(S.GET_ONE, self.schema)
        self.get_one_refresh = S.q(S.GET_ONE_REFRESH, self.schema)
        self.get_many = S.q(S.GET_MANY, self.schema)

    def q(self, template: str, **parts: sql.Composable) -> sql.Composed:
        return sql.SQL(template).format(schema=sql.Identifier(self.schema), **parts)

    def table(self, name: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(name))


class ScopeSizes:
    """Which search scopes (tenant, namespace prefix) recently held many vectors.

    A vector search first counts its scope's vectors (up to the exact-search
    threshold) to choose exact search or the index. For a scope known to be
    large the count is skipped for a while: were the scope to shrink, the
    index scan would come up short and the search would fall back to exact,
    so a stale entry costs time, never results.
    """

    TTL_SECONDS = 30.0
    MAX_ENTRIES = 4096

    def __init__(self) -> None:
        self._large: dict[tuple[str, Namespace], float] = {}

    def is_large(self, tenant_id: str, prefix: Namespace) -> bool:
        until = self._large.get((tenant_id, prefix))
        return until is not None and until > time.monotonic()

    def record(self, tenant_id: str, prefix: Namespace, large: bool) -> None:
        if not large:
            self._large.pop((tenant_id, prefix), None)
            return
        if len(self._large) >= self.MAX_ENTRIES:
            self._large.clear()
        self._large[(tenant_id, prefix)] = time.monotonic() + self.TTL_SECONDS


@dataclass(slots=True)
class Context:
    """What every operation of one store needs."""

    statements: Statements
    tenant_id: str
    codec: Codec
    spec: VectorIndexSpec | None
    vector_types: VectorTypes | None
    filter_paths: tuple[tuple[str, ...], ...] | None
    scopes: ScopeSizes = field(default_factory=ScopeSizes)


# -- namespace conditions -------------------------------------------------------------


def prefix_condition(
    alias: str, prefix: Namespace, params: dict[str, Any], name: str
) -> sql.Composable:
    """Rows whose namespace starts with ``prefix`` (segment by segment), index-friendly."""
    if not prefix:
        return sql.SQL("")
    params[name] = TextArray(prefix)
    params[f"{name}_hi"] = TextArray(ns_upper(prefix))
    return sql.SQL(" AND {a}.namespace >= {lo} AND {a}.namespace < {hi}").format(
        a=sql.SQL(alias), lo=sql.Placeholder(name), hi=sql.Placeholder(f"{name}_hi")
    )


def _and(conditions: Sequence[sql.Composable]) -> sql.Composable:
    if not conditions:
        return sql.SQL("")
    return sql.SQL(" AND ") + sql.SQL(" AND ").join(conditions)


# -- reading rows ----------------------------------------------------------------------


def _item(
    ctx: Context, namespace: Namespace, key: str, frame: bytes, created: datetime, updated: datetime
) -> Item:
    value = decode_value(frame, ctx.codec, row_context(ctx.tenant_id, namespace, key))
    return Item(value=value, key=key, namespace=namespace, created_at=created, updated_at=updated)


# -- get -------------------------------------------------------------------------------


def get_step(ctx: Context, gets: Sequence[tuple[int, GetOp]]) -> Step:
    """All gets of a batch in one statement (a simpler one for a single get)."""
    st = ctx.statements
    if len(gets) == 1:
        op = gets[0][1]
        return Step(
            st.get_one_refresh if op.refresh_ttl else st.get_one,
            {"t": ctx.tenant_id, "ns": TextArray(op.namespace), "key": op.key},
            fetch="all",
        )
    return Step(
        st.get_many,
        {
            "t": ctx.tenant_id,
            "ns": TextArray(ns_text(op.namespace) for _, op in gets),
            "keys": TextArray(op.key for _, op in gets),
            "ord": IntArray(range(len(gets))),
            "refresh": BoolArray(op.refresh_ttl for _, op in gets),
        },
        fetch="all",
    )


def get_results(
    ctx: Context, gets: Sequence[tuple[int, GetOp]], rows: list[Any], results: list[Result]
) -> None:
    if len(gets) == 1:
        idx, op = gets[0]
        if rows:
            frame, created, updated = rows[0]
            results[idx] = _item(ctx, op.namespace, op.key, frame, created, updated)
        return
    for ord_, frame, created, updated in rows:
        idx, op = gets[ord_]
        results[idx] = _item(ctx, op.namespace, op.key, frame, created, updated)


# -- list namespaces --------------------------------------------------------------------


def list_namespaces_step(ctx: Context, op: ListNamespacesOp) -> Step:
    """Distinct namespaces by a loose index scan: one index probe per namespace, not per item."""
    params: dict[str, Any] = {"t": ctx.tenant_id, "lim": op.limit, "off": op.offset}
    conditions: list[sql.Composable] = []
    lead: Namespace = ()
    prefixes: list[tuple[str, ...]] = []
    suffixed = False
    for i, cond in enumerate(op.match_conditions or ()):
        path = tuple(cond.path)
        if not path:
            continue
        if cond.match_type == "prefix":
            prefixes.append(path)
            fixed: list[str] = []
            for label in path:
                if label == "*":
                    break
                fixed.append(label)
            if len(fixed) > len(lead):
                lead = tuple(fixed)
            conditions.extend(_match(path, i, params, suffix=False))
        elif cond.match_type == "suffix":
            suffixed = True
            conditions.extend(_match(path, i, params, suffix=True))
        else:
            raise ConfigurationError(f"unknown namespace match type {cond.match_type!r}")
    depth = op.max_depth
    if depth is not None:
        # It slices an array: an `integer` subscript.
        check_count("max_depth", depth, minimum=1, maximum=MAX_INT4)
    range_ = prefix_condition("s", lead, params, "lead")
    # With max_depth and only short prefix conditions, whole groups of
    # namespaces sharing the first max_depth labels are skipped at once.
    skip_groups = depth is not None and not suffixed and all(len(p) <= depth for p in prefixes)
    if skip_groups:
        params["depth"] = depth
        params["depth_1"] = depth - 1  # type: ignore[operator]
        step_bound = sql.SQL(
            " AND s.namespace >= CASE WHEN cardinality(w.ns) >= %(depth)s"
            ' THEN (w.ns[1:%(depth_1)s] || (w.ns[%(depth)s] || chr(1)))::text[] COLLATE "C"'
            " ELSE w.ns END"
        )
    else:
        step_bound = sql.SQL("")
    if depth is not None:
        params["depth"] = depth
        shown = sql.SQL("w.ns[1:%(depth)s]")
    else:
        shown = sql.SQL("w.ns")
    query = ctx.statements.q(
        """
WITH RECURSIVE walk(ns) AS (
    (SELECT s.namespace FROM {schema}.store_items AS s
     WHERE s.tenant_id = %(t)s{range} AND (s.expires_at IS NULL OR s.expires_at > now())
     ORDER BY s.namespace LIMIT 1)
    UNION ALL
    SELECT (SELECT s.namespace FROM {schema}.store_items AS s
            WHERE s.tenant_id = %(t)s AND s.namespace > w.ns{step_bound}{range}
              AND (s.expires_at IS NULL OR s.expires_at > now())
            ORDER BY s.namespace LIMIT 1)
    FROM walk AS w
    WHERE w.ns IS NOT NULL
)
SELECT DISTINCT {shown} AS ns
FROM walk AS w
WHERE w.ns IS NOT NULL{conditions}
ORDER BY ns
LIMIT %(lim)s OFFSET %(off)s
""",
        range=range_,
        step_bound=step_bound,
        shown=shown,
        conditions=_and(conditions),
    )
    return Step(query, params, fetch="all")


def _match(
    path: tuple[str, ...], i: int, params: dict[str, Any], *, suffix: bool
) -> list[sql.Composable]:
    out: list[sql.Composable] = []
    params[f"m{i}_len"] = len(path)
    out.append(sql.SQL("cardinality(w.ns) >= {}").format(sql.Placeholder(f"m{i}_len")))
    for j, label in enumerate(path):
        if label == "*":
            continue
        name = f"m{i}_{j}"
        params[name] = label
        if suffix:
            params[f"{name}_pos"] = len(path) - j - 1
            out.append(
                sql.SQL("w.ns[cardinality(w.ns) - {}] = {}").format(
                    sql.Placeholder(f"{name}_pos"), sql.Placeholder(name)
                )
            )
        else:
            params[f"{name}_pos"] = j + 1
            out.append(
                sql.SQL("w.ns[{}] = {}").format(
                    sql.Placeholder(f"{name}_pos"), sql.Placeholder(name)
                )
            )
    return out


# -- put ---------------------------------------------------------------------------------


@dataclass(slots=True)
class PutPlan:
    """The arrays of one batched write."""

    del_ns: TextArray = field(default_factory=TextArray)
    del_keys: TextArray = field(default_factory=TextArray)
    ns: TextArray = field(default_factory=TextArray)
    keys: TextArray = field(default_factory=TextArray)
    values: ByteaArray = field(default_factory=ByteaArray)
    docs: TextArray = field(default_factory=TextArray)
    ttls: TextArray = field(default_factory=TextArray)
    # The text of each item's indexed fields, for the tsvector (hybrid search only).
    texts: TextArray = field(default_factory=TextArray)
    v_ns: TextArray = field(default_factory=TextArray)
    v_keys: TextArray = field(default_factory=TextArray)
    v_fields: TextArray = field(default_factory=TextArray)
    v_docs: TextArray = field(default_factory=TextArray)
    v_emb: list[bytes] = field(default_factory=list)


def put_step(ctx: Context, plan: PutPlan, *, indexed: bool = True) -> Step:
    """Every write of a batch in one statement: deletes, upserts, stale vectors, new vectors."""
    st = ctx.statements
    parts: list[sql.Composable] = []
    params: dict[str, Any] = {"t": ctx.tenant_id}
    if plan.del_keys:
        parts.append(st.q(S.PUT_DELETE))
        params.update(del_ns=plan.del_ns, del_keys=plan.del_keys)
    if plan.keys:
        text = ctx.spec.text if ctx.spec is not None else None
        upsert = S.PUT_UPSERT_PLAIN if text is None else S.PUT_UPSERT_TEXT
        parts.append(st.q(S.PUT_UPSERT, **{k: sql.SQL(v) for k, v in upsert.items()}))
        params.update(
            ns=plan.ns, keys=plan.keys, values=plan.values, docs=plan.docs, ttls=plan.ttls
        )
        if text is not None:
            params.update(tscfg=text.config, texts=plan.texts)
        if ctx.spec is not None:
            parts.append(st.q(S.PUT_STALE))
            params.update(v_ns=plan.v_ns, v_keys=plan.v_keys, v_fields=plan.v_fields)
            if plan.v_keys:
                assert ctx.vector_types is not None
                parts.append(st.q(S.PUT_VECTORS))
                params["indexed"] = indexed
                params["v_docs"] = plan.v_docs
                params["v_emb"] = PgvectorParam(
                    vector_array(plan.v_emb, ctx.vector_types.oid), ctx.vector_types.array_oid
                )
    query = sql.SQL("WITH ") + sql.SQL(",\n").join(parts) + sql.SQL("\nSELECT 1")
    return Step(query, params, fetch="one")


# -- setup, maintenance, tenants ----------------------------------------------------------


def setup_op(schema: str, spec: VectorIndexSpec | None) -> Op[bool]:
    """Migrations, then (with an index) the vector table; run in one transaction.

    Returns:
        Whether the schema's ANN index needs a repair (it is invalid or
        missing: see :mod:`haive_langgraph.stores._index_ops`).
    """
    yield from migrate_op([S.COMPONENT], schema)
    if spec is None:
        return False
    if spec.text is not None:
        yield from text_config_op(spec.text.config)
    stored = yield Step(S.q(S.GET_VECTOR_CONFIG, schema), ("default",), fetch="one")
    wanted = spec.describe()
    if stored is not None:
        have = stored[0]
        if have != wanted:
            raise ConfigurationError(
                f"schema {schema!r} was set up with the vector index {json.dumps(have)}, but this "
                f"store is configured with {json.dumps(wanted)}; use another schema (schema=...) "
                "or the configuration the schema was set up with"
            )
        return spec.kind != "flat" and not (yield from index_valid_op(schema))
    yield Step(S.CREATE_VECTOR_EXTENSION, fetch="none")
    for statement in S.vector_ddl(spec):
        yield Step(S.q(statement, schema), fetch="none", prepare=False)
    yield Step(S.q(S.PUT_VECTOR_CONFIG, schema), ("default", json.dumps(wanted)), fetch="none")
    return False


def text_config_op(config: str) -> Op[None]:
    """Refuse a text-search configuration the database does not have."""
    schema, _, name = config.rpartition(".")
    row = yield Step(S.TEXT_CONFIG_EXISTS, {"name": name, "schema": schema or None}, fetch="one")
    if not row[0]:
        raise ConfigurationError(
            f'index["hybrid"]["text_search_config"] is {config!r}, a text-search configuration '
            "this database does not have (the catalog pg_ts_config lists them; 'simple' and "
            "'english' are built in)"
        )


def vector_types_op(vector_type: str, text_config: str | None = None) -> Op[VectorTypes]:
    if text_config is not None:
        yield from text_config_op(text_config)
    row = yield Step(S.VECTOR_TYPE_OIDS, (vector_type,), fetch="one")
    if row is None or row[0] is None:
        raise ConfigurationError(
            f"the pgvector type {vector_type!r} is not available in this database: install pgvector "
            "and run store.setup() (it runs CREATE EXTENSION IF NOT EXISTS vector)"
        )
    return VectorTypes(int(row[0]), int(row[1]))


def sweep_op(statements: Statements, tenant_id: str | None, batch: int) -> Op[int]:
    """Delete up to ``batch`` expired items (of ``tenant_id``, or of every tenant)."""
    return (yield from maintenance_batch_op(statements, S.SWEEP, "s", batch, tenant_id))


def delete_tenant_op(statements: Statements, tenant_id: str) -> Op[dict[str, int]]:
    """Delete every row of ``tenant_id`` in each table of tenant rows that exists.

    The tables are those every feature declares (``ops._migrate.tenant_tables()``):
    the store's, the checkpointer's, the conversations' and the cache's
    versions (which keep Redis entries valid).
    """
    # Imported here: the registry of features imports the store.
    from haive_langgraph.ops._migrate import tenant_tables

    schema = statements.schema
    candidates = tenant_tables()
    exists = yield [
        Step(S.TABLE_EXISTS, (sql.Identifier(schema, name).as_string(None),), fetch="one")
        for name in candidates
    ]
    present = [name for name, row in zip(candidates, exists, strict=True) if row[0]]
    rows = yield [
        Step(
            sql.SQL(S.DELETE_TENANT_ROWS).format(table=statements.table(name)),
            {"t": tenant_id},
            fetch="one",
        )
        for name in present
    ]
    return {name: int(row[0]) for name, row in zip(present, rows, strict=True)}


def set_quota_op(statements: Statements, tenant_id: str, quota: ResourceQuota | None) -> Op[None]:
    if quota is None:
        yield Step(statements.q(S.DROP_QUOTA), {"t": tenant_id}, fetch="none")
        return
    yield Step(statements.q(S.LOCK_ITEMS), fetch="none")
    yield Step(
        statements.q(S.SET_QUOTA),
        {
            "t": tenant_id,
            "max_items": quota.max_items,
            "max_bytes": quota.max_bytes,
            "max_writes": quota.max_writes_per_minute,
        },
        fetch="none",
    )
    # A final statement that returns, so errors surface before the commit.
    yield Step("SELECT 1", fetch="one")


def usage_op(statements: Statements, tenant_id: str) -> Op[TenantUsage]:
    row = yield Step(statements.q(S.GET_USAGE), {"t": tenant_id}, fetch="one")
    if row is not None:
        max_items, max_bytes, max_writes, items, nbytes, writes = row
        quota = ResourceQuota(max_items, max_bytes, max_writes)
        return TenantUsage(tenant_id, int(items), int(nbytes), int(writes), quota)
    row = yield Step(statements.q(S.COUNT_USAGE), {"t": tenant_id}, fetch="one")
    return TenantUsage(tenant_id, int(row[0]), int(row[1]), 0, None)


__all__ = [
    "Context",
    "PutPlan",
    "ScopeSizes",
    "Statements",
    "VectorTypes",
]
