"""Vector memory benchmark: VectorMemory against langchain-postgres' PGVector, same server.

Data: N memory chunks of clustered synthetic 384-dim embeddings
(``--clusters`` Gaussian clusters, unit-normalised); exact neighbours are
computed with NumPy. The embedder is a lookup function (the text ``doc 17``
is chunk 17's vector), so no model runs and embedding costs the same for
both libraries.

Measured, one run, a fresh database per library:

* insert: chunks/s of ``add_memories`` in batches of ``--batch`` (dedupe
  check, vectors kept in the value, one store write per batch; the store's
  ``write_mode="deferred"``), then the HNSW index built in bulk
  (``store.index_pending()``); PGVector: ``add_embeddings`` in the same
  batches into a typed ``vector(384)`` column, then the same HNSW index
  (m 16, ef_construction 64) built with ``CREATE INDEX``;
* search p50/p95 and recall@10 of ``--queries`` queries: ``search(top_k=10)``
  with and without access tracking (tracking adds a read and a write of the
  access records); PGVector ``similarity_search_with_score_by_vector`` (k=10,
  ``hnsw.ef_search`` 100, as the store uses);
* consolidation of ``--dups`` near-duplicate candidates (planted groups of
  ``--group`` paraphrases, cosine >= 0.95 within a group, < 0.9 across):
  plan (``dry_run``) and apply, with the purity of the groups found. There is
  no reference implementation of consolidation to compare with.

    python benchmarks/vector_memory.py                 # 100,000 chunks
    python benchmarks/vector_memory.py --size 20000 --queries 100

``HAIVE_BENCH_DATABASE_URL`` points it at another server; otherwise an
embedded PostgreSQL is started.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import psycopg
from _common import fresh_database, p50, pct, print_table, server, server_settings
from psycopg import conninfo

from haive_langgraph.memory import VectorMemory

DIMS = 384
USER = "bench-user"
DUP_USER = "bench-dups"


class Lookup:
    """``doc <i>`` -> vectors[i], ``query <i>`` -> queries[i], ``dup <i>`` -> dups[i]."""

    def __init__(self, **sources: np.ndarray) -> None:
        self.sources = sources

    def __call__(self, texts: Sequence[str]) -> list[list[float]]:
        out = []
        for text in texts:
            kind, _, number = text.partition(" ")
            out.append(self.sources[kind][int(number)].tolist())
        return out


def clustered(rng: np.random.Generator, n: int, centers: np.ndarray, noise: float) -> np.ndarray:
    labels = rng.integers(0, len(centers), n)
    v = centers[labels] + noise * rng.normal(size=(n, DIMS)).astype(np.float32)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def top10(queries: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    out = []
    for start in range(0, len(queries), 20):
        sims = queries[start : start + 20] @ vectors.T
        part = np.argpartition(-sims, 10, axis=1)[:, :10]
        order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1)
        out.append(np.take_along_axis(part, order, axis=1))
    return np.concatenate(out)


def near_duplicates(rng: np.random.Generator, n: int, group: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` vectors in groups of ``group`` near-identical ones; returns (vectors, group ids)."""
    bases = rng.normal(size=(n // group, DIMS)).astype(np.float32)
    bases /= np.linalg.norm(bases, axis=1, keepdims=True)
    labels = np.repeat(np.arange(len(bases)), group)
    v = bases[labels] + 0.012 * rng.normal(size=(len(labels), DIMS)).astype(np.float32)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32), labels


def recall(found: Sequence[Sequence[int]], truth: np.ndarray) -> float:
    hits = sum(len(set(f) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / (10 * len(truth))


def ms(x: float) -> str:
    return f"{x * 1000:.2f}"


Searcher = Callable[[int], list[int]]


def search_rounds(
    variants: dict[str, Searcher], args: argparse.Namespace, truth: np.ndarray
) -> dict[str, tuple[float, float, float]]:
    """p50, p95 and recall@10 per variant; rounds interleave the variants (best round kept)."""
    best: dict[str, tuple[float, float, float]] = {}
    for _ in range(args.rounds):
        for name, search in variants.items():
            times, found = [], []
            for q in range(args.queries):
                t = time.perf_counter()
                found.append(search(q))
                times.append(time.perf_counter() - t)
            stats = (p50(times), pct(times, 0.95), recall(found, truth))
            if name not in best or stats[0] < best[name][0]:
                best[name] = stats
    return best


def open_ours(dsn: str, embed: Lookup, *, track_access: bool) -> VectorMemory:
    return VectorMemory(
        dsn,
        embeddings=embed,
        dims=DIMS,
        index_options={"write_mode": "deferred"},
        user_id=USER,
        track_access=track_access,
    )


def load_ours(
    memory: VectorMemory, args: argparse.Namespace
) -> tuple[dict[str, int], float, float]:
    memory.setup()
    ids: dict[str, int] = {}
    start = time.perf_counter()
    for s in range(0, args.size, args.batch):
        texts = [f"doc {i}" for i in range(s, min(args.size, s + args.batch))]
        for i, mid in zip(range(s, s + len(texts)), memory.add_memories(texts), strict=True):
            ids[mid] = i
    insert_s = time.perf_counter() - start
    start = time.perf_counter()
    memory.store.index_pending(maintenance_work_mem=args.maintenance_work_mem)  # type: ignore[attr-defined]
    return ids, insert_s, time.perf_counter() - start


def consolidation(
    memory: VectorMemory, args: argparse.Namespace, data: dict[str, Any]
) -> dict[str, Any]:
    """10,000 near-duplicate candidates of another user, in the same store."""
    out: dict[str, Any] = {}
    dups = data["dups"]
    dup_ids: dict[str, int] = {}
    start = time.perf_counter()
    for s in range(0, len(dups), args.batch):
        texts = [f"dup {i}" for i in range(s, min(len(dups), s + args.batch))]
        for i, mid in zip(
            range(s, s + len(texts)), memory.add_memories(texts, user_id=DUP_USER), strict=True
        ):
            dup_ids[mid] = i
    out["insert_s"] = time.perf_counter() - start
    start = time.perf_counter()
    plan = memory.consolidate_memories(
        similarity_threshold=0.9, strategy="latest", dry_run=True, user_id=DUP_USER
    )
    out["plan_s"] = time.perf_counter() - start
    start = time.perf_counter()
    report = memory.consolidate_memories(
        similarity_threshold=0.9, strategy="latest", user_id=DUP_USER
    )
    out["apply_s"] = time.perf_counter() - start
    labels = data["dup_labels"]
    out["candidates"] = report.candidates
    out["groups"] = len(report.groups)
    out["planned"] = len(plan.groups)
    out["superseded"] = report.superseded
    out["pure"] = sum(
        len({int(labels[dup_ids[s]]) for s in g.source_ids}) == 1 for g in report.groups
    )
    out["expected_groups"] = int(labels.max()) + 1
    out["remaining"] = len(memory.list_memories(user_id=DUP_USER))
    return out


def open_pgvector(dsn: str, embed: Lookup) -> Any:
    try:
        from langchain_core.embeddings import Embeddings
        from langchain_postgres import PGVector
    except ImportError:
        print("langchain-postgres is not installed: no reference run")
        return None

    class LookupEmbeddings(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return embed(texts)

        def embed_query(self, text: str) -> list[float]:
            return embed([text])[0]

    info = conninfo.conninfo_to_dict(dsn)
    url = f"postgresql+psycopg://{info.get('user', 'postgres')}@/{info['dbname']}?host={info.get('host', '')}"
    if info.get("port"):
        url += f"&port={info['port']}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        # The ef_search the store uses, for every session PGVector opens.
        conn.execute(
            psycopg.sql.SQL("ALTER DATABASE {} SET hnsw.ef_search = 100").format(
                psycopg.sql.Identifier(str(info["dbname"]))
            )
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return PGVector(
            embeddings=LookupEmbeddings(),
            collection_name="bench",
            connection=url,
            embedding_length=DIMS,
            use_jsonb=True,
        )


def load_pgvector(
    store: Any, dsn: str, args: argparse.Namespace, embed: Lookup
) -> tuple[float, float]:
    start = time.perf_counter()
    for s in range(0, args.size, args.batch):
        rng_ = range(s, min(args.size, s + args.batch))
        texts = [f"doc {i}" for i in rng_]
        store.add_embeddings(
            texts, embed(texts), metadatas=[{"n": i} for i in rng_], ids=[f"k{i}" for i in rng_]
        )
    insert_s = time.perf_counter() - start
    start = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "SELECT set_config('maintenance_work_mem', %s, false)", (args.maintenance_work_mem,)
        )
        conn.execute(
            "CREATE INDEX ON langchain_pg_embedding USING hnsw (embedding vector_cosine_ops) "
            "WITH (m = 16, ef_construction = 64)"
        )
        conn.execute("ANALYZE langchain_pg_embedding")
    return insert_s, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--clusters", type=int, default=100)
    parser.add_argument("--dups", type=int, default=10_000)
    parser.add_argument("--group", type=int, default=5)
    parser.add_argument("--maintenance-work-mem", default="512MB")
    parser.add_argument("--skip-pgvector", action="store_true")
    args = parser.parse_args()

    rng = np.random.default_rng(7)
    centers = rng.normal(size=(args.clusters, DIMS)).astype(np.float32)
    vectors = clustered(rng, args.size, centers, 0.35)
    queries = clustered(rng, args.queries, centers, 0.35)
    dups, dup_labels = near_duplicates(rng, args.dups, args.group)
    data = {
        "vectors": vectors,
        "queries": queries,
        "truth": top10(queries, vectors),
        "dups": dups,
        "dup_labels": dup_labels,
        "embed": Lookup(doc=vectors, query=queries, dup=dups),
    }
    embed = data["embed"]
    with server() as server_dsn, ExitStack() as stack:
        print(server_settings(server_dsn))
        dsn = stack.enter_context(fresh_database(server_dsn, "vmem"))
        memory = stack.enter_context(open_ours(dsn, embed, track_access=True))
        ids, insert_s, index_s = load_ours(memory, args)
        untracked = stack.enter_context(open_ours(dsn, embed, track_access=False))
        ours = {"insert_s": insert_s, "index_s": index_s}
        variants: dict[str, Searcher] = {
            "untracked": lambda q: [ids[h.id] for h in untracked.search(f"query {q}", top_k=10)],
            "tracked": lambda q: [ids[h.id] for h in memory.search(f"query {q}", top_k=10)],
        }
        theirs: dict[str, Any] | None = None
        if not args.skip_pgvector:
            pdsn = stack.enter_context(fresh_database(server_dsn, "pgvector"))
            pg = open_pgvector(pdsn, embed)
            if pg is not None:
                t_insert, t_index = load_pgvector(pg, pdsn, args, embed)
                theirs = {"insert_s": t_insert, "index_s": t_index}
                queries = data["queries"]
                variants["pgvector"] = lambda q: [
                    int(doc.metadata["n"])
                    for doc, _ in pg.similarity_search_with_score_by_vector(
                        queries[q].tolist(), k=10
                    )
                ]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stats = search_rounds(variants, args, data["truth"])
        ours["untracked"], ours["tracked"] = stats["untracked"], stats["tracked"]
        if theirs is not None:
            theirs["search"] = stats["pgvector"]
        ours["consolidation"] = consolidation(memory, args, data)

    n = args.size
    rows: list[list[Any]] = []
    ins = n / ours["insert_s"]
    load = n / (ours["insert_s"] + ours["index_s"])
    u, t = ours["untracked"], ours["tracked"]
    rows.append(["VectorMemory", f"{ins:,.0f}", f"{load:,.0f}", ms(u[0]), ms(u[1]), f"{u[2]:.3f}"])
    rows.append(["VectorMemory + access tracking", "", "", ms(t[0]), ms(t[1]), f"{t[2]:.3f}"])
    if theirs is not None:
        tins = n / theirs["insert_s"]
        tload = n / (theirs["insert_s"] + theirs["index_s"])
        s = theirs["search"]
        rows.append(
            [
                "PGVector (langchain-postgres)",
                f"{tins:,.0f}",
                f"{tload:,.0f}",
                ms(s[0]),
                ms(s[1]),
                f"{s[2]:.3f}",
            ]
        )
        rows.append(
            [
                "VectorMemory / PGVector",
                f"{ins / tins:.1f}x",
                f"{load / tload:.1f}x",
                f"{s[0] / u[0]:.1f}x",
                f"{s[1] / u[1]:.1f}x",
                "",
            ]
        )
    print_table(
        f"{n:,} memory chunks, {DIMS} dims (times in ms; ratios >1 mean VectorMemory is faster)",
        ["library", "inserts/s", "insert+index/s", "search p50", "p95", "recall@10"],
        rows,
    )
    c = ours["consolidation"]
    ours["dup_insert_s"], ours["plan_s"], ours["apply_s"] = c["insert_s"], c["plan_s"], c["apply_s"]
    ours["remaining"] = c["remaining"]
    print_table(
        f"consolidation of {c['candidates']:,} near-duplicate candidates (groups of {args.group})",
        [
            "insert s",
            "plan (dry run) s",
            "apply s",
            "groups",
            "expected",
            "pure groups",
            "superseded",
            "left current",
        ],
        [
            [
                f"{ours['dup_insert_s']:.1f}",
                f"{ours['plan_s']:.2f}",
                f"{ours['apply_s']:.2f}",
                c["groups"],
                c["expected_groups"],
                c["pure"],
                c["superseded"],
                ours["remaining"],
            ]
        ],
    )
    print(f"\nindex build: VectorMemory {ours['index_s']:.1f} s", end="")
    if theirs is not None:
        print(f", PGVector {theirs['index_s']:.1f} s")
    else:
        print()


if __name__ == "__main__":
    main()
