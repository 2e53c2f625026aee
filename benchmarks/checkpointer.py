"""Chat-graph checkpointer benchmark: haive-langgraph against LangGraph's savers.

One command, one run, side by side on the same server (a fresh database per
variant): a ``MessagesState`` chat graph with a deterministic model,
THREADS threads x TURNS turns, for LangGraph's ``InMemorySaver``,
``langgraph-checkpoint-postgres``'s ``PostgresSaver`` (ordinary state and
``DeltaChannel`` state) and ``PostgresCheckpointer``.

Reported per variant: invokes/s, ``get_state`` p50, the time to list a
thread's full history (``get_state_history``), database bytes, and the
ratios the core issue sets targets for.

Two more variants bound what any durable saver can reach (see
``DurableFloor``): ``InMemorySaver`` plus one committed one-row INSERT per
``put``/``put_writes`` and one one-row SELECT per ``get_tuple``, with and
without serialisation. Their invokes/s against ``InMemorySaver`` is the
ceiling of that ratio on the machine the benchmark runs on.

    python benchmarks/checkpointer.py                # 5 threads x 20 and x 80 turns
    python benchmarks/checkpointer.py --turns 80 --threads 5 --rounds 5
    python benchmarks/checkpointer.py --text small   # the 37-word vocabulary
    python benchmarks/checkpointer.py --sequential   # one variant's run after another

The variants run side by side, turn by turn (see ``run_interleaved``), so
that their ratios hold on a machine whose speed drifts from second to
second; ``--sequential`` measures one variant's whole run after another, as
earlier versions of this benchmark did.

Messages are 140 words of English-like text (see ``Text``): how compressible
the text is decides how much PostgreSQL's TOAST compression shrinks the
whole-list copies ``PostgresSaver`` writes at every step.

``HAIVE_BENCH_DATABASE_URL`` points it at another server (it creates and
drops its own databases there); otherwise an embedded PostgreSQL is started.
Commits are durable (``synchronous_commit`` is left at the server's ``on``).
"""

from __future__ import annotations

import argparse
import bisect
import copy
import gc
import itertools
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypedDict

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    database_bytes,
    fresh_database,
    human_bytes,
    p50,
    print_table,
    server,
    server_settings,
    timed,
)
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.channels.delta import DeltaChannel
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.graph.message import _messages_delta_reducer
from psycopg import conninfo

# Message text. LangGraph's savers store the whole message list at every step
# and PostgreSQL compresses those values (TOAST), so the database size of
# ``PostgresSaver`` depends on how compressible the text is. Real chat text
# is English-like prose; a tiny vocabulary repeats so much that TOAST shrinks
# the quadratic copies about twice as well as it would real text.
#
# "english" (default): words drawn from a 5,000-word vocabulary with Zipf's
# law (the rank-r word has weight 1/r) and English letter frequencies. It
# compresses like English prose: measured with zstd level 3, one 900-character
# message 1.88:1 and a 140 KB conversation 2.73:1 (zlib level 1: 2.40:1);
# the text of the GPL-3 licence gives 1.88:1, 2.79:1 and 2.47:1.
# "small": the 37-entry list below, uniformly (2.68:1, 4.74:1 and 4.02:1); the
# vocabulary of earlier runs of this benchmark, kept for comparison.
SMALL_VOCABULARY = [
    "the",
    "agent",
    "reads",
    "the",
    "thread",
    "and",
    "answers",
    "with",
    "care",
    "about",
    "memory",
    "storage",
    "checkpoint",
    "postgres",
    "value",
    "list",
    "graph",
    "state",
    "message",
    "tool",
    "call",
    "result",
    "user",
    "question",
    "context",
    "summary",
    "plan",
    "step",
    "retry",
    "branch",
    "fork",
    "history",
    "time",
    "travel",
    "index",
    "vector",
    "search",
]
LETTERS = "etaoinshrdlcumwfgypbvkjxqz"
LETTER_WEIGHTS = [12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8]
LETTER_WEIGHTS += [2.4, 2.4, 2.2, 2.0, 2.0, 1.9, 1.5, 1.0, 0.8, 0.15, 0.15, 0.1, 0.07]


