"""Scenario 1: writers killed with SIGKILL at random moments lose nothing they committed.

Writer processes (``writer_process.py``) run the demo chat graph on three
threads, with the sync and the async checkpointer and both LangGraph
durability modes, and report every checkpoint and pending write they
committed. The test kills each one with SIGKILL: half at a random time, half
a few milliseconds after a ``put`` was sent, so that kills land inside
commits. The next writer continues the same threads (finishing a superstep
the kill interrupted). Afterwards:

* every acknowledged checkpoint and pending write loads as it was written;
* a ``put`` in flight at the kill is either entirely there or not at all;
* no row refers to a value, list item or registry entry that is missing;
* ``get_state_history`` of each thread is a closed chain in which every
  state extends the one before, and the registry counts it exactly;
* every thread resumes and takes another turn.
"""

from __future__ import annotations

import random
import time
from typing import Any

import psycopg

from haive_langgraph._demo import chat_graph
from haive_langgraph.checkpointers import PostgresCheckpointer

from ._checks import (
    Acks,
    check_acknowledged,
    check_conversation,
    check_linear_history,
    orphan_writes,
    resume_and_continue,
    row_problems,
    stored_checkpoint_ids,
)
from ._fleet import WriterFleet
from .conftest import Budget, Figures

THREADS = ("crash-a", "crash-b", "crash-c")
BIG_EVERY = 5


def wait_sessions_gone(dsn: str, app: str, timeout: float = 15.0) -> bool:
    """Wait until no session of ``app`` is left; True if one outlived the kill."""
    deadline = time.monotonic() + timeout
    lingered = False
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (app,)
            ).fetchone()
            if row is None or row[0] == 0:
                return lingered
            lingered = True
            assert time.monotonic() < deadline, f"sessions of killed writer {app} never ended"
            time.sleep(0.01)


def test_sigkilled_writers_lose_no_committed_checkpoint(
    dsn: str, budget: Budget, figures: Figures
) -> None:
    kills = budget.pick(24, 240)
    rng = random.Random(20261123)
    with PostgresCheckpointer.from_conn_string(dsn) as saver:
        saver.setup()
    acks = Acks()
    inside_put = 0
    lingering = 0
    resumed_by_writers = 0
    started = time.monotonic()
    with WriterFleet() as fleet:
        for i in range(kills):
            job: dict[str, Any] = {
                "dsn": dsn,
                "mode": ("sync", "async")[i % 2],
                "durability": ("sync", "sync", "async", "async")[i % 4],
                "lanes": [[t, t, None] for t in THREADS],
                "resume": True,
                "big_every": BIG_EVERY,
                "app": f"crash-writer-{i}",
            }
            pid = fleet.spawn(job)
            fleet.wait_event(pid, "up", 30)
            if i % 3 == 0:
                time.sleep(rng.uniform(0.05, 0.6))
            else:
                # Right after the n-th put was sent: most of these land inside a commit.
                fleet.wait_count(pid, "begin", rng.randint(1, 30), 10)
                time.sleep(rng.uniform(0, 0.004))
            fleet.kill(pid)
            # The server finishes a statement the writer sent before it died (and
            # commits it) before it notices the closed socket: wait until the dead
            # writer's sessions are gone, or the next writer could read a state
            # that one of them then changes.
            lingering += wait_sessions_gone(dsn, job["app"])
            events = fleet.snapshot(pid)
            errors = [e for e in events if e["ev"] == "error"]
            assert not errors, f"writer {i} failed before the kill: {errors[0]}"
            begun = {e["id"] for e in events if e["ev"] == "begin"}
            acked = {e["id"] for e in events if e["ev"] == "put"}
            inside_put += bool(begun - acked)
            resumed_by_writers += sum(1 for e in events if e["ev"] == "resumed")
            acks.add(events, killed=True)
            # After every kill the latest state of each thread loads in full.
            with psycopg.connect(dsn, autocommit=True) as conn:
                reader = PostgresCheckpointer(conn)
                for t in THREADS:
                    reader.get_tuple({"configurable": {"thread_id": t}})
    kill_phase = time.monotonic() - started

    problems = row_problems(dsn)
    assert problems == dict.fromkeys(problems, 0), f"partial or dangling rows: {problems}"

    committed_unacked = rolled_back = 0
    history_total = verified = 0
    resumed_after = 0
    with PostgresCheckpointer.from_conn_string(dsn) as saver:
        graph = chat_graph().compile(checkpointer=saver)
        for t in THREADS:
            stored = stored_checkpoint_ids(dsn, t)
            for cid in acks.inflight.get(t, set()):
                if cid in stored:
                    committed_unacked += 1  # it loads: checked with the whole history below
                else:
                    rolled_back += 1
            verified += check_acknowledged(saver, t, acks)
            history_total += check_linear_history(saver, graph, t)
            messages = graph.get_state({"configurable": {"thread_id": t}}).values["messages"]
            check_conversation(messages, t, BIG_EVERY)
            resumed_after += resume_and_continue(graph, t, t, BIG_EVERY)
            check_linear_history(saver, graph, t)
    orphans = orphan_writes(dsn)
    assert row_problems(dsn) == problems

    figures.record(
        "1 crash",
        f"{kills} SIGKILLs in {kill_phase:.0f}s, {inside_put} with puts in flight "
        f"({committed_unacked} of them committed before the ack, {rolled_back} never visible; "
        f"{lingering} kills left a session the server finished afterwards); "
        f"{verified} acknowledged checkpoints and {acks.write_count} acknowledged pending "
        f"writes verified, 0 lost; {history_total} checkpoints in 3 histories, all chains "
        f"closed; 0 partial (row checks: {sum(problems.values())} problems); "
        f"{resumed_by_writers} interrupted supersteps resumed by the next writer, "
        f"{resumed_after} at the end; {orphans} orphan pending writes (invisible)",
    )
