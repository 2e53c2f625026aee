"""Hybrid search (full-text and vector rankings fused by reciprocal rank) as sans-I/O steps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from langgraph.store.base import SearchItem, SearchOp

from haive_langgraph.db._driver import Op, Step
from haive_langgraph.stores._ops import Context, prefix_condition
from haive_langgraph.stores._search_ops import refresh_clause, search_filters, search_item
from haive_langgraph.stores._values import PgvectorParam
from haive_langgraph.stores._vector_search import (
    candidates_for,
    scanned_exactly,
    search_settings_step,
    vector_candidates,
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
    candidates = vector_candidates(ctx, op, params, exact=plan.force_exact)
    t_ns = prefix_condition("s", op.namespace_prefix, params, "tns")
    t_filters = search_filters(ctx, op, params, "g", column="s.doc")
    query = ctx.statements.q(
        """
WITH {candidates}, vrank AS MATERIALIZED (
    SELECT b.namespace, b.key, row_number() OVER (ORDER BY b.dist, b.namespace, b.key) AS r
    FROM best AS b
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
        candidates=candidates,
        t_ns=t_ns,
        t_filters=t_filters,
        refresh=refresh_clause(ctx, op),
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
        exact = scanned_exactly(ctx, op, plan.force_exact, scope)
        if n_vec < op.offset + op.limit and not exact:
            # The index scan stopped early (a selective filter): rank vectors exactly.
            plan.force_exact = True
            continue
        plan.results = [
            search_item(ctx, tuple(ns), key, frame, created, updated, float(score))
            for _, _, ns, key, frame, created, updated, score in rows
            if ns is not None
        ]
        return plan.results
