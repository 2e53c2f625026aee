"""Where a wrapped object's data comes from: its database, schema, tenant and keyring.

The cache keys every entry by the database's identity (so one layer in
front of two databases never serves one's rows for the other) and checks
what it takes from Redis against the versions this module keeps in that
database (``_sql.py``), so whoever writes to Redis can deny the cache, never
make it serve stale or foreign data.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import uuid
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import psycopg

from haive_langgraph.codec import Codec, default_codec
from haive_langgraph.db._async_connections import AsyncConnectionSource
from haive_langgraph.db._connections import ConnectionSource
from haive_langgraph.db._driver import Op, Step
from haive_langgraph.db._loop import call_on_loop
from haive_langgraph.db._migrations import migrate_op
from haive_langgraph.db._tenancy import TenantScope
from haive_langgraph.ops.cache import _sql as S
from haive_langgraph.ops.cache._memory import log

if TYPE_CHECKING:
    from haive_langgraph.ops.cache._layer import CacheLayer

T = TypeVar("T")

# The identity of each connection source's database, read once per source.
_IDENTITIES: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
# Objects without a connection source of ours (a LangGraph InMemorySaver ...):
# each is its own "database".
_OBJECTS: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def _identity_op(statement: str) -> Op[str]:
    row = yield Step(statement, fetch="one")
    if row is None:  # pragma: no cover - current_database() always exists
        raise psycopg.DataError("the current database is not in pg_database")
    return json.dumps([str(row[0]), str(row[1]), str(row[2])], separators=(",", ":"))


class _Origin:
    """The database a wrapped object reads and writes, as the cache sees it.

    Args:
        inner: The wrapped checkpointer, store or history.
        schema: Its schema (the versions table lives beside its tables).
        tenant: Its tenant.
        keyring: Its codec's keyring, if it encrypts (for crypto-shredding).
    """

    def __init__(self, inner: Any, schema: str, tenant: str, keyring: Any) -> None:
        self.inner = inner
        self.schema = schema
        self.tenant = tenant
        self.keyring = keyring
        # Our checkpointers, stores and histories document `connection_source`; another
        # LangGraph checkpointer has none (its entries cannot be checked: memory only).
        source = getattr(inner, "connection_source", None)
        self.source: ConnectionSource | AsyncConnectionSource | None = (
            source if isinstance(source, ConnectionSource | AsyncConnectionSource) else None
        )
        self._identity: str | None = None
        self._broken = False
        if self.source is not None:
            table = S.q("{schema}." + S.VERSIONS_TABLE, schema).as_string(None)
            self._scope = TenantScope(table, tenant)
            self._version = S.q(S.VERSION, schema)
            self._create = S.q(S.CREATE_VERSION, schema)
            self._bump = S.q(S.BUMP, schema)
            self._bump_tenant = S.q(S.BUMP_TENANT, schema)

    @property
    def checkable(self) -> bool:
        """Whether Redis entries of this object can be checked against its database."""
        return self.source is not None

    def shredded(self) -> bool:
        """Whether the tenant's keys were destroyed (as far as the keyring knows now).

        Nothing cached is served for such a tenant: the read goes to the
        source, which fails as it fails without a cache.
        """
        if self.keyring is None or not self.tenant:
            return False
        try:
            return bool(self.keyring.is_tenant_destroyed(self.tenant))
        except Exception:  # unknown: let the uncached read decide
            return True

    # -- identity -----------------------------------------------------------------------

    def identity(self) -> str:
        """The database's identity (see ``_sql.IDENTITY``), read once per connection source."""
        if self._identity is None:
            self._identity = self._known() or self._learn(self._run)
        return self._identity

    async def aidentity(self) -> str:
        if self._identity is None:
            known = self._known()
            if known is None:
                try:
                    known = await self._arun(lambda: _identity_op(S.IDENTITY))
                except psycopg.Error:
                    known = await self._arun(lambda: _identity_op(S.IDENTITY_FALLBACK))
                _IDENTITIES[self.source] = known
            self._identity = known
        return self._identity

    def _known(self) -> str | None:
        if self.source is None:
            found = _OBJECTS.get(self.inner)
            if found is None:
                found = json.dumps(["object", uuid.uuid4().hex])
                _OBJECTS[self.inner] = found
            return found
        return _IDENTITIES.get(self.source)

    def _learn(self, run: Callable[[Callable[[], Op[str]]], str]) -> str:
        try:
            known = run(lambda: _identity_op(S.IDENTITY))
        except psycopg.Error:  # e.g. pg_control_system() not granted
            known = run(lambda: _identity_op(S.IDENTITY_FALLBACK))
        _IDENTITIES[self.source] = known
        return known

    # -- versions -----------------------------------------------------------------------

    @staticmethod
    def entry(group: str) -> bytes:
        """How a group is named in the versions table (a hash: no ids in clear)."""
        return hashlib.sha256(group.encode()).digest()[:16]

    def _version_op(self, group: str) -> Op[str | None]:
        params = {"t": self.tenant, "e": self.entry(group)}
        row = yield Step(self._version, params, fetch="one", prepare=True)
        if row is None:  # first sight of this thread or item: it gets a version now
            row = yield Step(self._create, params, fetch="one")
            if row is None:  # created meanwhile by someone else
                row = yield Step(self._version, params, fetch="one", prepare=True)
        return row[0].hex if row is not None else None

    def _bump_op(self, groups: Sequence[str] | None) -> Op[dict[str, str]]:
        if groups is None:
            yield Step(self._bump_tenant, {"t": self.tenant}, fetch="none")
            return {}
        names = {self.entry(g): g for g in groups}
        rows = yield Step(self._bump, {"t": self.tenant, "es": list(names)}, prepare=True)
        return {names[bytes(e)]: v.hex for e, v in rows}

    def version(self, group: str) -> str | None:
        """The group's version in PostgreSQL now; ``None`` when it cannot be told (the
        Redis level is then neither served nor filled for this read)."""
        if self.source is None or self._broken:
            return None
        try:
            return self._with_table(self._run, lambda: self._version_op(group))
        except Exception:  # the read goes on without Redis
            log.debug("cache version of %s not read", group, exc_info=True)
            return None

    async def aversion(self, group: str) -> str | None:
        if self.source is None or self._broken:
            return None
        try:
            return await self._awith_table(lambda: self._version_op(group))
        except Exception:
            log.debug("cache version of %s not read", group, exc_info=True)
            return None

    def bump(self, groups: Sequence[str] | None) -> dict[str, str]:
        """New versions for ``groups`` (``None``: everything of the tenant) after a write;
        returns the new ones. Never raises: the write has happened."""
        if self.source is None or self._broken:
            return {}
        try:
            return self._with_table(self._run, lambda: self._bump_op(groups))
        except Exception as exc:
            self._bump_failed(exc)
            return {}

    async def abump(self, groups: Sequence[str] | None) -> dict[str, str]:
        if self.source is None or self._broken:
            return {}
        try:
            return await self._awith_table(lambda: self._bump_op(groups))
        except Exception as exc:
            self._bump_failed(exc)
            return {}

    def _bump_failed(self, exc: BaseException) -> None:
        log.warning(
            "the cache could not record a write in %s.%s (%s: %s): Redis entries of what it "
            "changed are misses only as long as Redis's own counters hold",
            self.schema,
            S.VERSIONS_TABLE,
            type(exc).__name__,
            exc,
        )

    # -- setup --------------------------------------------------------------------------

    def setup_with(self, done: Any) -> Any:
        """After the wrapped object's ``setup()`` (which returned ``done``): the versions
        table; a coroutine if ``done`` is one."""
        if inspect.isawaitable(done):
            return self._asetup_after(done)
        if self.source is not None:
            self._run(lambda: migrate_op([S.COMPONENT], self.schema), transaction=True)
        return done

    async def _asetup_after(self, done: Awaitable[Any]) -> Any:
        result = await done
        if self.source is not None:
            await self._arun(lambda: migrate_op([S.COMPONENT], self.schema), transaction=True)
        return result

    # -- running ------------------------------------------------------------------------

    def _with_table(self, run: Callable[..., Any], factory: Callable[[], Op[T]]) -> T:
        try:
            return run(factory)  # type: ignore[no-any-return]
        except psycopg.errors.UndefinedTable:
            if not self._setup(run):
                raise
            return run(factory)  # type: ignore[no-any-return]

    async def _awith_table(self, factory: Callable[[], Op[T]]) -> T:
        try:
            return await self._arun(factory)
        except psycopg.errors.UndefinedTable:
            try:
                await self._arun(lambda: migrate_op([S.COMPONENT], self.schema), transaction=True)
            except psycopg.errors.InsufficientPrivilege as exc:
                self._refused(exc)
                raise
            return await self._arun(factory)

    def _setup(self, run: Callable[..., Any]) -> bool:
        try:
            run(lambda: migrate_op([S.COMPONENT], self.schema), transaction=True)
        except psycopg.errors.InsufficientPrivilege as exc:
            self._refused(exc)
            return False
        return True

    def _refused(self, exc: BaseException) -> None:
        self._broken = True
        log.warning(
            "the cache cannot create %s.%s (%s): its Redis level is not used for %s; call "
            "setup() on the cached object once as the tables' owner",
            self.schema,
            S.VERSIONS_TABLE,
            exc,
            type(self.inner).__name__,
        )

    def _run(self, factory: Callable[[], Op[T]], *, transaction: bool = False) -> T:
        source = self.source
        if isinstance(source, ConnectionSource):
            return source.run(factory, transaction=transaction, scope=self._scope)
        assert source is not None
        return self.on_loop(source.run(factory, transaction=transaction, scope=self._scope))

    def on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the wrapped object's event loop (its public ``loop``), from a
        thread other than the loop's: what the sync methods of an async object do."""
        return call_on_loop(
            coro,
            getattr(self.inner, "loop", None),
            f"a synchronous call to a cached {type(self.inner).__name__} needs another "
            "thread while its event loop runs: use the async methods",
        )

    async def _arun(self, factory: Callable[[], Op[T]], *, transaction: bool = False) -> T:
        source = self.source
        if isinstance(source, AsyncConnectionSource):
            return await source.run(factory, transaction=transaction, scope=self._scope)
        assert source is not None
        return await asyncio.to_thread(
            source.run, factory, transaction=transaction, scope=self._scope
        )


