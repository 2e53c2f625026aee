"""Cost of each checkpointer call outside the graph: haive-langgraph against PostgresSaver.

The calls a ``MessagesState`` chat thread makes (the ``get_tuple`` each
invoke starts with, then ``put`` and ``put_writes``) are recorded once with
LangGraph's ``InMemorySaver``, then replayed, side by side on one server (a
fresh database each), against ``PostgresCheckpointer``,
``langgraph-checkpoint-postgres``'s ``PostgresSaver`` and the
"no serialisation" floor of ``checkpointer.py`` (one committed one-row
INSERT per write, one one-row SELECT per read, no encoding). Printed per
call: CPU time of the calling thread and wall time, in microseconds, and
the ratios. Wall minus CPU is roughly the server's part (execution, commit).

The replay keeps the object identities a graph has: a message written by
one ``put`` is the same object in the next ``put``'s list, and after a
``get_tuple`` the graph goes on with the objects that call returned (the
saver's own copies), never with the recorded ones.

This is the measurement behind ``checkpointer.py``'s invokes/s: inside a
graph the same calls also compete with the graph for the GIL.

    python benchmarks/saver_calls.py                 # 20 and 80 turns
    python benchmarks/saver_calls.py --turns 80 --rounds 5 --text small
    python benchmarks/saver_calls.py --profile haive --turns 80   # cProfile of our calls
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import gc
import pstats
import random
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import fresh_database, print_table, server
from checkpointer import (
    Text,
    build_graph,
    durable_floor,
    haive,
    langgraph_postgres,
    new_values_floor,
)
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver

KINDS = ("put", "put_writes", "get_tuple")
# name, arguments, and for get_tuple the recorded result (the objects the graph went on with)
Call = tuple[str, tuple[Any, ...], Any]


def record(turns: int, text: Text) -> list[Call]:
    """The saver calls of one thread of ``turns`` turns.

    Arguments and results are deep-copied with one memo, so an object that
    several calls share is one object in the recording too.
    """
    saver = InMemorySaver()
    calls: list[Call] = []
    memo: dict[int, Any] = {}

    def recording(name: str) -> Callable[..., Any]:
        original = getattr(saver, name)

        def call(*args: Any) -> Any:
            result = original(*args)
            kept = copy.deepcopy(args, memo)
            calls.append((name, kept, copy.deepcopy(result, memo) if name == "get_tuple" else None))
            return result

        return call

    for name in KINDS:
        setattr(saver, name, recording(name))
    graph = build_graph(False, text).compile(checkpointer=saver)
    rng = random.Random(1)
    config = {"configurable": {"thread_id": "t"}}
    for turn in range(turns):
        graph.invoke(
            {"messages": [HumanMessage(content=text.sentence(rng), id=f"h{turn}")]}, config
        )
    return calls


def _adopt(memo: dict[int, Any], recorded: Any, returned: Any) -> None:
    """Let later calls use the objects ``get_tuple`` returned where the recording has its own."""
    if recorded is None or returned is None:
        return
    rec_values = recorded.checkpoint["channel_values"]
    got_values = returned.checkpoint["channel_values"]
    for channel, rec in rec_values.items():
        got = got_values.get(channel)
        if isinstance(rec, list) and isinstance(got, list) and len(rec) == len(got):
            for a, b in zip(rec, got, strict=True):
                memo[id(a)] = b
        elif channel in got_values:
            memo[id(rec)] = got


# haive's own work inside the calls, without the driver and the server:
# planning a put (serialising, keying, framing), planning a put_writes,
# decoding what get_tuple read.
PARTS = ("_plan_put", "_plan_writes", "_load_row")


def _timed_parts(saver: Any) -> dict[str, list[float]]:
    """Wrap ``PARTS`` of ``saver`` (if it has them) to add up their CPU time."""
    spent: dict[str, list[float]] = {}
    for name in PARTS:
        original = getattr(saver, name, None)
        if original is None:
            continue
        acc = spent[name] = [0, 0.0]

        def wrapped(*args: Any, _f: Any = original, _acc: list[float] = acc, **kw: Any) -> Any:
            cpu = time.thread_time()
            try:
                return _f(*args, **kw)
            finally:
                _acc[0] += 1
                _acc[1] += time.thread_time() - cpu

        setattr(saver, name, wrapped)
    return spent


def replay(saver: Any, calls: list[Call]) -> dict[str, tuple[float, float]]:
    """Mean (CPU, wall) seconds per call kind, and per part of ours (CPU, CPU)."""
    totals = {kind: [0, 0.0, 0.0] for kind in KINDS}
    memo: dict[int, Any] = {}  # recorded object id -> this saver's object
    parts = _timed_parts(saver)

    for kind, recorded_args, recorded_result in calls:
        args = copy.deepcopy(recorded_args, memo)
        fn = getattr(saver, kind)
        cpu, wall = time.thread_time(), time.perf_counter()
        result = fn(*args)
        row = totals[kind]
        row[0] += 1
        row[1] += time.thread_time() - cpu
        row[2] += time.perf_counter() - wall
        if kind == "get_tuple":
            _adopt(memo, recorded_result, result)
    out = {kind: (row[1] / max(row[0], 1), row[2] / max(row[0], 1)) for kind, row in totals.items()}
    for name, (n, cpu) in parts.items():
        out[name] = (cpu / max(n, 1), cpu / max(n, 1))
    return out


OURS = "haive PostgresCheckpointer"
STRICT = "haive, strict_serialisation"


@contextmanager
def haive_strict(dsn: str) -> Iterator[Any]:
    from haive_langgraph.checkpointers import PostgresCheckpointer

    with PostgresCheckpointer.from_conn_string(dsn, strict_serialisation=True) as saver:
        saver.setup()
        yield saver


VARIANTS = [
    (OURS, haive),
    (STRICT, haive_strict),
    ("PostgresSaver", langgraph_postgres),
    ("floor, no serialisation", durable_floor(serialize=False)),
    ("floor: new values only", new_values_floor),
]


def run(turns: int, rounds: int, text: Text, server_dsn: str) -> None:
    calls = record(turns, text)
    # The recording holds many objects: keep them out of the collector's
    # way, so that a saver's garbage collections cost what its own objects do.
    gc.collect()
    gc.freeze()
    best: dict[str, dict[str, tuple[float, float]]] = {}
    for _ in range(rounds):
        for name, factory in VARIANTS:
            with fresh_database(server_dsn, "calls") as dsn, factory(dsn) as saver:
                result = replay(saver, calls)
            kept = best.setdefault(name, result)
            for kind, (cpu, wall) in result.items():
                kept[kind] = (min(kept[kind][0], cpu), min(kept[kind][1], wall))
    ours = best[OURS]
    header = ["call", "haive CPU us", "haive wall us"]
    for name, _ in VARIANTS[1:]:
        header += [f"{name} CPU / wall us", "CPU ratio", "wall ratio"]
    rows = []
    for kind in KINDS:
        row = [kind, f"{ours[kind][0] * 1e6:.0f}", f"{ours[kind][1] * 1e6:.0f}"]
        for name, _ in VARIANTS[1:]:
            ref = best[name]
            row += [
                f"{ref[kind][0] * 1e6:.0f} / {ref[kind][1] * 1e6:.0f}",
                f"{ref[kind][0] / ours[kind][0]:.2f}x",
                f"{ref[kind][1] / ours[kind][1]:.2f}x",
            ]
        rows.append(row)
    n = {kind: sum(1 for c in calls if c[0] == kind) for kind in KINDS}
    print_table(
        f"One chat thread, {turns} turns: {n} calls replayed (best of {rounds})", header, rows
    )
    print_table(
        "haive's own CPU inside the calls (no driver, no server), us per call",
        ["part", OURS, STRICT],
        [
            [name, f"{best[OURS][name][0] * 1e6:.0f}", f"{best[STRICT][name][0] * 1e6:.0f}"]
            for name in PARTS
        ],
    )


def profile(turns: int, text: Text, server_dsn: str, name: str) -> None:
    """cProfile of one replay of ``name``'s calls (after a warm-up replay)."""
    factory = dict(VARIANTS)[OURS if name == "haive" else name]
    calls = record(turns, text)
    gc.collect()
    gc.freeze()
    with fresh_database(server_dsn, "calls") as dsn, factory(dsn) as saver:
        replay(saver, calls[: len(calls) // 4])
    with fresh_database(server_dsn, "calls") as dsn, factory(dsn) as saver:
        prof = cProfile.Profile()
        prof.enable()
        replay(saver, calls)
        prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(40)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, nargs="+", default=[20, 80])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; best counts")
    parser.add_argument("--text", choices=["english", "small"], default="english")
    parser.add_argument("--profile", metavar="VARIANT", help="'haive' or 'PostgresSaver'")
    args = parser.parse_args()
    text = Text(args.text)
    with server() as server_dsn:
        for turns in args.turns:
            if args.profile:
                profile(turns, text, server_dsn, args.profile)
            else:
                run(turns, args.rounds, text, server_dsn)
            gc.unfreeze()
    if not args.profile:
        print("\n(ratios above 1x: haive-langgraph is cheaper)")


if __name__ == "__main__":
    main()
