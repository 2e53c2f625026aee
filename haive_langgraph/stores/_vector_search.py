"""Vector searches as sans-I/O steps: exact in small scopes, the ANN index in large
ones, the settings they run under, and the unscored items that fill a short page.

:func:`vector_search_step` builds a search's statement, :func:`vector_search_done`
takes its rows or asks for it again (wider, or exact);
:mod:`haive_langgraph.stores._batch` sends them.
"""

from __future__ import annotations

from typing import Any

from langgraph.store.base import SearchOp
from psycopg import sql

from haive_langgraph.db._driver import Step
from haive_langgraph.db._limits import MAX_COUNT
from haive_langgraph.stores._config import VectorIndexSpec
from haive_langgraph.stores._ops import Context, prefix_condition
from haive_langgraph.stores._search_ops import (
    SearchPlan,
    plain_search_step,
    refresh_clause,
    search_filters,
    search_item,
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
    """Candidates for a page ending at ``wanted``: at most ``bigint``'s largest, as
    ``limit`` and ``offset`` (``wanted`` may be their sum, times vectors per item)."""
    k = MIN_CANDIDATES
    while k < wanted:
        k *= 2
    return min(k, MAX_COUNT)


def score_of(spec: VectorIndexSpec, distance: float) -> float:
    """LangGraph's similarity score for a pgvector distance."""
    if spec.distance == "cosine":
        return 1.0 - float(distance)
    return -float(distance)  # l2: negated distance; inner product: <#> is already negated


def vector_candidates(
    ctx: Context, op: SearchOp, params: dict[str, Any], *, exact: bool
) -> sql.Composable:
    """The ``scope``, ``cand`` and ``best`` CTEs of a vector search (see :func:`vector_search_step`).

    ``cand`` yields ``(namespace, key, dist)`` per candidate vector, at most
    ``%(k)s`` per branch, ``best`` each item's nearest candidate; ``params``
    must hold ``t``, ``q`` and ``k``. It adds ``exact_n``: below that many
    vectors in scope the scan is exact (a scope known to be large skips the
    count: LIMIT 0 counts nothing).
    """
    spec = ctx.spec
    assert spec is not None
    params["exact_n"] = (
        0 if ctx.scopes.is_large(ctx.tenant_id, op.namespace_prefix) else spec.exact_threshold
    )
    v_ns = prefix_condition("v", op.namespace_prefix, params, "ns")
    distance = sql.SQL("(v.embedding {} %(q)s)").format(sql.SQL(spec.operator))
    if exact or spec.kind == "flat":
        filters = search_filters(ctx, op, params, "f", column="s.doc")
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
        filters = search_filters(ctx, op, params, "f", column="v.doc")
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
    return ctx.statements.q(
        """scope AS MATERIALIZED ({scope}
), cand AS MATERIALIZED ({cand}
), best AS (
    SELECT DISTINCT ON (c.namespace, c.key) c.namespace, c.key, c.dist
    FROM cand AS c
    ORDER BY c.namespace, c.key, c.dist
)""",
        scope=scope,
        cand=cand,
    )


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
        "top": plan.candidates if plan.check_all else min(want, MAX_COUNT),
    }
    query = ctx.statements.q(
        """
WITH {candidates}, top AS MATERIALIZED (
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
        candidates=vector_candidates(ctx, op, params, exact=plan.force_exact),
        refresh=refresh_clause(ctx, op),
    )
    return Step(query, params, fetch="all")


def scanned_exactly(ctx: Context, op: SearchOp, force_exact: bool, scope: int) -> bool:
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
    exact = scanned_exactly(ctx, op, plan.force_exact, scope)
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
        search_item(ctx, tuple(ns), key, frame, created, updated, score_of(spec, dist))
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
