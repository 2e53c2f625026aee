"""Whether a connection is still alive, checked without a round trip where possible.

A pooled connection is handed out only after a zero-timeout poll shows no
input waiting (input on an idle connection means the server closed it or
sent a notice); one idle for longer than :data:`PING_AFTER_IDLE_SECONDS` is
also pinged by the pool's check. Busy connections are not pinged, so the
hot path pays no extra round trip.
"""

from __future__ import annotations

import math
import select
import time
import weakref
from typing import Any

import psycopg
from psycopg import AsyncConnection, Connection

# A pooled connection idle for longer than this is pinged before use; busy
# connections are not, so the hot path pays no extra round trip.
PING_AFTER_IDLE_SECONDS = 30.0


def is_dead(conn: Connection[Any] | AsyncConnection[Any], exc: BaseException) -> bool:
    return isinstance(exc, psycopg.OperationalError) and (conn.closed or conn.broken)


def has_input(conn: Connection[Any] | AsyncConnection[Any]) -> bool:
    """Whether an idle connection has input waiting: the server closed it (a restart,
    ``pg_terminate_backend``, idle reaping) or sent a notice. A zero-timeout poll,
    no round trip."""
    try:
        fd = conn.fileno()
    except psycopg.Error:
        return True
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([fd], [], [], 0)[0])  # pragma: no cover - Windows


def usable(conn: Connection[Any]) -> bool:
    if not has_input(conn):
        return True
    try:
        conn.execute("")
    except psycopg.Error:
        return False
    return True


async def ausable(conn: AsyncConnection[Any]) -> bool:
    if not has_input(conn):
        return True
    try:
        await conn.execute("")
    except psycopg.Error:
        return False
    return True


class IdleTracker:
    """When each pooled connection was last used, so ``check`` pings only idle ones."""

    def __init__(self) -> None:
        self._last: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

    def mark(self, conn: Any) -> None:
        self._last[conn] = time.monotonic()

    def idle_for(self, conn: Any) -> float:
        last = self._last.get(conn)
        return math.inf if last is None else time.monotonic() - last
