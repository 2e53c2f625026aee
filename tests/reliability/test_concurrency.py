"""Scenario 4: 50 async tasks and 4 processes writing the same and different threads.

In this process, 50 tasks share one ``AsyncPostgresCheckpointer`` (a pool of
10); every fifth one writes to one of three shared threads, the others to a
thread of their own. At the same time 4 writer processes (two with the sync
class and 4 worker threads, two with the async class and 4 tasks) each write
two threads of their own and two of the shared ones. Writers of a shared
thread fork its history (LangGraph runs from the latest checkpoint each of
them read), which is the hard case for the list storage: several writers
append to one lineage at once.

Afterwards every acknowledged checkpoint loads with exactly the messages and
parent it was written with, every acknowledged pending write is there, no
checkpoint id appears twice, no row is partial, the registry counts exactly,
the server reports no deadlock, and no writer saw an error. Finally 50
tasks write pending writes to one checkpoint at once: all 50 are stored.

Store upserts on one key from many writers join this scenario with the store
(see ``docs/reliability.md``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
from langgraph.checkpoint.base import empty_checkpoint
from psycopg_pool import ConnectionPool

from haive_langgraph._demo import chat_graph
from haive_langgraph.checkpointers import PostgresCheckpointer

from ._checks import Acks, check_acknowledged, row_problems
from ._fleet import WriterFleet
from ._turns import take_turn
from .conftest import Budget, Figures
from .writer_process import AsyncReportingCheckpointer, ReportingCheckpointer

SHARED = ("shared-0", "shared-1", "shared-2")
TASKS = 50
PROCESSES = 4


def deadlocks(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    return int(row[0])


def duplicate_ids(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM (SELECT checkpoint_id FROM haive.checkpoints "
            "GROUP BY tenant_id, checkpoint_ns, checkpoint_id HAVING count(*) > 1) AS d"
        ).fetchone()
    assert row is not None
    return int(row[0])


async def test_fifty_tasks_and_four_processes_lose_no_write(
    dsn: str, budget: Budget, figures: Figures
) -> None:
    task_turns = budget.pick(3, 25)
    process_turns = budget.pick(6, 60)
    events: list[dict[str, Any]] = []
    saver = AsyncReportingCheckpointer(dsn)
    saver.sink = lambda **e: events.append(e)
    await saver.setup()
    graph = chat_graph().compile(checkpointer=saver)
    deadlocks_before = await asyncio.to_thread(deadlocks, dsn)
    errors: list[BaseException] = []

    async def task(i: int) -> None:
        shared = i % 5 == 0
        thread_id = SHARED[i % 3] if shared else f"task-{i}"
        try:
            for _ in range(task_turns):
                await take_turn(graph, thread_id, f"task-{i}", is_async=True, resume=not shared)
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    started = time.monotonic()
    with WriterFleet() as fleet:
        pids = []
        for p in range(PROCESSES):
            own = [[f"proc-{p}-{j}", f"proc-{p}-{j}", process_turns] for j in range(2)]
            shared = [[SHARED[(p + j) % 3], f"proc-{p}@{j}", process_turns] for j in range(2)]
            job = {
                "dsn": dsn,
                "mode": ("sync", "async")[p % 2],
                "durability": "sync",
                "lanes": own + shared,
                "resume": False,
                "big_every": 0,
                "app": f"concurrency-{p}",
            }
            pids.append(fleet.spawn(job))
        await asyncio.wait_for(asyncio.gather(*(task(i) for i in range(TASKS))), 300)
        for pid in pids:
            status = await asyncio.to_thread(fleet.wait_exit, pid, 300)
            done = [e for e in fleet.snapshot(pid) if e["ev"] in ("done", "error")]
            assert status == 0 and done and done[-1]["ev"] == "done", (
                f"writer {pid} failed: {done[-1] if done else 'no report'}"
            )
            assert done[-1]["failures"] == 0
        process_events = [e for pid in pids for e in fleet.snapshot(pid)]
    elapsed = time.monotonic() - started
    assert not errors, f"{len(errors)} tasks failed, e.g. {errors[0]!r}"

    # Pending writes of 50 tasks on one checkpoint, all at once.
    fan = {"configurable": {"thread_id": "fan-out", "checkpoint_ns": ""}}
    cp = empty_checkpoint()
    saved = await saver.aput(fan, cp, {"source": "input", "step": -1}, {})
    await asyncio.gather(
        *(
            saver.aput_writes(saved, [("channel", f"value-{i}" * 40)], f"task-{i:02}")
            for i in range(TASKS)
        )
    )
    await saver.aclose()

    acks = Acks()
    acks.add(events, killed=False)
    acks.add(process_events, killed=False)
    all_ids = [e["id"] for e in [*events, *process_events] if e["ev"] == "put"]
    assert len(all_ids) == len(set(all_ids)), "a checkpoint id was acknowledged twice"
    verified = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        reader = PostgresCheckpointer(conn)
        for thread_id in acks.puts:
            verified += check_acknowledged(reader, thread_id, acks)
        fanned = reader.get_tuple(saved)
    assert fanned is not None
    assert sorted(fanned.pending_writes or []) == sorted(
        (f"task-{i:02}", "channel", f"value-{i}" * 40) for i in range(TASKS)
    )
    problems = row_problems(dsn)
    assert problems == dict.fromkeys(problems, 0), f"partial or dangling rows: {problems}"
    assert duplicate_ids(dsn) == 0
    new_deadlocks = await asyncio.to_thread(deadlocks, dsn) - deadlocks_before
    assert new_deadlocks == 0

    on_shared = sum(len(acks.puts[t]) for t in SHARED)
    writers = {t: sum(1 for i in range(0, TASKS, 5) if SHARED[i % 3] == t) for t in SHARED}
    for p in range(PROCESSES):
        for j in range(2):
            writers[SHARED[(p + j) % 3]] += 1
    figures.record(
        "4 concurrency",
        f"{TASKS} async tasks + {PROCESSES} processes x 4 lanes for {elapsed:.1f}s: "
        f"{verified} acknowledged checkpoints verified ({on_shared} on 3 shared threads with "
        f"{min(writers.values())}-{max(writers.values())} concurrent writers each), {acks.write_count} pending writes; "
        f"0 lost, 0 duplicate ids, {new_deadlocks} deadlocks, 0 errors; {TASKS} concurrent "
        f"put_writes on one checkpoint: {len(fanned.pending_writes or [])} stored",
    )


async def test_sync_saver_shared_by_threads_and_a_lent_pool(dsn: str) -> None:
    """The sync class with a lent pool under the same fork-heavy load, from 16 threads."""
    events: list[dict[str, Any]] = []
    with ConnectionPool(dsn, min_size=2, max_size=6, kwargs={"autocommit": True}) as pool:
        saver = ReportingCheckpointer(pool)
        saver.sink = lambda **e: events.append(e)
        await asyncio.to_thread(saver.setup)
        graph = chat_graph().compile(checkpointer=saver)

        async def lane(i: int) -> None:
            thread_id = SHARED[i % 3] if i % 2 else f"sync-{i}"
            for _ in range(3):
                await take_turn(graph, thread_id, f"sync-{i}", is_async=False, resume=not i % 2)

        await asyncio.wait_for(asyncio.gather(*(lane(i) for i in range(16))), 300)
        acks = Acks()
        acks.add(events, killed=False)
        reader = PostgresCheckpointer(pool)  # nothing cached: decodes every row
        for thread_id in acks.puts:
            await asyncio.to_thread(check_acknowledged, reader, thread_id, acks)
    problems = row_problems(dsn)
    assert problems == dict.fromkeys(problems, 0), f"partial or dangling rows: {problems}"
