"""Chat history benchmark: haive-langgraph against ``langchain-postgres``, same server.

One command, one run, side by side: SESSIONS sessions x MESSAGES messages
written through LangChain's ``BaseChatMessageHistory`` API, for
``langchain-postgres``'s ``PostgresChatMessageHistory`` (its only mode: a
lent connection it commits on), haive-langgraph's
``PostgresChatMessageHistory`` on a lent autocommit connection (the case the
targets are set for) and on its own pool, and a floor.

Measured per variant:

* messages/s appended in batches of ``--batch`` (``add_messages``), the
  sessions taking turns as in a live service;
* messages/s appended one at a time (``add_message``: one durable commit
  each, for every variant);
* reading one whole session (``.messages``): p50 and best over every session.

The floor is what no history on that connection can beat: one ``INSERT`` of
the batch's already encoded bytes per call and its commit (no serialisation,
no counters). Ours is printed as a fraction of it.

Variants run **interleaved**, call by call: every session's step is taken by
each variant in turn (the order rotating), so that all of them see the same
machine at the same moment. On a shared machine whose load and disk latency
drift by 5x within a minute, a ratio of totals measured this way holds where
best-of rounds run one after the other do not. Each variant writes to its own
database on the one server. Commits are durable (``synchronous_commit=on``):
every append waits for its WAL flush, which the run also measures alone
(``commit floor``); the more of a call that wait is, the closer every ratio
comes to 1.

Writes run with each ``--writers`` count: that many threads, each writing its
share of the sessions (``langchain-postgres`` and the lent-connection variant
get a connection per thread, as a history is bound to one); with several
writers the interleaving is per step of all sessions instead of per call.

    python benchmarks/chat_history.py
    python benchmarks/chat_history.py --writers 1 --rounds 3

``HAIVE_BENCH_DATABASE_URL`` points it at another server (it creates and
drops its own databases there); otherwise an embedded PostgreSQL is started.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
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

# Issue 19, for haive on one lent connection and one writer, against
# langchain-postgres in the same run.
TARGETS = {"batched": 1.5, "single": 1.0, "read": 2.0}
REFERENCE = "langchain-postgres"
OURS = "haive (connection)"
FLOOR = "floor: 1 INSERT/call"


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
    """Totals of one variant over every round (seconds and counts)."""

    name: str
    batched_s: float = 0.0
    batched_n: int = 0
    single_s: float = 0.0
    single_n: int = 0
    reads: list[float] = field(default_factory=list)

    @property
    def batched(self) -> float:
        return self.batched_n / self.batched_s if self.batched_s else 0.0

    @property
    def single(self) -> float:
        return self.single_n / self.single_s if self.single_s else 0.0

    @property
    def read_p50_ms(self) -> float:
        return p50(self.reads) * 1000 if self.reads else float("nan")

    @property
    def read_best_ms(self) -> float:
        return min(self.reads) * 1000 if self.reads else float("nan")


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


class _FloorHistory(BaseChatMessageHistory):
    """One ``INSERT`` of pre-encoded bytes and its commit per call: the floor."""

    def __init__(self, conn: psycopg.Connection[Any], sid: str, bodies: dict[int, bytes]) -> None:
        self.conn, self.sid, self.bodies, self.seq = conn, sid, bodies, 0

    @property  # type: ignore[override]
    def messages(self) -> list[BaseMessage]:
        return []

    def add_messages(self, messages: Any) -> None:
        self.conn.execute(
            "INSERT INTO floor (session_id, seq, body) VALUES (%s, %s, %s)",
            (self.sid, self.seq, self.bodies[len(messages)]),
            prepare=True,
        )
        self.seq += len(messages)

    def clear(self) -> None:
        pass


@contextmanager
def floor(dsn: str, writers: int) -> Iterator[list[HistoryFor]]:
    """The floor, on lent autocommit connections: bodies encoded before timing."""
    from haive_langgraph.memory.conversations._tables import make_tables

    _, tables = make_tables(config=None, schema=None, tenant_id=None, codec=None, serde=None)
    chat = conversation(random.Random(1), 100)
    bodies = {n: tables.planner.plan("x", chat[:n]).params["body"] for n in range(1, 101)}
    conns = [psycopg.connect(dsn, autocommit=True) for _ in range(writers)]
    conns[0].execute(
        "CREATE TABLE floor (session_id text, seq bigint, body bytea NOT NULL,"
        " PRIMARY KEY (session_id, seq))"
    )

    def bind(conn: psycopg.Connection[Any]) -> HistoryFor:
        return lambda sid: _FloorHistory(conn, sid, bodies)

    try:
        yield [bind(c) for c in conns]
    finally:
        for c in conns:
            c.close()


VARIANTS: list[tuple[str, Callable[[str, int], Any]]] = [
    (REFERENCE, langchain_postgres),
    (OURS, haive_connection),
    ("haive (pool)", haive_pool),
    (FLOOR, floor),
]


def commit_floor_ms(dsn: str, n: int = 200) -> float:
    """p50 of an empty durable commit (one tiny INSERT) on this server, now."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS commit_probe (x int)")
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            conn.execute("INSERT INTO commit_probe VALUES (1)", prepare=True)
            times.append(time.perf_counter() - t0)
        return p50(times) * 1000


