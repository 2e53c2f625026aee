"""Store benchmark: haive-langgraph's PostgresStore against LangGraph's PostgresStore.

One command, one run, the same server, a fresh database per variant. Data:
N items of clustered synthetic 384-dim embeddings (``--clusters`` Gaussian
clusters, unit-normalised), one embedded text per item, a ``category`` field
holding ``i % 10`` (the filter ``{"category": 3}`` keeps 10% of items).
Exact neighbours are computed with NumPy; the embedder is a lookup (the
text ``doc 17`` is item 17's vector), so no model runs and embedding costs
the same for every store.

Variants: ``haive`` (``PostgresStore`` in its default write mode,
``"background"``: puts skip the HNSW index and the store's background
indexer adds their vectors to it), ``haive immediate`` (every put maintains
the index), ``haive deferred`` (puts skip the index, then one
``index_pending()`` builds it in bulk) and ``LangGraph`` (langgraph's
``PostgresStore`` with the same index configuration). Reported per variant
and size:

* puts/s: items/s of ``batch()`` calls of ``--batch`` puts (vectors
  included), loading the stores in alternating batches so machine noise
  hits all alike; put+index/s also counts ``index_pending()``. The
  default (``haive``) is loaded on its own, after the others, back to back
  as a bulk import would be (its indexer works while others load
  otherwise); its put+index/s counts the time until its background indexer
  has indexed every vector and the index is valid;
* get p50: single ``get`` of a random key;
* search p50/p95 and recall@10, unfiltered and with the 10% filter, and the
  share of filtered searches that returned a full page.

Reads run in ``--rounds`` interleaved rounds; the best round of each variant
is kept (the machine is shared and noisy).

    python benchmarks/store.py                       # 20,000 and 100,000 items
    python benchmarks/store.py --sizes 20000 --queries 100
    # the 1M run: deferred load and bulk index only (incremental HNSW
    # maintenance, ours or LangGraph's, would take hours at that size)
    python benchmarks/store.py --sizes 1000000 --skip-langgraph --skip-immediate \\
        --skip-default --maintenance-work-mem 3GB

``HAIVE_BENCH_DATABASE_URL`` points it at another server; otherwise an
embedded PostgreSQL is started.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import psycopg
from _common import fresh_database, p50, pct, print_table, server, server_settings
from langgraph.store.base import BaseStore, PutOp

DIMS = 384
CATEGORIES = 10
FILTER_CATEGORY = 3


@dataclass
class Data:
    vectors: np.ndarray
    queries: np.ndarray
    truth: np.ndarray  # exact top-10 item indices per query
    truth_filtered: np.ndarray

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        # "doc 17" is item 17's vector, "query 3" query 3's: a lookup, no model.
        out = []
        for text in texts:
            kind, _, number = text.partition(" ")
            source = self.vectors if kind == "doc" else self.queries
            out.append(source[int(number)].tolist())
        return out


def _top10(sims: np.ndarray) -> np.ndarray:
    part = np.argpartition(-sims, 10, axis=1)[:, :10]
    order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1)
    return np.take_along_axis(part, order, axis=1)


def make_data(n: int, n_queries: int, clusters: int, seed: int = 7) -> Data:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, DIMS)).astype(np.float32)
    labels = rng.integers(0, clusters, n)
    vectors = centers[labels] + 0.35 * rng.normal(size=(n, DIMS)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    qlabels = rng.integers(0, clusters, n_queries)
    queries = centers[qlabels] + 0.35 * rng.normal(size=(n_queries, DIMS)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    mask = (np.arange(n) % CATEGORIES) == FILTER_CATEGORY
    truth, truth_filtered = [], []
    for start in range(0, n_queries, 20):  # 20 queries at a time bounds the memory
        sims = queries[start : start + 20] @ vectors.T
        truth.append(_top10(sims))
        truth_filtered.append(_top10(np.where(mask[None, :], sims, -np.inf)))
    return Data(vectors, queries, np.concatenate(truth), np.concatenate(truth_filtered))


def item(i: int) -> tuple[tuple[str, ...], str, dict[str, Any]]:
    return (
        ("docs", f"part{i % 4}"),
        f"k{i}",
        {"text": f"doc {i}", "category": i % CATEGORIES, "n": i},
    )


def index_config(data: Data) -> dict[str, Any]:
    return {"dims": DIMS, "embed": data.embed, "fields": ["text"]}


class Variant:
    """A store under test, opened on its own database."""

    def __init__(self, name: str, opener: Callable[[str, Data], Any]) -> None:
        self.name = name
        self.opener = opener
        self.cm: Any = None
        self.store: BaseStore | None = None
        self.db_cm: Any = None
        self.dsn = ""

    def open(self, server_dsn: str, data: Data) -> None:
        self.db_cm = fresh_database(server_dsn, self.name.lower().replace(" ", "_")[:20])
        self.dsn = dsn = self.db_cm.__enter__()
        self.cm = self.opener(dsn, data)
        self.store = self.cm.__enter__()
        self.store.setup()  # type: ignore[union-attr]

    def close(self) -> None:
        if self.cm is not None:
            self.cm.__exit__(None, None, None)
        if self.db_cm is not None:
            self.db_cm.__exit__(None, None, None)


EF_SEARCH: dict[str, int] = {}  # --ef-search, for our variants


def open_ours(dsn: str, data: Data) -> Any:
    from haive_langgraph.stores import PostgresStore

    return PostgresStore.from_conn_string(
        dsn, index={**index_config(data), "ann_index_config": EF_SEARCH}
    )


def open_ours_immediate(dsn: str, data: Data) -> Any:
    from haive_langgraph.stores import PostgresStore

    return PostgresStore.from_conn_string(
        dsn,
        index={**index_config(data), "write_mode": "immediate", "ann_index_config": EF_SEARCH},
    )


def open_ours_deferred(dsn: str, data: Data) -> Any:
    from haive_langgraph.stores import PostgresStore

    return PostgresStore.from_conn_string(
        dsn, index={**index_config(data), "write_mode": "deferred", "ann_index_config": EF_SEARCH}
    )


def open_langgraph(dsn: str, data: Data) -> Any:
    from langgraph.store.postgres import PostgresStore as LGStore

    return LGStore.from_conn_string(dsn, index=index_config(data))  # type: ignore[arg-type]


def load(variants: list[Variant], n: int, batch: int) -> dict[str, float]:
    """Load every variant in alternating batches; seconds spent in each."""
    spent = {v.name: 0.0 for v in variants}
    for start in range(0, n, batch):
        ops = [PutOp(*item(i)) for i in range(start, min(n, start + batch))]
        order = variants if (start // batch) % 2 == 0 else list(reversed(variants))
        for v in order:
            assert v.store is not None
            t0 = time.perf_counter()
            v.store.batch(ops)
            spent[v.name] += time.perf_counter() - t0
        if (start // batch) % 20 == 0:
            done = min(n, start + batch)
            rates = ", ".join(f"{k} {done / s:,.0f}/s" for k, s in spent.items())
            print(f"  loaded {done:,}/{n:,}: {rates}", flush=True)
    return spent


def load_alone(v: Variant, n: int, batch: int) -> float:
    """Load one store back to back; seconds spent."""
    assert v.store is not None
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        v.store.batch([PutOp(*item(i)) for i in range(start, min(n, start + batch))])
    return time.perf_counter() - t0


def indexed(dsn: str) -> bool:
    """Whether every vector is in a valid ANN index (store schema ``haive``)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM haive.store_vectors WHERE NOT indexed),"
            " (SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            "  JOIN pg_namespace n ON n.oid = c.relnamespace"
            "  WHERE n.nspname = 'haive' AND c.relname = 'store_vectors_ann_idx')"
        ).fetchone()
    assert row is not None
    return row[0] == 0 and bool(row[1])