class Text:
    """Deterministic message text: ``Text("english")`` or ``Text("small")``."""

    def __init__(self, kind: str, size: int = 5000) -> None:
        self.cum: list[float] | None = None
        if kind == "small":
            self.words = SMALL_VOCABULARY
            return
        rng = random.Random(7)
        vocab: set[str] = set()
        while len(vocab) < size:
            n = max(1, min(12, int(rng.gauss(4.7, 2.3))))
            vocab.add("".join(rng.choices(LETTERS, LETTER_WEIGHTS, k=n)))
        self.words = sorted(vocab)
        rng.shuffle(self.words)
        self.cum = list(itertools.accumulate(1 / rank for rank in range(1, size + 1)))

    def sentence(self, rng: random.Random, words: int = 140) -> str:
        if self.cum is None:  # uniform, drawn as earlier runs drew it
            return " ".join(rng.choice(self.words) for _ in range(words))
        cum, total = self.cum, self.cum[-1]
        return " ".join(self.words[bisect.bisect(cum, rng.random() * total)] for _ in range(words))


class DeltaState(TypedDict):
    messages: Annotated[list[AnyMessage], DeltaChannel(_messages_delta_reducer)]


def build_graph(delta: bool, text: Text) -> StateGraph[Any]:
    def model(state: dict[str, Any]) -> dict[str, Any]:
        rng = random.Random(len(state["messages"]))
        n = len(state["messages"])
        return {"messages": [AIMessage(content="Reply: " + text.sentence(rng), id=f"ai-{n}")]}

    builder: StateGraph[Any] = StateGraph(DeltaState if delta else MessagesState)
    builder.add_node("model", model)
    builder.add_edge(START, "model")
    builder.add_edge("model", END)
    return builder


@dataclass
class Result:
    name: str
    invokes_per_s: float
    get_state_p50_ms: float
    history_s: float
    history_len: int
    db_bytes: int | None
    final_messages: list[str]
    # CPU seconds per invoke: this process (graph, saver, driver) and the
    # server's backends of the variant's database (None: not measurable).
    client_cpu_s: float | None = None
    server_cpu_s: float | None = None


class BackendCPU:
    """CPU time the server's backends of one database have used, from ``/proc``.

    Only for a server on this machine (Linux): every backend is a process
    named ``postgres: <user> <database> ...``, and ``/proc/<pid>/schedstat``
    counts its time on a CPU in nanoseconds. The two cores the benchmark
    usually runs on are shared by the graph, the saver and the server, so a
    saver's cost per invoke is its client CPU plus the server CPU its
    statements take (parsing parameters, index lookups, the commit).
    """

    def __init__(self, dsn: str) -> None:
        self._tag = f" {conninfo.conninfo_to_dict(dsn)['dbname']} ".encode()

    def sample(self) -> dict[str, int] | None:
        """Nanoseconds of CPU per backend pid; None where ``/proc`` cannot tell."""
        try:
            pids = [p for p in os.listdir("/proc") if p.isdigit()]
        except OSError:
            return None
        out: dict[str, int] = {}
        for pid in pids:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read()
                if not cmd.startswith(b"postgres: ") or self._tag not in cmd:
                    continue
                with open(f"/proc/{pid}/schedstat") as f:
                    out[pid] = int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                continue
        return out

    @staticmethod
    def spent(before: dict[str, int] | None, after: dict[str, int] | None) -> float | None:
        """Seconds used between two samples (a backend started meanwhile counts whole)."""
        if before is None or after is None:
            return None
        return sum(ns - before.get(pid, 0) for pid, ns in after.items()) / 1e9


