"""The tenant registry: :class:`TenantRegistry` (sync) and :class:`AsyncTenantRegistry`.

Each public method is written once, as a builder of :class:`_RegistryCalls`
that checks its arguments and returns a :class:`~haive_langgraph.db._call.Call`
(no I/O); :func:`~haive_langgraph.db._methods.sync_method` and
:func:`~haive_langgraph.db._methods.async_method` make the sync method and its
``a``-prefixed async twin. The two classes differ only in how a call runs and
in the kind of context manager :meth:`TenantRegistry.context` is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, ClassVar, Generic, Self, TypeVar

from psycopg import sql

from haive_langgraph.codec import Codec, KeyRing
from haive_langgraph.db._async_connections import AsyncConnectionSource
from haive_langgraph.db._call import Call
from haive_langgraph.db._config import PersistenceConfig
from haive_langgraph.db._connections import AsyncConn, ConnectionSource, SyncConn
from haive_langgraph.db._driver import Op
from haive_langgraph.db._identifiers import validate_identifier
from haive_langgraph.db._limits import check_count
from haive_langgraph.db._methods import async_method, sync_method
from haive_langgraph.db._migrations import migrate_op
from haive_langgraph.db._tenancy import TenantScope, validate_tenant_id
from haive_langgraph.errors import ConfigurationError
from haive_langgraph.tenants import _ops
from haive_langgraph.tenants._context import AsyncTenantContext, TenantContext
from haive_langgraph.tenants._types import (
    Tenant,
    TenantPage,
    TenantQuota,
    TenantSettings,
    TenantStatus,
    check_display_name,
    check_status,
)

__all__ = ["AsyncTenantRegistry", "TenantRegistry"]

T = TypeVar("T")
ConnT = TypeVar("ConnT", SyncConn, AsyncConn)

DEFAULT_PAGE = 100


def _settings(value: object) -> TenantSettings | None:
    if value is None or isinstance(value, TenantSettings):
        return value
    raise ConfigurationError(f"settings must be a TenantSettings, got {type(value).__name__}")


def _quota(value: object) -> TenantQuota | None:
    if value is None or isinstance(value, TenantQuota):
        return value
    raise ConfigurationError(f"quota must be a TenantQuota, got {type(value).__name__}")


class _RegistryCalls(Generic[ConnT]):
    """Validates arguments and builds the registry's calls (no I/O)."""

    _source: ConnectionSource | AsyncConnectionSource
    _source_type: ClassVar[type[ConnectionSource] | type[AsyncConnectionSource]]

    def __init__(
        self,
        conn: ConnT = None,
        *,
        schema: str | None = None,
        config: PersistenceConfig | None = None,
        codec: Codec | None = None,
        keyring: KeyRing | None = None,
    ) -> None:
        if codec is not None and keyring is not None:
            raise ConfigurationError("pass either codec= or keyring= to the registry, not both")
        self.config = config or PersistenceConfig()
        self.schema = validate_identifier(
            self.config.schema_name if schema is None else schema, what="schema name"
        )
        self.codec = codec
        self.keyring = keyring
        lent: Any = conn  # the class's own kind (SyncConn or AsyncConn)
        self._source = self._source_type(lent, config=self.config)

    def _setup(self) -> Call[dict[str, list[int]]]:
        """Create or upgrade the registry's table and the tables of every component a
        tenant context opens (idempotent; safe from many processes at once).

        Returns:
            The migration versions applied now, per component.
        """
        # Imported here: the registry of features lists this package's component.
        from haive_langgraph.ops._migrate import all_components

        schema = self.schema
        return Call(lambda: migrate_op(all_components(), schema), transaction=True)

    def _create(
        self,
        tenant_id: str,
        *,
        display_name: str = "",
        settings: TenantSettings | None = None,
        quota: TenantQuota | None = None,
    ) -> Call[Tenant]:
        """Register a tenant (active).

        Args:
            tenant_id: Its id: the ``tenant_id`` of its rows (1-255 characters,
                no control characters; ``""`` is not a tenant).
            display_name: A name for people.
            settings: Time zone, retention, compliance mode (default: UTC, none).
            quota: Its limits (default: none).

        Raises:
            TenantExistsError: It is already registered.
            ConfigurationError: An invalid id, name, settings or quota.
        """
        tid = validate_tenant_id(tenant_id)
        name = check_display_name(display_name)
        chosen = _settings(settings) or TenantSettings()
        limits = _quota(quota) or TenantQuota()
        schema = self.schema
        return Call(lambda: _ops.create_op(schema, tid, name, chosen, limits), transaction=True)

    def _get(self, tenant_id: str) -> Call[Tenant]:
        """The tenant's record.

        Raises:
            TenantNotFoundError: No such tenant.
        """
        return self._read(tenant_id, _ops.get_op)

    def _list(
        self, *, status: str | None = None, limit: int = DEFAULT_PAGE, cursor: str | None = None
    ) -> Call[TenantPage]:
        """A page of tenants, ordered by id.

        Args:
            status: Only ``"active"`` or ``"suspended"`` ones (default: all).
            limit: Most tenants on the page.
            cursor: A page's ``next_cursor``, for the page after it.
        """
        wanted = check_status(status)
        check_count("limit", limit)
        if limit < 1:
            raise ConfigurationError(f"limit must be at least 1, got {limit}")
        after = None if cursor is None else validate_tenant_id(cursor)
        schema = self.schema
        return Call(lambda: _ops.list_op(schema, wanted, limit, after), read=True)

    def _update(
        self,
        tenant_id: str,
        *,
        display_name: str | None = None,
        settings: TenantSettings | None = None,
        quota: TenantQuota | None = None,
    ) -> Call[Tenant]:
        """Change a tenant's display name, settings or quota (each only when given;
        ``settings`` and ``quota`` replace the stored ones as a whole).

        Raises:
            TenantNotFoundError: No such tenant.
            ConfigurationError: An invalid name, settings or quota.
        """
        tid = validate_tenant_id(tenant_id)
        name = None if display_name is None else check_display_name(display_name)
        chosen, limits = _settings(settings), _quota(quota)
        schema = self.schema
        return Call(lambda: _ops.update_op(schema, tid, name, chosen, limits), transaction=True)

    def _suspend(self, tenant_id: str) -> Call[Tenant]:
        """Suspend a tenant: its context refuses to open (its rows stay).

        Raises:
            TenantNotFoundError: No such tenant.
        """
        return self._set_status(tenant_id, "suspended")

    def _resume(self, tenant_id: str) -> Call[Tenant]:
        """Make a suspended tenant active again.

        Raises:
            TenantNotFoundError: No such tenant.
        """
        return self._set_status(tenant_id, "active")

    def _set_status(self, tenant_id: str, status: TenantStatus) -> Call[Tenant]:
        tid = validate_tenant_id(tenant_id)
        schema = self.schema
        return Call(lambda: _ops.set_status_op(schema, tid, status), transaction=True)

    def _delete(self, tenant_id: str) -> Call[dict[str, int]]:
        """Erase the tenant: every row of it in every component, then its record.

        One transaction: the tables are those every feature declares
        (``haive_langgraph.ops`` registry of tables), emptied of this tenant's
        rows only; the wrapped keys of the tenant (``tenant_keys``) and the
        audit log stay (crypto-shred the keys with ``haive-lg keys
        forget-tenant``).

        Returns:
            Rows deleted per table (``"tenants"``: the record).

        Raises:
            TenantNotFoundError: No such tenant (nothing is deleted).
        """
        # Imported here: the registry of features lists this package's component.
        from haive_langgraph.ops._migrate import tenant_tables

        tid = validate_tenant_id(tenant_id)
        schema = self.schema
        # Row security is asked of a tenant table (the registry's own is not under it).
        scope = TenantScope(sql.Identifier(schema, tenant_tables()[0]).as_string(None), tid)
        return Call(lambda: _ops.delete_op(schema, tid), transaction=True, scope=scope)

    def _enter(self, tenant_id: str) -> Call[Tenant]:
        return self._read(tenant_id, _ops.enter_op)

    def _read(self, tenant_id: str, op: Callable[[str, str], Op[Tenant]]) -> Call[Tenant]:
        """A read of one tenant's record: ``op(schema, tenant_id)``."""
        tid = validate_tenant_id(tenant_id)
        schema = self.schema
        return Call(lambda: op(schema, tid), read=True)


