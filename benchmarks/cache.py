"""Cache benchmark: replay of an active-session trace through ``CachedCheckpointer``.

A server holds THREADS chat threads (the demo chat graph, TURNS turns each).
The trace: OPS operations on the ACTIVE most recent threads (a skewed choice:
a few sessions are very active), 80% reads of a thread's latest checkpoint
(``get_tuple``, what every ``invoke`` and ``get_state`` does first) and 20%
writes (a new checkpoint appended to the thread, through ``put``); a third of
the operations read or write the thread's session record in the store
(``CachedStore`` over ``PostgresStore``) instead, and a quarter read or
append to the session's chat history (``CachedChatHistory`` over
``PostgresChatMessageHistory``, HISTORY_TURNS turns to start with); a quarter
of the history appends go around the cache (``ConversationStore``), as a
tracker or another service would. Every read is checked: it must return what
the last write of that thread, session or history stored (checkpoint id and
message count; item; message count and last id); every 20th read is also
compared whole with an uncached read from PostgreSQL (outside the timing).

Variants, in interleaved rounds (best round kept): the cache with a memory
level only, with memory and Redis, with Redis only (what a Redis hit costs),
and the bare ``PostgresCheckpointer``;
LangGraph's ``InMemorySaver.get_tuple`` on the same checkpoints is the
reference for the cached read.

    python benchmarks/cache.py                      # 200 threads, 4000 ops, 3 rounds
    python benchmarks/cache.py --ops 10000 --rounds 5

Redis: 127.0.0.1:6379 database 14 under a fresh key prefix (removed after);
without a reachable Redis the Redis variant is skipped.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import fresh_database, pct, print_table, server, server_settings
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import copy_checkpoint
from langgraph.checkpoint.base.id import uuid6
from langgraph.checkpoint.memory import InMemorySaver

from haive_langgraph._demo import chat_graph
from haive_langgraph.checkpointers import PostgresCheckpointer
from haive_langgraph.memory import ChatHistoryFactory, ConversationStore
from haive_langgraph.ops.cache import CacheLayer, InMemoryCache, RedisCache
from haive_langgraph.stores import PostgresStore

REDIS_URL = "redis://127.0.0.1:6379/14"


def latest(thread: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}


def seed(saver: PostgresCheckpointer, threads: int, turns: int) -> list[str]:
    graph = chat_graph().compile(checkpointer=saver)
    ids = [f"bench-{i:04d}" for i in range(threads)]
    for turn in range(turns):
        for t in ids:
            graph.invoke(
                {"messages": [HumanMessage(content=f"{t} question {turn}")]},
                {"configurable": {"thread_id": t}},
            )
    return ids


def trace(
    active: list[str], ops: int, write_share: float, rng: random.Random
) -> list[tuple[str, str]]:
    # Skewed: weight 1/(rank+1), the most recent sessions busiest. A third of
    # the operations are on the thread's session record in the store.
    weights = [1 / (i + 1) for i in range(len(active))]
    picks = rng.choices(active, weights=weights, k=ops)
    out = []
    for t in picks:
        kind = "write" if rng.random() < write_share else "read"
        target = rng.random()
        if target < 0.5:
            out.append((kind, t))
        elif target < 0.75:
            out.append((f"session-{kind}", t))
        else:
            out.append((f"history-{kind}", t))
    return out


def history_id(thread: str) -> str:
    return f"chat-{thread}"


def seed_histories(histories: ChatHistoryFactory, active: list[str], turns: int) -> None:
    for t in active:
        history = histories(history_id(t))
        for turn in range(turns):
            history.add_messages(
                [
                    HumanMessage(content=f"{t} asks question {turn} " + "words " * 20),
                    AIMessage(content=f"answer {turn} " + "an answer of some length " * 12),
                ]
            )


def history_state(history: Any) -> tuple[int, str]:
    messages = history.messages
    return len(messages), str(messages[-1].id) if messages else ""


def session_ns(thread: str) -> tuple[str, ...]:
    return ("sessions", thread)


def step(saver: Any, head: Any, n: int) -> Any:
    """A new checkpoint after ``head``: one more message, as a graph step writes."""
    cp = copy_checkpoint(head.checkpoint)
    cp["id"] = str(uuid6(clock_seq=n))
    cp["ts"] = datetime.now(UTC).isoformat()
    messages = [
        *cp["channel_values"]["messages"],
        AIMessage(content=f"step {n}", id=f"s-{uuid.uuid4().hex}"),
    ]
    cp["channel_values"]["messages"] = messages
    version = saver.get_next_version(cp["channel_versions"].get("messages"), None)
    cp["channel_versions"]["messages"] = version
    meta = {"source": "loop", "step": n, "parents": {}}
    return saver.put(head.config, cp, meta, {"messages": version}), len(messages)


class Replay:
    def __init__(
        self,
        name: str,
        saver: Any,
        truth: PostgresCheckpointer,
        layer: CacheLayer | None,
        store: Any,
        truth_store: Any,
        histories: Any,
        truth_histories: ChatHistoryFactory,
        around: ConversationStore,
        around_share: float,
    ):
        self.name = name
        self.saver = saver
        self.truth = truth
        self.layer = layer
        self.store = store
        self.truth_store = truth_store
        self.histories = histories
        self.truth_histories = truth_histories
        self.around = around
        self.around_share = around_share
        self.history_ms: list[float] = []
        self.history_hits = 0
        self.history_reads = 0
        self.session_ms: list[float] = []
        self.read_ms: list[float] = []
        self.write_ms: list[float] = []
        self.checked = 0
        self.compared = 0

    def run(
        self, ops: list[tuple[str, str]], expected: dict[str, tuple[str, int]], n0: int
    ) -> None:
        for n, (kind, thread) in enumerate(ops, start=n0):
            if kind == "history-read":
                history = self.histories[thread]
                hits = sum(self.layer._metrics.hits.values()) if self.layer else 0
                t0 = time.perf_counter()
                messages = history.messages
                self.history_ms.append((time.perf_counter() - t0) * 1000)
                if self.layer is not None:
                    self.history_hits += sum(self.layer._metrics.hits.values()) - hits
                self.history_reads += 1
                count, last_id = expected[f"history:{thread}"]
                if len(messages) != count or str(messages[-1].id) != last_id:
                    raise AssertionError(
                        f"{self.name}: stale history {thread} at op {n}: got "
                        f"{len(messages)} messages ending {messages[-1].id}, expected "
                        f"{count} ending {last_id}"
                    )
                self.checked += 1
                if self.checked % 20 == 0:
                    fresh = self.truth_histories(history_id(thread)).messages
                    assert [(m.id, m.type, m.content) for m in fresh] == [
                        (m.id, m.type, m.content) for m in messages
                    ], f"{self.name}: history differs"
                    self.compared += 1
            elif kind == "history-write":
                new = [
                    HumanMessage(content=f"op {n} " + "words " * 20, id=f"h-{n}-q"),
                    AIMessage(content=f"reply {n} " + "an answer " * 12, id=f"h-{n}-a"),
                ]
                count, _ = expected[f"history:{thread}"]
                t0 = time.perf_counter()
                if random.Random(n).random() < self.around_share:
                    self.around.add_messages(history_id(thread), new)  # around the cache
                else:
                    self.histories[thread].add_messages(new)
                self.write_ms.append((time.perf_counter() - t0) * 1000)
                expected[f"history:{thread}"] = (count + 2, f"h-{n}-a")
            elif kind == "session-read":
                t0 = time.perf_counter()
                item = self.store.get(session_ns(thread), "state")
                self.session_ms.append((time.perf_counter() - t0) * 1000)
                want = expected[f"session:{thread}"][1]
                if item is None or item.value["n"] != want:
                    raise AssertionError(
                        f"{self.name}: stale session {thread} at op {n}: "
                        f"got {item.value if item else None}, expected n={want}"
                    )
                self.checked += 1
                if self.checked % 20 == 0:
                    fresh = self.truth_store.get(session_ns(thread), "state")
                    assert fresh is not None and fresh.value == item.value
                    assert fresh.updated_at == item.updated_at, f"{self.name}: differs"
                    self.compared += 1
            elif kind == "session-write":
                t0 = time.perf_counter()
                self.store.put(session_ns(thread), "state", {"n": n, "user": thread})
                self.write_ms.append((time.perf_counter() - t0) * 1000)
                expected[f"session:{thread}"] = ("", n)
            elif kind == "read":
                t0 = time.perf_counter()
                tup = self.saver.get_tuple(latest(thread))
                self.read_ms.append((time.perf_counter() - t0) * 1000)
                cid, count = expected[thread]
                if tup is None or tup.config["configurable"]["checkpoint_id"] != cid:
                    fresh = self.truth.get_tuple(latest(thread))
                    raise AssertionError(
                        f"{self.name}: stale read of {thread} at op {n}: got "
                        f"{tup.config['configurable']['checkpoint_id'] if tup else None}, "
                        f"expected {cid}, database has "
                        f"{fresh.config['configurable']['checkpoint_id'] if fresh else None}"
                    )
                assert len(tup.checkpoint["channel_values"]["messages"]) == count
                self.checked += 1
                if self.checked % 20 == 0:
                    fresh = self.truth.get_tuple(latest(thread))
                    assert fresh is not None and tuple(fresh) == tuple(tup), f"{self.name}: differs"
                    self.compared += 1
            else:
                head = self.truth.get_tuple(latest(thread))
                t0 = time.perf_counter()
                config, count = step(self.saver, head, n)
                self.write_ms.append((time.perf_counter() - t0) * 1000)
                expected[thread] = (config["configurable"]["checkpoint_id"], count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=200)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--active", type=int, default=40, help="Recent threads the trace uses.")
    parser.add_argument("--ops", type=int, default=4000)
    parser.add_argument("--writes", type=float, default=0.2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--history-turns", type=int, default=10)
    parser.add_argument(
        "--around", type=float, default=0.25, help="Share of history appends around the cache."
    )
    args = parser.parse_args()

    import redis

    try:
        have_redis = bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        have_redis = False
    prefix = f"haive-bench-{uuid.uuid4().hex[:8]}"

    with server() as srv, fresh_database(srv, "cache") as dsn:
        print("server:", server_settings(dsn))
        with PostgresCheckpointer.from_conn_string(dsn) as saver:
            saver.setup()
            t0 = time.perf_counter()
            seed(saver, args.threads, args.turns)
            print(
                f"seeded {args.threads} threads x {args.turns} turns in {time.perf_counter() - t0:.1f}s"
            )
            active = [t.thread_id for t in saver.list_threads(limit=args.active)]
            store = PostgresStore(dsn)
            store.setup()
            for t in active:
                store.put(session_ns(t), "state", {"n": 0, "user": t})
            histories = ChatHistoryFactory(dsn)
            histories.setup()
            seed_histories(histories, active, args.history_turns)
            around = ConversationStore(dsn)

            # The reference: InMemorySaver holding the same latest checkpoints.
            memory_saver = InMemorySaver()
            for t in active:
                head = saver.get_tuple(latest(t))
                assert head is not None
                memory_saver.put(
                    head.config, head.checkpoint, head.metadata, head.checkpoint["channel_versions"]
                )

            # The variants write to the same threads: each round gets fresh
            # layers, since writes made outside a layer are not seen by it.
            def make(name: str, round_: int) -> CacheLayer | None:
                if name == "memory":
                    return CacheLayer([InMemoryCache(max_bytes=256 << 20, ttl=600)])
                if name in ("memory+redis", "redis"):
                    memory = (
                        [InMemoryCache(max_bytes=256 << 20, ttl=600)] if "memory" in name else []
                    )
                    layer = CacheLayer(
                        [
                            *memory,
                            RedisCache(
                                REDIS_URL,
                                ttl=600,
                                prefix=f"{prefix}-{name}-{round_}",
                                secret=uuid.uuid4().hex * 2,
                            ),
                        ]
                    )
                    assert layer.wait_ready()
                    return layer
                return None

            # "redis" (no memory level) shows what a hit in Redis costs.
            variants = ["memory", "uncached"] + (["memory+redis", "redis"] if have_redis else [])
            last: dict[str, CacheLayer] = {}
            results: dict[str, list[Replay]] = {name: [] for name in variants}
            hit_rates: dict[str, list[float]] = {
                name: [] for name in variants if name != "uncached"
            }
            history_rates: dict[str, list[float]] = {name: [] for name in hit_rates}
            ref_ms: list[list[float]] = []
            rng = random.Random(7)
            n = 1000
            for round_ in range(args.rounds):
                # Writes lengthen the threads: rotate the order so that no
                # variant always meets the longest threads.
                shift = round_ % len(variants)
                for name in variants[shift:] + variants[:shift]:
                    layer = make(name, round_)
                    ops = trace(active, args.ops, args.writes, rng)
                    expected: dict[str, tuple[str, int]] = {}
                    for t in active:
                        head = saver.get_tuple(latest(t))
                        assert head is not None
                        expected[t] = (
                            head.config["configurable"]["checkpoint_id"],
                            len(head.checkpoint["channel_values"]["messages"]),
                        )
                    for t in active:
                        item = store.get(session_ns(t), "state")
                        assert item is not None
                        expected[f"session:{t}"] = ("", item.value["n"])
                        expected[f"history:{t}"] = history_state(histories(history_id(t)))
                    target: Any = saver
                    target_store: Any = store
                    target_histories: dict[str, Any] = {t: histories(history_id(t)) for t in active}
                    before = None
                    if layer is not None:
                        target = layer.wrap(saver)
                        target.warm(active)  # warm-up of the active threads
                        target_store = layer.wrap_store(store)
                        target_store.warm([(session_ns(t), "state") for t in active])
                        for t in active:
                            target_histories[t] = layer.wrap_history(target_histories[t])
                            target_histories[t].warm()
                        before = layer.metrics()
                    replay = Replay(
                        name,
                        target,
                        saver,
                        layer,
                        target_store,
                        store,
                        target_histories,
                        histories,
                        around,
                        args.around,
                    )
                    replay.run(ops, expected, n)
                    n += len(ops)
                    results[name].append(replay)
                    if layer is not None and before is not None:
                        after = layer.metrics()
                        hits = sum(after.hits.values()) - sum(before.hits.values())
                        reads = after.reads - before.reads
                        hit_rates[name].append(hits / reads)
                        history_rates[name].append(replay.history_hits / replay.history_reads)
                        if name in last:
                            last[name].close()
                        last[name] = layer
                # InMemorySaver.get_tuple on the same heads
                times = []
                for _, t in trace(active, args.ops, 0.0, rng):
                    t0 = time.perf_counter()
                    memory_saver.get_tuple(latest(t))
                    times.append((time.perf_counter() - t0) * 1000)
                ref_ms.append(times)

            def best(runs: list[Replay], attr: str, q: float) -> float:
                return min(pct(getattr(r, attr), q) for r in runs if getattr(r, attr))

            ref50 = min(statistics.median(t) for t in ref_ms)
            ref95 = min(pct(t, 0.95) for t in ref_ms)
            unc50 = best(results["uncached"], "read_ms", 0.5)
            unc_s50 = best(results["uncached"], "session_ms", 0.5)
            rows = []
            for name in variants:
                runs = results[name]
                r50, r95 = best(runs, "read_ms", 0.5), best(runs, "read_ms", 0.95)
                s50 = best(runs, "session_ms", 0.5)
                w50 = best(runs, "write_ms", 0.5)
                rate = max(hit_rates[name]) if name in hit_rates else None
                rows.append(
                    [
                        name,
                        f"{rate:.2%}" if rate is not None else "-",
                        f"{r50:.4f}",
                        f"{r95:.4f}",
                        f"{unc50 / r50:.1f}x",
                        f"{r50 / ref50:.2f}x",
                        f"{s50:.4f}",
                        f"{unc_s50 / s50:.1f}x",
                        f"{w50:.3f}",
                        sum(r.checked for r in runs),
                        sum(r.compared for r in runs),
                    ]
                )
            rows.append(
                [
                    "InMemorySaver (reference)",
                    "-",
                    f"{ref50:.4f}",
                    f"{ref95:.4f}",
                    "-",
                    "1.00x",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                ]
            )
            print_table(
                f"Active-session trace: {args.ops} ops/round on {len(active)} threads, "
                f"{args.writes:.0%} writes, best of {args.rounds} rounds (ms)",
                [
                    "variant",
                    "hit rate",
                    "read p50",
                    "read p95",
                    "vs uncached",
                    "vs InMemorySaver",
                    "session get p50",
                    "vs uncached",
                    "write p50",
                    "reads checked",
                    "compared whole",
                ],
                rows,
            )
            unc_h50 = best(results["uncached"], "history_ms", 0.5)
            history_rows = []
            for name in variants:
                runs = results[name]
                h50, h95 = best(runs, "history_ms", 0.5), best(runs, "history_ms", 0.95)
                rate = max(history_rates[name]) if name in history_rates else None
                history_rows.append(
                    [
                        name,
                        f"{rate:.2%}" if rate is not None else "-",
                        f"{h50:.4f}",
                        f"{h95:.4f}",
                        f"{unc_h50 / h50:.1f}x",
                        sum(r.history_reads for r in runs),
                    ]
                )
            print_table(
                f"Chat-history reads in the same trace ({args.history_turns * 2}+ messages, "
                f"{args.around:.0%} of appends around the cache), best of {args.rounds} rounds (ms)",
                ["variant", "hit rate", "read p50", "read p95", "vs uncached", "reads checked"],
                history_rows,
            )
            for name, layer in last.items():
                print(name, layer.metrics().as_dict())
                layer.close()
            store.close()
            histories.close()
            around.close()
    if have_redis:
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(f"{prefix}-*"))
        if keys:
            client.delete(*keys)


if __name__ == "__main__":
    main()