def run_workload(
    saver: BaseCheckpointSaver[Any],
    *,
    delta: bool,
    threads: int,
    turns: int,
    name: str,
    text: Text,
) -> Result:
    graph = build_graph(delta, text).compile(checkpointer=saver)
    configs = [{"configurable": {"thread_id": f"thread-{t}"}} for t in range(threads)]
    rngs = [random.Random(1000 + t) for t in range(threads)]
    gc.collect()
    start = time.perf_counter()
    for turn in range(turns):
        for t, cfg in enumerate(configs):
            msg = HumanMessage(content=text.sentence(rngs[t]), id=f"human-{t}-{turn}")
            graph.invoke({"messages": [msg]}, cfg)
    elapsed = time.perf_counter() - start
    cfg0 = configs[0]
    get_state = timed(lambda: graph.get_state(cfg0), 50)
    history: list[Any] = []

    def list_history() -> None:
        history[:] = list(graph.get_state_history(cfg0))

    history_times = timed(list_history, 3)
    final = [str(m.content)[:40] for m in graph.get_state(cfg0).values["messages"]]
    return Result(
        name=name,
        invokes_per_s=threads * turns / elapsed,
        get_state_p50_ms=p50(get_state) * 1000,
        history_s=min(history_times),
        history_len=len(history),
        db_bytes=None,
        final_messages=final,
    )


Variant = Callable[[str], Any]


@contextmanager
def inmemory(_: str) -> Iterator[BaseCheckpointSaver[Any]]:
    yield InMemorySaver()


@contextmanager
def langgraph_postgres(dsn: str) -> Iterator[BaseCheckpointSaver[Any]]:
    from langgraph.checkpoint.postgres import PostgresSaver

    with PostgresSaver.from_conn_string(dsn) as saver:
        saver.setup()
        yield saver


class _PassThrough:
    """A serializer that stores the objects themselves (no encoding at all)."""

    def dumps_typed(self, obj: Any) -> tuple[str, Any]:
        return "object", obj

    def loads_typed(self, data: tuple[str, Any]) -> Any:
        return data[1]


class DurableFloor(InMemorySaver):
    """``InMemorySaver`` plus the least a durable saver must add to it.

    Each ``put`` and ``put_writes`` also commits a one-row INSERT, and each
    ``get_tuple`` first runs a one-row SELECT, on pooled prepared
    connections: the round trips and commits a PostgreSQL saver makes (it
    commits each write before LangGraph sends the next one, and reads the
    database for the latest checkpoint, which another process may have
    written), with nothing of the state in them. No such saver can be
    faster, so its invokes/s against ``InMemorySaver`` is the ceiling of that
    ratio on this machine. With ``serialize=False`` it also skips
    serialisation (the objects themselves are kept): the ceiling for a saver
    that had no encoding or decoding cost at all. That variant also hands
    every invoke the very message objects of the one before (and of its
    caller's result); a saver whose reads must share no object with another
    caller pays at least a copy of each message per read on top of it.
    """

    def __init__(self, pool: Any, *, serialize: bool) -> None:
        super().__init__(serde=None if serialize else _PassThrough())  # type: ignore[arg-type]
        self.pool = pool

    def _commit(self) -> None:
        with self.pool.connection() as conn:
            conn.execute("INSERT INTO floor_commits VALUES (1)", prepare=True)

    def get_tuple(self, config: Any) -> Any:
        with self.pool.connection() as conn:
            conn.execute("SELECT 1", prepare=True).fetchone()
        return super().get_tuple(config)

    def put(self, *args: Any, **kwargs: Any) -> Any:
        config = super().put(*args, **kwargs)
        self._commit()
        return config

    def put_writes(self, *args: Any, **kwargs: Any) -> None:
        super().put_writes(*args, **kwargs)
        self._commit()


