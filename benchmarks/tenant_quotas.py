"""What tenant quotas cost: checkpointer puts and conversation appends, quotas off and on.

Four databases on one server, each migrated with every component:

* ``no quota component``: every component but ``tenant_quotas`` (no triggers:
  the cost before quotas existed);
* ``quotas, none set``: ``tenant_quotas`` migrated, no tenant guarded (the
  triggers fire and exit on their first check: ``tenant_usage`` is empty);
* ``quotas, others guarded``: 100 other tenants have a quota, the measured
  tenant has none (the first check passes, the second finds the tenant
  unguarded);
* ``quota on``: the measured tenant has every limit set (high enough never
  to refuse): its writes are charged, counted per minute, and checked.

Measured, in rounds interleaved across the variants (each round a new thread
/ conversation): ``put`` of a chat checkpoint (a messages list growing by
two per step, as a ``MessagesState`` graph writes) and ``add_message`` of a
~400-byte text to a conversation, each component on its own connection.
Printed per operation, median of the rounds: wall time, and the CPU time of
the server process serving the connection (``/proc/<pid>/schedstat``, when
the server runs on this machine): on a busy machine wall time mostly
measures the others' load, CPU time only our work. Then the server time of
the quota trigger functions themselves (``pg_stat_user_functions``). The
databases run with ``synchronous_commit = off`` unless ``--durable``: the
fsync of each commit (milliseconds on a busy disk) would drown the rest.

    python benchmarks/tenant_quotas.py [--rounds 7] [--ops 200] [--durable]

Uses ``HAIVE_BENCH_DATABASE_URL`` or a fresh embedded server.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import psycopg
from _common import fresh_database, print_table, server, server_settings
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.base import empty_checkpoint
from psycopg import sql

from haive_langgraph.checkpointers import PostgresCheckpointer
from haive_langgraph.db._connections import ConnectionSource
from haive_langgraph.db._migrations import migrate_op
from haive_langgraph.memory import ConversationStore
from haive_langgraph.ops import all_components
from haive_langgraph.tenants import TenantQuota, TenantRegistry

TENANT = "bench-tenant"
# A variant's saver, conversation store, and the connection each runs on.
Variant = tuple[PostgresCheckpointer, ConversationStore, list[psycopg.Connection[Any]]]
VARIANTS = ("no quota component", "quotas, none set", "quotas, others guarded", "quota on")
TEXT = "The quick brown fox jumps over the lazy dog. " * 9  # ~400 bytes
HIGH = TenantQuota(
    max_conversations=10**9,
    max_sessions=10**9,
    max_checkpoints_per_thread=10**9,
    max_storage_bytes=10**15,
    max_requests_per_minute=10**9,
    max_tokens_per_month=10**12,
)


def prepare(dsn: str, variant: str, durable: bool) -> None:
    if not durable:  # without the commit's fsync, what is left is the work of the statements
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET synchronous_commit = off").format(
                    sql.Identifier(conn.info.dbname)
                )
            )
    with psycopg.connect(dsn, autocommit=True) as conn:  # time the trigger functions
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET track_functions = 'pl'").format(
                sql.Identifier(conn.info.dbname)
            )
        )
    components = all_components()
    if variant == "no quota component":
        components = [c for c in components if c.name != "tenant_quotas"]
    source = ConnectionSource(dsn)
    try:
        source.run(lambda: migrate_op(components, "haive"), transaction=True)
    finally:
        source.close()
    if variant in ("no quota component", "quotas, none set"):
        return
    with TenantRegistry(dsn) as registry:
        if variant == "quotas, others guarded":
            for i in range(100):
                registry.create(f"other-{i:03}", quota=TenantQuota(max_conversations=1000))
        else:
            registry.create(TENANT, quota=HIGH)


# The trigger functions each operation fires (their total time includes the charge).
TRIGGERS = {
    "checkpointer put": ("haive_quota_checkpoints", "haive_quota_blobs"),
    "conversation append": ("haive_quota_conversations", "haive_quota_conversation_messages"),
}


def trigger_time(dsn: str) -> dict[str, tuple[int, float]]:
    """Calls and total milliseconds of each quota trigger function in the database."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT funcname::text, calls, total_time FROM pg_stat_user_functions "
            "WHERE funcname::text LIKE 'haive_quota_%'"
        ).fetchall()
    return {str(f): (int(c), float(t)) for f, c, t in rows}


