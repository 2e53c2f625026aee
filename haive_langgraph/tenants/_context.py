"""The tenant context: every component opened inside it is bound to one tenant.

:class:`TenantContext` (sync) and :class:`AsyncTenantContext` are what
``registry.context(tenant_id)`` yields once it found the tenant registered
and active. Each opener (``checkpointer()``, ``store()``, ``chat_history()``,
``conversations()``, ``sessions()``, ``vector_memory()``) builds the feature's
class on the registry's own connection source (its pool, or its lent
connection), with the tenant, schema and config of the registry, and the
codec the tenant's compliance mode asks for; the context closes them on exit
(the registry's pool stays open). The decisions are written once, in
:class:`_ContextBase`; the two classes only name the classes they open.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from haive_langgraph.checkpointers import AsyncPostgresCheckpointer, PostgresCheckpointer
from haive_langgraph.codec import Codec, HaiveCodec, KeyRing, PlainCodec, codec_from_config
from haive_langgraph.db._async_connections import AsyncConnectionSource
from haive_langgraph.db._call import Call
from haive_langgraph.db._config import PersistenceConfig
from haive_langgraph.db._connections import ConnectionSource
from haive_langgraph.db._methods import async_method, sync_method
from haive_langgraph.errors import ConfigurationError
from haive_langgraph.memory import (
    AsyncConversationStore,
    AsyncPostgresChatMessageHistory,
    AsyncSessionStore,
    AsyncVectorMemory,
    ConversationStore,
    PostgresChatMessageHistory,
    SessionStore,
    VectorMemory,
)
from haive_langgraph.ops.audit import record_read_op
from haive_langgraph.stores import AsyncPostgresStore, PostgresStore
from haive_langgraph.tenants._types import EffectiveSettings, Tenant

__all__ = ["AsyncTenantContext", "TenantContext"]

T = TypeVar("T")

# Set by the context: a component must not be given another tenant or source.
_BOUND = ("conn", "tenant_id", "schema", "config")
# The checkpointer's own codec options, which cannot go along with a codec.
_CODEC_OPTIONS = ("compression", "keyring", "require_encryption")


def _encrypts(codec: Codec) -> bool:
    if isinstance(codec, PlainCodec):
        return False
    if isinstance(codec, HaiveCodec):
        return codec.keyring is not None
    return True  # a codec of the caller's own: trusted to protect what it frames


def tenant_codec(tenant: Tenant, codec: Codec | None, keyring: KeyRing | None) -> Codec | None:
    """The codec of the components a context opens for ``tenant`` (``None``: each
    component's default).

    With a compliance mode that requires encryption, a codec that encrypts and
    refuses plaintext frames (the registry's codec or key ring, else the
    ``HAIVE_ENCRYPTION_KEYS`` variable).

    Raises:
        ConfigurationError: Encryption is required and no keys are configured.
    """
    effective = tenant.effective
    if not effective.require_encryption:
        if codec is None and keyring is not None:
            return codec_from_config(keyring=keyring)
        return codec
    if codec is None:
        codec = codec_from_config(keyring=keyring)
    if not _encrypts(codec):
        raise ConfigurationError(
            f"tenant {tenant.tenant_id!r} is in compliance mode {effective.compliance_mode}, "
            "which requires encryption, but no encryption keys are configured: pass "
            "keyring= (or an encrypting codec=) to the registry, or set HAIVE_ENCRYPTION_KEYS; "
            "nothing of the tenant is stored in plaintext"
        )
    if isinstance(codec, HaiveCodec) and not codec.require_encryption:
        codec = HaiveCodec(
            compression=codec.compression,
            keyring=codec.keyring,
            require_encryption=True,
            allowed_modules=codec.allowed_modules,
        )
    return codec


class _ContextBase:
    """What both contexts do: bind the tenant, choose the codec, track what they opened."""

    _source: Any

    def __init__(
        self,
        tenant: Tenant,
        source: ConnectionSource | AsyncConnectionSource,
        schema: str,
        config: PersistenceConfig,
        codec: Codec | None,
        keyring: KeyRing | None,
    ) -> None:
        self.tenant = tenant
        self.schema = schema
        self.config = config
        self.codec = tenant_codec(tenant, codec, keyring)
        self._source = source
        # What the components borrow from: the registry's pool (or its lent
        # connection); they never close it.
        self._conn = source.lendable
        self._opened: list[Any] = []
        self._closed = False

    @property
    def tenant_id(self) -> str:
        """The tenant every component opened here reads and writes."""
        return self.tenant.tenant_id

    @property
    def settings(self) -> EffectiveSettings:
        """The tenant's settings with its compliance mode's defaults applied."""
        return self.tenant.effective

    def _record_read(
        self, table: str, object_key: Any, *, user_id: str | None = None
    ) -> Call[bool]:
        """Record in the audit log that ``user_id`` read ``object_key`` of ``table``
        on behalf of this tenant (triggers see changes, not reads).

        Nothing is written unless the audit log records reads (``haive-lg audit
        enable --reads``; a HIPAA tenant's context opens only then).

        Args:
            table: The table (or any name of what was read).
            object_key: Its key (JSON: a list, a string ...).
            user_id: Who read it (default: the transaction's ``haive.user_id``,
                else the database role).

        Returns:
            Whether an entry was written.
        """
        if type(table) is not str or not table:
            raise ConfigurationError(f"table must be a non-empty str, got {table!r}")
        schema, tid = self.schema, self.tenant_id
        return Call(
            lambda: record_read_op(
                schema, table=table, object_key=object_key, tenant_id=tid, user_id=user_id
            )
        )

    def _closing(self) -> list[Any]:
        """Close the context to new components; what was opened here, to close (the
        last opened first)."""
        self._closed = True
        opened, self._opened = self._opened, []
        return opened[::-1]

    def _open(self, cls: Callable[..., T], *args: Any, **options: Any) -> T:
        """``cls(*args, conn=..., tenant_id=..., schema=..., config=..., codec=..., **options)``."""
        if self._closed:
            raise ConfigurationError(
                f"the context of tenant {self.tenant_id!r} is closed: open components inside "
                "the `with registry.context(...)` block"
            )
        if bound := [name for name in _BOUND if name in options]:
            raise ConfigurationError(
                f"{', '.join(bound)} is set by the context of tenant {self.tenant_id!r}; "
                "open the class directly to choose it"
            )
        own = [name for name in _CODEC_OPTIONS if name in options]
        if "codec" in options:
            given = options["codec"]
            if self.settings.require_encryption and not _encrypts(given):
                raise ConfigurationError(
                    f"tenant {self.tenant_id!r} is in compliance mode "
                    f"{self.settings.compliance_mode}, which requires encryption: the codec "
                    "given does not encrypt"
                )
        elif own and self.settings.require_encryption:
            raise ConfigurationError(
                f"tenant {self.tenant_id!r} is in compliance mode "
                f"{self.settings.compliance_mode}, which chooses the codec: pass codec= "
                f"instead of {', '.join(own)}="
            )
        elif self.codec is not None and not own:
            options["codec"] = self.codec
        component = cls(
            *args,
            conn=self._conn,
            tenant_id=self.tenant_id,
            schema=self.schema,
            config=self.config,
            **options,
        )
        self._opened.append(component)
        return component


class TenantContext(_ContextBase):
    """One tenant's components (sync), from ``TenantRegistry.context(tenant_id)``.

    Every component opened here is bound to the tenant (its rows only, under
    row-level security too), shares the registry's connections, and is closed
    when the ``with`` block ends. Options are those of each class, except
    ``conn``, ``tenant_id``, ``schema`` and ``config``, which the context sets.

    :meth:`record_read` records a read in the audit log on behalf of the tenant
    (what a compliance mode's audit of reads needs: triggers only see changes).

    Attributes:
        tenant: The tenant's record, read when the context opened.
        codec: The codec given to every component (``None``: their default);
            an encrypting one when the compliance mode requires it.
    """

    _source: ConnectionSource

    def _run(self, call: Call[T]) -> T:
        return self._source.call(call)

    record_read = sync_method(_ContextBase._record_read)

    def checkpointer(self, **options: Any) -> PostgresCheckpointer:
        """A :class:`~haive_langgraph.checkpointers.PostgresCheckpointer` of the tenant."""
        return self._open(PostgresCheckpointer, **options)

    def store(self, **options: Any) -> PostgresStore:
        """A :class:`~haive_langgraph.stores.PostgresStore` of the tenant."""
        return self._open(PostgresStore, **options)

    def chat_history(self, session_id: str, **options: Any) -> PostgresChatMessageHistory:
        """A :class:`~haive_langgraph.memory.PostgresChatMessageHistory` of the tenant."""
        return self._open(PostgresChatMessageHistory, session_id, **options)

    def conversations(self, **options: Any) -> ConversationStore:
        """A :class:`~haive_langgraph.memory.ConversationStore` of the tenant."""
        return self._open(ConversationStore, **options)

    def sessions(self, **options: Any) -> SessionStore:
        """A :class:`~haive_langgraph.memory.SessionStore` of the tenant."""
        return self._open(SessionStore, **options)

    def vector_memory(self, **options: Any) -> VectorMemory:
        """A :class:`~haive_langgraph.memory.VectorMemory` of the tenant."""
        return self._open(VectorMemory, **options)

    def close(self) -> None:
        """Close what was opened here (the registry's pool stays open)."""
        for component in self._closing():
            component.close()


class AsyncTenantContext(_ContextBase):
    """Asyncio twin of :class:`TenantContext`, from ``async with
    AsyncTenantRegistry.context(tenant_id)``: the same openers, returning the
    async classes (``AsyncPostgresCheckpointer``, ``AsyncPostgresStore``,
    ``AsyncPostgresChatMessageHistory``, ``AsyncConversationStore``,
    ``AsyncSessionStore``, ``AsyncVectorMemory``), and ``await arecord_read(...)``."""

    _source: AsyncConnectionSource

    async def _arun(self, call: Call[T]) -> T:
        return await self._source.call(call)

    arecord_read = async_method(_ContextBase._record_read)

    def checkpointer(self, **options: Any) -> AsyncPostgresCheckpointer:
        """An :class:`~haive_langgraph.checkpointers.AsyncPostgresCheckpointer` of the tenant."""
        return self._open(AsyncPostgresCheckpointer, **options)

    def store(self, **options: Any) -> AsyncPostgresStore:
        """An :class:`~haive_langgraph.stores.AsyncPostgresStore` of the tenant."""
        return self._open(AsyncPostgresStore, **options)

    def chat_history(self, session_id: str, **options: Any) -> AsyncPostgresChatMessageHistory:
        """An :class:`~haive_langgraph.memory.AsyncPostgresChatMessageHistory` of the tenant."""
        return self._open(AsyncPostgresChatMessageHistory, session_id, **options)

    def conversations(self, **options: Any) -> AsyncConversationStore:
        """An :class:`~haive_langgraph.memory.AsyncConversationStore` of the tenant."""
        return self._open(AsyncConversationStore, **options)

    def sessions(self, **options: Any) -> AsyncSessionStore:
        """An :class:`~haive_langgraph.memory.AsyncSessionStore` of the tenant."""
        return self._open(AsyncSessionStore, **options)

    def vector_memory(self, **options: Any) -> AsyncVectorMemory:
        """An :class:`~haive_langgraph.memory.AsyncVectorMemory` of the tenant."""
        return self._open(AsyncVectorMemory, **options)

    async def aclose(self) -> None:
        """Close what was opened here (the registry's pool stays open)."""
        for component in self._closing():
            await component.aclose()