class Writers:
    """Runs one step of every writer's sessions, inline for one writer, else on a
    pool of threads kept for the whole run."""

    def __init__(self, writers: int) -> None:
        self.pool = ThreadPoolExecutor(writers) if writers > 1 else None

    def run(self, jobs: list[Callable[[], None]]) -> float:
        start = time.perf_counter()
        if self.pool is None:
            for job in jobs:
                job()
        else:
            for future in [self.pool.submit(job) for job in jobs]:
                future.result()
        return time.perf_counter() - start

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def run_round(
    server_dsn: str, args: argparse.Namespace, writers: int, results: dict[str, Result]
) -> None:
    """One round: every variant on a fresh database, the variants interleaved."""
    rng = random.Random(7)
    chats = {
        str(uuid.UUID(int=rng.getrandbits(128))): conversation(rng, args.messages)
        for _ in range(args.sessions)
    }
    sids = list(chats)
    # Writer w owns every writers-th session, as a service's workers would.
    shares = [sids[w::writers] for w in range(writers)]
    crew = Writers(writers)
    names = [name for name, _ in VARIANTS]
    turn = 0

    def rotated() -> list[str]:
        nonlocal turn
        turn += 1
        k = turn % len(names)
        return names[k:] + names[:k]

    try:
        for phase, size in (("batched", args.batch), ("single", 1)):
            with ExitStack() as stack:
                histories: dict[str, list[dict[str, BaseChatMessageHistory]]] = {}
                for name, factory in VARIANTS:
                    dsn = stack.enter_context(fresh_database(server_dsn, "hist"))
                    fors = stack.enter_context(factory(dsn, writers))
                    histories[name] = [
                        {sid: f(sid) for sid in mine} for f, mine in zip(fors, shares, strict=True)
                    ]
                gc.collect()
                for lo in range(0, args.messages, size):
                    if writers == 1:
                        for sid in sids:  # call by call
                            batch = chats[sid][lo : lo + size]
                            for name in rotated():
                                h = histories[name][0][sid]
                                t0 = time.perf_counter()
                                h.add_messages(batch)
                                elapsed = time.perf_counter() - t0
                                record(results[name], phase, elapsed, len(batch))
                        continue
                    for name in rotated():  # step by step
                        jobs = [
                            _step(hs, mine, chats, lo, size)
                            for hs, mine in zip(histories[name], shares, strict=True)
                        ]
                        n = sum(len(chats[s][lo : lo + size]) for s in sids)
                        record(results[name], phase, crew.run(jobs), n)
                if phase == "batched":
                    read_back(histories, chats, rotated, results)
    finally:
        crew.close()


def _step(
    hs: dict[str, BaseChatMessageHistory],
    mine: list[str],
    chats: dict[str, list[BaseMessage]],
    lo: int,
    size: int,
) -> Callable[[], None]:
    def job() -> None:
        for sid in mine:
            hs[sid].add_messages(chats[sid][lo : lo + size])

    return job


def record(result: Result, phase: str, seconds: float, n: int) -> None:
    if phase == "batched":
        result.batched_s += seconds
        result.batched_n += n
    else:
        result.single_s += seconds
        result.single_n += n


