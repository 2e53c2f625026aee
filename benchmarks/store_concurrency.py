"""Store concurrency benchmark: many concurrent calls, ours against LangGraph's stores.

One command, one run, the same server, a fresh database per variant. Each
store is preloaded with ``--items`` items over ``--namespaces`` namespaces;
then, per round, the same ``--calls`` mixed operations run against each:

* async: ``--calls`` coroutines (``aget`` 40%, ``aput`` 25%, ``asearch`` 20%
  with a filter, ``adelete`` 15%) created at once and gathered in one
  process, on ``AsyncPostgresStore`` (ours, and LangGraph's
  ``langgraph.store.postgres.aio.AsyncPostgresStore``, which merges the
  calls of one event-loop tick into one batch);
* sync: one ``batch()`` holding the same operations as ``GetOp`` /
  ``PutOp`` / ``SearchOp`` (``PostgresStore``, ours and LangGraph's);
* threads: the same calls (``get``, ``put``, ``search``, ``delete``) made by
  ``--threads`` threads at once, each its share in turn, on ``PostgresStore``
  (ours merges the calls threads make while a batch runs into the next
  batch; LangGraph's runs each call alone).

Each on one lent connection (autocommit, ``dict_row`` as LangGraph's
documentation opens it) and on a pool (``--pool-size`` connections).
Reported: wall time per round, best and median of ``--rounds`` (stores
interleaved, so machine noise hits all alike), and the ratios LangGraph / ours
(above 1: ours is faster). The load average is printed before and after. ``--index`` adds a vector index (a lookup embedder, no model) and
turns the searches into vector searches with a filter.

    python benchmarks/store_concurrency.py
    python benchmarks/store_concurrency.py --calls 4000 --rounds 5 --index

``HAIVE_BENCH_DATABASE_URL`` points it at another server; otherwise an
embedded PostgreSQL is started.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg
from _common import fresh_database, p50, print_table, server, server_settings
from langgraph.store.base import BaseStore, GetOp, Op, PutOp, SearchOp
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool

DIMS = 64


def embed(texts: Sequence[str]) -> list[list[float]]:
    """A deterministic lookup embedder (a hash per text): no model runs."""
    out = []
    for text in texts:
        digest = hashlib.sha256(text.encode()).digest() * (DIMS // 32 + 1)
        out.append([(b - 127.5) / 127.5 for b in digest[:DIMS]])
    return out


async def aembed(texts: Sequence[str]) -> list[list[float]]:
    return embed(texts)


def item(i: int, namespaces: int, version: int = 0) -> tuple[tuple[str, ...], str, dict[str, Any]]:
    return (
        ("bench", f"ns{i % namespaces}"),
        f"k{i}",
        {"text": f"item {i} v{version}", "kind": (i // namespaces) % 5, "n": i, "v": version},
    )


def workload(calls: int, items: int, namespaces: int, seed: int) -> list[Op]:
    """``calls`` mixed operations over the preloaded key space."""
    rng = random.Random(seed)
    ops: list[Op] = []
    for _ in range(calls):
        r = rng.random()
        i = rng.randrange(items)
        ns, key, value = item(i, namespaces, version=rng.randrange(1000))
        if r < 0.40:
            ops.append(GetOp(ns, key))
        elif r < 0.65:
            ops.append(PutOp(ns, key, value))
        elif r < 0.85:
            query = f"item {rng.randrange(items)}" if INDEX else None
            ops.append(SearchOp(ns, {"kind": rng.randrange(5)}, 10, 0, query))
        else:
            ops.append(PutOp(ns, key, None))
    return ops


INDEX = False


def index_config() -> dict[str, Any] | None:
    if not INDEX:
        return None
    return {"dims": DIMS, "embed": embed, "fields": ["text"]}


async def call_async(store: BaseStore, op: Op) -> Any:
    if isinstance(op, GetOp):
        return await store.aget(op.namespace, op.key)
    if isinstance(op, SearchOp):
        return await store.asearch(
            op.namespace_prefix, query=op.query, filter=op.filter, limit=op.limit
        )
    assert isinstance(op, PutOp)
    if op.value is None:
        return await store.adelete(op.namespace, op.key)
    return await store.aput(op.namespace, op.key, op.value)


def call_sync(store: BaseStore, op: Op) -> Any:
    if isinstance(op, GetOp):
        return store.get(op.namespace, op.key)
    if isinstance(op, SearchOp):
        return store.search(op.namespace_prefix, query=op.query, filter=op.filter, limit=op.limit)
    assert isinstance(op, PutOp)
    if op.value is None:
        return store.delete(op.namespace, op.key)
    return store.put(op.namespace, op.key, op.value)


THREADS = 16


def in_threads(store: BaseStore, ops: list[Op]) -> tuple[float, list[Any]]:
    """``ops`` called by THREADS threads at once, each its share in turn."""
    shares = [ops[i::THREADS] for i in range(THREADS)]
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        t0 = time.perf_counter()
        futures = [
            pool.submit(lambda s=share: [call_sync(store, op) for op in s]) for share in shares
        ]
        results = [r for f in futures for r in f.result()]
        return time.perf_counter() - t0, results


class Variant:
    """One store class on one kind of connection, on its own database."""

    def __init__(self, name: str, flavour: str, kind: str, maker: Callable[..., Any]) -> None:
        self.name, self.flavour, self.kind, self.maker = name, flavour, kind, maker
        self.store: Any = None
        self.resource: Any = None
        self.db_cm: Any = None
        self.dsn = ""

    @property
    def label(self) -> str:
        return f"{self.name} {self.flavour}, {self.kind}"


async def open_variant(v: Variant, server_dsn: str, pool_size: int) -> None:
    v.db_cm = fresh_database(server_dsn, "conc")
    v.dsn = v.db_cm.__enter__()
    kwargs: dict[str, Any] = {"autocommit": True, "row_factory": dict_row, "prepare_threshold": 0}
    if v.flavour == "async":
        if v.kind == "connection":
            v.resource = await psycopg.AsyncConnection.connect(v.dsn, **kwargs)
        else:
            v.resource = AsyncConnectionPool(
                v.dsn, min_size=pool_size, max_size=pool_size, kwargs=kwargs, open=False
            )
            await v.resource.open(wait=True)
        v.store = v.maker(v.resource, index=index_config())
        await v.store.setup()
    else:
        if v.kind == "connection":
            v.resource = psycopg.Connection.connect(v.dsn, **kwargs)
        else:
            v.resource = ConnectionPool(
                v.dsn, min_size=pool_size, max_size=pool_size, kwargs=kwargs, open=False
            )
            v.resource.open(wait=True)
        v.store = v.maker(v.resource, index=index_config())
        await asyncio.to_thread(v.store.setup)


async def close_variant(v: Variant) -> None:
    if v.resource is not None:
        if v.flavour == "async":
            await v.resource.close()
        else:
            v.resource.close()
    if v.db_cm is not None:
        v.db_cm.__exit__(None, None, None)


async def preload(v: Variant, items: int, namespaces: int) -> None:
    ops = [PutOp(*item(i, namespaces)) for i in range(items)]
    for start in range(0, items, 1000):
        chunk = ops[start : start + 1000]
        if v.flavour == "async":
            await v.store.abatch(chunk)
        else:
            await asyncio.to_thread(v.store.batch, chunk)
    with psycopg.connect(v.dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


async def one_round(v: Variant, ops: list[Op]) -> float:
    gc.collect()
    if v.flavour == "async":
        t0 = time.perf_counter()
        results = await asyncio.gather(*(call_async(v.store, op) for op in ops))
        elapsed = time.perf_counter() - t0
    elif v.flavour == "threads":
        elapsed, results = await asyncio.to_thread(in_threads, v.store, ops)
    else:
        t0 = time.perf_counter()
        results = v.store.batch(ops)
        elapsed = time.perf_counter() - t0
    assert len(results) == len(ops)
    return elapsed


def makers() -> dict[tuple[str, str], Callable[..., Any]]:
    from langgraph.store.postgres import AsyncPostgresStore as LGAsync
    from langgraph.store.postgres import PostgresStore as LGSync

    from haive_langgraph.stores import AsyncPostgresStore, PostgresStore

    def lg(cls: Any) -> Callable[..., Any]:
        def make(conn: Any, index: Any) -> Any:
            return cls(conn, index=index) if index else cls(conn)

        return make

    def ours(cls: Any) -> Callable[..., Any]:
        def make(conn: Any, index: Any) -> Any:
            return cls(conn, index=index, schema="bench")

        return make

    return {
        ("haive", "async"): ours(AsyncPostgresStore),
        ("LangGraph", "async"): lg(LGAsync),
        ("haive", "sync"): ours(PostgresStore),
        ("LangGraph", "sync"): lg(LGSync),
        ("haive", "threads"): ours(PostgresStore),
        ("LangGraph", "threads"): lg(LGSync),
    }


async def main_async(args: argparse.Namespace) -> None:
    with server() as server_dsn:
        print("server:", server_settings(server_dsn))
        print(f"load average: {os.getloadavg()}")
        mk = makers()
        variants = [
            Variant(name, flavour, kind, mk[(name, flavour)])
            for flavour in args.flavours
            for kind in args.kinds
            for name in ("haive", "LangGraph")
        ]
        try:
            for v in variants:
                await open_variant(v, server_dsn, args.pool_size)
                await preload(v, args.items, args.namespaces)
            times: dict[str, list[float]] = {v.label: [] for v in variants}
            for r in range(args.rounds):
                ops = workload(args.calls, args.items, args.namespaces, seed=r)
                for v in variants if r % 2 == 0 else list(reversed(variants)):
                    times[v.label].append(await one_round(v, ops))
            print(f"load average: {os.getloadavg()}")
            if args.verbose:
                for label, values in times.items():
                    print(f"  {label}: " + " ".join(f"{t * 1000:.0f}" for t in values))
            rows = []
            for flavour in args.flavours:
                for kind in args.kinds:
                    ours = times[f"haive {flavour}, {kind}"]
                    theirs = times[f"LangGraph {flavour}, {kind}"]
                    what = {
                        "async": "gathered calls",
                        "sync": "one batch()",
                        "threads": f"calls, {THREADS} threads",
                    }[flavour]
                    rows.append(
                        [
                            f"{flavour}: {args.calls:,} {what}",
                            kind,
                            f"{min(ours) * 1000:.1f}",
                            f"{min(theirs) * 1000:.1f}",
                            f"{min(theirs) / min(ours):.2f}x",
                            f"{p50(ours) * 1000:.1f}",
                            f"{p50(theirs) * 1000:.1f}",
                            f"{p50(theirs) / p50(ours):.2f}x",
                        ]
                    )
            print_table(
                f"Store under concurrency ({args.items:,} items, "
                f"{'vector' if INDEX else 'filter'} searches; {args.rounds} rounds; "
                "ratio above 1: ours is faster)",
                [
                    "workload",
                    "connection",
                    "haive best ms",
                    "LangGraph best",
                    "ratio",
                    "haive median",
                    "LangGraph median",
                    "ratio",
                ],
                rows,
            )
        finally:
            for v in variants:
                await close_variant(v)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--namespaces", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pool-size", type=int, default=10)
    parser.add_argument("--index", action="store_true", help="vector searches (lookup embedder)")
    parser.add_argument("--threads", type=int, default=16, help="threads of the threads run")
    parser.add_argument("--verbose", action="store_true", help="print every round's time")
    parser.add_argument(
        "--flavours",
        nargs="+",
        default=["async", "sync", "threads"],
        choices=["async", "sync", "threads"],
    )
    parser.add_argument(
        "--kinds", nargs="+", default=["connection", "pool"], choices=["connection", "pool"]
    )
    args = parser.parse_args()
    global INDEX, THREADS
    INDEX, THREADS = args.index, args.threads
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
