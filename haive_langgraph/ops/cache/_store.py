"""The store wrapper: ``get`` cached through the ``BaseStore`` batch API."""

from __future__ import annotations

import builtins
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.store.base import BaseStore, GetOp, Item, Op, PutOp, Result

from haive_langgraph.codec import Codec, Kind, RowContext
from haive_langgraph.errors import ConfigurationError
from haive_langgraph.ops.cache._format import _NONE, _seal, _unseal
from haive_langgraph.ops.cache._memory import log
from haive_langgraph.ops.cache._origin import _Keyed

if TYPE_CHECKING:
    from haive_langgraph.ops.cache._layer import CacheLayer


def _copy_item(item: Item | None) -> Item | None:
    if item is None:
        return None
    return Item(
        value=dict(item.value),
        key=item.key,
        namespace=tuple(item.namespace),
        created_at=item.created_at,
        updated_at=item.updated_at,
    )


class _ItemFormat:
    """Store items in Redis: LangGraph's serde (values round-trip as the store returns
    them, datetimes included), then the codec bound to the item's namespace and key."""

    __slots__ = ("codec", "ctx", "serde")

    def __init__(self, store: CachedStore, namespace: tuple[str, ...], key: str) -> None:
        self.codec = store._codec
        self.serde = store._serde
        self.ctx = RowContext(
            store._tenant, json.dumps(list(namespace)), Kind.STORE_VALUE, f"cache:{key}"
        )

    copy = staticmethod(_copy_item)

    def dumps(self, item: Item | None) -> bytes:
        if item is None:
            return _NONE
        kind, payload = self.serde.dumps_typed(
            [item.value, item.key, list(item.namespace), item.created_at, item.updated_at]
        )
        return _seal(self.codec, kind, payload, self.ctx)

    def loads(self, data: bytes) -> Item | None:
        if data == _NONE:
            return None
        value, key, namespace, created, updated = self.serde.loads_typed(
            _unseal(self.codec, data, self.ctx)
        )
        return Item(
            value=value,
            key=key,
            namespace=tuple(namespace),
            created_at=created,
            updated_at=updated,
        )