def wait_indexed(dsn: str) -> float:
    """Seconds until the background indexer has indexed everything (polled)."""
    t0 = time.perf_counter()
    while not indexed(dsn):
        time.sleep(0.1)
    return time.perf_counter() - t0


def recall(found: list[Any], truth: np.ndarray) -> float:
    keys = {f"k{int(i)}" for i in truth}
    return len({it.key for it in found} & keys) / len(keys)


@dataclass
class ReadStats:
    get: list[float] = field(default_factory=list)
    search: list[float] = field(default_factory=list)
    fsearch: list[float] = field(default_factory=list)
    recall: float = 0.0
    frecall: float = 0.0
    full: float = 0.0


def read_round(store: BaseStore, data: Data, n: int, n_gets: int, rng: random.Random) -> ReadStats:
    stats = ReadStats()
    for _ in range(n_gets):
        i = rng.randrange(n)
        ns, key, _ = item(i)
        t0 = time.perf_counter()
        got = store.get(ns, key)
        stats.get.append(time.perf_counter() - t0)
        assert got is not None
    recalls, frecalls, full = [], [], 0
    for j in range(len(data.queries)):
        t0 = time.perf_counter()
        res = store.search(("docs",), query=f"query {j}", limit=10)
        stats.search.append(time.perf_counter() - t0)
        recalls.append(recall(res, data.truth[j]))
        t0 = time.perf_counter()
        res = store.search(
            ("docs",), query=f"query {j}", filter={"category": FILTER_CATEGORY}, limit=10
        )
        stats.fsearch.append(time.perf_counter() - t0)
        frecalls.append(recall(res, data.truth_filtered[j]))
        full += len(res) == 10
    stats.recall = float(np.mean(recalls))
    stats.frecall = float(np.mean(frecalls))
    stats.full = full / len(data.queries)
    return stats


def best(rounds: list[ReadStats]) -> ReadStats:
    return min(rounds, key=lambda s: p50(s.search) + p50(s.fsearch) + p50(s.get))


def ms(x: float) -> str:
    return f"{x * 1000:.2f}"


