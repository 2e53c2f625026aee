"""The persistence of a LangGraph server (``langgraph dev``, deployments).

``langgraph.json`` needs only::

    {
      "checkpointer": {"path": "haive_langgraph.server.checkpointer"},
      "store": {"path": "haive_langgraph.server.store"}
    }

The server enters :func:`checkpointer` and :func:`store` once at start (once
per event loop) and closes them at shutdown. Both are configured from the
environment, as every class of the package is (``HAIVE_DATABASE_URL``,
``HAIVE_SCHEMA``, ``HAIVE_POOL_*``, ``HAIVE_ENCRYPTION_KEYS`` ...), plus
what only a server has: ``HAIVE_SERVER_TENANT_FROM`` (tenants from the
authenticated identity), ``HAIVE_STORE_INDEX`` (our pgvector settings over
langgraph.json's ``store.index``), the store's TTL and the thread TTL. See
``docs/langgraph-server.md``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, cast

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.store.base import BaseStore, TTLConfig

from haive_langgraph.checkpointers import AsyncPostgresCheckpointer
from haive_langgraph.codec import codec_from_config
from haive_langgraph.db._config import PersistenceConfig
from haive_langgraph.db._periodic import AsyncSweeper
from haive_langgraph.errors import ConfigurationError
from haive_langgraph.server import _settings as settings
from haive_langgraph.server._identity import TenantOf, load_object, tenant_mapping
from haive_langgraph.server._routing import TenantCheckpointer, TenantStore
from haive_langgraph.stores import AsyncPostgresStore

__all__ = ["TenantCheckpointer", "TenantStore", "checkpointer", "store"]

logger = logging.getLogger(__name__)

# (component, DSN, schema) already set up by this process: the server enters
# the context managers once per event loop; migrations run once. (Two loops
# racing here both run setup, which is idempotent and serialised by the
# database's advisory lock.)
_SET_UP: set[tuple[str, str, str]] = set()


async def _setup_once(kind: str, component: Any, env: Mapping[str, str]) -> None:
    key = (kind, str(component._source.dsn), component.schema)
    if key not in _SET_UP and settings.run_setup(env):
        try:
            await component.setup()
        except ConfigurationError as exc:
            if "row-level security" not in str(exc):
                raise
            raise ConfigurationError(
                f"{exc}. The server's role uses the tables under row-level security and "
                f"cannot migrate them: set {settings.SETUP_ENV}=off and run `haive-lg migrate` "
                "as the tables' owner"
            ) from None
        _SET_UP.add(key)


def _tenant_option(env: Mapping[str, str]) -> TenantOf | None:
    spec = settings.tenant_from(env)
    return None if spec is None else tenant_mapping(spec)


@asynccontextmanager
async def checkpointer(dsn: str | None = None) -> AsyncIterator[BaseCheckpointSaver[int]]:
    """The server's checkpointer: an :class:`AsyncPostgresCheckpointer` from the environment.

    The server is ``dsn``, else ``HAIVE_DATABASE_URL``/``DATABASE_URL``, else
    the embedded PostgreSQL. The tables are created or upgraded once per
    process (unless ``HAIVE_SERVER_SETUP=off``: a role under row-level
    security cannot, their owner does). With ``HAIVE_SERVER_TENANT_FROM`` set, it yields a
    :class:`TenantCheckpointer` (each call acts for the caller's tenant);
    with a thread TTL (``langgraph.json``'s ``checkpointer.ttl`` or
    ``LANGGRAPH_THREAD_TTL``), a retention sweeper applies it.

    Args:
        dsn: A PostgreSQL DSN; ``None`` resolves it as above.

    Yields:
        The checkpointer, open; closed (with its sweeper) on exit.

    Raises:
        ConfigurationError: a bad variable, naming it.
        ConnectionFailedError: the server cannot be reached.
    """
    env = settings.environ()
    tenant_of = await asyncio.to_thread(_tenant_option, env)  # may import a module
    ttl = settings.thread_ttl(env)
    config = PersistenceConfig()
    async with AsyncExitStack() as stack:
        saver = await stack.enter_async_context(
            AsyncPostgresCheckpointer.from_conn_string(
                dsn,
                config=config,
                codec=codec_from_config(),
                tenant_id="" if tenant_of is not None else None,
            )
        )
        await _setup_once("checkpointer", saver, env)
        routed = (
            None
            if tenant_of is None
            else TenantCheckpointer(saver, tenant_of, cache_size=settings.tenant_cache_size(env))
        )
        if ttl is not None:
            sweeper = _ThreadTTLSweeper(saver, routed, ttl)
            sweeper.start()
            stack.push_async_callback(sweeper.stop)
        yield saver if routed is None else routed


class _ThreadTTLSweeper(AsyncSweeper[None]):
    """Applies the thread TTL to the saver's tenant, or with tenants to every tenant served."""

    _name = "haive-server-thread-ttl"
    _logger = logger
    _failed = "thread TTL sweep failed"

    def __init__(
        self,
        saver: AsyncPostgresCheckpointer,
        routed: TenantCheckpointer | None,
        ttl: settings.ThreadTTL,
    ) -> None:
        self.saver, self.routed, self.ttl = saver, routed, ttl
        self.interval = ttl.interval

    async def run_once(self) -> None:
        """Apply the TTL to each tenant served (one failing does not stop the others)."""
        # With tenants, no call ever acts for the default tenant (and under
        # row-level security the unbound saver could not sweep it).
        savers = (
            [self.saver]
            if self.routed is None
            else [self.routed.for_tenant(t) for t in self.routed.tenants()]
        )
        for saver in savers:
            try:
                report = await saver.aapply_retention(self.ttl.policy)
            except Exception:  # keep sweeping; the next round may succeed
                logger.exception("thread TTL sweep of tenant %r failed", saver.tenant_id)
            else:
                logger.info("thread TTL (tenant %r): %s", saver.tenant_id, report.as_dict())


async def _index(raw: dict[str, Any] | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    embed = raw.get("embed")
    if isinstance(embed, str) and ".py:" in embed:
        # A file of the project, as langgraph.json names it; imported off the loop.
        raw = {**raw, "embed": await asyncio.to_thread(load_object, embed, "store.index.embed")}
    return raw


@asynccontextmanager
async def store(dsn: str | None = None) -> AsyncIterator[BaseStore]:
    """The server's store: an :class:`AsyncPostgresStore` from the environment.

    The server is resolved as for :func:`checkpointer`. Its vector index is
    ``langgraph.json``'s ``store.index`` (``dims``, ``embed``: a provider
    string such as ``"openai:text-embedding-3-small"`` or ``"./file.py:name"``,
    ``fields``) with ``HAIVE_STORE_INDEX`` (a JSON object of our pgvector keys)
    laid over it; its TTL is ``store.ttl``, swept every
    ``sweep_interval_minutes`` when that is set. With
    ``HAIVE_SERVER_TENANT_FROM``, it yields a :class:`TenantStore`.

    Args:
        dsn: A PostgreSQL DSN; ``None`` resolves it as above.

    Yields:
        The store, open; closed (with its sweeper and indexer) on exit.

    Raises:
        ConfigurationError: a bad variable or index, naming it.
        ConnectionFailedError: the server cannot be reached.
    """
    env = settings.environ()
    tenant_of = await asyncio.to_thread(_tenant_option, env)  # may import a module
    raw_index, ttl = settings.store_section(env)
    index = await _index(raw_index)
    config = PersistenceConfig()
    async with AsyncPostgresStore.from_conn_string(
        dsn,
        index=index,
        ttl=cast(TTLConfig | None, ttl),
        config=config,
        tenant_id="" if tenant_of is not None else None,
    ) as base:
        await _setup_once("store", base, env)
        if ttl and ttl.get("sweep_interval_minutes"):
            await base.start_ttl_sweeper()
        yield base if tenant_of is None else TenantStore(base, tenant_of)