class NewValuesFloor(DurableFloor):
    """The no-serialisation floor plus the work no durable saver can skip.

    A saver that keeps nothing but committed rows must still, at each call,
    encode what is new and send its bytes, and a saver that hands no object
    to two callers must copy what it returns. This variant does exactly
    that and nothing more: ``put`` encodes, with LangGraph's serializer, the
    checkpoint's own fields, its metadata and only the values (list items,
    for a list) it has not met before *as objects* (by identity, never
    checked for in-place edits), and commits their bytes in one INSERT;
    ``put_writes`` does the same for the written values; ``get_tuple`` runs
    the one-row SELECT and returns shallow copies (``copy.copy``, cheaper
    than a copy that shares no nested container) of every list item, which
    it then knows as already written. No
    compression, no content keys, no references, nothing read back from the
    database. It bounds what a saver with this contract can reach, where the
    no-serialisation floor bounds one that encodes and copies nothing.
    """

    def __init__(self, pool: Any) -> None:
        super().__init__(pool, serialize=False)
        from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

        self._encoder = JsonPlusSerializer()
        self._met: dict[int, Any] = {}  # id -> the object (kept, so ids stay unique)

    def _new_payloads(self, values: Iterable[Any]) -> list[bytes]:
        out: list[bytes] = []
        for value in values:
            for item in value if isinstance(value, list) else (value,):
                if id(item) not in self._met:
                    self._met[id(item)] = item
                    out.append(self._encoder.dumps_typed(item)[1])
        return out

    def _commit_payloads(self, payloads: list[bytes]) -> None:
        with self.pool.connection() as conn:
            conn.execute(
                "INSERT INTO floor_values SELECT unnest(%s::bytea[])", [payloads], prepare=True
            )

    def put(self, config: Any, checkpoint: Any, metadata: Any, new_versions: Any) -> Any:
        out = InMemorySaver.put(self, config, checkpoint, metadata, new_versions)
        values = checkpoint["channel_values"]
        body = {k: v for k, v in checkpoint.items() if k != "channel_values"}
        payloads = [self._encoder.dumps_typed(body)[1], self._encoder.dumps_typed(metadata)[1]]
        payloads += self._new_payloads(values[k] for k in new_versions if k in values)
        self._commit_payloads(payloads)
        return out

    def put_writes(self, config: Any, writes: Any, task_id: str, task_path: str = "") -> None:
        InMemorySaver.put_writes(self, config, writes, task_id, task_path)
        self._commit_payloads(self._new_payloads(v for _, v in writes))

    def get_tuple(self, config: Any) -> Any:
        tup = super().get_tuple(config)
        if tup is None:
            return None
        met = self._met
        values = {}
        for k, v in tup.checkpoint["channel_values"].items():
            if isinstance(v, list):
                # Copies of stored values: known, never encoded again.
                v = [copy.copy(x) for x in v]
                met.update(zip(map(id, v), v, strict=True))
            values[k] = v
        return tup._replace(checkpoint={**tup.checkpoint, "channel_values": values})


def durable_floor(serialize: bool) -> Variant:
    @contextmanager
    def factory(dsn: str) -> Iterator[BaseCheckpointSaver[Any]]:
        from psycopg_pool import ConnectionPool

        with ConnectionPool(dsn, max_size=10, kwargs={"autocommit": True}) as pool:
            with pool.connection() as conn:
                conn.execute("CREATE TABLE floor_commits (x int)")
            yield DurableFloor(pool, serialize=serialize)

    return factory


@contextmanager
def new_values_floor(dsn: str) -> Iterator[BaseCheckpointSaver[Any]]:
    from psycopg_pool import ConnectionPool

    with ConnectionPool(dsn, max_size=10, kwargs={"autocommit": True}) as pool:
        with pool.connection() as conn:
            conn.execute("CREATE TABLE floor_commits (x int)")
            conn.execute("CREATE TABLE floor_values (data bytea)")
        yield NewValuesFloor(pool)


@contextmanager
def haive(dsn: str) -> Iterator[BaseCheckpointSaver[Any]]:
    from haive_langgraph.checkpointers import PostgresCheckpointer

    with PostgresCheckpointer.from_conn_string(dsn) as saver:
        saver.setup()
        yield saver


FLOOR = "floor: InMemory + 1 commit/call"
FLOOR_NO_SERDE = "floor, no serialisation"
FLOOR_NEW = "floor: new values only"

VARIANTS: list[tuple[str, Variant, bool, bool]] = [
    # name, factory, uses DeltaChannel state, stores in the database
    ("InMemorySaver", inmemory, False, False),
    ("PostgresSaver", langgraph_postgres, False, True),
    ("PostgresSaver+DeltaChannel", langgraph_postgres, True, True),
    ("haive PostgresCheckpointer", haive, False, True),
    # The ceiling of invokes/s for any durable saver (see DurableFloor).
    (FLOOR, durable_floor(serialize=True), False, False),
    (FLOOR_NO_SERDE, durable_floor(serialize=False), False, False),
    # The ceiling for a saver that encodes what is new and copies what it returns.
    (FLOOR_NEW, new_values_floor, False, False),
]


