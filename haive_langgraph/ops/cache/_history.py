"""Chat history wrappers: messages cached, checked against the conversation's version."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage

from haive_langgraph._threaded_history import ThreadedAsyncHistory
from haive_langgraph.codec import Kind, RowContext
from haive_langgraph.ops.cache._memory import log
from haive_langgraph.ops.cache._origin import _Origin

if TYPE_CHECKING:
    from haive_langgraph.memory import (
        AsyncPostgresChatMessageHistory,
        MessagePage,
        PostgresChatMessageHistory,
    )
    from haive_langgraph.ops.cache._layer import CacheLayer

    History = PostgresChatMessageHistory | AsyncPostgresChatMessageHistory


_COUNT = struct.Struct(">H")


def _approx_size(messages: Sequence[BaseMessage]) -> int:
    """Bytes a history holds in memory, roughly (its text and a per-message overhead)."""
    size = 64
    for message in messages:
        content = message.content
        size += 256 + (len(content) if isinstance(content, str) else 64 * len(content))
        size += 128 * len(getattr(message, "tool_calls", None) or ())
    return size


class _HistoryFormat:
    """A history in Redis: the versions it was read at, then its messages serialised as the
    history stores them (its ``encode_messages``), in one codec frame bound to the tenant
    and conversation."""

    __slots__ = ("codec", "ctx", "history")

    def __init__(self, history: History, session_id: str) -> None:
        self.history = history
        self.codec = history.codec
        self.ctx = RowContext(history.tenant_id, session_id, Kind.MESSAGE, "cache:history")

    @staticmethod
    def copy(entry: tuple[Any, list[BaseMessage]]) -> tuple[Any, list[BaseMessage]]:
        return entry[0], list(entry[1])

    def dumps(self, entry: tuple[tuple[int, ...], list[BaseMessage]]) -> bytes:
        token, messages = entry
        head = _COUNT.pack(len(token)) + struct.pack(f">{len(token)}q", *token)
        return self.codec.encode(head + self.history.encode_messages(messages), self.ctx)

    def loads(self, data: bytes) -> tuple[tuple[int, ...], list[BaseMessage]]:
        body = self.codec.decode(data, self.ctx)
        (n,) = _COUNT.unpack_from(body)
        token = struct.unpack_from(f">{n}q", body, _COUNT.size)
        return tuple(token), self.history.decode_messages(body[_COUNT.size + 8 * n :])


class _CachedHistoryBase(BaseChatMessageHistory):
    """What the sync and async cached histories share."""

    def __init__(self, inner: History, layer: CacheLayer, *, refresh_on_write: bool = True) -> None:
        self.inner = inner
        self.layer = layer
        self.refresh_on_write = refresh_on_write
        codec = inner.codec
        layer.ensure_secret(codec)
        self._session = str(inner.session_id)
        self._origin = _Origin(
            inner, inner.schema, inner.tenant_id, getattr(codec, "keyring", None)
        )
        layer.adopt(self._origin)
        self._name = ""
        self._fmt = _HistoryFormat(inner, self._session)

    @property
    def _group(self) -> str:
        """The conversation's key: database, schema, tenant, session (learns the
        database's identity once)."""
        if not self._name:
            ident, inner = self._origin.identity(), self.inner
            self._name = "ch:" + json.dumps([ident, inner.schema, inner.tenant_id, self._session])
        return self._name

    async def _aknown(self) -> None:
        if not self._name:
            await self._origin.aidentity()

    @property
    def session_id(self) -> str:
        return self._session

    @property
    def tenant_id(self) -> str:
        return self.inner.tenant_id

    @property
    def schema(self) -> str:
        return self.inner.schema

    @staticmethod
    def _messages(entry: Any) -> list[BaseMessage]:
        return [] if entry is None else list(entry[1])


