"""Statement statistics over a window: deltas of two readings, grouped by feature.

Pure functions over the rows of ``ops._query_stats_sql.STATS`` (live) and of a snapshot.

**Mean** over the window is the delta of total time over the delta of calls.
**p95** is estimated from aggregates only, since ``pg_stat_statements`` keeps
no histogram: the window's variance is ``d(sum of squares) / d(calls) -
mean^2`` (exact, from the two readings), and p95 ~ ``mean + 1.645 * stddev``, the
95th percentile of a normal distribution with that mean and deviation,
bounded by the maximum seen since the statistics were reset. Latencies are
skewed to the right, so for a long tail this underestimates; for a
statement with few calls it is a rough figure either way. A feature's p95
comes the same way from the sums of its statements (the moments of the
mixture), not from averaging their p95s.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

Z95 = 1.6448536269514722
"""The 95th percentile of the standard normal distribution."""


@dataclass(frozen=True, slots=True)
class Counters:
    """The cumulative counters of one statement (one user, one query id) at a reading."""

    query: str
    calls: int
    total_ms: float
    sumsq_ms: float
    min_ms: float
    max_ms: float
    rows: int


Key = tuple[int, int]
"""A statement's identity in ``pg_stat_statements``: (user id, query id)."""


def counters(rows: Iterable[Sequence[object]]) -> dict[Key, Counters]:
    """Rows ``(userid, queryid, query, calls, total, sumsq, min, max, rows)`` by key."""
    result: dict[Key, Counters] = {}
    for userid, queryid, query, calls, total, sumsq, low, high, count in rows:
        result[(int(str(userid)), int(str(queryid)))] = Counters(
            str(query),
            int(str(calls)),
            float(str(total)),
            float(str(sumsq)),
            float(str(low)),
            float(str(high)),
            int(str(count)),
        )
    return result


@dataclass(frozen=True, slots=True)
class StatementStats:
    """One statement over the window.

    Attributes:
        userid: The role that ran it (its oid).
        queryid: Its ``pg_stat_statements`` query id.
        query: Its normalised text (``$1`` ... for the values).
        feature: The component whose tables it touches (``"a+b"`` for several).
        tables: The tables of the schema it names.
        calls: Calls in the window.
        total_ms: Time spent in the window.
        mean_ms: Mean time per call.
        p95_ms: Estimated 95th percentile (see the module).
        max_ms: Longest call since the statistics were reset (not only the window).
        rows: Rows returned or changed in the window.
    """

    userid: int
    queryid: int
    query: str
    feature: str
    tables: tuple[str, ...]
    calls: int
    total_ms: float
    mean_ms: float
    p95_ms: float
    max_ms: float
    rows: int


@dataclass(frozen=True, slots=True)
class FeatureStats:
    """The statements of one feature over the window, together.

    Attributes:
        feature: The component (``"a+b"``: statements touching both).
        statements: How many distinct statements ran.
        calls: Their calls.
        total_ms: Their time.
        mean_ms: Mean time per call.
        p95_ms: Estimated 95th percentile of a call (see the module).
    """

    feature: str
    statements: int
    calls: int
    total_ms: float
    mean_ms: float
    p95_ms: float


def p95(calls: int, total: float, sumsq: float, high: float) -> tuple[float, float]:
    """``(mean, p95)`` of ``calls`` calls from their sum and sum of squares."""
    if calls <= 0:
        return 0.0, 0.0
    mean = total / calls
    variance = max(sumsq / calls - mean * mean, 0.0)
    estimate = mean + Z95 * math.sqrt(variance)
    return mean, max(mean, min(estimate, high)) if high > 0 else estimate


def table_pattern(schema: str) -> re.Pattern[str]:
    """Matches ``schema.table`` in a statement's text, quoted or not."""
    return re.compile(rf'(?:"{schema}"|\b{schema})\s*\.\s*"?([a-z_][a-z0-9_]*)"?')


def feature_of(
    query: str, pattern: re.Pattern[str], owners: Mapping[str, str], order: Sequence[str]
) -> tuple[str, tuple[str, ...]]:
    """The feature a statement belongs to (by the tables it names), and those tables."""
    tables = tuple(dict.fromkeys(pattern.findall(query)))
    features = {owners.get(t, "other") for t in tables}
    ranked = sorted(features, key=lambda f: order.index(f) if f in order else len(order))
    return "+".join(ranked) or "other", tables


def window(
    live: Mapping[Key, Counters], baseline: Mapping[Key, Counters], reset: bool
) -> dict[Key, Counters]:
    """What happened between two readings: ``live`` minus ``baseline``.

    A statement missing from the baseline started in the window (or was
    evicted and came back: then it counts from its return). After a reset
    (``reset``, or counters that went down), the live counters are the window.
    """
    result = {}
    for key, now in live.items():
        before = None if reset else baseline.get(key)
        if before is not None and now.calls >= before.calls:
            now = Counters(
                now.query,
                now.calls - before.calls,
                now.total_ms - before.total_ms,
                now.sumsq_ms - before.sumsq_ms,
                now.min_ms,
                now.max_ms,
                now.rows - before.rows,
            )
        if now.calls > 0:
            result[key] = now
    return result


def statements(
    delta: Mapping[Key, Counters],
    pattern: re.Pattern[str],
    owners: Mapping[str, str],
    order: Sequence[str],
) -> list[StatementStats]:
    """Each statement of the window with its feature, mean and p95, slowest mean first."""
    result = []
    for (userid, queryid), c in delta.items():
        feature, tables = feature_of(c.query, pattern, owners, order)
        mean, high = p95(c.calls, c.total_ms, c.sumsq_ms, c.max_ms)
        result.append(
            StatementStats(
                userid,
                queryid,
                c.query,
                feature,
                tables,
                c.calls,
                c.total_ms,
                mean,
                high,
                c.max_ms,
                c.rows,
            )
        )
    return sorted(result, key=lambda s: s.mean_ms, reverse=True)


def features(delta: Mapping[Key, Counters], found: Sequence[StatementStats]) -> list[FeatureStats]:
    """The window's statements summed per feature, most time first."""

    groups: dict[str, list[StatementStats]] = {}
    for s in found:
        groups.setdefault(s.feature, []).append(s)
    result = []
    for feature, members in groups.items():
        calls = sum(s.calls for s in members)
        total = sum(s.total_ms for s in members)
        sumsq = sum(delta[(s.userid, s.queryid)].sumsq_ms for s in members)
        mean, high = p95(calls, total, sumsq, max(s.max_ms for s in members))
        result.append(FeatureStats(feature, len(members), calls, total, mean, high))
    return sorted(result, key=lambda f: f.total_ms, reverse=True)
