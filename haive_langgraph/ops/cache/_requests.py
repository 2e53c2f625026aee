"""What a cache read asks for, and the two drivers that perform it.

A read is written once, as a generator that yields requests and receives
their results (or gets their exception thrown in, so its own ``except``
around a Redis call catches it and a loader's exception passes through);
:func:`drive` performs them with the sync Redis client and loader,
:func:`adrive` with the async ones (as ``haive_langgraph.db`` does for SQL
steps).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from haive_langgraph.db._call import adrive as adrive_plan
from haive_langgraph.db._call import drive as drive_plan

if TYPE_CHECKING:
    from haive_langgraph.ops.cache._levels import RedisCache, Seen
    from haive_langgraph.ops.cache._origin import _Origin

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Load:
    """Call the loader with ``args``; receives what it returns."""

    args: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class _Check:
    """The group's version in PostgreSQL now (``_Origin.version``); receives it or ``None``."""

    origin: _Origin
    group: str


@dataclass(frozen=True, slots=True)
class _RedisRead:
    """``RedisCache.read``; receives ``(counters seen, database version, value or None)``."""

    group: str
    sub: str
    tenant: str


@dataclass(frozen=True, slots=True)
class _RedisWrite:
    """``RedisCache.write``; receives whether the entry was stored."""

    group: str
    sub: str
    tenant: str
    seen: Seen
    tag: str
    data: bytes


@dataclass(frozen=True, slots=True)
class _RedisCurrent:
    """``RedisCache.current``; receives the counters now (``None`` if damaged)."""

    group: str
    tenant: str


_Request = _Load | _Check | _RedisRead | _RedisWrite | _RedisCurrent
"""What a read yields: one of the requests above."""

_Op = Generator[_Request, Any, T]

_LOAD = _Load()


def drive(op: _Op[T], redis: RedisCache | None, load: Callable[..., Any]) -> T:
    """Run ``op`` to completion with the sync Redis client and ``load``."""
    return drive_plan(op, lambda request: _perform(request, redis, load))


def _perform(request: _Request, redis: RedisCache | None, load: Callable[..., Any]) -> Any:
    if isinstance(request, _Load):
        return load(*request.args)
    if isinstance(request, _Check):
        return request.origin.version(request.group)
    assert redis is not None  # reads ask Redis only when there is one
    if isinstance(request, _RedisRead):
        return redis.read(request.group, request.sub, request.tenant)
    if isinstance(request, _RedisWrite):
        r = request
        return redis.write(r.group, r.sub, r.tenant, r.seen, r.tag, r.data)
    return redis.current(request.group, request.tenant)


async def adrive(op: _Op[T], redis: RedisCache | None, load: Callable[..., Awaitable[Any]]) -> T:
    """Run ``op`` to completion with the async Redis client and ``load``."""
    return await adrive_plan(op, lambda request: _aperform(request, redis, load))


async def _aperform(
    request: _Request, redis: RedisCache | None, load: Callable[..., Awaitable[Any]]
) -> Any:
    if isinstance(request, _Load):
        return await load(*request.args)
    if isinstance(request, _Check):
        return await request.origin.aversion(request.group)
    assert redis is not None
    if isinstance(request, _RedisRead):
        return await redis.aread(request.group, request.sub, request.tenant)
    if isinstance(request, _RedisWrite):
        r = request
        return await redis.awrite(r.group, r.sub, r.tenant, r.seen, r.tag, r.data)
    return await redis.acurrent(request.group, request.tenant)