def run_size(server_dsn: str, n: int, args: argparse.Namespace) -> list[list[Any]]:
    print(f"\n== {n:,} items x {DIMS} dims, {args.queries} queries ==", flush=True)
    t0 = time.perf_counter()
    data = make_data(n, args.queries, args.clusters)
    print(f"  data and exact neighbours in {time.perf_counter() - t0:.1f}s", flush=True)
    default = [] if args.skip_default else [Variant("haive", open_ours)]
    variants = [] if args.skip_immediate else [Variant("haive immediate", open_ours_immediate)]
    if not args.skip_deferred:
        variants.append(Variant("haive deferred", open_ours_deferred))
    if not args.skip_langgraph:
        variants.append(Variant("LangGraph", open_langgraph))
    try:
        for v in variants:
            v.open(server_dsn, data)
        put_seconds = load(variants, n, args.batch)
        total_seconds = dict(put_seconds)
        for v in default:
            v.open(server_dsn, data)
            put_seconds[v.name] = load_alone(v, n, args.batch)
            print(f"  {v.name}: loaded {n:,} at {n / put_seconds[v.name]:,.0f}/s", flush=True)
            drained = wait_indexed(v.dsn)
            total_seconds[v.name] = put_seconds[v.name] + drained
            print(f"  {v.name}: every vector indexed {drained:.1f}s after the load", flush=True)
        variants = default + variants
        for v in variants:
            if v.name == "haive deferred":
                t1 = time.perf_counter()
                indexed = v.store.index_pending(  # type: ignore[union-attr]
                    maintenance_work_mem=args.maintenance_work_mem
                )
                total_seconds[v.name] += time.perf_counter() - t1
                print(f"  {v.name}: indexed {indexed:,} vectors in {time.perf_counter() - t1:.1f}s")
            # Fresh planner statistics for every store after the load.
            with psycopg.connect(v.dsn, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE")
        rounds: dict[str, list[ReadStats]] = {v.name: [] for v in variants}
        for r in range(args.rounds):
            for v in variants if r % 2 == 0 else list(reversed(variants)):
                assert v.store is not None
                gc.collect()
                rounds[v.name].append(read_round(v.store, data, n, args.gets, random.Random(r)))
        rows = []
        stats = {v.name: best(rounds[v.name]) for v in variants}
        for v in variants:
            st = stats[v.name]
            rows.append(
                [
                    f"{n:,}",
                    v.name,
                    f"{n / put_seconds[v.name]:,.0f}",
                    f"{n / total_seconds[v.name]:,.0f}",
                    ms(p50(st.get)),
                    ms(p50(st.search)),
                    ms(pct(st.search, 0.95)),
                    f"{st.recall:.3f}",
                    ms(p50(st.fsearch)),
                    ms(pct(st.fsearch, 0.95)),
                    f"{st.frecall:.3f}",
                    f"{st.full:.0%}",
                ]
            )
        if "LangGraph" in stats:
            lg = stats["LangGraph"]
            for v in variants:
                if v.name == "LangGraph":
                    continue
                st = stats[v.name]
                rows.append(
                    [
                        f"{n:,}",
                        f"{v.name} / LangGraph",
                        f"{put_seconds['LangGraph'] / put_seconds[v.name]:.1f}x",
                        f"{total_seconds['LangGraph'] / total_seconds[v.name]:.1f}x",
                        f"{p50(lg.get) / p50(st.get):.1f}x",
                        f"{p50(lg.search) / p50(st.search):.1f}x",
                        f"{pct(lg.search, 0.95) / pct(st.search, 0.95):.1f}x",
                        "",
                        f"{p50(lg.fsearch) / p50(st.fsearch):.1f}x",
                        f"{pct(lg.fsearch, 0.95) / pct(st.fsearch, 0.95):.1f}x",
                        "",
                        "",
                    ]
                )
        return rows
    finally:
        for v in variants:
            v.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--gets", type=int, default=300)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clusters", type=int, default=100)
    parser.add_argument("--skip-langgraph", action="store_true")
    parser.add_argument("--skip-deferred", action="store_true")
    parser.add_argument("--skip-immediate", action="store_true")
    parser.add_argument("--skip-default", action="store_true")
    parser.add_argument(
        "--maintenance-work-mem",
        default="1GB",
        help="for the deferred variant's bulk index build (the graph should fit: ~2.5 GB at 1M)",
    )
    parser.add_argument("--ef-search", type=int, help="hnsw.ef_search of our stores (default 100)")
    args = parser.parse_args()
    if args.ef_search:
        EF_SEARCH["ef_search"] = args.ef_search
    with server() as server_dsn:
        print("server:", server_settings(server_dsn))
        print(f"load average: {os.getloadavg()}")
        table: list[list[Any]] = []
        for n in args.sizes:
            table += run_size(server_dsn, n, args)
            print(f"load average: {os.getloadavg()}")
            print_table(
                "Store: haive-langgraph vs LangGraph PostgresStore (times in ms; ratio = how many times better)",
                [
                    "items",
                    "store",
                    "puts/s",
                    "put+index/s",
                    "get p50",
                    "search p50",
                    "p95",
                    "recall@10",
                    "filtered p50",
                    "p95",
                    "recall@10",
                    "full pages",
                ],
                table,
            )


if __name__ == "__main__":
    main()
