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
    SearchItem,
    SearchOp,
)
from psycopg import sql

from haive_langgraph.codec import Codec
from haive_langgraph.db import Op, Step
from haive_langgraph.db._arrays import BoolArray, ByteaArray, IntArray, TextArray
from haive_langgraph.db._migrations import migrate_op
from haive_langgraph.errors import ConfigurationError
from haive_langgraph.stores import _sql as S
from haive_langgraph.stores._config import ResourceQuota, TenantUsage, VectorIndexSpec
from haive_langgraph.stores._filters import FilterCompiler
from haive_langgraph.stores._index_ops import index_valid_op
from haive_langgraph.stores._values import (
    Namespace,
    PgvectorParam,
    decode_value,
    ns_text,
    ns_upper,
    row_context,
    vector_array,
)

# Candidate vectors come in blocks: at least MIN_CANDIDATES, then doubling.
# Successive pages of one query then read the same candidates (an ANN scan
# asked for 10 or for 20 results may order its borderline results
# differently), and re-sorting a few more candidates than needed improves
# recall of the relaxed-order index scan. They grow (x4) when items with
# several vectors leave a page short.
MIN_CANDIDATES = 40
MAX_CANDIDATES = 100_000


def candidates_for(wanted: int) -> int:
    k = MIN_CANDIDATES
    while k < wanted:
        k *= 2
    return k


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


def _search_item(
    ctx: Context,
    namespace: Namespace,
    key: str,
    frame: bytes,
    created: datetime,
    updated: datetime,
    score: float | None,
) -> SearchItem:
    value = decode_value(frame, ctx.codec, row_context(ctx.tenant_id, namespace, key))
    return SearchItem(
        namespace=namespace,
        key=key,
        value=value,
        created_at=created,
        updated_at=updated,
        score=score,
    )


def score_of(spec: VectorIndexSpec, distance: float) -> float:
    """LangGraph's similarity score for a pgvector distance."""
    if spec.distance == "cosine":
        return 1.0 - float(distance)
    return -float(distance)  # l2: negated distance; inner product: <#> is already negated


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


# -- search ----------------------------------------------------------------------------


@dataclass(slots=True)
class SearchPlan:
    """One search op, its statement and what to do with its rows."""

    index: int
    op: SearchOp
    vector: PgvectorParam | None
    candidates: int = 0
    force_exact: bool = False
    scored: list[SearchItem] = field(default_factory=list)
    scored_total: int = 0
    check_all: bool = False


def _filters(
    ctx: Context, op: SearchOp, params: dict[str, Any], prefix: str, column: str = "s.doc"
) -> sql.Composable:
    compiler = FilterCompiler(column, prefix=prefix, allowed=ctx.filter_paths)
    conditions = compiler.compile(op.filter)
    params.update(compiler.params)
    return _and(conditions)


def _refresh(ctx: Context, op: SearchOp) -> sql.Composable:
    return (
        sql.SQL(S.REFRESH_RESULTS).format(schema=sql.Identifier(ctx.statements.schema))
        if op.refresh_ttl
        else sql.SQL("")
    )


def plain_search_step(
    ctx: Context,
    op: SearchOp,
    *,
    limit: int | None = None,
    offset: int | None = None,
    unscored: bool = False,
) -> Step:
    """Filter-only search: most recently updated first.

    With ``unscored``, only items without vectors (those that fill a page a
    vector search left short), ``limit`` and ``offset`` replacing the op's.
    """
    params: dict[str, Any] = {
        "t": ctx.tenant_id,
        "lim": op.limit if limit is None else limit,
        "off": op.offset if offset is None else offset,
    }
    ns = prefix_condition("s", op.namespace_prefix, params, "ns")
    filters = _filters(ctx, op, params, "f")
    no_vectors = ctx.statements.q(S.NO_VECTORS) if unscored else sql.SQL("")
    query = ctx.statements.q(
        """
WITH page AS MATERIALIZED (
    SELECT s.namespace, s.key, s.value, s.created_at, s.updated_at
    FROM {schema}.store_items AS s
    WHERE s.tenant_id = %(t)s{ns}{filters} AND (s.expires_at IS NULL OR s.expires_at > now()){no_vectors}
    ORDER BY s.updated_at DESC, s.namespace, s.key
    LIMIT %(lim)s OFFSET %(off)s
){refresh}
SELECT p.namespace, p.key, p.value, p.created_at, p.updated_at
FROM page AS p
ORDER BY p.updated_at DESC, p.namespace, p.key
""",
        ns=ns,
        filters=filters,
        no_vectors=no_vectors,
        refresh=_refresh(ctx, op),
    )
    return Step(query, params, fetch="all")