def server_cpu(conn: psycopg.Connection[Any]) -> float | None:
    """Seconds of CPU the server process of ``conn`` has used (None: not readable here)."""
    try:
        with open(f"/proc/{conn.info.backend_pid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def checkpoint_puts(saver: PostgresCheckpointer, n: int) -> float:
    """Seconds for ``n`` puts of one new thread's chat checkpoints."""
    config: Any = {"configurable": {"thread_id": uuid.uuid4().hex, "checkpoint_ns": ""}}
    messages: list[Any] = []
    start = time.perf_counter()
    for step in range(n):
        messages = [*messages, HumanMessage(f"{step}: {TEXT}"), AIMessage(f"re {step}: {TEXT}")]
        cp = empty_checkpoint()
        version = f"{step + 1:032}.0"
        cp["channel_values"] = {"messages": messages}
        cp["channel_versions"] = {"messages": version}
        config = saver.put(config, cp, {"source": "loop", "step": step}, {"messages": version})
    return time.perf_counter() - start


def appends(store: ConversationStore, n: int) -> float:
    """Seconds for ``n`` appends to one new conversation."""
    conv = store.create_conversation("bot", "alice").conversation_id
    start = time.perf_counter()
    for i in range(n):
        store.add_message(conv, "user" if i % 2 == 0 else "ai", TEXT)
    return time.perf_counter() - start


@contextmanager
def opened(server_dsn: str, dsns: list[str], durable: bool) -> Iterator[dict[str, Variant]]:
    with ExitStack() as stack:
        out = {}
        for variant in VARIANTS:
            label = variant.split(",")[0].replace(" ", "_")[:12]
            dsn = stack.enter_context(fresh_database(server_dsn, f"quota_{label}"))
            prepare(dsn, variant, durable)
            dsns.append(dsn)
            conns = [psycopg.connect(dsn, autocommit=True) for _ in range(2)]
            for conn in conns:
                stack.callback(conn.close)
            saver = PostgresCheckpointer(conns[0], tenant_id=TENANT)
            store = ConversationStore(conns[1], tenant_id=TENANT)
            out[variant] = (saver, store, conns)
        yield out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--ops", type=int, default=200, help="operations per round")
    parser.add_argument(
        "--durable",
        action="store_true",
        help="keep synchronous_commit on (default off: the commit's fsync would hide the rest)",
    )
    args = parser.parse_args()
    dsns: list[str] = []
    with server() as server_dsn, opened(server_dsn, dsns, args.durable) as variants:
        print(server_settings(dsns[0]))
        wall: dict[tuple[str, str], list[float]] = {}
        cpu: dict[tuple[str, str], list[float]] = {}
        runs: dict[str, tuple[int, Callable[[PostgresCheckpointer, ConversationStore], float]]] = {
            "checkpointer put": (0, lambda saver, _: checkpoint_puts(saver, args.ops)),
            "conversation append": (1, lambda _, store: appends(store, args.ops)),
        }
        for _, run in runs.values():  # warm-up: connections, prepared statements
            for saver, store, _conns in variants.values():
                run(saver, store)
        for _ in range(args.rounds):
            for name, (which, run) in runs.items():
                for variant, (saver, store, conns) in variants.items():
                    before = server_cpu(conns[which])
                    seconds = run(saver, store)
                    after = server_cpu(conns[which])
                    wall.setdefault((name, variant), []).append(seconds / args.ops)
                    if before is not None and after is not None:
                        cpu.setdefault((name, variant), []).append((after - before) / args.ops)
        rows = []
        for name in runs:
            base = cpu.get((name, VARIANTS[0]))
            for variant in VARIANTS:
                per_op = statistics.median(wall[(name, variant)])
                used = cpu.get((name, variant))
                server_cells = ["-", "-", "-"]
                if used and base:
                    server_cells = [
                        f"{statistics.median(used) * 1e6:,.1f}",
                        f"{min(used) * 1e6:,.1f}",
                        f"{(statistics.median(used) - statistics.median(base)) * 1e6:+,.1f}"
                        f" / {(min(used) - min(base)) * 1e6:+,.1f}",
                    ]
                rows.append(
                    (name, variant, f"{1 / per_op:,.0f}", f"{per_op * 1e6:,.0f}", *server_cells)
                )
        print_table(
            f"median of {args.rounds} rounds x {args.ops} operations (one thread)",
            (
                "operation",
                "variant",
                "ops/s",
                "wall us/op",
                "server CPU us/op",
                "best",
                "vs first (median / best)",
            ),
            rows,
        )
        for _saver, _store, conns in variants.values():  # their backends report statistics
            for conn in conns:
                conn.close()
        time.sleep(1.0)
        ops = (args.rounds + 1) * args.ops
        rows = []
        for variant, dsn in zip(VARIANTS, dsns, strict=True):
            spent = trigger_time(dsn)
            for name, functions in TRIGGERS.items():
                calls = sum(spent.get(f, (0, 0.0))[0] for f in functions)
                ms = sum(spent.get(f, (0, 0.0))[1] for f in functions)
                rows.append((name, variant, f"{calls / ops:.2f}", f"{ms * 1000 / ops:.1f}"))
        print_table(
            "server time in the quota triggers (pg_stat_user_functions, track_functions = pl)",
            ("operation", "variant", "trigger calls/op", "trigger us/op"),
            rows,
        )


if __name__ == "__main__":
    main()
