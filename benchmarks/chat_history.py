"""Chat history benchmark: haive-langgraph against ``langchain-postgres``, same server.

One command, one run, side by side (a fresh database per variant and round):
SESSIONS sessions x MESSAGES messages written through LangChain's
``BaseChatMessageHistory`` API, for ``langchain-postgres``'s
``PostgresChatMessageHistory`` (its only mode: a lent connection it commits
on) and haive-langgraph's ``PostgresChatMessageHistory`` on a lent
autocommit connection and on a connection pool.

Measured per variant:

* messages/s appended in batches of ``--batch`` (``add_messages``), the
  sessions taking turns as in a live service;
* messages/s appended one at a time (``add_message``: one statement and one
  commit each);
* reading one whole session (``.messages``): p50 and best over every session.

Writes run with each ``--writers`` count: that many threads, each writing its
share of the sessions (langchain-postgres gets a connection per thread, as it
binds a history to one connection). One writer shows the latency-bound rate
(every batch waits for its commit's WAL flush, about 0.3-0.4 ms here); several
show what a service with concurrent users gets, as PostgreSQL flushes the
commits of concurrent writers together.

Variants run in interleaved rounds and each keeps its best round (this
machine's speed drifts). Commits are durable (``synchronous_commit=on``).

    python benchmarks/chat_history.py
    python benchmarks/chat_history.py --sessions 50 --messages 200 --rounds 3

``HAIVE_BENCH_DATABASE_URL`` points it at another server (it creates and
drops its own databases there); otherwise an embedded PostgreSQL is started.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg
from _common import fresh_database, p50, print_table, server, server_settings
from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

_TEXT = (
    "the agent reads the thread and answers with care about memory storage checkpoint "
    "postgres value list graph state message tool call result user question context "
    "summary plan step retry branch fork history time travel index vector search"
)
WORDS = _TEXT.split()

TARGETS = {"batched": 45_000.0, "single": 2_200.0, "read_ms": 2.0}


def conversation(rng: random.Random, n: int) -> list[BaseMessage]:
    """A chat of ``n`` messages: questions of ~25 words, answers of ~60 with usage."""
    out: list[BaseMessage] = []
    for i in range(n):
        if i % 2 == 0:
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(10, 40)))
            out.append(HumanMessage(content=text, id=str(uuid.UUID(int=rng.getrandbits(128)))))
        else:
            words = rng.randint(30, 90)
            out.append(
                AIMessage(
                    content=" ".join(rng.choice(WORDS) for _ in range(words)),
                    id=f"run-{uuid.UUID(int=rng.getrandbits(128))}-0",
                    response_metadata={"model_name": "demo-echo-1", "finish_reason": "stop"},
                    usage_metadata={
                        "input_tokens": 40 * i,
                        "output_tokens": words,
                        "total_tokens": 40 * i + words,
                    },
                )
            )
    return out


@dataclass
class Result:
    name: str
    batched: float = 0.0
    single: float = 0.0
    read_p50_ms: float = float("inf")
    read_best_ms: float = float("inf")
    samples: list[float] = field(default_factory=list)

    def merge(self, other: Result) -> None:
        self.batched = max(self.batched, other.batched)
        self.single = max(self.single, other.single)
        self.read_p50_ms = min(self.read_p50_ms, other.read_p50_ms)
        self.read_best_ms = min(self.read_best_ms, other.read_best_ms)


HistoryFor = Callable[[str], BaseChatMessageHistory]


@contextmanager
def langchain_postgres(dsn: str, writers: int) -> Iterator[list[HistoryFor]]:
    """langchain-postgres: one connection per writer (a history is bound to one)."""
    from langchain_postgres import PostgresChatMessageHistory

    conns = [psycopg.connect(dsn) for _ in range(writers)]
    PostgresChatMessageHistory.create_tables(conns[0], "chat_history")

    def bind(conn: psycopg.Connection[Any]) -> HistoryFor:
        return lambda sid: PostgresChatMessageHistory("chat_history", sid, sync_connection=conn)

    try:
        yield [bind(c) for c in conns]
    finally:
        for c in conns:
            c.close()


@contextmanager
def haive_connection(dsn: str, writers: int) -> Iterator[list[HistoryFor]]:
    """haive-langgraph on lent autocommit connections, one per writer."""
    from haive_langgraph.memory import history_factory

    conns = [psycopg.connect(dsn, autocommit=True) for _ in range(writers)]
    factories = [history_factory(c) for c in conns]
    factories[0].setup()
    try:
        yield list(factories)
    finally:
        for c in conns:
            c.close()


@contextmanager
def haive_pool(dsn: str, writers: int) -> Iterator[list[HistoryFor]]:
    """haive-langgraph on its own pool, shared by every writer."""
    from haive_langgraph.db import PersistenceConfig
    from haive_langgraph.memory import history_factory

    config = PersistenceConfig(pool_min_size=writers, pool_max_size=max(writers, 2))
    with history_factory(dsn, config=config) as factory:
        factory.setup()
        yield [factory] * writers


VARIANTS: list[tuple[str, Callable[[str, int], Any]]] = [
    ("langchain-postgres", langchain_postgres),
    ("haive (connection)", haive_connection),
    ("haive (pool)", haive_pool),
]


def in_parallel(jobs: list[Callable[[], None]]) -> float:
    """Run ``jobs`` on as many threads, started together; seconds until all are done."""
    if len(jobs) == 1:
        start = time.perf_counter()
        jobs[0]()
        return time.perf_counter() - start
    barrier = threading.Barrier(len(jobs) + 1)
    errors: list[BaseException] = []

    def run(job: Callable[[], None]) -> None:
        barrier.wait()
        try:
            job()
        except BaseException as exc:  # re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(j,)) for j in jobs]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return elapsed


def run_variant(
    name: str,
    factory: Callable[[str, int], Any],
    server_dsn: str,
    args: argparse.Namespace,
    writers: int,
) -> Result:
    rng = random.Random(7)
    chats = {
        str(uuid.UUID(int=rng.getrandbits(128))): conversation(rng, args.messages)
        for _ in range(args.sessions)
    }
    sids = list(chats)
    # Writer w owns every writers-th session, as a service's workers would.
    shares = [sids[w::writers] for w in range(writers)]
    total = args.sessions * args.messages
    result = Result(name)

    def batched(history_for: HistoryFor, mine: list[str]) -> Callable[[], None]:
        histories = {sid: history_for(sid) for sid in mine}

        def job() -> None:
            for lo in range(0, args.messages, args.batch):
                for sid in mine:
                    histories[sid].add_messages(chats[sid][lo : lo + args.batch])

        return job

    def single(history_for: HistoryFor, mine: list[str]) -> Callable[[], None]:
        histories = {sid: history_for(sid) for sid in mine}

        def job() -> None:
            for i in range(args.messages):
                for sid in mine:
                    histories[sid].add_message(chats[sid][i])

        return job

    with fresh_database(server_dsn, "hist") as dsn, factory(dsn, writers) as history_fors:
        gc.collect()
        elapsed = in_parallel([batched(h, m) for h, m in zip(history_fors, shares, strict=True)])
        result.batched = total / elapsed
        reader = history_fors[0]
        for sid, chat in chats.items():
            got = reader(sid).messages
            if [m.content for m in got] != [m.content for m in chat] or [m.id for m in got] != [
                m.id for m in chat
            ]:
                raise SystemExit(f"{name}: session {sid} read back different messages")
        times = []
        for _ in range(5):
            for sid in chats:
                history = reader(sid)
                t0 = time.perf_counter()
                history.messages  # noqa: B018
                times.append(time.perf_counter() - t0)
        result.read_p50_ms = p50(times) * 1000
        result.read_best_ms = min(times) * 1000
    with fresh_database(server_dsn, "hist") as dsn, factory(dsn, writers) as history_fors:
        gc.collect()
        elapsed = in_parallel([single(h, m) for h, m in zip(history_fors, shares, strict=True)])
        result.single = total / elapsed
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument(
        "--writers",
        type=int,
        nargs="+",
        default=[1, 4],
        help="concurrent writer threads (each a set of sessions); one table per value",
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; best counts")
    args = parser.parse_args()
    # BaseChatMessageHistory is deprecated upstream (langchain-core 1.6.4) in
    # favour of LangGraph persistence; the benchmark measures it regardless.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    results: dict[int, dict[str, Result]] = {w: {} for w in args.writers}
    with server() as server_dsn:
        print("server:", server_settings(server_dsn))
        for r in range(args.rounds):
            for writers in args.writers:
                for name, factory in VARIANTS:
                    res = run_variant(name, factory, server_dsn, args, writers)
                    print(
                        f"  round {r + 1} writers {writers} {name:<20} batched "
                        f"{res.batched:9.0f}/s  single {res.single:7.0f}/s  "
                        f"read p50 {res.read_p50_ms:6.2f} ms",
                        flush=True,
                    )
                    if name in results[writers]:
                        results[writers][name].merge(res)
                    else:
                        results[writers][name] = res
    for writers in args.writers:
        report(args, writers, results[writers])


def report(args: argparse.Namespace, writers: int, results: dict[str, Result]) -> None:
    ref = results["langchain-postgres"]
    rows = []
    for r in results.values():
        rows.append(
            [
                r.name,
                f"{r.batched:,.0f}",
                f"{r.batched / ref.batched:.2f}x",
                f"{r.single:,.0f}",
                f"{r.single / ref.single:.2f}x",
                f"{r.read_p50_ms:.2f}",
                f"{r.read_best_ms:.2f}",
                f"{ref.read_p50_ms / r.read_p50_ms:.2f}x",
            ]
        )
    print_table(
        f"{args.sessions} sessions x {args.messages} messages, {writers} writer thread(s) "
        f"(batches of {args.batch}; best of {args.rounds} interleaved rounds)",
        [
            "variant",
            "batched msg/s",
            "vs lc-pg",
            "single msg/s",
            "vs lc-pg",
            f"read {args.messages} p50 ms",
            "best ms",
            "read speedup",
        ],
        rows,
    )
    print(f"\ntargets (haive, {writers} writer(s)):")
    for name in ("haive (connection)", "haive (pool)"):
        r = results[name]
        print(
            f"  {name:<20} batched {r.batched:,.0f}/s (>= {TARGETS['batched']:,.0f})  "
            f"single {r.single:,.0f}/s (>= {TARGETS['single']:,.0f})  "
            f"read p50 {r.read_p50_ms:.2f} ms (<= {TARGETS['read_ms']:.0f})"
        )


if __name__ == "__main__":
    main()
