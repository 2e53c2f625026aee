"""Cost of each checkpointer call outside the graph: haive-langgraph against PostgresSaver.

The calls a ``MessagesState`` chat thread makes (``put``, ``put_writes``,
and the ``get_tuple`` of the latest checkpoint each invoke starts with) are
recorded once with LangGraph's ``InMemorySaver``, then replayed, side by side
on one server (a fresh database each), against ``PostgresCheckpointer`` and
``langgraph-checkpoint-postgres``'s ``PostgresSaver``. Printed per call:
CPU time of the calling thread and wall time, in microseconds, and the
ratios. Wall minus CPU is roughly the server's part (execution, commit).

This is the measurement behind ``checkpointer.py``'s invokes/s: inside a
graph the same calls also compete with the graph for the GIL.

    python benchmarks/saver_calls.py                 # 20 and 80 turns
    python benchmarks/saver_calls.py --turns 80 --rounds 5 --text small
"""

from __future__ import annotations

import argparse
import copy
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import fresh_database, print_table, server
from checkpointer import Text, build_graph, haive, langgraph_postgres
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver

KINDS = ("put", "put_writes", "get_tuple")
Call = tuple[str, tuple[Any, ...]]


def record(turns: int, text: Text) -> list[Call]:
    """The saver calls of one thread of ``turns`` turns (arguments deep-copied)."""
    saver = InMemorySaver()
    calls: list[Call] = []

    def recording(name: str) -> Callable[..., Any]:
        original = getattr(saver, name)

        def call(*args: Any) -> Any:
            calls.append((name, copy.deepcopy(args)))
            return original(*args)

        return call

    saver.put = recording("put")  # type: ignore[method-assign]
    saver.put_writes = recording("put_writes")  # type: ignore[method-assign]
    graph = build_graph(False, text).compile(checkpointer=saver)
    rng = random.Random(1)
    config = {"configurable": {"thread_id": "t"}}
    for turn in range(turns):
        graph.invoke(
            {"messages": [HumanMessage(content=text.sentence(rng), id=f"h{turn}")]}, config
        )
    return calls


def replay(saver: Any, calls: list[Call]) -> dict[str, tuple[float, float]]:
    """Mean (CPU, wall) seconds per call kind; a ``get_tuple`` follows each put."""
    totals = {kind: [0, 0.0, 0.0] for kind in KINDS}
    latest = {"configurable": {"thread_id": "t"}}

    def timed(kind: str, fn: Callable[..., Any], *args: Any) -> None:
        cpu, wall = time.thread_time(), time.perf_counter()
        fn(*args)
        row = totals[kind]
        row[0] += 1
        row[1] += time.thread_time() - cpu
        row[2] += time.perf_counter() - wall

    for kind, args in calls:
        args = copy.deepcopy(args)  # each saver gets objects of its own, as in a graph
        timed(kind, getattr(saver, kind), *args)
        if kind == "put":
            timed("get_tuple", saver.get_tuple, latest)
    return {
        kind: (row[1] / max(row[0], 1), row[2] / max(row[0], 1)) for kind, row in totals.items()
    }


VARIANTS = [("haive PostgresCheckpointer", haive), ("PostgresSaver", langgraph_postgres)]


def run(turns: int, rounds: int, text: Text, server_dsn: str) -> None:
    calls = record(turns, text)
    best: dict[str, dict[str, tuple[float, float]]] = {}
    for _ in range(rounds):
        for name, factory in VARIANTS:
            with fresh_database(server_dsn, "calls") as dsn, factory(dsn) as saver:
                result = replay(saver, calls)
            kept = best.setdefault(name, result)
            for kind, (cpu, wall) in result.items():
                kept[kind] = (min(kept[kind][0], cpu), min(kept[kind][1], wall))
    ours, ref = best["haive PostgresCheckpointer"], best["PostgresSaver"]
    rows = [
        [
            kind,
            f"{ours[kind][0] * 1e6:.0f}",
            f"{ours[kind][1] * 1e6:.0f}",
            f"{ref[kind][0] * 1e6:.0f}",
            f"{ref[kind][1] * 1e6:.0f}",
            f"{ref[kind][0] / ours[kind][0]:.2f}x",
            f"{ref[kind][1] / ours[kind][1]:.2f}x",
        ]
        for kind in KINDS
    ]
    print_table(
        f"One chat thread, {turns} turns: {len(calls)} calls replayed (best of {rounds})",
        [
            "call",
            "haive CPU us",
            "haive wall us",
            "PostgresSaver CPU us",
            "PostgresSaver wall us",
            "CPU ratio",
            "wall ratio",
        ],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, nargs="+", default=[20, 80])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; best counts")
    parser.add_argument("--text", choices=["english", "small"], default="english")
    args = parser.parse_args()
    text = Text(args.text)
    with server() as server_dsn:
        for turns in args.turns:
            run(turns, args.rounds, text, server_dsn)
    print("\n(ratios above 1x: haive-langgraph is cheaper)")


if __name__ == "__main__":
    main()
