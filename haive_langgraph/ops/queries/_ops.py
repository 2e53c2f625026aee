"""Query analysis as sans-I/O operations: record a snapshot, analyse a window.

:func:`snapshot_op` sets up the ``query_stats`` component if needed and
records the counters of our statements; :func:`analyze_op` reads the live
counters, subtracts the snapshot at the window's start, groups the result by
feature, and asks the plans of the slow statements for index candidates,
checked with hypothetical indexes where the server has ``hypopg``.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from psycopg import sql

from haive_langgraph.db._driver import Op, Step
from haive_langgraph.db._migrations import migrate_op
from haive_langgraph.db._render import render
from haive_langgraph.errors import MigrationError, QueryStatsUnavailableError
from haive_langgraph.ops import _query_stats_sql as SQL
from haive_langgraph.ops._migrate import all_components
from haive_langgraph.ops.queries import _plans, _stats
from haive_langgraph.ops.queries._stats import FeatureStats, StatementStats

GENERIC_PLAN_VERSION = 160000
"""``EXPLAIN (GENERIC_PLAN)`` needs PostgreSQL 16."""

MAX_EXPLAINED = 25
"""The slow statements whose plans are read, slowest first."""

HYPOPG_GAIN = 0.9
"""A hypothetical index is advised when the plan's cost drops below this share."""


@dataclass(frozen=True, slots=True)
class QuerySnapshot:
    """A recorded reading of ``pg_stat_statements``.

    Attributes:
        id: Its id.
        taken_at: When.
        statements: Statements of ours it recorded.
        pruned: Older snapshots deleted (past ``keep``).
    """

    id: int
    taken_at: dt.datetime
    statements: int
    pruned: int


@dataclass(frozen=True, slots=True)
class IndexAdvice:
    """An index to create, and why.

    Attributes:
        table: The table.
        create: The ``CREATE INDEX CONCURRENTLY IF NOT EXISTS`` to run.
        reason: What in the plans asks for it.
        queryids: The statements whose plans ask for it.
        method: ``"hypopg"`` (the planner used a hypothetical index of this
            definition) or ``"plan"`` (read from the plan only).
        cost_before: The plan's estimated cost (of the first statement).
        cost_after: Its cost with the hypothetical index (``hypopg`` only).
    """

    table: str
    create: str
    reason: str
    queryids: tuple[int, ...]
    method: str
    cost_before: float
    cost_after: float | None = None


