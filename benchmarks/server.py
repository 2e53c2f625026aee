"""Runs per second through `langgraph dev`: our checkpointer and store against the server's own.

Two servers, started one after the other on the same machine, each with the
same agent-like graph (a ``MessagesState`` whose "model" node calls a "tool"
node ``--steps - 1`` times, then answers: the state grows by ``2 * --steps``
messages per run; one store item per run):

* ``haive``: ``langgraph.json`` names ``haive_langgraph.server.checkpointer``
  and ``.store``, on a fresh database;
* ``inmem``: no checkpointer or store: the server's default persistence
  (in memory, saved to files by ``langgraph dev``).

Driven through langgraph-sdk (``runs.wait``, which makes the run, lets the
server's queue execute it and returns its state): first one run at a time,
then ``--concurrency`` clients at once, each on its own threads. Printed:
runs per second, the median and p95 latency of a run, and the CPU time per
run of the server's process and of the database's backends (``haive``
only), per server. One
run of the whole benchmark: on a shared machine, run it twice before
trusting a difference of less than 20 %.

    python benchmarks/server.py [--threads 5] [--runs 10] [--steps 3] [--concurrency 32]

Uses ``HAIVE_BENCH_DATABASE_URL`` or a fresh embedded server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import psutil
import psycopg
from _common import fresh_database, pct, print_table, server
from langgraph_sdk import get_client

from tests.server._dev import DevServer, write_app

GRAPH = """
import os

from langchain_core.messages import AIMessage, ToolMessage
from langgraph.config import get_store
from langgraph.graph import END, START, MessagesState, StateGraph

STEPS = int(os.environ.get("BENCH_STEPS", "1"))


class State(MessagesState):
    step: int


async def model(state: State) -> dict:
    said = state["messages"][-1].content
    step = state.get("step", 0) + 1
    if step == 1:
        await get_store().aput(("said",), str(len(state["messages"])), {"text": said})
    if step < STEPS:
        call = {"name": "lookup", "args": {"q": said[:40]}, "id": f"call-{step}"}
        return {"messages": [AIMessage("", tool_calls=[call])], "step": step}
    return {"messages": [AIMessage(f"You said: {said}. " + "Noted. " * 20)], "step": 0}


async def tool(state: State) -> dict:
    call = state["messages"][-1].tool_calls[0]
    return {"messages": [ToolMessage("result " * 30, tool_call_id=call["id"])]}


def route(state: State) -> str:
    return "tool" if state.get("step", 0) else END