def plain_search_results(ctx: Context, rows: list[Any]) -> list[SearchItem]:
    return [
        _search_item(ctx, tuple(ns), key, frame, created, updated, None)
        for ns, key, frame, created, updated in rows
    ]


def vector_candidates(
    ctx: Context, op: SearchOp, params: dict[str, Any], *, exact: bool
) -> tuple[sql.Composable, sql.Composable]:
    """The ``scope`` and ``cand`` CTE bodies of a vector search (see :func:`vector_search_step`).

    ``cand`` yields ``(namespace, key, dist)`` per candidate vector, at most
    ``%(k)s`` per branch; ``params`` must hold ``t``, ``q`` and ``k``. It adds
    ``exact_n``: below that many vectors in scope the scan is exact (a scope
    known to be large skips the count: LIMIT 0 counts nothing).
    """
    spec = ctx.spec
    assert spec is not None
    params["exact_n"] = (
        0 if ctx.scopes.is_large(ctx.tenant_id, op.namespace_prefix) else spec.exact_threshold
    )
    v_ns = prefix_condition("v", op.namespace_prefix, params, "ns")
    distance = sql.SQL("(v.embedding {} %(q)s)").format(sql.SQL(spec.operator))
    if exact or spec.kind == "flat":
        filters = _filters(ctx, op, params, "f", column="s.doc")
        cand = ctx.statements.q(
            """
    SELECT v.namespace, v.key, {distance} AS dist
    FROM {schema}.store_items AS s
    JOIN {schema}.store_vectors AS v
      ON v.tenant_id = s.tenant_id AND v.namespace = s.namespace AND v.key = s.key
    WHERE s.tenant_id = %(t)s{v_ns}{filters}
      AND (s.expires_at IS NULL OR s.expires_at > now())
    ORDER BY dist
    LIMIT %(k)s""",
            distance=distance,
            v_ns=v_ns,
            filters=filters,
        )
        scope: sql.Composable = sql.SQL("SELECT 0 AS n")
    else:
        filters = _filters(ctx, op, params, "f", column="v.doc")
        branch = """
    (SELECT v.namespace, v.key, {distance} AS dist
     FROM {schema}.store_vectors AS v
     WHERE {gate} AND v.tenant_id = %(t)s{v_ns}{filters}
     ORDER BY {order}
     LIMIT %(k)s)"""
        parts = {"distance": distance, "v_ns": v_ns, "filters": filters}
        small = ctx.statements.q(
            branch,
            gate=sql.SQL("(SELECT n FROM scope) < %(exact_n)s"),
            order=sql.SQL("dist"),
            **parts,
        )
        ann = ctx.statements.q(
            branch,
            gate=sql.SQL("(SELECT n FROM scope) >= %(exact_n)s AND v.indexed"),
            # The ORDER BY must be the operator expression itself for the index to serve it.
            order=sql.SQL("v.embedding {} %(q)s").format(sql.SQL(spec.operator)),
            **parts,
        )
        pending = ctx.statements.q(
            branch,
            gate=sql.SQL("(SELECT n FROM scope) >= %(exact_n)s AND NOT v.indexed"),
            order=sql.SQL("dist"),
            **parts,
        )
        cand = sql.SQL("{}\n    UNION ALL{}\n    UNION ALL{}").format(small, ann, pending)
        scope = ctx.statements.q(
            """
    SELECT count(*) AS n FROM (
        SELECT 1 FROM {schema}.store_vectors AS v
        WHERE v.tenant_id = %(t)s{v_ns}
        LIMIT %(exact_n)s
    ) AS x""",
            v_ns=v_ns,
        )
    return scope, cand


