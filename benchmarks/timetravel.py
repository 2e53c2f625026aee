"""Time-travel benchmark: find, branch and retention on long threads.

* ``find_checkpoints`` by tag, by time and by state on a thread of 10,000
  checkpoints: p50 and p95 (target p50 <= 5 ms);
* ``create_branch`` of a 1,000-checkpoint thread: time and new storage
  (targets <= 20 ms, <= 64 KiB);
* retention: checkpoints removed per second.

For reference, the same lookups done the way LangGraph offers them
(``list(filter=...)`` on ``PostgresSaver``, which reads every matching
checkpoint's values) run on the same server.

    python benchmarks/timetravel.py [--checkpoints 10000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg
from _common import fresh_database, pct, print_table, server
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.base.id import uuid6

from haive_langgraph.checkpointers import PostgresCheckpointer, RetentionPolicy


def fill(saver: Any, thread_id: str, n: int, *, tag_every: int = 100) -> list[dict[str, Any]]:
    """A thread of ``n`` checkpoints (a growing message list, a status channel)."""
    parent: dict[str, Any] = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    configs = []
    messages: list[Any] = []
    for i in range(n):
        cp = empty_checkpoint()
        cp["id"] = str(uuid6(clock_seq=i))
        if i % 2 == 0:
            messages = [*messages, HumanMessage(content=f"question {i}", id=f"h{i}")]
        else:
            messages = [*messages, AIMessage(content=f"answer {i}", id=f"a{i}")]
        status = "completed" if i % 50 == 49 else "running"
        cp["channel_values"] = {"messages": messages[-40:], "status": status, "step": i}
        cp["channel_versions"] = {"messages": i + 1, "status": i + 1, "step": i + 1}
        meta: dict[str, Any] = {"source": "loop", "step": i, "parents": {}}
        if i % tag_every == 0:
            meta["tags"] = "milestone"
        parent = saver.put(parent, cp, meta, dict(cp["channel_versions"]))
        configs.append(parent)
    return configs


def timings(fn: Any, repeat: int = 50) -> tuple[float, float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return statistics.median(out) * 1000, pct(out, 0.95) * 1000


def new_bytes(dsn: str, thread_id: str) -> int:
    """Bytes of the rows a thread owns (registry, checkpoints, writes, tags)."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            """
            SELECT
              (SELECT coalesce(sum(pg_column_size(t.*)), 0) FROM haive.threads t WHERE thread_id = %(t)s)
            + (SELECT coalesce(sum(pg_column_size(c.*)), 0) FROM haive.checkpoints c WHERE thread_id = %(t)s)
            + (SELECT coalesce(sum(pg_column_size(w.*)), 0) FROM haive.writes w WHERE thread_id = %(t)s)
            + (SELECT coalesce(sum(pg_column_size(g.*)), 0) FROM haive.checkpoint_tags g WHERE thread_id = %(t)s)
            """,
            {"t": thread_id},
        ).fetchone()
        assert row is not None
        return int(row[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", type=int, default=10_000)
    parser.add_argument("--branch-source", type=int, default=1_000)
    args = parser.parse_args()
    with server() as srv, fresh_database(srv, "tt") as dsn:
        with PostgresCheckpointer.from_conn_string(dsn) as saver:
            saver.setup()
            start = time.perf_counter()
            configs = fill(saver, "long", args.checkpoints)
            fill_s = time.perf_counter() - start
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("ANALYZE")
            middle_time = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=fill_s / 2)
            rows = []
            for label, fn in [
                (
                    "find by tag (100 of 10k)",
                    lambda: saver.find_checkpoints("long", tags=["milestone"]),
                ),
                (
                    "find by tag, limit 10",
                    lambda: saver.find_checkpoints("long", tags=["milestone"], limit=10),
                ),
                (
                    "find before a time, limit 10",
                    lambda: saver.find_checkpoints("long", before=middle_time, limit=10),
                ),
                (
                    "find after a checkpoint, limit 10",
                    lambda: saver.find_checkpoints(
                        "long", after=configs[len(configs) // 2], limit=10
                    ),
                ),
                (
                    "find by state, limit 10",
                    lambda: saver.find_checkpoints(
                        "long", state_matching={"status": "completed"}, limit=10
                    ),
                ),
                (
                    "find by metadata step",
                    lambda: saver.find_checkpoints("long", metadata={"step": 4321}),
                ),
            ]:
                p50, p95 = timings(fn)
                rows.append([label, f"{p50:.2f}", f"{p95:.2f}", len(fn())])
            print_table(
                f"find_checkpoints on a thread of {args.checkpoints} checkpoints (target p50 <= 5 ms)",
                ["query", "p50 ms", "p95 ms", "results"],
                rows,
            )

            src = fill(saver, "source", args.branch_source, tag_every=10**9)
            branch_times = []
            branch_sizes = []
            for i in range(20):
                start = time.perf_counter()
                branch = saver.create_branch(src[-1], f"b{i}")
                branch_times.append((time.perf_counter() - start) * 1000)
                branch_sizes.append(new_bytes(dsn, branch["configurable"]["thread_id"]))
            print_table(
                f"create_branch of a {args.branch_source}-checkpoint thread (targets <= 20 ms, <= 64 KiB)",
                ["p50 ms", "max ms", "new bytes per branch"],
                [
                    [
                        f"{statistics.median(branch_times):.2f}",
                        f"{max(branch_times):.2f}",
                        max(branch_sizes),
                    ]
                ],
            )

            start = time.perf_counter()
            report = saver.apply_retention(
                RetentionPolicy(max_checkpoints_per_thread=100, keep_tagged=False),
                thread_ids=["long"],
            )
            elapsed = time.perf_counter() - start
            print_table(
                "retention: keep the newest 100 of the long thread",
                ["checkpoints removed", "seconds", "checkpoints/s", "values removed", "bytes"],
                [
                    [
                        report.checkpoints,
                        f"{elapsed:.2f}",
                        f"{report.checkpoints / elapsed:.0f}",
                        report.blobs,
                        report.bytes,
                    ]
                ],
            )
        print(
            f"\n(filling {args.checkpoints} checkpoints took {fill_s:.1f} s: {args.checkpoints / fill_s:.0f} puts/s)"
        )

    # The reference: LangGraph's PostgresSaver finds tagged checkpoints by
    # metadata filter, reading each match in full.
    with server() as srv, fresh_database(srv, "ttref") as dsn:
        from langgraph.checkpoint.postgres import PostgresSaver

        with PostgresSaver.from_conn_string(dsn) as ref:
            ref.setup()
            fill(ref, "long", args.checkpoints)
            p50, p95 = timings(
                lambda: list(
                    ref.list({"configurable": {"thread_id": "long"}}, filter={"tags": "milestone"})
                ),
                10,
            )
            print_table(
                "reference: PostgresSaver.list(filter={'tags': 'milestone'})",
                ["p50 ms", "p95 ms"],
                [[f"{p50:.2f}", f"{p95:.2f}"]],
            )


if __name__ == "__main__":
    main()