@dataclass
class _Live:
    """A variant being measured: its saver, graph and threads."""

    name: str
    in_db: bool
    dsn: str
    graph: Any
    configs: list[dict[str, Any]]
    rngs: list[random.Random]
    backends: BackendCPU
    elapsed: float = 0.0
    client_cpu: float = 0.0
    server_cpu: float | None = 0.0


def run(
    threads: int, turns: int, server_dsn: str, rounds: int, text: Text, *, sequential: bool = False
) -> dict[str, Result]:
    """Every variant ``rounds`` times; see :func:`run_interleaved` and :func:`run_sequential`."""
    if sequential:
        return run_sequential(threads, turns, server_dsn, rounds, text)
    return run_interleaved(threads, turns, server_dsn, rounds, text)


def run_interleaved(
    threads: int, turns: int, server_dsn: str, rounds: int, text: Text
) -> dict[str, Result]:
    """All variants open at once, taking turns turn by turn (the order rotating).

    This machine's speed drifts by the second (shared cores, and a disk whose
    commit latency other processes' fsyncs decide), and a variant measured
    alone for a minute meets other conditions than the next one. Here every
    variant runs each turn of its threads within the same few milliseconds as
    the others, so the ratios hold while the absolute speed drifts. Time
    adds up over the rounds; ``get_state`` and history samples also take
    turns, and the best round's p50 and time count. Message text is made
    before the clock starts.
    """
    results: dict[str, Result] = {}
    for _ in range(rounds):
        with ExitStack() as stack:
            live: list[_Live] = []
            for name, factory, delta, in_db in VARIANTS:
                dsn = stack.enter_context(fresh_database(server_dsn, "cp"))
                saver = stack.enter_context(factory(dsn))
                live.append(
                    _Live(
                        name=name,
                        in_db=in_db,
                        dsn=dsn,
                        graph=build_graph(delta, text).compile(checkpointer=saver),
                        configs=[
                            {"configurable": {"thread_id": f"thread-{t}"}} for t in range(threads)
                        ],
                        rngs=[random.Random(1000 + t) for t in range(threads)],
                        backends=BackendCPU(dsn),
                    )
                )
            gc.collect()
            for turn in range(turns):
                shift = turn % len(live)
                for v in live[shift:] + live[:shift]:
                    inputs = [
                        {
                            "messages": [
                                HumanMessage(
                                    content=text.sentence(v.rngs[t]), id=f"human-{t}-{turn}"
                                )
                            ]
                        }
                        for t in range(threads)
                    ]
                    server_before = v.backends.sample()
                    cpu_start = time.process_time()
                    start = time.perf_counter()
                    for inp, cfg in zip(inputs, v.configs, strict=True):
                        v.graph.invoke(inp, cfg)
                    v.elapsed += time.perf_counter() - start
                    v.client_cpu += time.process_time() - cpu_start
                    server = BackendCPU.spent(server_before, v.backends.sample())
                    v.server_cpu = (
                        None if server is None or v.server_cpu is None else (v.server_cpu + server)
                    )
            get_state: dict[str, list[float]] = {v.name: [] for v in live}
            for _ in range(50):
                for v in live:
                    cfg0 = v.configs[0]
                    get_state[v.name] += timed(lambda v=v, c=cfg0: v.graph.get_state(c), 1)
            history: dict[str, list[float]] = {v.name: [] for v in live}
            lengths: dict[str, int] = {}
            for _ in range(3):
                for v in live:
                    cfg0 = v.configs[0]
                    start = time.perf_counter()
                    lengths[v.name] = len(list(v.graph.get_state_history(cfg0)))
                    history[v.name].append(time.perf_counter() - start)
            for v in live:
                final = v.graph.get_state(v.configs[0]).values["messages"]
                res = Result(
                    name=v.name,
                    invokes_per_s=0.0,
                    get_state_p50_ms=p50(get_state[v.name]) * 1000,
                    history_s=min(history[v.name]),
                    history_len=lengths[v.name],
                    db_bytes=database_bytes(v.dsn) if v.in_db else None,
                    final_messages=[str(m.content)[:40] for m in final],
                    client_cpu_s=0.0,
                    server_cpu_s=0.0,
                )
                best = results.setdefault(v.name, res)
                best.get_state_p50_ms = min(best.get_state_p50_ms, res.get_state_p50_ms)
                best.history_s = min(best.history_s, res.history_s)
                # invokes/s over all rounds: total invokes over total time
                best.invokes_per_s += v.elapsed  # summed seconds, turned into a rate below
                best.client_cpu_s = (best.client_cpu_s or 0.0) + v.client_cpu
                best.server_cpu_s = (
                    None
                    if v.server_cpu is None or best.server_cpu_s is None
                    else best.server_cpu_s + v.server_cpu
                )
    invokes = rounds * threads * turns
    for res in results.values():
        res.invokes_per_s = invokes / res.invokes_per_s
        res.client_cpu_s = None if res.client_cpu_s is None else res.client_cpu_s / invokes
        res.server_cpu_s = None if res.server_cpu_s is None else res.server_cpu_s / invokes
    _check_conversations(results)
    return results