def vector_search_step(ctx: Context, plan: SearchPlan) -> Step:
    """Vector search: exact in small scopes, the ANN index (iterative scan) in large ones.

    Only one of the first two branches runs (their gate is a one-time
    filter on the scope's size); the third searches vectors written without
    index maintenance (``indexed = false``) exactly. Filters run on the
    vector row's copy of the item's document, inside the index scan, so a
    candidate costs no lookup of its item; expiry is checked on the
    candidates that survive (an expired one makes the page short, and the
    search widens). With ``force_exact`` the statement is a plain join of
    items and vectors the planner is free to run from the document index.
    """
    spec = ctx.spec
    assert spec is not None and plan.vector is not None
    op = plan.op
    want = op.offset + op.limit
    if not plan.candidates:
        plan.candidates = candidates_for(want * spec.vectors_per_item)
    params: dict[str, Any] = {
        "t": ctx.tenant_id,
        "q": plan.vector,
        "k": plan.candidates,
        "lim": op.limit,
        "off": op.offset,
        # Only the best `want` candidates are checked for expiry, unless an
        # expired one was seen among them: then all of them.
        "top": plan.candidates if plan.check_all else want,
    }
    scope, cand = vector_candidates(ctx, op, params, exact=plan.force_exact)
    query = ctx.statements.q(
        """
WITH scope AS MATERIALIZED ({scope}
), cand AS MATERIALIZED ({cand}
), best AS (
    SELECT DISTINCT ON (c.namespace, c.key) c.namespace, c.key, c.dist
    FROM cand AS c
    ORDER BY c.namespace, c.key, c.dist
), top AS MATERIALIZED (
    SELECT b.namespace, b.key, b.dist
    FROM best AS b
    ORDER BY b.dist, b.namespace, b.key
    LIMIT %(top)s
), live AS MATERIALIZED (
    SELECT b.namespace, b.key, b.dist, s.value, s.created_at, s.updated_at
    FROM top AS b
    JOIN {schema}.store_items AS s
      ON s.tenant_id = %(t)s AND s.namespace = b.namespace AND s.key = b.key
    WHERE s.expires_at IS NULL OR s.expires_at > now()
), page AS MATERIALIZED (
    SELECT l.*
    FROM live AS l
    ORDER BY l.dist, l.namespace, l.key
    LIMIT %(lim)s OFFSET %(off)s
){refresh}
SELECT c.n_cand, c.n_best, c.scope, c.n_live, p.namespace, p.key, p.value, p.created_at,
       p.updated_at, p.dist
FROM (
    SELECT (SELECT count(*) FROM cand) AS n_cand, (SELECT count(*) FROM best) AS n_best,
           (SELECT n FROM scope) AS scope, (SELECT count(*) FROM live) AS n_live
) AS c
LEFT JOIN page AS p ON true
ORDER BY p.dist, p.namespace, p.key
""",
        scope=scope,
        cand=cand,
        refresh=_refresh(ctx, op),
    )
    return Step(query, params, fetch="all")


def _scanned_exactly(ctx: Context, op: SearchOp, force_exact: bool, scope: int) -> bool:
    """Whether a search's vector candidates came from an exact scan (``scope``
    vectors in scope, counted up to ``exact_n``); an index scan's count is
    remembered, so that a large scope skips counting next time."""
    spec = ctx.spec
    assert spec is not None
    known_large = ctx.scopes.is_large(ctx.tenant_id, op.namespace_prefix)
    if not force_exact and spec.kind != "flat" and not known_large:
        ctx.scopes.record(ctx.tenant_id, op.namespace_prefix, scope >= spec.exact_threshold)
    return force_exact or spec.kind == "flat" or (scope < spec.exact_threshold and not known_large)


def vector_search_done(ctx: Context, plan: SearchPlan, rows: list[Any]) -> bool:
    """Take the rows of a vector search; ``False`` when it must run again (wider or exact)."""
    spec = ctx.spec
    assert spec is not None
    op = plan.op
    want = op.offset + op.limit
    n_cand, n_best, scope, n_live = (int(x) for x in rows[0][:4])
    n_top = min(n_best, plan.candidates if plan.check_all else want)
    if n_live < n_top and not plan.check_all:
        # Expired items among the best candidates: check them all for expiry.
        plan.check_all = True
        return False
    if plan.check_all:
        n_best = n_live
    exact = _scanned_exactly(ctx, op, plan.force_exact, scope)
    if n_best < want and n_cand >= plan.candidates and plan.candidates < MAX_CANDIDATES:
        # Items with several vectors (or expired ones) used up the candidates: widen.
        plan.candidates *= 4
        return False
    if n_best < want and not exact:
        # The index scan stopped before filling the page (a selective filter,
        # or a scope that is a small part of the index): answer exactly.
        plan.force_exact = True
        return False
    plan.scored = [
        _search_item(ctx, tuple(ns), key, frame, created, updated, score_of(spec, dist))
        for _, _, _, _, ns, key, frame, created, updated, dist in rows
        if ns is not None
    ]
    plan.scored_total = n_best
    return True


