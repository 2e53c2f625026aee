"""A database call as a value: the operation and how to run it.

Features build :class:`Call` values with no I/O (their sans-I/O operations
plus the options a run needs); the sync and async classes only hand them to
their connection source, ``source.call(c)`` or ``await source.call(c)``.
That keeps each public method of a sync/async pair one line long, and the
logic (what to run, in which transaction, where, and which errors mean what)
in one place.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import psycopg

from haive_langgraph.db._driver import OpFactory
from haive_langgraph.db._replicas import Route
from haive_langgraph.db._tenancy import TenantScope

T = TypeVar("T")

ErrorMap = Callable[[psycopg.Error], Exception | None]
"""Turns a database error into the library's own (``None``: raise it as it is)."""


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One operation and how to run it.

    Attributes:
        op: Builds a fresh operation generator (called again on a read retry).
        transaction: Run all its statements in one transaction.
        read: It only reads (retried once on a dead pooled connection).
        rollback: Run it in a transaction and roll that back (a dry run).
        route: Where a read may run when read replicas are configured
            (see :meth:`ConnectionSource.run`); writes always go to the primary.
        scope: The tenant it acts for (default: the source's).
        errors: Maps a database error to the library's own; the original is
            chained as its cause.
    """

    op: OpFactory[T]
    transaction: bool = False
    read: bool = False
    rollback: bool = False
    route: Route = "primary"
    scope: TenantScope | None = None
    errors: ErrorMap | None = None


def mapped_error(call: Call[Any], exc: psycopg.Error) -> Exception | None:
    """The library's error for ``exc`` raised by ``call``, or ``None`` to re-raise it."""
    return None if call.errors is None else call.errors(exc)


Calls = Generator[Call[Any], Any, T]
"""Several calls in a row, as a value: a generator that yields :class:`Call`
values and receives their results; an error a call raises is thrown into it
where it yielded that call, so it can retry, re-plan or map the error. It
does no I/O itself; :func:`run_calls` and :func:`arun_calls` run it."""


R = TypeVar("R")


class _Source(Protocol):
    def call(self, call: Call[T]) -> T: ...


class _AsyncSource(Protocol):
    async def call(self, call: Call[T]) -> T: ...


def drive(plan: Generator[R, Any, T], handle: Callable[[R], Any]) -> T:
    """Step a sans-I/O ``plan``: ``handle`` each request it yields, send back the result.

    An error ``handle`` raises is thrown into the plan where it yielded the
    request (so its ``finally`` blocks run at once, even on interruption);
    the plan's return value is returned.
    """
    try:
        request = next(plan)
        while True:
            try:
                result = handle(request)
            except BaseException as exc:
                request = plan.throw(exc)
            else:
                request = plan.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def adrive(plan: Generator[R, Any, T], handle: Callable[[R], Awaitable[Any]]) -> T:
    """Async twin of :func:`drive` (``handle`` is awaited)."""
    try:
        request = next(plan)
        while True:
            try:
                result = await handle(request)
            except BaseException as exc:
                request = plan.throw(exc)
            else:
                request = plan.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


def run_calls(source: _Source, calls: Calls[T]) -> T:
    """Run each call ``calls`` yields on ``source``; the value it returns."""
    return drive(calls, source.call)


async def arun_calls(source: _AsyncSource, calls: Calls[T]) -> T:
    """Async twin of :func:`run_calls`."""
    return await adrive(calls, source.call)