def read_back(
    histories: dict[str, list[dict[str, BaseChatMessageHistory]]],
    chats: dict[str, list[BaseMessage]],
    rotated: Callable[[], list[str]],
    results: dict[str, Result],
) -> None:
    """Check every session reads back as written, then time whole-session reads."""
    readers = {name: _reader(hs) for name, hs in histories.items() if name != FLOOR}
    for name, reader in readers.items():
        for sid, chat in chats.items():
            got = reader[sid].messages
            if [(m.content, m.id) for m in got] != [(m.content, m.id) for m in chat]:
                raise SystemExit(f"{name}: session {sid} read back different messages")
    for _ in range(5):
        for sid in chats:
            for name in rotated():
                if name in readers:
                    history = readers[name][sid]
                    t0 = time.perf_counter()
                    history.messages  # noqa: B018
                    results[name].reads.append(time.perf_counter() - t0)


def _reader(hs: list[dict[str, BaseChatMessageHistory]]) -> dict[str, BaseChatMessageHistory]:
    return {sid: h for share in hs for sid, h in share.items()}


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
    parser.add_argument("--rounds", type=int, default=2, help="rounds; totals are summed")
    args = parser.parse_args()
    if not 1 <= args.batch <= 100:
        parser.error("--batch must be 1 to 100")
    # BaseChatMessageHistory is deprecated upstream (langchain-core 1.6.4) in
    # favour of LangGraph persistence; the benchmark measures it regardless.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    with server() as server_dsn:
        print("server:", server_settings(server_dsn))
        for writers in args.writers:
            results = {name: Result(name) for name, _ in VARIANTS}
            commits = []
            for r in range(args.rounds):
                with fresh_database(server_dsn, "probe") as probe:
                    commits.append(commit_floor_ms(probe))
                run_round(server_dsn, args, writers, results)
                ref, ours = results[REFERENCE], results[OURS]
                print(
                    f"  after round {r + 1}, {writers} writer(s): ours/lc-pg batched "
                    f"{ours.batched / ref.batched:.2f}x single {ours.single / ref.single:.2f}x "
                    f"read {ref.read_p50_ms / ours.read_p50_ms:.2f}x; "
                    f"commit floor p50 {commits[-1]:.2f} ms",
                    flush=True,
                )
            report(args, writers, results, commits)


def report(
    args: argparse.Namespace, writers: int, results: dict[str, Result], commits: list[float]
) -> None:
    ref, bottom = results[REFERENCE], results[FLOOR]
    rows = []
    for r in results.values():
        read = r.name != FLOOR
        rows.append(
            [
                r.name,
                f"{r.batched:,.0f}",
                f"{r.batched / ref.batched:.2f}x",
                f"{r.batched / bottom.batched:.2f}",
                f"{r.single:,.0f}",
                f"{r.single / ref.single:.2f}x",
                f"{r.single / bottom.single:.2f}",
                f"{r.read_p50_ms:.2f}" if read else "-",
                f"{r.read_best_ms:.2f}" if read else "-",
                f"{ref.read_p50_ms / r.read_p50_ms:.2f}x" if read else "-",
            ]
        )
    print_table(
        f"{args.sessions} sessions x {args.messages} messages, {writers} writer thread(s), "
        f"batches of {args.batch}, {args.rounds} round(s) interleaved "
        f"{'call by call' if writers == 1 else 'step by step'}; durable commits "
        f"(empty commit p50 {min(commits):.2f}-{max(commits):.2f} ms)",
        [
            "variant",
            "batched msg/s",
            "vs lc-pg",
            "of floor",
            "single msg/s",
            "vs lc-pg",
            "of floor",
            f"read {args.messages} p50 ms",
            "best ms",
            "read speedup",
        ],
        rows,
    )
    if writers != 1:
        return
    ours = results[OURS]
    got = {
        "batched": ours.batched / ref.batched,
        "single": ours.single / ref.single,
        "read": ref.read_p50_ms / ours.read_p50_ms,
    }
    print(f"\ntargets ({OURS}, 1 writer, against {REFERENCE}):")
    for key, want in TARGETS.items():
        verdict = "met" if got[key] >= want else "NOT met"
        print(f"  {key:<8} {got[key]:.2f}x (>= {want:.1f}x): {verdict}")


if __name__ == "__main__":
    main()