def unscored_step(ctx: Context, plan: SearchPlan, scored_total: int) -> Step:
    """Items without vectors that fill a page a vector search left short (InMemoryStore's rule)."""
    op = plan.op
    return plain_search_step(
        ctx,
        op,
        limit=op.limit - len(plan.scored),
        offset=max(0, op.offset - scored_total),
        unscored=True,
    )


@dataclass(slots=True)
class HybridPlan:
    """One hybrid search: its op, the query's embedding, and its results."""

    op: SearchOp
    vector: PgvectorParam
    force_exact: bool = False
    results: list[SearchItem] = field(default_factory=list)


def hybrid_search_step(ctx: Context, plan: HybridPlan) -> Step:
    """Full-text and vector rankings of one query, fused by reciprocal rank, in one statement.

    Each ranking holds the best ``n`` items (``n`` is the page's end rounded
    up to a candidate block) matching the tenant, namespace prefix, filter
    and expiry: the vector one from the candidates of :func:`vector_candidates`
    (best field per item), the text one by ``ts_rank`` over the items whose
    ``tsv`` matches ``websearch_to_tsquery`` (the GIN index). An item's
    score is ``1 / (k + rank)`` summed over the rankings it is in.
    """
    spec = ctx.spec
    assert spec is not None and spec.text is not None
    op = plan.op
    want = op.offset + op.limit
    params: dict[str, Any] = {
        "t": ctx.tenant_id,
        "q": plan.vector,
        "k": candidates_for(want * spec.vectors_per_item),
        "n": candidates_for(want),
        "lim": op.limit,
        "off": op.offset,
        "tscfg": spec.text.config,
        "text": op.query or "",
        "rrf_k": spec.text.rrf_k,
    }
    scope, cand = vector_candidates(ctx, op, params, exact=plan.force_exact)
    t_ns = prefix_condition("s", op.namespace_prefix, params, "tns")
    t_filters = _filters(ctx, op, params, "g", column="s.doc")
    query = ctx.statements.q(
        """
WITH scope AS MATERIALIZED ({scope}
), cand AS MATERIALIZED ({cand}
), vbest AS (
    SELECT DISTINCT ON (c.namespace, c.key) c.namespace, c.key, c.dist
    FROM cand AS c
    ORDER BY c.namespace, c.key, c.dist
), vrank AS MATERIALIZED (
    SELECT b.namespace, b.key, row_number() OVER (ORDER BY b.dist, b.namespace, b.key) AS r
    FROM vbest AS b
    JOIN {schema}.store_items AS s
      ON s.tenant_id = %(t)s AND s.namespace = b.namespace AND s.key = b.key
    WHERE s.expires_at IS NULL OR s.expires_at > now()
    ORDER BY b.dist, b.namespace, b.key
    LIMIT %(n)s
), trank AS MATERIALIZED (
    SELECT x.namespace, x.key, row_number() OVER (ORDER BY x.rank DESC, x.namespace, x.key) AS r
    FROM (
        SELECT s.namespace, s.key,
               ts_rank(s.tsv, websearch_to_tsquery(%(tscfg)s::regconfig, %(text)s)) AS rank
        FROM {schema}.store_items AS s
        WHERE s.tenant_id = %(t)s{t_ns}{t_filters}
          AND s.tsv @@ websearch_to_tsquery(%(tscfg)s::regconfig, %(text)s)
          AND (s.expires_at IS NULL OR s.expires_at > now())
        ORDER BY rank DESC, s.namespace, s.key
        LIMIT %(n)s
    ) AS x
), fused AS (
    SELECT coalesce(v.namespace, t.namespace) AS namespace, coalesce(v.key, t.key) AS key,
           coalesce(1.0::float8 / (%(rrf_k)s::int + v.r), 0)
             + coalesce(1.0::float8 / (%(rrf_k)s::int + t.r), 0) AS score
    FROM vrank AS v
    FULL JOIN trank AS t ON t.namespace = v.namespace AND t.key = v.key
), page AS MATERIALIZED (
    SELECT f.namespace, f.key, f.score, s.value, s.created_at, s.updated_at
    FROM fused AS f
    JOIN {schema}.store_items AS s
      ON s.tenant_id = %(t)s AND s.namespace = f.namespace AND s.key = f.key
    ORDER BY f.score DESC, f.namespace, f.key
    LIMIT %(lim)s OFFSET %(off)s
){refresh}
SELECT c.n_vec, c.scope, p.namespace, p.key, p.value, p.created_at, p.updated_at, p.score
FROM (SELECT (SELECT count(*) FROM vrank) AS n_vec, (SELECT n FROM scope) AS scope) AS c
LEFT JOIN page AS p ON true
ORDER BY p.score DESC, p.namespace, p.key
""",
        scope=scope,
        cand=cand,
        t_ns=t_ns,
        t_filters=t_filters,
        refresh=_refresh(ctx, op),
    )
    return Step(query, params, fetch="all")


