"""db/_periodic: the one sweeper mechanism (Sweeper in a thread, AsyncSweeper in a task)."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from haive_langgraph.db._periodic import AsyncSweeper, Sweeper

_log = logging.getLogger("tests.periodic")


class _Counting(Sweeper[int]):
    """Fails its first round, then counts; logs each report."""

    _name = "test-sweeper"
    _logger = _log
    _failed = "test sweep failed"

    def __init__(self) -> None:
        self.interval = 0.01
        self.rounds = 0
        self.logged: list[int] = []
        self.twice = threading.Event()

    def run_once(self) -> int:
        self.rounds += 1
        if self.rounds == 1:
            raise RuntimeError("first round fails")
        self.last_report = self.rounds
        return self.rounds

    def _logged(self, report: int) -> None:
        self.logged.append(report)
        if len(self.logged) >= 2:
            self.twice.set()


class _AsyncCounting(AsyncSweeper[int]):
    _name = "test-async-sweeper"
    _logger = _log
    _failed = "test async sweep failed"

    def __init__(self) -> None:
        self.interval = 0.01
        self.rounds = 0
        self.logged: list[int] = []

    async def run_once(self) -> int:
        self.rounds += 1
        if self.rounds == 1:
            raise RuntimeError("first round fails")
        return self.rounds

    def _logged(self, report: int) -> None:
        self.logged.append(report)


def test_a_failing_round_is_logged_and_the_next_one_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sweeper = _Counting()
    with caplog.at_level(logging.ERROR, logger="tests.periodic"):
        sweeper.start()
        first = sweeper._rounds
        sweeper.start()  # already running: the same thread
        assert sweeper._rounds is first
        assert sweeper.twice.wait(5)
        sweeper.stop()
    assert sweeper._rounds is None
    assert sweeper.logged[:2] == [2, 3] and sweeper.last_report is not None
    assert [r.getMessage() for r in caplog.records] == ["test sweep failed"]
    assert caplog.records[0].exc_info is not None  # with the traceback


async def test_the_async_sweeper_keeps_sweeping_and_stops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sweeper = _AsyncCounting()
    with caplog.at_level(logging.ERROR, logger="tests.periodic"):
        sweeper.start()
        task = sweeper._task
        sweeper.start()
        assert sweeper._task is task
        for _ in range(500):
            if len(sweeper.logged) >= 2:
                break
            await asyncio.sleep(0.01)
        await sweeper.stop()
    assert sweeper._task is None and task is not None and task.cancelled()
    assert sweeper.logged[:2] == [2, 3]
    assert [r.getMessage() for r in caplog.records] == ["test async sweep failed"]
