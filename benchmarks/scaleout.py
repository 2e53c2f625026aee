"""Read replicas: reads split between primary and replica versus primary only.

One command, one run: a primary and one streaming replica are started on
this machine from the embedded PostgreSQL binaries (durable: fsync on), a
database is filled with chat-graph threads, and the same workloads run
against a checkpointer without replicas and one with the replica, in
interleaved rounds (the best round of each counts):

* history listing (``list``, a page of a thread's checkpoints) and search
  (``find_checkpoints`` + ``list_threads``): reads/s with READERS threads,
  alone and while a writer thread runs the chat graph on the primary;
* read-your-writes: ``put`` then ``get_tuple`` of that thread, the latency
  of ``get_tuple`` (served by a replica once it has replayed the write, or
  by the primary), and of ``put`` itself;
* statements the primary runs per ``put``, from ``pg_stat_statements``.

    python benchmarks/scaleout.py
    python benchmarks/scaleout.py --threads 40 --turns 30 --seconds 3 --rounds 3

Both servers share this machine's cores, so the split moves work between two
processes on the same CPUs rather than adding capacity: the figures show
the cost and the behaviour of routing, not the gain of a second machine.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from _common import pct, print_table  # noqa: E402
from langchain_core.messages import HumanMessage  # noqa: E402
from langgraph.checkpoint.base import empty_checkpoint  # noqa: E402

from haive_langgraph._demo import chat_graph  # noqa: E402
from haive_langgraph.checkpointers import PostgresCheckpointer  # noqa: E402
from haive_langgraph.db import PersistenceConfig  # noqa: E402
from haive_langgraph.db import stats as db_stats  # noqa: E402
from tests.scaleout.cluster import LocalCluster, dbname  # noqa: E402


@dataclass
class Setup:
    cluster: LocalCluster
    primary: str
    replica: str
    threads: list[str]


@contextmanager
def saver(setup: Setup, split: bool, **settings: Any) -> Iterator[PostgresCheckpointer]:
    config = PersistenceConfig(pool_max_size=16, **settings)
    cp = PostgresCheckpointer(
        setup.primary, config=config, replicas=[setup.replica] if split else []
    )
    try:
        yield cp
    finally:
        cp.close()


def fill(primary: str, threads: int, turns: int) -> list[str]:
    cp = PostgresCheckpointer(primary)
    cp.setup()
    graph = chat_graph().compile(checkpointer=cp)
    names = [f"bench-{t}" for t in range(threads)]
    try:
        for name in names:
            config: Any = {"configurable": {"thread_id": name, "user_id": f"u{hash(name) % 7}"}}
            for turn in range(turns):
                graph.invoke({"messages": [HumanMessage(content=f"turn {turn}")]}, config)
    finally:
        cp.close()
    return names


# -- throughput -------------------------------------------------------------------------------


def run_for(seconds: float, workers: int, op: Callable[[random.Random], None]) -> float:
    """Operations per second of ``workers`` threads calling ``op`` for ``seconds``."""
    done = [0] * workers
    stop = time.monotonic() + seconds
    errors: list[BaseException] = []

    def work(i: int) -> None:
        rng = random.Random(i)
        try:
            while time.monotonic() < stop:
                op(rng)
                done[i] += 1
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    start = time.monotonic()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if errors:
        raise errors[0]
    return sum(done) / (time.monotonic() - start)


@contextmanager
def background_writer(setup: Setup) -> Iterator[list[int]]:
    """A thread running the chat graph on the primary (its own saver) meanwhile."""
    invokes = [0]
    stop = threading.Event()
    cp = PostgresCheckpointer(setup.primary)
    graph = chat_graph().compile(checkpointer=cp)

    def write() -> None:
        config: Any = {"configurable": {"thread_id": f"writer-{uuid.uuid4().hex[:8]}"}}
        while not stop.is_set():
            graph.invoke({"messages": [HumanMessage(content="more")]}, config)
            invokes[0] += 1

    thread = threading.Thread(target=write)
    thread.start()
    try:
        yield invokes
    finally:
        stop.set()
        thread.join()
        cp.close()


def history_op(cp: PostgresCheckpointer, threads: list[str]) -> Callable[[random.Random], None]:
    def op(rng: random.Random) -> None:
        config: Any = {"configurable": {"thread_id": rng.choice(threads)}}
        list(cp.list(config, limit=20))

    return op


def search_op(cp: PostgresCheckpointer, threads: list[str]) -> Callable[[random.Random], None]:
    def op(rng: random.Random) -> None:
        if rng.random() < 0.5:
            cp.find_checkpoints(rng.choice(threads), metadata={"source": "loop"}, limit=20)
        else:
            cp.list_threads({"user_id": f"u{rng.randrange(7)}"}, limit=20)

    return op


@dataclass
class Throughput:
    reads: dict[str, float] = field(default_factory=dict)
    writes: dict[str, float] = field(default_factory=dict)
    replica_share: dict[str, float] = field(default_factory=dict)


def throughput(setup: Setup, args: argparse.Namespace) -> Throughput:
    out = Throughput()
    for _ in range(args.rounds):
        for workload, make in (("history", history_op), ("search", search_op)):
            for busy in (False, True):
                for split in (False, True):
                    key = (
                        f"{workload}{' + writer' if busy else ''}|{'split' if split else 'primary'}"
                    )
                    with saver(setup, split) as cp:
                        op = make(cp, setup.threads)
                        op(random.Random(0))  # warm the pool and the statement cache
                        if busy:
                            with background_writer(setup) as invokes:
                                start = time.monotonic()
                                rate = run_for(args.seconds, args.readers, op)
                                write_rate = invokes[0] / (time.monotonic() - start)
                            out.writes[key] = max(out.writes.get(key, 0.0), write_rate)
                        else:
                            rate = run_for(args.seconds, args.readers, op)
                        if split:
                            stats = db_stats(cp).replicas
                            assert stats is not None
                            total = stats.replica_reads + stats.primary_reads
                            out.replica_share[key] = stats.replica_reads / max(1, total)
                    out.reads[key] = max(out.reads.get(key, 0.0), rate)
    return out


# -- read-your-writes -----------------------------------------------------------------------


@dataclass
class Latency:
    put_ms: list[float] = field(default_factory=list)
    get_ms: list[float] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)


def read_your_writes(setup: Setup, split: bool, n: int) -> Latency:
    out = Latency()
    with saver(setup, split) as cp:
        config: Any = {
            "configurable": {"thread_id": f"ryw-{uuid.uuid4().hex[:8]}", "checkpoint_ns": ""}
        }
        head = config
        for step in range(n):
            t0 = time.perf_counter()
            head = cp.put(
                head, empty_checkpoint(), {"source": "loop", "step": step, "parents": {}}, {}
            )
            t1 = time.perf_counter()
            got = cp.get_tuple(config)
            t2 = time.perf_counter()
            assert (
                got is not None
                and got.config["configurable"]["checkpoint_id"]
                == (head["configurable"]["checkpoint_id"])
            ), "read-your-writes violated"
            out.put_ms.append((t1 - t0) * 1000)
            out.get_ms.append((t2 - t1) * 1000)
            time.sleep(0.002)  # a little think time, as between graph steps
        if split:
            replicas = db_stats(cp).replicas
            assert replicas is not None
            out.stats = replicas.as_dict()
    return out


def put_only(setup: Setup, split: bool, n: int) -> list[float]:
    """Latency (ms) of ``n`` puts in a row: the write hot path alone."""
    out = []
    with saver(setup, split) as cp:
        head: Any = {
            "configurable": {"thread_id": f"puts-{uuid.uuid4().hex[:8]}", "checkpoint_ns": ""}
        }
        for step in range(n):
            t0 = time.perf_counter()
            head = cp.put(
                head, empty_checkpoint(), {"source": "loop", "step": step, "parents": {}}, {}
            )
            out.append((time.perf_counter() - t0) * 1000)
    return out


def primary_statements_per_put(setup: Setup, split: bool, n: int = 50) -> float:
    with psycopg.connect(setup.cluster.primary.dsn(), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        with saver(setup, split) as cp:
            head: Any = {
                "configurable": {"thread_id": f"count-{uuid.uuid4().hex[:8]}", "checkpoint_ns": ""}
            }
            conn.execute("SELECT pg_stat_statements_reset()")
            for step in range(n):
                head = cp.put(
                    head, empty_checkpoint(), {"source": "loop", "step": step, "parents": {}}, {}
                )
            row = conn.execute(
                """
                SELECT coalesce(sum(s.calls), 0) FROM pg_stat_statements AS s
                JOIN pg_database AS d ON d.oid = s.dbid
                WHERE d.datname = %s AND s.query NOT LIKE '%%pg_stat_statements%%'
                """,
                (dbname(setup.primary),),
            ).fetchone()
    assert row is not None
    return int(row[0]) / n


# -- report -------------------------------------------------------------------------------------


def p50(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=40, help="chat threads to fill")
    parser.add_argument("--turns", type=int, default=20, help="turns per thread")
    parser.add_argument("--readers", type=int, default=4, help="concurrent reader threads")
    parser.add_argument("--seconds", type=float, default=3.0, help="per throughput measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; best counts")
    parser.add_argument("--ryw", type=int, default=300, help="put + get_tuple pairs per round")
    args = parser.parse_args()

    with LocalCluster(durable=True) as cluster:
        name = f"bench_scaleout_{uuid.uuid4().hex[:8]}"
        primary, replica = cluster.create_database(name)
        start = time.monotonic()
        threads = fill(primary, args.threads, args.turns)
        cluster.wait_replayed()
        print(
            f"primary 127.0.0.1:{cluster.primary.port}, replica 127.0.0.1:{cluster.replica.port}; "
            f"filled {args.threads} threads x {args.turns} turns in {time.monotonic() - start:.0f}s"
        )
        setup = Setup(cluster, primary, replica, threads)

        tp = throughput(setup, args)
        rows = []
        for key in sorted({k.split("|")[0] for k in tp.reads}):
            only, split = tp.reads[f"{key}|primary"], tp.reads[f"{key}|split"]
            row = [key, f"{only:.0f}", f"{split:.0f}", f"{split / only:.2f}x"]
            row.append(f"{tp.replica_share[f'{key}|split']:.0%}")
            if f"{key}|primary" in tp.writes:
                w_only, w_split = tp.writes[f"{key}|primary"], tp.writes[f"{key}|split"]
                row.append(f"{w_only:.1f} -> {w_split:.1f} ({w_split / w_only:.2f}x)")
            else:
                row.append("-")
            rows.append(row)
        print_table(
            f"reads/s, {args.readers} reader threads, best of {args.rounds} interleaved rounds",
            [
                "workload",
                "primary only",
                "split",
                "split/primary",
                "served by replica",
                "writer invokes/s",
            ],
            rows,
        )

        best: dict[bool, Latency] = {}
        for _ in range(args.rounds):
            for split in (False, True):
                res = read_your_writes(setup, split, args.ryw)
                if split not in best or p50(res.get_ms) < p50(best[split].get_ms):
                    best[split] = res
        ryw_only, ryw_split = best[False], best[True]
        rows = [
            [
                label,
                f"{p50(r.put_ms):.2f}",
                f"{p50(r.get_ms):.2f}",
                f"{pct(r.get_ms, 0.9):.2f}",
                f"{pct(r.get_ms, 0.99):.2f}",
            ]
            for label, r in (("primary only", ryw_only), ("split (fresh)", ryw_split))
        ]
        print_table(
            f"read-your-writes: put, then get_tuple of that thread ({args.ryw} pairs, best round)",
            ["checkpointer", "put p50 ms", "get_tuple p50 ms", "p90 ms", "p99 ms"],
            rows,
        )
        print(f"  split get_tuple outcomes: {ryw_split.stats}")
        puts: dict[bool, float] = {}
        for _ in range(args.rounds):
            for flag in (False, True):
                latency = p50(put_only(setup, flag, args.ryw))
                puts[flag] = min(puts.get(flag, latency), latency)
        per_put = {s: primary_statements_per_put(setup, s) for s in (False, True)}
        print(
            "\nratios:"
            f"\n  added get_tuple latency after a write (p50)  "
            f"{p50(ryw_split.get_ms) - p50(ryw_only.get_ms):+.2f} ms"
            f"\n  put p50, puts in a row, with / without replicas  "
            f"{puts[True]:.2f} / {puts[False]:.2f} ms = {puts[True] / puts[False]:.2f}x"
            f"\n  primary statements per put                   "
            f"{per_put[False]:.2f} without replicas, {per_put[True]:.2f} with"
        )
        cluster.drop_database(name)


if __name__ == "__main__":
    main()
