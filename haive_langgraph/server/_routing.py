"""A checkpointer and a store that act, call by call, for the caller's tenant.

Our classes take their tenant at construction. On a server, the tenant is
known per call (:mod:`._identity`), so :class:`TenantCheckpointer` and
:class:`TenantStore` keep one tenant-bound instance per tenant, all on the
connections of one unbound instance (one pool for every tenant), and pass
each call to the instance of the caller's tenant. Every row those instances
read or write carries their tenant, and under row-level security (an
application role that does not own the tables) the database refuses any
other.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.store.base import BaseStore, Op, Result
from psycopg_pool import AsyncConnectionPool

from haive_langgraph.checkpointers import AsyncPostgresCheckpointer
from haive_langgraph.checkpointers._forwarding import ForwardingCheckpointer
from haive_langgraph.db._loop import call_on_loop
from haive_langgraph.server._identity import TenantOf, resolve_tenant
from haive_langgraph.stores import AsyncPostgresStore

__all__ = ["TenantCheckpointer", "TenantStore"]


class TenantCheckpointer(ForwardingCheckpointer):
    """A LangGraph checkpointer that routes each call to its caller's tenant.

    Args:
        saver: The unbound checkpointer whose pool, schema, config and codec
            every tenant's instance shares (it must hold a pool: a DSN or an
            ``AsyncConnectionPool``).
        tenant_of: Maps the server's user to a tenant id
            (``HAIVE_SERVER_TENANT_FROM``).
        cache_size: Tenant-bound instances kept (least recently used go; they
            hold caches, not connections).

    Raises:
        PermissionDeniedError: (from each call) the call has no authenticated
            user, or its user maps to no tenant.
    """

    def __init__(
        self, saver: AsyncPostgresCheckpointer, tenant_of: TenantOf, *, cache_size: int = 256
    ) -> None:
        super().__init__(serde=saver.serde)
        self.saver = saver
        self.tenant_of = tenant_of
        self.cache_size = cache_size
        self._savers: OrderedDict[str, AsyncPostgresCheckpointer] = OrderedDict()

    def for_tenant(self, tenant_id: str) -> AsyncPostgresCheckpointer:
        """The instance bound to ``tenant_id`` (made on first use, on the shared pool)."""
        found = self._savers.get(tenant_id)
        if found is not None:
            self._savers.move_to_end(tenant_id)
            return found
        base = self.saver
        pool = base.connection_source.lendable
        if not isinstance(pool, AsyncConnectionPool):
            raise RuntimeError(
                "TenantCheckpointer needs a checkpointer on a pool (a DSN or an AsyncConnectionPool)"
            )
        made = AsyncPostgresCheckpointer(
            pool,
            serde=base.serde,
            codec=base.codec,
            encrypt_metadata=tuple(base.encrypt_metadata),
            tenant_id=tenant_id,
            schema=base.schema,
            config=base.config,
            # Replica pools are per instance: tenant instances read the primary.
            replicas=(),
        )
        self._savers[tenant_id] = made
        while len(self._savers) > self.cache_size:
            self._savers.popitem(last=False)
        return made

    def tenants(self) -> list[str]:
        """The tenants this process has served (and still holds an instance of)."""
        return list(self._savers)

    def _target(self, config: RunnableConfig | None) -> AsyncPostgresCheckpointer:
        """The instance of the caller's tenant (see :func:`resolve_tenant`)."""
        return self.for_tenant(resolve_tenant(self.tenant_of, config))

    def _sync_target(self, config: RunnableConfig | None) -> AsyncPostgresCheckpointer:
        """:meth:`_target` from another thread: a new instance is made on the saver's loop."""
        tenant = resolve_tenant(self.tenant_of, config)
        found = self._savers.get(tenant)
        if found is not None:
            return found

        async def made() -> AsyncPostgresCheckpointer:
            return self.for_tenant(tenant)

        return call_on_loop(
            made(),
            self.saver.loop,
            "a synchronous call to TenantCheckpointer on its own event loop would block it: "
            "use the async methods",
        )

    def get_next_version(self, current: Any, channel: None) -> Any:
        """The saver's versions (shared by every tenant)."""
        return self.saver.get_next_version(current, channel)


class TenantStore(BaseStore):
    """A LangGraph store that routes each batch to its caller's tenant.

    Args:
        store: The unbound store whose connections, index and settings
            every tenant's store shares (``store.for_tenant(...)``).
        tenant_of: Maps the server's user to a tenant id.

    Raises:
        PermissionDeniedError: (from each call) the call has no authenticated
            user, or its user maps to no tenant.
    """

    supports_ttl = True

    def __init__(self, store: AsyncPostgresStore, tenant_of: TenantOf) -> None:
        self.store = store
        self.tenant_of = tenant_of
        self.supports_ttl = store.supports_ttl
        self.ttl_config = store.ttl_config
        self._stores: dict[str, AsyncPostgresStore] = {}

    def for_tenant(self, tenant_id: str) -> AsyncPostgresStore:
        """The store bound to ``tenant_id`` (derived once; it shares every connection)."""
        found = self._stores.get(tenant_id)
        if found is None:
            found = self._stores[tenant_id] = self.store.for_tenant(tenant_id)
        return found

    def _current(self) -> AsyncPostgresStore:
        return self.for_tenant(resolve_tenant(self.tenant_of))

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run ``ops`` for the caller's tenant (from another thread than the server's loop)."""
        return self._current().batch(ops)

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """Run ``ops`` for the caller's tenant."""
        return await self._current().abatch(ops)
