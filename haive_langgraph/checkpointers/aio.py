"""``AsyncPostgresCheckpointer``: the asyncio LangGraph checkpointer.

Every async method awaits the call its :class:`PostgresCheckpointer` twin
runs (built in ``_calls``, ``_threads``, ``_retention`` or ``_timetravel_ops``);
the sync methods run the async ones on the instance's event loop.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
)
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from haive_langgraph.checkpointers import _calls as calls
from haive_langgraph.checkpointers import _threads as threads
from haive_langgraph.checkpointers import _timetravel_ops as tt
from haive_langgraph.checkpointers._base import CheckpointerBase
from haive_langgraph.checkpointers._retention import (
    RetentionPolicy,
    RetentionReport,
    apply_retention,
)
from haive_langgraph.checkpointers._threads import DeleteReport, ThreadInfo, ThreadPage
from haive_langgraph.checkpointers._timetravel import (
    BranchInfo,
    CheckpointDiff,
    CheckpointSummary,
    TimeBound,
)
from haive_langgraph.checkpointers._twins import iter_on_loop, on_loop
from haive_langgraph.db._async_connections import AsyncConnectionSource
from haive_langgraph.db._call import arun_calls
from haive_langgraph.db._conn_string import AsyncFromConnString
from haive_langgraph.db._loop import call_on_loop
from haive_langgraph.db._source_hook import ConnectionSourceHook

T = TypeVar("T")


class AsyncPostgresCheckpointer(
    CheckpointerBase[AsyncConnection[Any] | AsyncConnectionPool[Any]],
    AsyncFromConnString,
    ConnectionSourceHook[AsyncConnectionSource],
):
    """LangGraph checkpointer on PostgreSQL for asyncio (``graph.ainvoke`` ...).

    Same storage and behaviour as :class:`PostgresCheckpointer`; statements
    run on psycopg's ``AsyncConnection``. The sync methods work from other
    threads (they run on this instance's event loop) and raise
    ``asyncio.InvalidStateError`` on the loop's own thread, as LangGraph's
    async savers do.

    Args:
        conn: A DSN (an async pool is opened on first use and owned),
            ``None`` (the default server, as :class:`PostgresCheckpointer`),
            an ``AsyncConnection`` (autocommit, any row factory; one
            operation at a time) or an ``AsyncConnectionPool`` (no
            instance-wide lock).
        serde: Serializer; LangGraph's ``JsonPlusSerializer`` by default.
        codec: Frames, compresses and encrypts stored values. Default: a
            codec from ``HAIVE_*`` settings (zstd on; AES-256-GCM when
            ``HAIVE_ENCRYPTION_KEYS`` is set). Exclusive with the next three.
        compression: Compress values above 512 bytes with zstd (default on).
        keyring: Encrypt values with these keys (see ``docs/codec.md``).
        require_encryption: Refuse to read unencrypted values.
        encrypt_metadata: Checkpoint metadata keys stored encrypted (needs an
            encrypting codec; those keys can then not be used in filters).
        tenant_id: Tenant whose threads this instance reads and writes.
        schema: Schema of the tables (default from the config: ``haive``).
        config: Connection and server settings.
        cache_size: Checkpoints whose stored references are remembered.
        replicas: DSNs of streaming read replicas (default:
            ``HAIVE_REPLICA_URLS``); see :class:`PostgresCheckpointer`.
        strict_serialisation: Serialise every list item at every ``put``
            (see :class:`PostgresCheckpointer`).

    Example:
        >>> async with AsyncPostgresCheckpointer.from_conn_string() as saver:
        ...     await saver.setup()
        ...     graph = builder.compile(checkpointer=saver)
        ...     await graph.ainvoke(inputs, {"configurable": {"thread_id": "1"}})
    """

    def _open_source(
        self,
        conn: str | AsyncConnection[Any] | AsyncConnectionPool[Any] | None,
        replicas: Sequence[str] | None,
    ) -> None:
        self._source = AsyncConnectionSource(
            conn, config=self.config, replicas=replicas, scope=self._scope()
        )
        self.loop = asyncio.get_running_loop()

    async def aclose(self) -> None:
        """Close the pool this instance opened (a lent connection or pool stays open)."""
        await self._source.close()

    async def setup(self) -> None:
        """Create or upgrade the tables (idempotent; safe from many processes at once)."""
        await self._source.call(calls.setup(self))

    # -- async API --------------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint ``config`` names, or the thread's latest one; ``None`` if absent."""
        return await self._source.call(calls.get_tuple(self, config))

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Checkpoints newest first (see :meth:`PostgresCheckpointer.list`)."""
        for tup in await self._source.call(
            calls.list_checkpoints(self, config, filter, before, limit)
        ):
            yield tup

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store a checkpoint (one statement, one round trip)."""
        return await arun_calls(
            self._source, calls.put(self, config, checkpoint, metadata, new_versions)
        )

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store a task's pending writes for the checkpoint ``config`` names."""
        await arun_calls(self._source, calls.put_writes(self, config, writes, task_id, task_path))

    async def adelete_thread(self, thread_id: str) -> None:
        """Delete a thread's checkpoints and writes, and values no other thread shares."""
        await self.adelete_threads([thread_id])

    async def adelete_threads(self, thread_ids: Sequence[str]) -> DeleteReport:
        """Delete several threads in one transaction; returns what was removed."""
        return await arun_calls(self._source, threads.delete_threads(self, thread_ids))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint and write of a thread to a new thread (values shared)."""
        await arun_calls(
            self._source, threads.copy_thread(self, source_thread_id, target_thread_id)
        )

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their writes) created by the given runs."""
        await arun_calls(self._source, threads.delete_for_runs(self, run_ids))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Prune threads (see :meth:`PostgresCheckpointer.prune`)."""
        await arun_calls(self._source, threads.prune(self, thread_ids, strategy))

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        """Writes and seed of ``DeltaChannel`` channels along the parent chain, in one query."""
        return await arun_calls(self._source, calls.delta_channel_history(self, config, channels))

    # -- thread registry --------------------------------------------------------------

    async def aget_thread(self, thread_id: str) -> ThreadInfo | None:
        """Registry entry of a thread (no checkpoint is read), or ``None``."""
        return await self._source.call(threads.get_thread(self, thread_id))

    async def alist_threads(
        self,
        filter: dict[str, Any] | None = None,
        *,
        limit: int | None = 100,
        cursor: str | None = None,
    ) -> ThreadPage:
        """Threads most recently updated first (see :meth:`PostgresCheckpointer.list_threads`)."""
        return await self._source.call(threads.list_threads(self, filter, limit, cursor))

    # -- time travel ----------------------------------------------------------------------

    async def atag(self, config: RunnableConfig, *tags: str) -> None:
        """Tag the checkpoint ``config`` names (see :meth:`PostgresCheckpointer.tag`)."""
        await arun_calls(self._source, tt.tag(self, config, tags, remove=False))

    async def auntag(self, config: RunnableConfig, *tags: str) -> None:
        """Remove tags from the checkpoint ``config`` names."""
        await arun_calls(self._source, tt.tag(self, config, tags, remove=True))

    async def afind_checkpoints(
        self,
        thread_id: str,
        *,
        checkpoint_ns: str = "",
        tags: Sequence[str] | None = None,
        metadata: dict[str, Any] | None = None,
        before: TimeBound = None,
        after: TimeBound = None,
        state_matching: Mapping[str, Any] | None = None,
        limit: int | None = None,
    ) -> builtins.list[CheckpointSummary]:
        """Checkpoints matching every condition, newest first
        (see :meth:`PostgresCheckpointer.find_checkpoints`)."""
        return await self._source.call(
            tt.find_checkpoints(
                self, thread_id, checkpoint_ns, tags, metadata, before, after, state_matching, limit
            )
        )

    async def acreate_branch(
        self,
        config: RunnableConfig,
        name: str,
        *,
        thread_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> RunnableConfig:
        """Branch a thread at a checkpoint (see :meth:`PostgresCheckpointer.create_branch`)."""
        return await arun_calls(
            self._source, tt.create_branch(self, config, name, thread_id, metadata)
        )

    async def alist_branches(self, thread_id: str) -> builtins.list[BranchInfo]:
        """The named branches made from a thread, oldest first."""
        return await self._source.call(tt.list_branches(self, thread_id))

    async def adiff(
        self,
        config_a: RunnableConfig,
        config_b: RunnableConfig,
        *,
        include_internal: bool = False,
    ) -> CheckpointDiff:
        """Per-channel differences between two checkpoints (see :meth:`PostgresCheckpointer.diff`)."""
        return await arun_calls(self._source, tt.diff(self, config_a, config_b, include_internal))

    async def arestore(self, config: RunnableConfig) -> RunnableConfig:
        """Make a checkpoint the head of its thread again (see :meth:`PostgresCheckpointer.restore`)."""
        return await arun_calls(self._source, tt.restore(self, config))

    async def aapply_retention(
        self,
        policy: RetentionPolicy,
        *,
        dry_run: bool = False,
        thread_ids: Sequence[str] | None = None,
    ) -> RetentionReport:
        """Remove what ``policy`` does not keep (see :meth:`PostgresCheckpointer.apply_retention`)."""
        return await arun_calls(self._source, apply_retention(self, policy, dry_run, thread_ids))

    # -- sync API (from other threads only) --------------------------------------------------

    def _sync(self, coro: Coroutine[Any, Any, T], hint: str) -> T:
        return call_on_loop(
            coro,
            self.loop,
            "Synchronous calls to AsyncPostgresCheckpointer are only allowed from a "
            "different thread. From the main thread, use the async interface, "
            f"for example `await checkpointer.{hint}(...)`.",
        )

    get_tuple = on_loop(aget_tuple)
    list = iter_on_loop(alist)
    put = on_loop(aput)
    put_writes = on_loop(aput_writes)
    delete_thread = on_loop(adelete_thread)
    copy_thread = on_loop(acopy_thread)
    delete_for_runs = on_loop(adelete_for_runs)
    prune = on_loop(aprune)
    get_delta_channel_history = on_loop(aget_delta_channel_history)