class TenantRegistry(_RegistryCalls[SyncConn]):
    """The registry of tenants (sync): create, get, list, update, suspend, resume,
    delete, and a context that binds one tenant for every component it opens.

    Args:
        conn: A DSN (a pool is opened and owned), ``None`` (the default server:
            ``HAIVE_DATABASE_URL``, ``DATABASE_URL``, the embedded one), a
            psycopg ``Connection`` (autocommit) or a ``ConnectionPool``. The
            components a context opens share it.
        schema: Schema of the tables (default ``haive``).
        config: Connection settings.
        codec: The codec of the components a context opens (default: each
            component's, from the ``HAIVE_*`` variables).
        keyring: Or: the keys they encrypt with (a codec is built from the
            ``HAIVE_*`` variables around them).

    Example:
        >>> with TenantRegistry(dsn) as registry:
        ...     registry.setup()
        ...     registry.create("acme", display_name="Acme", quota=TenantQuota(max_sessions=50))
        ...     with registry.context("acme") as tenant:
        ...         saver = tenant.checkpointer()
    """

    _source: ConnectionSource
    _source_type = ConnectionSource

    def _run(self, call: Call[T]) -> T:
        return self._source.call(call)

    setup = sync_method(_RegistryCalls._setup)
    create = sync_method(_RegistryCalls._create)
    get = sync_method(_RegistryCalls._get)
    list = sync_method(_RegistryCalls._list)
    update = sync_method(_RegistryCalls._update)
    suspend = sync_method(_RegistryCalls._suspend)
    resume = sync_method(_RegistryCalls._resume)
    delete = sync_method(_RegistryCalls._delete)

    @contextmanager
    def context(self, tenant_id: str) -> Iterator[TenantContext]:
        """Bind ``tenant_id`` for every component opened inside (closed on exit).

        Raises:
            TenantNotFoundError: No such tenant.
            TenantSuspendedError: The tenant is suspended.
            ConfigurationError: Its compliance mode needs what is not
                configured (encryption keys, the audit log).
        """
        tenant = self._run(self._enter(tenant_id))
        ctx = TenantContext(
            tenant, self._source, self.schema, self.config, self.codec, self.keyring
        )
        try:
            yield ctx
        finally:
            ctx.close()

    def close(self) -> None:
        """Close the pool this registry opened (a lent connection or pool stays open)."""
        self._source.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncTenantRegistry(_RegistryCalls[AsyncConn]):
    """Asyncio twin of :class:`TenantRegistry` (``await acreate(...)``, ``aget``,
    ``alist`` ...: its methods, ``a``-prefixed; ``await setup()``; ``async with
    registry.context(tenant_id)``) on psycopg's ``AsyncConnection`` or
    ``AsyncConnectionPool``, a DSN (a pool opened on first use) or ``None``."""

    _source: AsyncConnectionSource
    _source_type = AsyncConnectionSource

    async def _arun(self, call: Call[T]) -> T:
        return await self._source.call(call)

    async def setup(self) -> dict[str, list[int]]:
        """Create or upgrade the tables (see :meth:`TenantRegistry.setup`)."""
        return await self._arun(self._setup())

    acreate = async_method(_RegistryCalls._create)
    aget = async_method(_RegistryCalls._get)
    alist = async_method(_RegistryCalls._list)
    aupdate = async_method(_RegistryCalls._update)
    asuspend = async_method(_RegistryCalls._suspend)
    aresume = async_method(_RegistryCalls._resume)
    adelete = async_method(_RegistryCalls._delete)

    @asynccontextmanager
    async def context(self, tenant_id: str) -> AsyncIterator[AsyncTenantContext]:
        """Bind ``tenant_id`` for every component opened inside (see
        :meth:`TenantRegistry.context`); they are closed on exit."""
        tenant = await self._arun(self._enter(tenant_id))
        ctx = AsyncTenantContext(
            tenant, self._source, self.schema, self.config, self.codec, self.keyring
        )
        try:
            yield ctx
        finally:
            await ctx.aclose()

    async def aclose(self) -> None:
        """Close the pool this registry opened (a lent connection or pool stays open)."""
        await self._source.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