builder = StateGraph(State)
builder.add_node("model", model)
builder.add_node("tool", tool)
builder.add_edge(START, "model")
builder.add_conditional_edges("model", route, ["tool", END])
builder.add_edge("tool", "model")
graph = builder.compile()
"""

MESSAGE = "Please remember that the meeting moved to Thursday at ten. " * 3


class CpuMeter:
    """CPU seconds of the server's processes and of the database's backends."""

    def __init__(self, server_pid: int, dsn: str | None) -> None:
        self.server = psutil.Process(server_pid)
        self.dsn = dsn

    def _server(self) -> float:
        total = 0.0
        for proc in [self.server, *self.server.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def _backends(self) -> dict[int, float]:
        if self.dsn is None:
            return {}
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            pids = conn.execute(
                "SELECT pid FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchall()
        found = {}
        for (pid,) in pids:
            with contextlib.suppress(psutil.Error):
                times = psutil.Process(pid).cpu_times()
                found[pid] = times.user + times.system
        return found

    def snapshot(self) -> tuple[float, dict[int, float]]:
        return self._server(), self._backends()

    def since(self, before: tuple[float, dict[int, float]]) -> tuple[float, float]:
        """(server, database) CPU seconds since ``before`` (backends that left are missed)."""
        server, backends = self.snapshot()
        db = sum(cpu - before[1].get(pid, 0.0) for pid, cpu in backends.items())
        return server - before[0], db


async def drive(
    url: str, threads: int, runs: int, concurrency: int, meter: CpuMeter
) -> dict[str, Any]:
    """Sequential, then concurrent runs; each on threads of its own."""

    async def one_client(n_threads: int) -> list[float]:
        latencies: list[float] = []
        async with get_client(url=url) as client:
            made = [(await client.threads.create())["thread_id"] for _ in range(n_threads)]
            for i in range(runs):
                for tid in made:
                    start = time.perf_counter()
                    await client.runs.wait(
                        tid,
                        "echo",
                        input={"messages": [{"role": "user", "content": f"{i} {MESSAGE}"}]},
                    )
                    latencies.append(time.perf_counter() - start)
        return latencies

    # Warm up: the graph, the pools, the first thread.
    await one_client(1)
    cpu = meter.snapshot()
    start = time.perf_counter()
    sequential = await one_client(threads)
    seq_seconds = time.perf_counter() - start
    seq_cpu = meter.since(cpu)
    cpu = meter.snapshot()
    start = time.perf_counter()
    parts = await asyncio.gather(
        *(one_client(max(1, threads // concurrency)) for _ in range(concurrency))
    )
    conc_seconds = time.perf_counter() - start
    conc_cpu = meter.since(cpu)
    concurrent = [x for part in parts for x in part]
    return {
        "sequential": (len(sequential) / seq_seconds, sequential, seq_cpu),
        "concurrent": (len(concurrent) / conc_seconds, concurrent, conc_cpu),
    }


def measure(
    label: str, app_dir: Path, env: dict[str, str], args: argparse.Namespace
) -> dict[str, Any]:
    app = write_app(app_dir, graph=GRAPH, ours=label == "haive")
    env = {**env, "BENCH_STEPS": str(args.steps)}
    dev = DevServer(app, env, args=("--n-jobs-per-worker", str(args.concurrency)))
    dev.start()
    try:
        assert dev.process is not None
        meter = CpuMeter(dev.process.pid, env.get("HAIVE_DATABASE_URL"))
        return asyncio.run(drive(dev.url, args.threads, args.runs, args.concurrency, meter))
    finally:
        dev.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=5, help="threads of the sequential pass")
    parser.add_argument("--runs", type=int, default=10, help="runs per thread")
    parser.add_argument(
        "--steps", type=int, default=3, help="model calls per run (a tool step between each)"
    )
    parser.add_argument("--concurrency", type=int, default=32, help="clients at once")
    args = parser.parse_args()
    results: dict[str, dict[str, Any]] = {}
    with server() as srv, tempfile.TemporaryDirectory(prefix="haive-bench-server-") as tmp:
        with fresh_database(srv, "server") as dsn:
            results["haive"] = measure(
                "haive", Path(tmp) / "haive", {"HAIVE_DATABASE_URL": dsn}, args
            )
        results["inmem"] = measure("inmem", Path(tmp) / "inmem", {}, args)
    rows = []
    for label, by_mode in results.items():
        for mode, (rate, latencies, (server_cpu, db_cpu)) in by_mode.items():
            rows.append(
                (
                    label,
                    mode,
                    len(latencies),
                    f"{rate:.1f}",
                    f"{statistics.median(latencies) * 1000:.1f}",
                    f"{pct(latencies, 95) * 1000:.1f}",
                    f"{server_cpu / len(latencies) * 1000:.1f}",
                    f"{db_cpu / len(latencies) * 1000:.1f}",
                )
            )
    print_table(
        f"langgraph dev, agent graph ({args.steps} model steps per run), "
        f"{args.threads} threads x {args.runs} runs "
        f"(concurrent: {args.concurrency} clients)",
        (
            "persistence",
            "mode",
            "runs",
            "runs/s",
            "p50 ms",
            "p95 ms",
            "server CPU ms/run",
            "db CPU ms/run",
        ),
        rows,
    )


if __name__ == "__main__":
    main()