def hybrid_search_op(ctx: Context, plan: HybridPlan) -> Op[list[SearchItem]]:
    """Run a hybrid search; again exactly when the index scan left the vector ranking short."""
    spec = ctx.spec
    assert spec is not None
    op = plan.op
    while True:
        rows = (
            yield [
                search_settings_step(spec, exact=plan.force_exact, bitmap=True),
                hybrid_search_step(ctx, plan),
            ]
        )[1]
        n_vec, scope = int(rows[0][0]), int(rows[0][1])
        exact = _scanned_exactly(ctx, op, plan.force_exact, scope)
        if n_vec < op.offset + op.limit and not exact:
            # The index scan stopped early (a selective filter): rank vectors exactly.
            plan.force_exact = True
            continue
        plan.results = [
            _search_item(ctx, tuple(ns), key, frame, created, updated, float(score))
            for _, _, ns, key, frame, created, updated, score in rows
            if ns is not None
        ]
        return plan.results


def search_settings_step(
    spec: VectorIndexSpec, *, exact: bool = False, bitmap: bool = False
) -> Step:
    """Transaction-local settings for vector searches (no round trip in a pipeline).

    For the index scan, sequential scans, bitmap scans and sorts are priced
    out: the planner costs pgvector's distance like an addition, and with a
    tenant, namespace or document filter on the scan it picked a sequential
    scan and a sort of every vector (150 ms at 20,000 items) or the document
    index and exact distances (36 ms with a 10% filter) over the HNSW index
    (3-5 ms). The only plan left that yields rows in distance order is the
    index. Small scopes are then read through the primary key and sorted,
    as they should be. Exact passes (``exact=True``) get the planner's own
    choice back. Plans are never cached: the best one depends on the values.
    """
    if spec.kind == "ivfflat":
        names = ("ivfflat.probes", "ivfflat.iterative_scan", "ivfflat.max_probes")
        values = (str(spec.probes), "relaxed_order", str(max(spec.probes, spec.lists)))
    else:
        names = ("hnsw.ef_search", "hnsw.iterative_scan", "hnsw.max_scan_tuples")
        values = (str(spec.ef_search), "relaxed_order", str(spec.max_scan_tuples))
    settings = list(zip(names, values, strict=True))
    if spec.kind != "flat":
        flag = "on" if exact else "off"
        settings += [
            ("enable_seqscan", flag),
            # A hybrid search's text ranking reads the GIN index, which only
            # has bitmap scans: priced out, the planner walked the tenant's
            # rows by primary key instead (10 ms at 20,000 items). The vector
            # branches still get the HNSW index: it is the only plan giving
            # their rows in distance order, and sorts stay priced out.
            ("enable_bitmapscan", "on" if bitmap else flag),
            ("enable_sort", flag),
        ]
    if exact or bitmap or spec.kind == "flat":
        # The best exact plan depends on the filter's values (document index
        # or scan), the best text plan on the words' frequency: plan each
        # execution. (Hybrid search at 20,000 items: p50 30-35 ms on the
        # prepared statement's generic plan, 4.6 ms planned per execution.)
        settings.append(("plan_cache_mode", "force_custom_plan"))
    query = "SELECT " + ", ".join("set_config(%s, %s, true)" for _ in settings)
    return Step(query, tuple(x for pair in settings for x in pair), fetch="none")


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
    if depth is not None and (not isinstance(depth, int) or depth < 1):
        raise ConfigurationError(f"max_depth must be a positive integer, got {depth!r}")
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


