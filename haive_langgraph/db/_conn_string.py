"""``from_conn_string`` for every public class, written once.

Each public class takes its connection as ``conn`` (a DSN, ``None`` for the
default server, a lent connection or pool); these mixins add the context
manager LangGraph's savers have: open on a DSN, close afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Protocol, Self, cast

from haive_langgraph.db._dsn import normalize_dsn


class _Closes(Protocol):
    def close(self) -> None: ...


class _AsyncCloses(Protocol):
    async def aclose(self) -> None: ...


def _checked(dsn: str | None) -> str | None:
    # Checked here so that an error names the argument the caller gave.
    if dsn is None or (isinstance(dsn, str) and not dsn.strip()):
        return None
    return normalize_dsn(dsn, where="the argument dsn")


class FromConnString:
    """Adds :meth:`from_conn_string` to a sync class whose constructor takes ``conn``."""

    @classmethod
    @contextmanager
    def from_conn_string(cls, dsn: str | None = None, *args: Any, **options: Any) -> Iterator[Self]:
        """Open on ``dsn`` and close afterwards.

        Args:
            dsn: A PostgreSQL DSN (``postgresql://``, ``key=value`` pairs or a
                SQLAlchemy URL such as ``postgresql+psycopg://``). ``None``:
                ``HAIVE_DATABASE_URL``, then ``DATABASE_URL``, then the
                embedded server (started once per process).
            *args: Positional arguments of the constructor before ``conn``
                (the ``session_id`` of a chat history).
            **options: Keyword arguments of the constructor.

        Raises:
            ConfigurationError: ``dsn`` (or the variable used) is not a valid
                DSN; the message names it, never its text.
            ConnectionFailedError: the server cannot be reached.
        """
        obj = cast(Any, cls)(*args, conn=_checked(dsn), **options)
        try:
            yield obj
        finally:
            cast(_Closes, obj).close()


class AsyncFromConnString:
    """Adds :meth:`from_conn_string` to an async class whose constructor takes ``conn``."""

    @classmethod
    @asynccontextmanager
    async def from_conn_string(
        cls, dsn: str | None = None, *args: Any, **options: Any
    ) -> AsyncIterator[Self]:
        """Open on ``dsn`` (see :meth:`FromConnString.from_conn_string`), connect, and
        close afterwards (``aclose``)."""
        obj = cast(Any, cls)(*args, conn=_checked(dsn), **options)
        try:
            await obj._aopen()
            yield obj
        finally:
            await cast(_AsyncCloses, obj).aclose()

    async def _aopen(self) -> None:
        """Open the pool now (so that ``async with`` fails on an unreachable server)."""
        await cast(Any, self)._source.open()