class CachedStore(_Keyed, BaseStore):
    """A store whose ``get`` is cached; everything else passes through.

    Build it with :meth:`CacheLayer.wrap_store`. It wraps any LangGraph
    ``BaseStore`` through its public ``batch``/``abatch`` API: ``GetOp``
    results are served from the levels; ``PutOp`` (puts and deletes) runs on
    the store, then invalidates its items here and in every process before
    the call returns, and reads them back into the levels (write-through);
    searches and namespace listings always go to the store.

    No TTLs (``supports_ttl = False``): the store expires items at a time the
    ``Item`` does not carry and refreshes it on reads, so a cached item could
    outlive its expiry. ``put(..., ttl=...)`` raises, and a store with a
    default TTL is refused; keep TTL namespaces on the store itself.

    Args:
        inner: The store.
        layer: The cache levels.
        codec: Frames (and encrypts) values stored in Redis; default: the
            store's codec, else :func:`default_codec`.
    """

    supports_ttl = False

    _KIND = "st"
    _PASSTHROUGH = frozenset(
        {"close", "schema", "tenant_id", "config", "codec", "index_config", "embeddings"}
    )

    def __init__(self, inner: BaseStore, layer: CacheLayer, *, codec: Codec | None = None) -> None:
        ttl_config = getattr(inner, "ttl_config", None) or {}
        if ttl_config.get("default_ttl") is not None:
            raise ConfigurationError(
                "CachedStore cannot wrap a store with a default TTL: items expire in the "
                "database at a time the cache cannot see (use the store without a cache, or "
                "without default_ttl)"
            )
        self.inner = inner
        self.layer = layer
        self.ttl_config = None
        self._bind(inner, layer, codec)
        self._serde = JsonPlusSerializer()

    def setup(self) -> Any:
        """The store's tables, and the cache's versions table beside them (a coroutine
        when the store's ``setup`` is one)."""
        return self._origin.setup_with(self.inner.setup())  # type: ignore[attr-defined]

    def _group(self, namespace: tuple[str, ...], key: str) -> str:
        self._known()
        return self._prefix + json.dumps([*namespace, key], separators=(",", ":"))

    def _groups(self, items: Sequence[tuple[tuple[str, ...], str]]) -> builtins.list[str] | None:
        try:
            return [self._group(ns, key) for ns, key in items]
        except Exception:  # no identity: drop everything instead
            log.warning("the database's identity is unknown: the whole cache is dropped")
            return None

    @staticmethod
    def _check(ops: Sequence[Op]) -> None:
        for op in ops:
            if isinstance(op, PutOp) and op.ttl is not None:
                raise NotImplementedError(
                    "CachedStore does not support TTLs: put items with a ttl on the store itself"
                )

    def _split(self, ops: Sequence[Op]) -> tuple[builtins.list[int], builtins.list[int]]:
        gets = [i for i, op in enumerate(ops) if isinstance(op, GetOp)]
        others = [i for i, op in enumerate(ops) if not isinstance(op, GetOp)]
        return gets, others

    def _written(self, ops: Sequence[Op]) -> builtins.list[tuple[tuple[str, ...], str]]:
        seen: dict[tuple[tuple[str, ...], str], None] = {}
        for op in ops:
            if isinstance(op, PutOp):
                seen[(tuple(op.namespace), op.key)] = None
        return builtins.list(seen)

    def batch(self, ops: Iterable[Op]) -> builtins.list[Result]:
        ops = builtins.list(ops)
        self._check(ops)
        written = self._written(ops)
        if written:
            # A batch that writes runs as it is (its reads see its writes).
            try:
                return self.inner.batch(ops)
            finally:
                versions = self.layer.written(self._origin, self._groups(written))
                for ns, key in written:
                    self._refresh(ns, key, versions)
        try:
            self._known()
        except Exception:  # no identity, no cache: the call is the store's
            return self.inner.batch(ops)
        gets, others = self._split(ops)
        results: builtins.list[Result] = [None] * len(ops)
        if others:
            for i, result in zip(others, self.inner.batch([ops[i] for i in others]), strict=True):
                results[i] = result
        for i in gets:
            op = ops[i]
            assert isinstance(op, GetOp)
            results[i] = self._get(op)
        return results

    async def abatch(self, ops: Iterable[Op]) -> builtins.list[Result]:
        ops = builtins.list(ops)
        self._check(ops)
        written = self._written(ops)
        if written:
            try:
                return await self.inner.abatch(ops)
            finally:
                try:
                    await self._aknown()
                except Exception:  # _groups falls back to everything
                    pass
                versions = await self.layer.awritten(self._origin, self._groups(written))
                for ns, key in written:
                    await self._arefresh(ns, key, versions)
        try:
            await self._aknown()
        except Exception:
            return await self.inner.abatch(ops)
        gets, others = self._split(ops)
        results: builtins.list[Result] = [None] * len(ops)
        if others:
            for i, result in zip(
                others, await self.inner.abatch([ops[i] for i in others]), strict=True
            ):
                results[i] = result
        for i in gets:
            op = ops[i]
            assert isinstance(op, GetOp)
            results[i] = await self._aget(op)
        return results

    def _entry(
        self, op: GetOp, versions: Mapping[str, str] | None
    ) -> tuple[str, _ItemFormat, str | None]:
        """The item's key, its format in Redis and the version it is read at (if known)."""
        ns = tuple(op.namespace)
        group = self._group(ns, op.key)
        return group, _ItemFormat(self, ns, op.key), versions.get(group) if versions else None

    def _get(
        self, op: GetOp, *, refresh: bool = False, versions: Mapping[str, str] | None = None
    ) -> Item | None:
        def load() -> Item | None:
            result = self.inner.batch([op])[0]
            return result if isinstance(result, Item) else None

        group, fmt, version = self._entry(op, versions)
        return self.layer.read(group, "", load, fmt, self._origin, refresh=refresh, version=version)

    async def _aget(
        self, op: GetOp, *, refresh: bool = False, versions: Mapping[str, str] | None = None
    ) -> Item | None:
        async def load() -> Item | None:
            result = (await self.inner.abatch([op]))[0]
            return result if isinstance(result, Item) else None

        group, fmt, version = self._entry(op, versions)
        return await self.layer.aread(
            group, "", load, fmt, self._origin, refresh=refresh, version=version
        )

    def _refresh(self, namespace: tuple[str, ...], key: str, versions: Mapping[str, str]) -> None:
        try:
            self._get(GetOp(namespace, key, False), refresh=True, versions=versions)
        except Exception:  # the write succeeded; a failed read-back only costs a miss
            log.debug("read-back after put failed", exc_info=True)

    async def _arefresh(
        self, namespace: tuple[str, ...], key: str, versions: Mapping[str, str]
    ) -> None:
        try:
            await self._aget(GetOp(namespace, key, False), refresh=True, versions=versions)
        except Exception:
            log.debug("read-back after put failed", exc_info=True)

    def warm(self, items: Iterable[tuple[tuple[str, ...], str]]) -> int:
        """Load ``(namespace, key)`` items from the store into the levels (replacing what is
        cached for them, in every process, under new versions in PostgreSQL); returns how
        many."""
        chosen = [(tuple(ns), key) for ns, key in items]
        versions = self.layer.written(self._origin, self._groups(chosen)) if chosen else {}
        for namespace, key in chosen:
            self._get(GetOp(namespace, key, False), refresh=True, versions=versions)
        return len(chosen)

    async def awarm(self, items: Iterable[tuple[tuple[str, ...], str]]) -> int:
        chosen = [(tuple(ns), key) for ns, key in items]
        await self._aknown()
        versions = await self.layer.awritten(self._origin, self._groups(chosen)) if chosen else {}
        for namespace, key in chosen:
            await self._aget(GetOp(namespace, key, False), refresh=True, versions=versions)
        return len(chosen)
