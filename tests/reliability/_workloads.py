"""Pluggable workloads for the load scenario, and the runner that mixes them.

A :class:`Workload` names its operations with weights and runs one operation
at a time; the :func:`run_load` runner keeps ``concurrency`` workers busy with
a weighted mix of every registered workload's operations for a fixed time,
timing each operation and sampling the client's memory.

The checkpointer's and conversation memory's workloads are here; a
component adds its own to :data:`WORKLOADS` (a factory taking the DSN) and
joins the mix.
"""

from __future__ import annotations

import asyncio
import gc
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import psutil  # type: ignore[import-untyped]
from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.store.base import PutOp

from haive_langgraph._demo import chat_graph
from haive_langgraph.checkpointers import AsyncPostgresCheckpointer
from haive_langgraph.db import PersistenceConfig
from haive_langgraph.memory import AsyncChatHistoryFactory
from haive_langgraph.stores import AsyncPostgresStore


class Workload(Protocol):
    """One component's share of the load mix."""

    name: str

    async def start(self) -> None:
        """Create tables and seed data."""

    def operations(self) -> Mapping[str, float]:
        """Operation names and their relative weights."""

    async def run(self, op: str, rng: random.Random) -> None:
        """Run one operation."""

    async def stop(self) -> None:
        """Release connections."""


class CheckpointerWorkload:
    """Chat turns, state reads, history pages and thread listings on the async checkpointer.

    Conversations grow to ``turns`` turns, then their thread is deleted and a
    new one started, so the data set (and each operation's cost) reaches a
    steady state instead of growing for as long as the load runs.
    """

    name = "checkpointer"

    def __init__(self, dsn: str, *, threads: int = 24, turns: int = 12) -> None:
        # More conversations than workers, so a turn always finds a free one.
        self.saver = AsyncPostgresCheckpointer(
            dsn, config=PersistenceConfig(pool_max_size=8, application_name="load-checkpointer")
        )
        self.graph = chat_graph().compile(checkpointer=self.saver)
        self.turns = turns
        self.generation = [0] * threads
        self.busy = [False] * threads

    def _thread(self, slot: int) -> str:
        return f"load-{slot}-{self.generation[slot]}"

    async def start(self) -> None:
        await self.saver.setup()

    def operations(self) -> Mapping[str, float]:
        return {"turn": 5.0, "get_state": 3.0, "history": 1.0, "list_threads": 0.5}

    async def run(self, op: str, rng: random.Random) -> None:
        if op == "turn":  # one writer per conversation at a time: a free slot
            slot = rng.choice([i for i, busy in enumerate(self.busy) if not busy])
        else:
            slot = rng.randrange(len(self.generation))
        config: RunnableConfig = {"configurable": {"thread_id": self._thread(slot)}}
        if op == "turn":
            self.busy[slot] = True
            try:
                state = await self.graph.aget_state(config)
                n = len(state.values.get("messages", []))
                if n >= 2 * self.turns:
                    await self.saver.adelete_thread(self._thread(slot))
                    self.generation[slot] += 1
                    config = {"configurable": {"thread_id": self._thread(slot)}}
                text = f"question {n // 2} " + "lorem ipsum " * rng.randrange(1, 60)
                await self.graph.ainvoke({"messages": [HumanMessage(content=text)]}, config)
            finally:
                self.busy[slot] = False
        elif op == "get_state":
            await self.graph.aget_state(config)
        elif op == "history":
            _ = [t async for t in self.saver.alist(config, limit=10)]
        elif op == "list_threads":
            await self.saver.alist_threads(limit=20)
        else:  # pragma: no cover - a typo in operations()
            raise ValueError(op)

    async def stop(self) -> None:
        await self.saver.aclose()


class MessagesWorkload:
    """Chat histories: appends (one message or a batch), reads of the last messages and pages.

    Like the checkpointer's, sessions are cleared after ``limit`` messages so
    the data set reaches a steady state. Each append is checked on the next
    read of the same session: the last message read is the last one written.
    """

    name = "messages"

    def __init__(self, dsn: str, *, sessions: int = 24, limit: int = 60) -> None:
        self.factory = AsyncChatHistoryFactory(
            dsn, config=PersistenceConfig(pool_max_size=4, application_name="load-messages")
        )
        self.limit = limit
        self.sessions = sessions
        self.counts = [0] * sessions
        self.last: list[str | None] = [None] * sessions
        self.busy = [False] * sessions

    async def start(self) -> None:
        await self.factory.setup()

    def operations(self) -> Mapping[str, float]:
        return {"append": 3.0, "append_batch": 1.0, "last": 3.0, "page": 1.0}

    async def run(self, op: str, rng: random.Random) -> None:
        free = [i for i, busy in enumerate(self.busy) if not busy]
        slot = rng.choice(free)  # one writer per session at a time
        history = self.factory(f"load-session-{slot}")
        self.busy[slot] = True
        try:
            if op in ("append", "append_batch"):
                if self.counts[slot] >= self.limit:
                    await history.aclear()
                    self.counts[slot], self.last[slot] = 0, None
                n = 1 if op == "append" else rng.randrange(2, 20)
                texts = [
                    f"m{self.counts[slot] + i} " + "lorem " * rng.randrange(1, 40) for i in range(n)
                ]
                await history.aadd_messages([HumanMessage(content=t) for t in texts])
                self.counts[slot] += n
                self.last[slot] = texts[-1]
            elif op == "last":
                got = await history.alast(5)
                expected = self.last[slot]
                seen = got[-1].content if got else None
                if seen != expected:
                    raise AssertionError(
                        f"session {slot}: last message {seen!r:.40}, wrote {expected!r:.40}"
                    )
            elif op == "page":
                await history.apage(limit=20)
            else:  # pragma: no cover - a typo in operations()
                raise ValueError(op)
        finally:
            self.busy[slot] = False

    async def stop(self) -> None:
        await self.factory.aclose()