def _check_conversations(results: dict[str, Result]) -> None:
    reference = results["InMemorySaver"].final_messages
    for res in results.values():
        if res.final_messages != reference:
            raise SystemExit(f"{res.name} ended with a different conversation than InMemorySaver")


def run_sequential(
    threads: int, turns: int, server_dsn: str, rounds: int, text: Text
) -> dict[str, Result]:
    """Each variant ``rounds`` times, one whole run after another; the best round counts.

    The earlier method (``--sequential``): on a machine whose speed drifts,
    a variant's best round depends on the moment it ran.
    """
    results: dict[str, Result] = {}
    for _ in range(rounds):
        for name, factory, delta, in_db in VARIANTS:
            with fresh_database(server_dsn, "cp") as dsn, factory(dsn) as saver:
                res = run_workload(
                    saver, delta=delta, threads=threads, turns=turns, name=name, text=text
                )
                if in_db:
                    res.db_bytes = database_bytes(dsn)
            best = results.get(name)
            if best is None:
                results[name] = res
                continue
            best.invokes_per_s = max(best.invokes_per_s, res.invokes_per_s)
            best.get_state_p50_ms = min(best.get_state_p50_ms, res.get_state_p50_ms)
            best.history_s = min(best.history_s, res.history_s)
    _check_conversations(results)
    return results