class CachedChatHistory(_CachedHistoryBase, ThreadedAsyncHistory):
    """A ``PostgresChatMessageHistory`` whose reads are cached, never stale.

    Build it with :meth:`CacheLayer.wrap_history`. A conversation's messages
    are written by histories, ``ConversationStore``, ``SessionStore``, the
    tracker and erasure, most of them not through this object; so every read
    asks PostgreSQL for the conversation's version (one round trip, a
    one-row lookup; a database trigger gives the conversation a new version
    in every transaction that changes its messages or those of a branch
    source it shares) and serves the cached messages only when it is the one
    they were read at. A hit saves transferring, decrypting and decoding the
    messages; it never depends on an invalidation message arriving.

    Writes through this object (``add_messages``, ``clear``, ``messages =``)
    pass through, drop the entry here and in every process, and read the new
    messages back (write-through) so the next read is a hit. ``last`` and
    ``page`` pass through uncached.

    The messages returned are shared with the cache (the list is new):
    treat them as read-only.

    Args:
        inner: The history.
        layer: The cache levels.
        refresh_on_write: Read the messages back after each write.
    """

    inner: PostgresChatMessageHistory

    def __init__(
        self, inner: PostgresChatMessageHistory, layer: CacheLayer, *, refresh_on_write: bool = True
    ) -> None:
        super().__init__(inner, layer, refresh_on_write=refresh_on_write)

    def _read(self, refresh: bool = False) -> list[BaseMessage]:
        inner = self.inner
        try:
            group = self._group
        except Exception:  # no identity, no cache: the read is the history's
            return inner.messages
        entry = self.layer.read_versioned(
            group,
            inner.read_versioned,
            self._fmt,
            self._origin,
            refresh=refresh,
        )
        return self._messages(entry)

    def _written(self) -> None:
        try:
            self.layer.drop([self._group])
        except Exception:  # no identity: drop everything instead
            self.layer.invalidate(None)
        if self.refresh_on_write:
            try:
                self._read(refresh=True)
            except Exception:  # the write succeeded; a failed read-back only costs a miss
                log.debug("read-back after a history write failed", exc_info=True)

    @property  # type: ignore[override]
    def messages(self) -> list[BaseMessage]:
        """Every message of the session, oldest first (cached, checked on every read)."""
        return self._read()

    @messages.setter
    def messages(self, value: Sequence[BaseMessage]) -> None:
        try:
            self.inner.messages = value
        finally:
            self._written()

    def get_messages(self) -> list[BaseMessage]:
        return self._read()

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        try:
            self.inner.add_messages(messages)
        finally:
            self._written()

    def clear(self) -> None:
        try:
            self.inner.clear()
        finally:
            self._written()

    def last(self, n: int) -> list[BaseMessage]:
        return self.inner.last(n)

    def page(
        self, limit: int = 100, cursor: str | None = None, *, newest_first: bool = False
    ) -> MessagePage:
        return self.inner.page(limit, cursor, newest_first=newest_first)

    def warm(self) -> int:
        """Load the messages into the cache (replacing what is cached); returns how many."""
        return len(self._read(refresh=True))

    def close(self) -> None:
        self.inner.close()


class AsyncCachedChatHistory(_CachedHistoryBase):
    """The asyncio twin of :class:`CachedChatHistory`, over an
    ``AsyncPostgresChatMessageHistory`` (its sync methods work from other
    threads, as the wrapped history's do)."""

    inner: AsyncPostgresChatMessageHistory

    def __init__(
        self,
        inner: AsyncPostgresChatMessageHistory,
        layer: CacheLayer,
        *,
        refresh_on_write: bool = True,
    ) -> None:
        super().__init__(inner, layer, refresh_on_write=refresh_on_write)

    async def _aread(self, refresh: bool = False) -> list[BaseMessage]:
        inner = self.inner

        async def load(known: tuple[int, ...] | None) -> Any:
            return await inner.aread_versioned(known)

        try:
            await self._aknown()
        except Exception:
            return await inner.aget_messages()
        entry = await self.layer.aread_versioned(
            self._group, load, self._fmt, self._origin, refresh=refresh
        )
        return self._messages(entry)

    async def _awritten(self) -> None:
        try:
            await self._aknown()
        except Exception:
            await self.layer.ainvalidate(None)
            return
        await self.layer.adrop([self._group])
        if self.refresh_on_write:
            try:
                await self._aread(refresh=True)
            except Exception:
                log.debug("read-back after a history write failed", exc_info=True)

    async def aget_messages(self) -> list[BaseMessage]:
        """Every message of the session, oldest first (cached, checked on every read)."""
        return await self._aread()

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        try:
            await self.inner.aadd_messages(messages)
        finally:
            await self._awritten()

    async def aclear(self) -> None:
        try:
            await self.inner.aclear()
        finally:
            await self._awritten()

    async def areplace(self, messages: Sequence[BaseMessage]) -> None:
        try:
            await self.inner.areplace(messages)
        finally:
            await self._awritten()

    async def alast(self, n: int) -> list[BaseMessage]:
        return await self.inner.alast(n)

    async def apage(
        self, limit: int = 100, cursor: str | None = None, *, newest_first: bool = False
    ) -> MessagePage:
        return await self.inner.apage(limit, cursor, newest_first=newest_first)

    async def awarm(self) -> int:
        """Load the messages into the cache (replacing what is cached); returns how many."""
        return len(await self._aread(refresh=True))

    async def aclose(self) -> None:
        await self.inner.aclose()

    @property  # type: ignore[override]
    def messages(self) -> list[BaseMessage]:
        return self._origin.on_loop(self.aget_messages())

    @messages.setter
    def messages(self, value: Sequence[BaseMessage]) -> None:
        self._origin.on_loop(self.areplace(value))

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        self._origin.on_loop(self.aadd_messages(messages))

    def clear(self) -> None:
        self._origin.on_loop(self.aclear())


class CachedHistoryFactory:
    """``(session_id, user_id=None) -> cached history``, for ``RunnableWithMessageHistory``.

    Build it with :meth:`CacheLayer.wrap_history_factory`; ``setup``,
    ``asetup``, ``close`` and ``aclose`` are the wrapped factory's.
    """

    def __init__(self, factory: Callable[..., Any], layer: CacheLayer) -> None:
        self.factory = factory
        self.layer = layer

    def __call__(
        self, session_id: str, user_id: str | None = None
    ) -> CachedChatHistory | AsyncCachedChatHistory:
        history = self.factory(session_id) if user_id is None else self.factory(session_id, user_id)
        return self.layer.wrap_history(history)

    def __getattr__(self, name: str) -> Any:
        if name in ("setup", "asetup", "close", "aclose"):
            return getattr(self.factory, name)
        raise AttributeError(f"CachedHistoryFactory has no {name!r}")
