"""Several calls in a row (``run_calls`` / ``arun_calls``): results sent back, errors
thrown in where the failing call was yielded, on the sync and the async source."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from haive_langgraph.db._async_connections import AsyncConnectionSource
from haive_langgraph.db._call import Call, Calls, arun_calls, run_calls
from haive_langgraph.db._connections import ConnectionSource
from haive_langgraph.db._driver import Op, Step


def _value(query: str) -> Callable[[], Op[Any]]:
    def op() -> Op[Any]:
        row = yield Step(query, fetch="one")
        return row[0]

    return op


def _program(seen: list[str]) -> Calls[int]:
    first = yield Call(_value("SELECT 1"), read=True)
    try:
        yield Call(_value("SELECT 1 / 0"))
    except psycopg.errors.DivisionByZero as exc:
        seen.append(type(exc).__name__)
        second = yield Call(_value("SELECT 41"))
    return int(first) + int(second)


def _unhandled() -> Calls[None]:
    yield Call(_value("SELECT 1 / 0"))


def test_run_calls_sends_results_and_throws_errors_in(dsn: str) -> None:
    source = ConnectionSource(dsn)
    try:
        seen: list[str] = []
        assert run_calls(source, _program(seen)) == 42
        assert seen == ["DivisionByZero"]
        with pytest.raises(psycopg.errors.DivisionByZero):
            run_calls(source, _unhandled())
    finally:
        source.close()


async def test_arun_calls_sends_results_and_throws_errors_in(dsn: str) -> None:
    source = AsyncConnectionSource(dsn)
    try:
        seen: list[str] = []
        assert await arun_calls(source, _program(seen)) == 42
        assert seen == ["DivisionByZero"]
        with pytest.raises(psycopg.errors.DivisionByZero):
            await arun_calls(source, _unhandled())
    finally:
        await source.close()