def report(threads: int, turns: int, results: dict[str, Result]) -> None:
    ours = results["haive PostgresCheckpointer"]
    mem = results["InMemorySaver"]
    pg = results["PostgresSaver"]
    delta = results["PostgresSaver+DeltaChannel"]
    rows = []
    for r in results.values():
        rows.append(
            [
                r.name,
                f"{r.invokes_per_s:.1f}",
                f"{r.invokes_per_s / mem.invokes_per_s:.2f}x",
                f"{r.get_state_p50_ms:.2f}",
                f"{r.history_s * 1000:.1f} ({r.history_len})",
                human_bytes(r.db_bytes) if r.db_bytes is not None else "-",
                _ms(r.client_cpu_s),
                _ms(r.server_cpu_s),
            ]
        )
    print_table(
        f"MessagesState chat graph, {threads} threads x {turns} turns",
        [
            "variant",
            "invokes/s",
            "vs InMemory",
            "get_state p50 ms",
            "history ms (n)",
            "db bytes",
            "CPU ms/invoke: client",
            "server",
        ],
        rows,
    )
    assert ours.db_bytes and pg.db_bytes and delta.db_bytes
    # The size and history targets are for 80 turns (240 checkpoints).
    at80 = turns == 80

    def target(text: str, applies: bool = True) -> str:
        return f"   (target {text})" if applies else ""

    floor = results[FLOOR_NO_SERDE]
    new = results[FLOOR_NEW]
    print(
        "\nratios (haive vs reference):"
        f"\n  invokes/s vs the no-serialisation floor  {ours.invokes_per_s / floor.invokes_per_s:.2f}x"
        + target(">= 0.85x")
        + f"\n  invokes/s vs the new-values floor       {ours.invokes_per_s / new.invokes_per_s:.2f}x"
        + f"\n  invokes/s vs PostgresSaver              {ours.invokes_per_s / pg.invokes_per_s:.2f}x"
        + target(">= 1.5x")
        + f"\n  invokes/s vs DeltaChannel               {ours.invokes_per_s / delta.invokes_per_s:.2f}x"
        + target(">= 1.2x")
        + f"\n  invokes/s vs InMemorySaver              {ours.invokes_per_s / mem.invokes_per_s:.2f}x"
        + "\n  the floor variants vs InMemorySaver (what a durable saver can reach):"
        + f"\n    InMemorySaver + 1 commit per call     {results[FLOOR].invokes_per_s / mem.invokes_per_s:.2f}x"
        + f"\n    the same without serialisation        {floor.invokes_per_s / mem.invokes_per_s:.2f}x"
        + f"\n    ... encoding new values, copying reads {new.invokes_per_s / mem.invokes_per_s:.2f}x"
        + f" ({new.invokes_per_s / floor.invokes_per_s:.2f}x the no-serialisation floor)"
        + "\n  the new-values floor against the references (the most any saver with"
        + " our contract reaches):"
        + f"\n    vs PostgresSaver {new.invokes_per_s / pg.invokes_per_s:.2f}x,"
        + f" vs DeltaChannel {new.invokes_per_s / delta.invokes_per_s:.2f}x"
        + f"\n  get_state p50 haive / InMemorySaver     {ours.get_state_p50_ms / mem.get_state_p50_ms:.2f}x"
        + target("<= 1x at 80 turns", at80)
        + f"\n  get_state p50 haive / PostgresSaver     {ours.get_state_p50_ms / pg.get_state_p50_ms:.2f}x"
        + target("<= 0.7x")
        + f"\n  db bytes PostgresSaver / haive          {pg.db_bytes / ours.db_bytes:.1f}x"
        + target(">= 10x at 80 turns", at80)
        + f"\n  db bytes DeltaChannel / haive           {delta.db_bytes / ours.db_bytes:.2f}x"
        + target(">= 1x at 80 turns", at80)
        + f"\n  history PostgresSaver / haive           {pg.history_s / ours.history_s:.1f}x"
        + target(">= 10x for 240 checkpoints", at80)
    )
    if None not in (ours.client_cpu_s, ours.server_cpu_s, floor.client_cpu_s, floor.server_cpu_s):
        assert ours.client_cpu_s is not None and ours.server_cpu_s is not None
        assert floor.client_cpu_s is not None and floor.server_cpu_s is not None
        ours_cpu = ours.client_cpu_s + ours.server_cpu_s
        floor_cpu = floor.client_cpu_s + floor.server_cpu_s
        # On a machine whose cores are all busy, invokes/s follows CPU per invoke.
        print(
            "  CPU per invoke (client + server), the no-serialisation floor / haive "
            f"{floor_cpu / ours_cpu:.2f}x"
            f"\n    haive {_ms(ours_cpu)} ms ({_ms(ours.client_cpu_s)} client, "
            f"{_ms(ours.server_cpu_s)} server); floor {_ms(floor_cpu)} ms; "
            f"haive over the floor: {_ms(ours.client_cpu_s - floor.client_cpu_s)} client, "
            f"{_ms(ours.server_cpu_s - floor.server_cpu_s)} server"
        )


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=5)
    parser.add_argument("--turns", type=int, nargs="+", default=[20, 80])
    parser.add_argument("--rounds", type=int, default=3, help="rounds (times add up)")
    parser.add_argument(
        "--sequential",
        action="store_true",
        help="one variant's whole run after another, best round counts (the earlier method)",
    )
    parser.add_argument(
        "--text",
        choices=["english", "small"],
        default="english",
        help="message text: English-like (5,000-word Zipf vocabulary) or a 37-word vocabulary",
    )
    args = parser.parse_args()
    text = Text(args.text)
    with server() as server_dsn:
        print("server:", server_settings(server_dsn), "text:", args.text)
        for turns in args.turns:
            report(
                args.threads,
                turns,
                run(args.threads, turns, server_dsn, args.rounds, text, sequential=args.sequential),
            )


if __name__ == "__main__":
    main()
