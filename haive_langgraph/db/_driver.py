"""Database operations as sans-I/O generators, and the two drivers that run them.

An operation is written once, as a generator that yields :class:`Step`
values (a statement, its parameters and what to fetch) and receives the
fetched rows back. :func:`run` drives it on a psycopg ``Connection``,
:func:`arun` on an ``AsyncConnection``; the sync and async classes only pick
a driver. This keeps the two from drifting apart (see psycopg's own
``generators.py`` for the pattern).

An operation may also yield a *round*: a list of steps sent together in one
pipeline (one round trip, one implicit transaction outside an explicit one);
it receives the list of their results. Settings a round sets with
``set_config(..., true)`` hold for the statements after them in that round.

Rows always come back as tuples: the drivers' cursors set their own row
factory, whatever the connection's (a lent one often has ``dict_row``, as in
LangGraph's documentation), and never change the connection's.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from psycopg import AsyncConnection, AsyncCursor, Connection, Cursor, sql
from psycopg.rows import tuple_row

from haive_langgraph.db._arrays import ensure_arrays

T = TypeVar("T")

Query = str | sql.SQL | sql.Composed
Params = Sequence[Any] | Mapping[str, Any] | None
Fetch = Literal["all", "one", "none", "rowcount"]


@dataclass(frozen=True, slots=True)
class Step:
    """One statement of an operation.

    Attributes:
        query: The statement; identifiers only through ``psycopg.sql``.
        params: Its parameters (every value is a parameter).
        fetch: ``"all"`` sends back a list of rows, ``"one"`` a row or None,
            ``"rowcount"`` the number of affected rows, ``"none"`` None.
        prepare: ``False`` to never prepare the statement server-side (for
            statements whose best plan depends on their array parameters);
            ``True`` to prepare it at its first run on a connection instead
            of after psycopg's ``prepare_threshold`` plain runs (for the
            statements of every graph step). A connection with
            ``prepare_threshold=None`` (a transaction pooler) prepares
            nothing either way.
    """

    query: Query
    params: Params = None
    fetch: Fetch = "all"
    prepare: bool | None = None


Request = Step | list[Step]
"""What an operation yields: one step, or a round of steps sent together."""

Op = Generator[Request, Any, T]
"""A sans-I/O operation: yields requests, receives their results, returns a ``T``."""
OpFactory = Callable[[], Op[T]]


def _result(cur: Cursor[Any], fetch: Fetch) -> Any:
    if fetch == "all":
        return cur.fetchall()
    if fetch == "one":
        return cur.fetchone()
    if fetch == "rowcount":
        return cur.rowcount
    return None


async def _aresult(cur: AsyncCursor[Any], fetch: Fetch) -> Any:
    if fetch == "all":
        return await cur.fetchall()
    if fetch == "one":
        return await cur.fetchone()
    if fetch == "rowcount":
        return cur.rowcount
    return None


def run(
    conn: Connection[Any], op: Op[T], *, prelude: Sequence[Step] = (), every: bool = False
) -> T:
    """Drive ``op`` to completion on ``conn`` and return its result.

    Args:
        conn: The connection.
        op: The operation.
        prelude: Statements (``fetch="none"``) sent in the same round trip and
            the same transaction as the first statement of ``op``, or of each
            one with ``every`` (for settings local to a transaction, such as
            the tenant that row-level security reads).
        every: Repeat the prelude before every statement (when ``op`` runs
            outside an explicit transaction, each statement is its own).
    """
    ensure_arrays(conn)
    if prelude:
        return _run_with_prelude(conn, op, prelude, every)
    with conn.cursor(binary=True, row_factory=tuple_row) as cur:
        try:
            step = next(op)
            while True:
                if isinstance(step, list):
                    step = op.send(_round(conn, step, ()))
                    continue
                cur.execute(step.query, step.params, prepare=step.prepare)
                step = op.send(_result(cur, step.fetch))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]


def _round(conn: Connection[Any], steps: list[Step], prelude: Sequence[Step]) -> list[Any]:
    """Send ``prelude`` and ``steps`` in one pipeline; their results once it is synced."""
    cursors = []
    with conn.pipeline():
        for p in prelude:
            conn.execute(p.query, p.params, prepare=p.prepare)
        for step in steps:
            cur = conn.cursor(binary=True, row_factory=tuple_row)
            cur.execute(step.query, step.params, prepare=step.prepare)
            cursors.append(cur)
    return [_result(cur, step.fetch) for cur, step in zip(cursors, steps, strict=True)]


def _run_with_prelude(conn: Connection[Any], op: Op[T], prelude: Sequence[Step], every: bool) -> T:
    # Pipeline mode: the prelude and the statement go out together, and the
    # statements before one Sync share one (implicit) transaction.
    with conn.pipeline() as pipeline, conn.cursor(binary=True, row_factory=tuple_row) as cur:
        try:
            step = next(op)
            first = True
            while True:
                if isinstance(step, list):
                    results = _round(conn, step, prelude if first or every else ())
                    first = False
                    step = op.send(results)
                    continue
                if first or every:
                    for p in prelude:
                        conn.execute(p.query, p.params, prepare=p.prepare)
                    first = False
                cur.execute(step.query, step.params, prepare=step.prepare)
                pipeline.sync()
                step = op.send(_result(cur, step.fetch))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]


async def arun(
    conn: AsyncConnection[Any], op: Op[T], *, prelude: Sequence[Step] = (), every: bool = False
) -> T:
    """Drive ``op`` to completion on ``conn`` and return its result (see :func:`run`)."""
    ensure_arrays(conn)
    if prelude:
        return await _arun_with_prelude(conn, op, prelude, every)
    async with conn.cursor(binary=True, row_factory=tuple_row) as cur:
        try:
            step = next(op)
            while True:
                if isinstance(step, list):
                    step = op.send(await _around(conn, step, ()))
                    continue
                await cur.execute(step.query, step.params, prepare=step.prepare)
                step = op.send(await _aresult(cur, step.fetch))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]


async def _around(
    conn: AsyncConnection[Any], steps: list[Step], prelude: Sequence[Step]
) -> list[Any]:
    """Async twin of :func:`_round`."""
    cursors = []
    async with conn.pipeline():
        for p in prelude:
            await conn.execute(p.query, p.params, prepare=p.prepare)
        for step in steps:
            cur = conn.cursor(binary=True, row_factory=tuple_row)
            await cur.execute(step.query, step.params, prepare=step.prepare)
            cursors.append(cur)
    return [await _aresult(cur, step.fetch) for cur, step in zip(cursors, steps, strict=True)]


async def _arun_with_prelude(
    conn: AsyncConnection[Any], op: Op[T], prelude: Sequence[Step], every: bool
) -> T:
    async with conn.pipeline() as pipeline, conn.cursor(binary=True, row_factory=tuple_row) as cur:
        try:
            step = next(op)
            first = True
            while True:
                if isinstance(step, list):
                    results = await _around(conn, step, prelude if first or every else ())
                    first = False
                    step = op.send(results)
                    continue
                if first or every:
                    for p in prelude:
                        await conn.execute(p.query, p.params, prepare=p.prepare)
                    first = False
                await cur.execute(step.query, step.params, prepare=step.prepare)
                await pipeline.sync()
                step = op.send(await _aresult(cur, step.fetch))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