class _Keyed:
    """What the cached checkpointer and store share: the wrapped object's codec and
    origin, and the start of every key (``_KIND``, then its database, schema and
    tenant)."""

    _KIND: ClassVar[str]
    # The wrapped object's attributes that neither write nor depend on the cache.
    _PASSTHROUGH: ClassVar[frozenset[str]]

    def _bind(self, inner: Any, layer: CacheLayer, codec: Codec | None) -> None:
        self._codec: Codec = codec or getattr(inner, "codec", None) or default_codec()
        layer.ensure_secret(self._codec)
        self._schema = str(getattr(inner, "schema", ""))
        self._tenant = str(getattr(inner, "tenant_id", ""))
        self._origin = _Origin(
            inner, self._schema, self._tenant, getattr(self._codec, "keyring", None)
        )
        layer.adopt(self._origin)
        self._prefix = ""

    def _known(self) -> None:
        """Learn the database's identity (once): every key names it."""
        if not self._prefix:
            ident = self._origin.identity()
            self._prefix = f"{self._KIND}:" + json.dumps([ident, self._schema, self._tenant]) + ":"

    async def _aknown(self) -> None:
        if not self._prefix:
            await self._origin.aidentity()
            self._known()

    def __getattr__(self, name: str) -> Any:
        if name in self._PASSTHROUGH:
            return getattr(self._origin.inner, name)
        raise AttributeError(
            f"{type(self).__name__} has no {name!r}: call it on .inner if it does not write "
            "(a write through .inner is not seen by the cache)"
        )