# -- batch -------------------------------------------------------------------------------


@dataclass(slots=True)
class BatchPlan:
    """A batch split by kind; results are filled in by :func:`batch_op`."""

    size: int
    gets: list[tuple[int, GetOp]] = field(default_factory=list)
    searches: list[SearchPlan] = field(default_factory=list)
    lists: list[tuple[int, ListNamespacesOp]] = field(default_factory=list)
    put: PutPlan | None = None


def batch_op(ctx: Context, plan: BatchPlan) -> Op[list[Result]]:
    """Reads first (they see the state before the batch's writes), then one write.

    The reads go out together, in one round: gets, filter searches and
    namespace listings, then the vector searches behind their settings
    (transaction-local: they hold for the rest of the round, so they come
    last, and end with it).
    """
    results: list[Result] = [None] * plan.size
    plain = [sp for sp in plan.searches if sp.vector is None]
    vector_plans = [sp for sp in plan.searches if sp.vector is not None]
    steps: list[Step] = []
    if plan.gets:
        steps.append(get_step(ctx, plan.gets))
    steps += [plain_search_step(ctx, sp.op) for sp in plain]
    steps += [list_namespaces_step(ctx, lop) for _, lop in plan.lists]
    if vector_plans:
        assert ctx.spec is not None
        steps.append(search_settings_step(ctx.spec))
        steps += [vector_search_step(ctx, sp) for sp in vector_plans]
    if steps:
        # A lone read (the hot path: one get, one filter search) needs no pipeline.
        rows = iter([(yield steps[0])] if len(steps) == 1 else (yield steps))
        if plan.gets:
            get_results(ctx, plan.gets, next(rows), results)
        for sp in plain:
            results[sp.index] = plain_search_results(ctx, next(rows))
        for idx, _ in plan.lists:
            results[idx] = [tuple(r[0]) for r in next(rows)]
        if vector_plans:
            next(rows)  # the settings
        pending = [sp for sp in vector_plans if not vector_search_done(ctx, sp, next(rows))]
        while pending:
            assert ctx.spec is not None
            exact = any(sp.force_exact for sp in pending)
            again = yield [
                search_settings_step(ctx.spec, exact=exact),
                *(vector_search_step(ctx, sp) for sp in pending),
            ]
            pending = [
                sp
                for sp, r in zip(pending, again[1:], strict=True)
                if not vector_search_done(ctx, sp, r)
            ]
        short = [sp for sp in vector_plans if len(sp.scored) < sp.op.limit]
        fills: list[Any] = []
        if short:
            fills = yield [unscored_step(ctx, sp, sp.scored_total) for sp in short]
        filled = {
            id(sp): plain_search_results(ctx, rows_) for sp, rows_ in zip(short, fills, strict=True)
        }
        for sp in vector_plans:
            results[sp.index] = sp.scored + filled.get(id(sp), [])
    if plan.put is not None:
        # The search settings ended with their round's (implicit) transaction.
        yield put_step(ctx, plan.put, indexed=ctx.spec is None or not ctx.spec.deferred)
    return results


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
    params: dict[str, Any] = {"n": batch}
    tenant = sql.SQL("")
    if tenant_id is not None:
        params["t"] = tenant_id
        tenant = sql.SQL("AND s.tenant_id = %(t)s")
    row = yield Step(statements.q(S.SWEEP, tenant=tenant), params, fetch="one")
    return int(row[0])


def tenant_tables() -> tuple[str, ...]:
    """Every table holding tenant rows: the store's, the checkpointer's, the conversations'."""
    # Imported here: the memory package builds on the store.
    from haive_langgraph.checkpointers._sql import TENANT_TABLES as CHECKPOINTS
    from haive_langgraph.memory._history_sql import TENANT_TABLES as CONVERSATIONS

    return (*S.STORE_TABLES, *CHECKPOINTS, *CONVERSATIONS)


def delete_tenant_op(statements: Statements, tenant_id: str) -> Op[dict[str, int]]:
    """Delete every row of ``tenant_id`` in each of :func:`tenant_tables` that exists."""
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
    "BatchPlan",
    "Context",
    "HybridPlan",
    "PutPlan",
    "ScopeSizes",
    "SearchPlan",
    "Statements",
    "VectorTypes",
    "batch_op",
]
