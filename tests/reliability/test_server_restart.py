"""Scenario 2: PostgreSQL stopped and started under a running workload.

Three conversations run on one saver (sync or async) with small, explicit
timeouts (``pool_timeout`` 3 s, ``connect_timeout`` 2 s) while the private
server is stopped (``fast``: clean shutdown; ``immediate``: a crash, with WAL
recovery at the next start) and started again. Every saver call is timed.

* During the outage every call fails with ``ConnectionFailedError`` or a
  psycopg ``OperationalError`` (the server's own message), and none takes
  longer than the pool timeout (plus scheduling slack on this 2-core box).
* Once the server is back the same saver object recovers, and from its first
  success on no call fails.
* Every checkpoint acknowledged before, during or after the outage loads as
  it was written; histories are closed chains; no row is partial.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

import psycopg
import pytest

from haive_langgraph._demo import chat_graph
from haive_langgraph.checkpointers import PostgresCheckpointer
from haive_langgraph.db import PersistenceConfig
from haive_langgraph.errors import ConnectionFailedError

from ._checks import Acks, check_acknowledged, check_linear_history, row_problems
from ._server import PrivateServer
from ._turns import take_turn
from .conftest import Budget, Figures
from .writer_process import AsyncReportingCheckpointer, ReportingCheckpointer

POOL_TIMEOUT = 3.0
CONNECT_TIMEOUT = 2.0
# Scheduling slack on a noisy 2-core machine: threads and the event loop may
# run late, and a failing call also pays for noticing the dead connection.
SLACK = 2.0
LANES = 3
# The pool reconnects with exponential backoff (psycopg_pool: 1 s, 2 s, 4 s ...),
# so recovery can lag the server by up to about the outage's length.
RECOVERY_LIMIT = 20.0


def make_saver(kind: str, dsn: str, sink: Any) -> Any:
    config = PersistenceConfig(
        pool_timeout=POOL_TIMEOUT,
        connect_timeout=CONNECT_TIMEOUT,
        pool_min_size=2,
        pool_max_size=LANES + 1,
        application_name=f"restart-{kind}-{uuid.uuid4().hex[:6]}",
    )
    cls = AsyncReportingCheckpointer if kind == "async" else ReportingCheckpointer
    saver = cls(dsn, config=config)
    saver.sink = sink
    saver.timed = True
    return saver


@pytest.mark.parametrize(("kind", "mode"), [("sync", "fast"), ("async", "immediate")])
async def test_calls_fail_fast_during_an_outage_and_recover_after(
    private_server: PrivateServer, budget: Budget, figures: Figures, kind: str, mode: str
) -> None:
    cycles = budget.pick(1, 5)
    # Longer than the pool timeout, so that calls waiting for a connection give up.
    outage = budget.pick(POOL_TIMEOUT + 2.0, POOL_TIMEOUT + 5.0)
    dsn = private_server.create_database()
    events: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    recovered = asyncio.Event()
    ready = float("inf")  # when the server was last back

    def sink(**event: Any) -> None:  # called from the loop or from worker threads
        events.append(event)
        if event["ev"] == "call" and event["error"] is None and event["t0"] >= ready:
            loop.call_soon_threadsafe(recovered.set)

    saver = make_saver(kind, dsn, sink)
    if kind == "async":
        await saver.setup()
    else:
        await asyncio.to_thread(saver.setup)
    graph = chat_graph().compile(checkpointer=saver)
    threads = [f"restart-{kind}-{i}" for i in range(LANES)]
    stop = asyncio.Event()
    lane_errors: list[tuple[float, BaseException]] = []
    outcomes = {"turn": 0, "resumed": 0}

    async def lane(thread_id: str) -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                outcomes[
                    await take_turn(graph, thread_id, thread_id, is_async=kind == "async")
                ] += 1
            except Exception as exc:  # recorded (with when the call started), checked below
                lane_errors.append((started, exc))
                await asyncio.sleep(0.05)

    windows: list[tuple[float, float]] = []  # (server going down, server ready again)
    tasks = [asyncio.create_task(lane(t)) for t in threads]
    try:
        await asyncio.sleep(1.0)
        for _ in range(cycles):
            down = time.monotonic()
            await asyncio.to_thread(private_server.stop, mode)
            await asyncio.sleep(outage)
            recovered.clear()
            await asyncio.to_thread(private_server.start)
            ready = time.monotonic()
            windows.append((down, ready))
            # Run until the saver has recovered (bounded), then 3 s more.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(recovered.wait(), RECOVERY_LIMIT)
            await asyncio.sleep(3.0)
    finally:
        if not private_server.is_running():
            await asyncio.to_thread(private_server.start)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)

    calls = [e for e in events if e["ev"] == "call"]
    failed = [c for c in calls if c["error"] is not None]
    assert failed, "no call failed during the outage: the scenario did not run"
    # Errors are the documented ones, and nothing hangs past the configured timeout.
    for c in failed:
        assert isinstance(c["exc"], ConnectionFailedError | psycopg.OperationalError), (
            f"{c['method']} failed with {c['error']}: {c['message']}"
        )
    slowest = max(c["dt"] for c in calls)
    assert slowest <= POOL_TIMEOUT + SLACK, f"a call took {slowest:.2f}s"
    slowest_failure = max((c["dt"] for c in failed), default=0.0)

    # Recovery: from the first success after each restart on, every call succeeds.
    recovery: list[float] = []
    after_recovery = 0
    for i, (_down, back) in enumerate(windows):
        end = windows[i + 1][0] if i + 1 < len(windows) else float("inf")
        ok_ends = [c["t0"] + c["dt"] for c in calls if c["error"] is None and c["t0"] >= back]
        assert ok_ends, f"no call succeeded within {RECOVERY_LIMIT:g}s of the server coming back"
        first_ok = min(ok_ends)
        recovery.append(first_ok - back)
        later = [c for c in calls if first_ok <= c["t0"] < end]
        bad = [c for c in later if c["error"] is not None]
        assert not bad, (
            f"{len(bad)} of {len(later)} calls failed after the saver had recovered, e.g. "
            f"{bad[0]['method']}: {bad[0]['error']}: {bad[0]['message']}"
        )
        after_recovery += len(later)
        for started, exc in lane_errors:
            assert started < first_ok or started >= end, (
                f"a graph call started after recovery failed: {exc!r}"
            )
    in_outage = [c for c in calls if any(d <= c["t0"] <= r for d, r in windows)]

    # Nothing committed is lost.
    acks = Acks()
    acks.add(events, killed=True)  # puts that raised count as "in flight"
    verified = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        plain = PostgresCheckpointer(conn)
        plain_graph = chat_graph().compile(checkpointer=plain)
        for thread_id in threads:
            verified += check_acknowledged(plain, thread_id, acks)
            check_linear_history(plain, plain_graph, thread_id)
    if kind == "async":
        await saver.aclose()
    else:
        await asyncio.to_thread(saver.close)
    problems = row_problems(dsn)
    assert problems == dict.fromkeys(problems, 0), f"partial or dangling rows: {problems}"

    kinds: dict[str, int] = {}
    for c in failed:
        name = c["error"].rsplit(".", 1)[-1]
        kinds[name] = kinds.get(name, 0) + 1
    figures.record(
        f"2 server restart ({kind} saver, {mode} stop)",
        f"{cycles} outage(s) of {outage:g}s; {len(failed)} saver calls failed "
        f"({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}; {len(in_outage)} calls "
        f"started during the outage), the slowest after {slowest_failure:.2f}s "
        f"(pool_timeout {POOL_TIMEOUT:g}s); "
        f"recovered {max(recovery):.2f}s after the server was back, same saver; "
        f"{after_recovery} calls after recovery, 0 failed; {outcomes['turn']} turns, "
        f"{outcomes['resumed']} interrupted steps resumed; {verified} acknowledged "
        f"checkpoints verified, 0 lost, 0 partial; {acks.orphaned} acknowledged pending writes "
        "of checkpoints whose save failed in the outage (never visible)",
    )
