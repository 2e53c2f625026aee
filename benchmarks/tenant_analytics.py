"""Tenant analytics on 100 tenants x 1,000 conversations (issue 21 part 5).

Loads, with COPY, per tenant ``--conversations`` conversations of
``--batches`` message batches each (a human message and an AI reply with
token usage and cost per batch, ~600-byte bodies, spread over 60 days), a few
store items and request counters; then times ``tenant_analytics`` over the
last 30 days and over the last day (best and median of ``--repeat``), and
each of its statements alone (EXPLAIN ANALYZE's execution time).

    python benchmarks/tenant_analytics.py [--tenants 100] [--conversations 1000]

Uses ``HAIVE_BENCH_DATABASE_URL`` or a fresh embedded server.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fresh_database, p50, print_table, server, timed

from haive_langgraph.db._render import render
from haive_langgraph.ops import migrate_all
from haive_langgraph.tenants import _analytics_sql as A
from haive_langgraph.tenants._analytics import resolve_range, tenant_analytics

MODELS = ("gpt-a", "gpt-b", "claude-c")


def load(dsn: str, tenants: int, conversations: int, batches: int) -> dict[str, int]:
    rng = random.Random(21)
    now = dt.datetime.now(dt.UTC)
    body = os.urandom(600)
    rows = {"conversations": 0, "batches": 0, "items": 0}
    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
        with cur.copy("COPY haive.tenants (tenant_id, display_name) FROM STDIN") as copy:
            for t in range(tenants):
                copy.write_row((f"tenant-{t:03}", f"Tenant {t}"))
        with cur.copy(
            "COPY haive.conversations (tenant_id, conversation_id, user_id, agent_id, "
            "created_at, updated_at, last_message_at, message_count) FROM STDIN"
        ) as copy:
            for t in range(tenants):
                for c in range(conversations):
                    at = now - dt.timedelta(seconds=rng.uniform(0, 60 * 86400))
                    copy.write_row((f"tenant-{t:03}", f"c{c}", "u", "bot", at, at, at, 2 * batches))
                    rows["conversations"] += 1
        with cur.copy(
            "COPY haive.conversation_messages (tenant_id, conversation_id, seq, n, created_at, "
            "message_ids, roles, models, input_tokens, output_tokens, total_tokens, costs, body) "
            "FROM STDIN"
        ) as copy:
            # Batches in time order, as appends write them (what the BRIN index relies on).
            entries = []
            for t in range(tenants):
                for c in range(conversations):
                    start = now - dt.timedelta(seconds=rng.uniform(0, 60 * 86400))
                    for b in range(batches):
                        entries.append((start + dt.timedelta(minutes=b), t, c, b))
            entries.sort()
            for at, t, c, b in entries:
                it, ot = rng.randint(50, 500), rng.randint(20, 300)
                copy.write_row(
                    (
                        f"tenant-{t:03}",
                        f"c{c}",
                        2 * b,
                        2,
                        at,
                        [f"h{c}-{b}", f"a{c}-{b}"],
                        ["human", "ai"],
                        [None, MODELS[(t + c) % len(MODELS)]],
                        [None, it],
                        [None, ot],
                        [None, it + ot],
                        [None, (it + 3 * ot) / 1_000_000],
                        body,
                    )
                )
                rows["batches"] += 1
        with cur.copy(
            "COPY haive.store_items (tenant_id, namespace, key, value) FROM STDIN"
        ) as copy:
            for t in range(tenants):
                for k in range(100):
                    copy.write_row((f"tenant-{t:03}", ["docs"], f"k{k}", body[:300]))
                    rows["items"] += 1
        if cur.execute("SELECT to_regclass('haive.tenant_requests')").fetchone() != (None,):
            with cur.copy("COPY haive.tenant_requests (tenant_id, minute, n) FROM STDIN") as copy:
                minute = now.replace(second=0, microsecond=0)
                for t in range(tenants):
                    for m in range(0, 60 * 24 * 7, 10):
                        copy.write_row((f"tenant-{t:03}", minute - dt.timedelta(minutes=m), 3))
        conn.execute("VACUUM ANALYZE")
    return rows


def explain_ms(dsn: str, template: str, params: dict[str, Any]) -> float:
    with psycopg.connect(dsn, autocommit=True) as conn:
        plan = conn.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + render(template, "haive"), params
        ).fetchone()
        assert plan is not None
        return float(plan[0][0]["Execution Time"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=2, help="message batches per conversation")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with server() as srv, fresh_database(srv, "tenant_analytics") as dsn:
        migrate_all(dsn)
        started = time.perf_counter()
        rows = load(dsn, args.tenants, args.conversations, args.batches)
        print(
            f"loaded {rows['conversations']:,} conversations, {rows['batches']:,} message "
            f"batches ({2 * rows['batches']:,} messages), {rows['items']:,} store items "
            f"in {time.perf_counter() - started:.1f} s"
        )
        results = []
        for label, window in (("30 days", dt.timedelta(days=30)), ("1 day", dt.timedelta(days=1))):
            usages: list[Any] = []

            def run(window: dt.timedelta = window, out: list[Any] = usages) -> None:
                out[:] = tenant_analytics(dsn, since=window)

            times = timed(run, args.repeat)
            messages = sum(u.messages for u in usages)
            results.append(
                [
                    label,
                    len(usages),
                    f"{messages:,}",
                    f"{min(times) * 1000:.0f}",
                    f"{p50(times) * 1000:.0f}",
                ]
            )
        print_table(
            "tenant_analytics (one call: a pool opened, every statement, closed)",
            ["range", "tenants", "messages in range", "best ms", "median ms"],
            results,
        )
        since, until = resolve_range(dt.timedelta(days=30), None)
        narrow, _ = resolve_range(dt.timedelta(days=1), until)
        statements = [
            ("usage by day and model, 30 days", A.USAGE_BY_DAY, {"since": since, "until": until}),
            ("usage by day and model, 1 day", A.USAGE_BY_DAY, {"since": narrow, "until": until}),
            (
                "conversations created, 30 days",
                A.CONVERSATIONS_CREATED,
                {"since": since, "until": until},
            ),
            (
                "conversations created, 1 day",
                A.CONVERSATIONS_CREATED,
                {"since": narrow, "until": until},
            ),
            *((f"storage: {c}", A.STORAGE[c], {}) for c in A.STORAGE),
            ("requests, 30 days", A.REQUESTS, {"since": since, "until": until}),
        ]
        print_table(
            "statements alone (EXPLAIN ANALYZE execution time, best of 3)",
            ["statement", "ms"],
            [
                [name, f"{min(explain_ms(dsn, q, p) for _ in range(3)):.1f}"]
                for name, q, p in statements
            ],
        )


if __name__ == "__main__":
    main()