class StoreWorkload:
    """Store items: puts (one or a batch), gets checked against the last put, filtered searches.

    Keys are reused (``keys`` per user), so the data set stays the same size;
    a get of a key no other worker is writing must return the last value put.
    """

    name = "store"

    def __init__(self, dsn: str, *, users: int = 16, keys: int = 40) -> None:
        self.store = AsyncPostgresStore(
            dsn, config=PersistenceConfig(pool_max_size=4, application_name="load-store")
        )
        self.users, self.keys = users, keys
        self.last: dict[tuple[int, int], int] = {}
        self.busy = [False] * users

    async def start(self) -> None:
        await self.store.setup()

    def operations(self) -> Mapping[str, float]:
        return {"put": 3.0, "put_batch": 1.0, "get": 3.0, "search": 2.0, "list_namespaces": 0.5}

    async def run(self, op: str, rng: random.Random) -> None:
        user = rng.choice([i for i, busy in enumerate(self.busy) if not busy])
        ns = ("load", f"user-{user}", "notes")
        self.busy[user] = True  # one writer per user at a time, so gets can be checked
        try:
            if op == "put":
                key, n = rng.randrange(self.keys), rng.randrange(1_000_000)
                await self.store.aput(
                    ns, f"k{key}", {"n": n, "text": "note " * rng.randrange(1, 50)}
                )
                self.last[(user, key)] = n
            elif op == "put_batch":
                batch = {rng.randrange(self.keys): rng.randrange(1_000_000) for _ in range(10)}
                await self.store.abatch(
                    [PutOp(ns, f"k{k}", {"n": n, "text": "batch"}) for k, n in batch.items()]
                )
                self.last.update({(user, k): n for k, n in batch.items()})
            elif op == "get":
                key = rng.randrange(self.keys)
                item = await self.store.aget(ns, f"k{key}")
                expected = self.last.get((user, key))
                seen = item.value["n"] if item is not None else None
                if seen != expected:
                    raise AssertionError(f"user {user} k{key}: read {seen}, last put {expected}")
            elif op == "search":
                await self.store.asearch(ns, filter={"n": {"$gte": 500_000}}, limit=10)
            elif op == "list_namespaces":
                await self.store.alist_namespaces(prefix=("load",), limit=20)
            else:  # pragma: no cover - a typo in operations()
                raise ValueError(op)
        finally:
            self.busy[user] = False

    async def stop(self) -> None:
        await self.store.aclose()


WORKLOADS: dict[str, Callable[[str], Workload]] = {
    "checkpointer": CheckpointerWorkload,
    "messages": MessagesWorkload,
    "store": StoreWorkload,
}


@dataclass
class LoadResult:
    seconds: float
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: list[BaseException] = field(default_factory=list)
    rss: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, bytes)

    @property
    def operations(self) -> int:
        return sum(len(v) for v in self.latencies.values())

    def percentile(self, op: str, q: float) -> float:
        values = sorted(self.latencies[op])
        return values[min(len(values) - 1, int(q * len(values)))]

    def rss_at(self, fraction: float) -> int:
        """RSS sampled closest to ``fraction`` of the run."""
        t = fraction * self.seconds
        return min(self.rss, key=lambda s: abs(s[0] - t))[1]


async def run_load(
    workloads: list[Workload], *, seconds: float, concurrency: int, seed: int = 5
) -> LoadResult:
    """Run the weighted mix of every workload's operations for ``seconds``."""
    mix: list[tuple[Workload, str]] = []
    weights: list[float] = []
    for w in workloads:
        for op, weight in w.operations().items():
            mix.append((w, op))
            weights.append(weight)
    result = LoadResult(seconds=seconds)
    process = psutil.Process()
    start = time.monotonic()
    deadline = start + seconds

    async def worker(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        while time.monotonic() < deadline:
            (w, op) = rng.choices(mix, weights)[0]
            t0 = time.perf_counter()
            try:
                await w.run(op, rng)
            except Exception as exc:  # counted; the scenario asserts there are none
                result.errors.append(exc)
                continue
            result.latencies.setdefault(f"{w.name}.{op}", []).append(time.perf_counter() - t0)

    async def sample() -> None:
        while time.monotonic() < deadline:
            await asyncio.to_thread(gc.collect)
            result.rss.append((time.monotonic() - start, process.memory_info().rss))
            await asyncio.sleep(max(0.5, seconds / 40))

    sampler = asyncio.create_task(sample())
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    await sampler
    result.rss.append((time.monotonic() - start, process.memory_info().rss))
    return result


def describe(result: LoadResult) -> dict[str, Any]:
    """Throughput and latency figures per operation."""
    return {
        op: {
            "n": len(v),
            "per_s": len(v) / result.seconds,
            "p50_ms": 1000 * result.percentile(op, 0.50),
            "p99_ms": 1000 * result.percentile(op, 0.99),
        }
        for op, v in sorted(result.latencies.items())
    }