@dataclass(frozen=True, slots=True)
class QueryAnalysis:
    """Our statements over a time window, by feature, and the indexes to create.

    Attributes:
        start: The window's start: the baseline snapshot's time, or the
            statistics' reset when there is no snapshot.
        end: Now (the live reading).
        baseline: ``"snapshot"`` or ``"reset"`` (no snapshot old enough: the
            counters since the statistics were last reset).
        features: Per feature: calls, time, mean and p95.
        statements: The statements whose mean is at least ``min_ms``, slowest first.
        advice: Index recommendations from their plans.
        notes: What limited the analysis (no snapshot, a reset, no hypopg ...).
    """

    start: dt.datetime | None
    end: dt.datetime
    baseline: str
    features: list[FeatureStats]
    statements: list[StatementStats]
    advice: list[IndexAdvice] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The analysis as JSON-ready data (``haive-lg analyze --json``)."""
        data = asdict(self)
        data["start"] = self.start.isoformat() if self.start else None
        data["end"] = self.end.isoformat()
        return data


@dataclass(frozen=True, slots=True)
class _Server:
    preload: str
    version: int
    pgss: str | None
    hypopg: str | None
    hypopg_available: bool
    migrated: bool
    now: dt.datetime


def _server_op(schema: str) -> Op[_Server]:
    row = yield Step(SQL.SERVER, {"snapshots": f"{schema}.{SQL.SNAPSHOTS}"}, fetch="one")
    server = _Server(*row)
    loaded = "pg_stat_statements" in [p.strip() for p in str(server.preload).split(",")]
    if not loaded:
        raise QueryStatsUnavailableError(
            "pg_stat_statements is not loaded on this server, so statement times are not "
            "recorded: add it to shared_preload_libraries (ALTER SYSTEM SET "
            "shared_preload_libraries = 'pg_stat_statements', keeping any library already "
            "listed there: "
            f"{server.preload!r}), restart PostgreSQL, then CREATE EXTENSION pg_stat_statements "
            "in this database"
        )
    if server.pgss is None:
        raise QueryStatsUnavailableError(
            "pg_stat_statements is loaded but not created in this database: run CREATE "
            "EXTENSION pg_stat_statements (once, as a role allowed to)"
        )
    return server


def _fragments(server: _Server) -> dict[str, str]:
    ids = {"pgss": server.pgss, "hypopg": server.hypopg or "public"}
    return {name: sql.Identifier(str(value)).as_string(None) for name, value in ids.items()}


def _patterns(schema: str) -> dict[str, str]:
    escaped = schema.replace("_", r"\_")
    return {"plain": f"%{escaped}.%", "quoted": f'%"{escaped}".%'}


def snapshot_op(schema: str, keep: dt.timedelta) -> Op[QuerySnapshot]:
    """Record the counters of our statements now; delete snapshots older than ``keep``."""
    server = yield from _server_op(schema)
    yield from migrate_op([SQL.COMPONENT], schema)
    parts = _fragments(server)
    row = yield Step(render(SQL.NEW_SNAPSHOT, schema, **parts), fetch="one")
    count = yield Step(
        render(SQL.SNAPSHOT_STATEMENTS, schema, **parts),
        {"id": row[0], **_patterns(schema)},
        fetch="rowcount",
    )
    pruned = yield Step(render(SQL.PRUNE, schema), {"keep": keep}, fetch="rowcount")
    return QuerySnapshot(int(row[0]), row[1], int(count), int(pruned))


def analyze_op(
    schema: str,
    since: dt.timedelta,
    min_ms: float,
    *,
    explain: bool = True,
    large_rows: int = 10_000,
) -> Op[QueryAnalysis]:
    """Our statements over the last ``since``: run it in a transaction that is rolled back."""
    yield Step(SQL.READ_ONLY, fetch="none")
    server = yield from _server_op(schema)
    if not server.migrated:
        raise MigrationError(
            f"schema {schema!r} has no query snapshots table: run `haive-lg analyze snapshot` "
            "(or `haive-lg migrate`) first, then take snapshots regularly"
        )
    parts = _fragments(server)
    notes: list[str] = []
    base = yield Step(render(SQL.BASELINE, schema), {"since": since})
    baseline: dict[_stats.Key, _stats.Counters] = {}
    (reset_at,) = yield Step(render(SQL.STATS_RESET, schema, **parts), fetch="one")
    start, kind, reset = reset_at, "reset", True
    if base:
        snapshot_id, taken_at, snapshot_reset = base[0]
        rows = yield Step(render(SQL.BASELINE_STATEMENTS, schema), {"id": snapshot_id})
        baseline = _stats.counters(rows)
        start, kind = taken_at, "snapshot"
        reset = snapshot_reset != reset_at
        if taken_at > server.now - since:
            notes.append(
                f"no snapshot is {since} old: the window starts at the oldest one ({taken_at:%Y-%m-%d %H:%M} UTC)"
            )
        if reset:
            notes.append("the statistics were reset during the window: counted since the reset")
            start = reset_at
    else:
        notes.append(
            "no snapshot yet: counters since the statistics were last reset; record "
            "snapshots regularly (`haive-lg analyze snapshot`, e.g. hourly from cron)"
        )
    live = yield Step(render(SQL.STATS, schema, **parts), _patterns(schema))
    delta = _stats.window(_stats.counters(live), baseline, reset)
    components = all_components()
    owners = {t.name: c.name for c in components for t in c.tables}
    order = [c.name for c in components]
    found = _stats.statements(delta, _stats.table_pattern(schema), owners, order)
    slow = [s for s in found if s.mean_ms >= min_ms]
    analysis = QueryAnalysis(
        start, server.now, kind, _stats.features(delta, found), slow, notes=notes
    )
    if explain and slow:
        advice = yield from _advice_op(schema, server, parts, slow, large_rows, notes)
        analysis.advice.extend(advice)
    return analysis


def explainable(query: str) -> bool:
    """A single SELECT, WITH, UPDATE, DELETE or INSERT (what EXPLAIN takes)."""
    return ";" not in query and bool(
        re.match(r"\s*(SELECT|WITH|UPDATE|DELETE|INSERT)\b", query, re.IGNORECASE)
    )


def _advice_op(
    schema: str,
    server: _Server,
    parts: dict[str, str],
    slow: list[StatementStats],
    large_rows: int,
    notes: list[str],
) -> Op[list[IndexAdvice]]:
    if server.version < GENERIC_PLAN_VERSION:
        notes.append("index advice needs PostgreSQL 16+ (EXPLAIN (GENERIC_PLAN)): skipped")
        return []
    rows = yield Step(SQL.TABLE_SIZES, {"schema": schema})
    sizes = {str(table): int(count) for table, count in rows}
    rows = yield Step(SQL.INDEX_DEFINITIONS, {"schema": schema})
    definitions: dict[str, list[str]] = {}
    for table, definition in rows:
        definitions.setdefault(str(table), []).append(str(definition))
    plan_of = render(SQL.GENERIC_PLAN, schema)
    wanted: dict[str, tuple[_plans.Candidate, list[int], float]] = {}
    for statement in slow[:MAX_EXPLAINED]:
        if not explainable(statement.query):
            continue
        (plan,) = yield Step(plan_of, {"statement": statement.query}, fetch="one")
        if isinstance(plan, dict) and "error" in plan:
            notes.append(f"no plan for query {statement.queryid}: {plan['error']}")
            continue
        for found in _plans.candidates(plan, schema, sizes, large_rows):
            candidate = yield from _representative(schema, found, notes)
            if candidate is None or _plans.covered(candidate, definitions.get(found.table, [])):
                continue
            ddl = candidate.ddl(schema)
            entry = wanted.setdefault(ddl, (candidate, [], _plans.root_cost(plan)))
            entry[1].append(statement.queryid)
    if not server.hypopg:
        if wanted:
            notes.append(
                "hypopg is "
                + (
                    "available: CREATE EXTENSION hypopg"
                    if server.hypopg_available
                    else "not installed"
                )
                + " (advice read from the plans, not checked with hypothetical indexes)"
            )
        return [
            IndexAdvice(c.table, ddl, c.reason, tuple(ids), "plan", cost)
            for ddl, (c, ids, cost) in wanted.items()
        ]
    advice = []
    queries = {s.queryid: s.query for s in slow}
    for ddl, (candidate, ids, cost) in wanted.items():
        query = queries[ids[0]]
        if candidate.bound is not None:
            # Planned with the key the index is on in place of its parameter, before and after.
            query = _plans.bind_key(query, candidate.bound)
            (plan,) = yield Step(plan_of, {"statement": query}, fetch="one")
            cost = _plans.root_cost(plan)
        created = yield Step(
            render(SQL.HYPOTHETICAL_INDEX, schema, **parts),
            {"ddl": candidate.ddl(schema, concurrently=False)},
            fetch="one",
        )
        (plan,) = yield Step(plan_of, {"statement": query}, fetch="one")
        yield Step(render(SQL.HYPOTHETICAL_RESET, schema, **parts))
        after = _plans.root_cost(plan)
        if str(created[1]) in str(plan) and after < cost * HYPOPG_GAIN:
            advice.append(
                IndexAdvice(
                    candidate.table, ddl, candidate.reason, tuple(ids), "hypopg", cost, after
                )
            )
        else:
            notes.append(f"hypopg: the planner would not use {ddl}")
    return advice


def _representative(
    schema: str, candidate: _plans.Candidate, notes: list[str]
) -> Op[_plans.Candidate | None]:
    """``candidate`` with a representative key where the statement's key is a parameter."""
    column = candidate.keyed_column
    if column is None:
        return candidate
    query = sql.SQL(SQL.COMMON_KEYS).format(
        column=sql.Identifier(column),
        table=sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(candidate.table)),
    )
    keys = [str(k) for (k,) in (yield Step(query))]
    if not keys:
        notes.append(f"{candidate.reason}: no key found in a sample of {column}")
        return None
    others = f" (then {', '.join(keys[1:])})" if len(keys) > 1 else ""
    keyed = candidate.with_key(keys[0])
    return _plans.Candidate(
        keyed.table,
        keyed.elements,
        keyed.method,
        bound=keyed.bound,
        reason=f"{candidate.reason}; the key is a parameter: {keys[0]!r} is the most common key "
        f"of {column} in a sample{others}: index the keys your filters use",
    )
