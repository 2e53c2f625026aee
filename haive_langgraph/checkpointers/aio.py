"""``AsyncPostgresCheckpointer``: the asyncio LangGraph checkpointer."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from haive_langgraph.checkpointers import _ops as ops
from haive_langgraph.checkpointers import _sql as S
from haive_langgraph.checkpointers._base import (
    ThreadInfo,
    ThreadPage,
    TimeTravelMixin,
    decode_cursor,
    json_filter,
    text_id,
    thread_info,
    thread_page,
)
from haive_langgraph.checkpointers._retention import RetentionPolicy, RetentionReport
from haive_langgraph.checkpointers._timetravel import (
    BranchInfo,
    CheckpointDiff,
    CheckpointSummary,
    TimeBound,
    diff_tuples,
)
from haive_langgraph.checkpointers._values import (
    PutPlan,
    StoredRefs,
    metadata_json,
)
from haive_langgraph.codec import Codec, KeyRing
from haive_langgraph.db import AsyncConnectionSource, PersistenceConfig, migrate_op
from haive_langgraph.db._conn_string import AsyncFromConnString
from haive_langgraph.db._limits import check_count
from haive_langgraph.errors import ConcurrentUpdateError, NotFoundError

T = TypeVar("T")


class AsyncPostgresCheckpointer(TimeTravelMixin, AsyncFromConnString):
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

    def __init__(
        self,
        conn: str | AsyncConnection[Any] | AsyncConnectionPool[Any] | None = None,
        *,
        serde: SerializerProtocol | None = None,
        codec: Codec | None = None,
        compression: bool | None = None,
        keyring: KeyRing | None = None,
        require_encryption: bool | None = None,
        encrypt_metadata: Sequence[str] = (),
        tenant_id: str | None = None,
        schema: str | None = None,
        config: PersistenceConfig | None = None,
        cache_size: int = 1024,
        replicas: Sequence[str] | None = None,
        strict_serialisation: bool | None = None,
    ) -> None:
        super().__init__(serde=serde)
        self._init_base(
            config=config,
            schema=schema,
            tenant_id=tenant_id,
            codec=codec,
            cache_size=cache_size,
            compression=compression,
            keyring=keyring,
            require_encryption=require_encryption,
            encrypt_metadata=encrypt_metadata,
            strict_serialisation=strict_serialisation,
        )
        self._source = AsyncConnectionSource(
            conn, config=self.config, replicas=replicas, scope=self._scope()
        )
        self.loop = asyncio.get_running_loop()

    async def aclose(self) -> None:
        """Close the pool this instance opened (a lent connection or pool stays open)."""
        await self._source.close()

    async def setup(self) -> None:
        """Create or upgrade the tables (idempotent; safe from many processes at once)."""
        await self._source.run(lambda: migrate_op([S.COMPONENT], self.schema), transaction=True)

    # -- async API --------------------------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint ``config`` names, or the thread's latest one; ``None`` if absent."""
        thread_id, ns, cid = self._target(config)
        return await self._source.run(
            lambda: self._get_tuple_op(thread_id, ns, cid), read=True, route="fresh"
        )

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Checkpoints newest first (see :meth:`PostgresCheckpointer.list`)."""
        args = self._list_args(config, filter, before, limit)
        rows, raw = await self._source.run(
            lambda: ops.list_op(self._statements, self.tenant_id, **args),
            read=True,
            route="replica",
        )
        for tup in self._load_rows(rows, raw):
            yield tup

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store a checkpoint (one statement, one round trip)."""
        thread_id = self._put_thread(config, metadata)
        parent = self._parent_refs(config)
        if parent is None and self._needs_parent(config, checkpoint, new_versions):
            parent = await self._afetch_parent(config)
        for attempt in range(2):
            plan = self._plan_put(
                config,
                checkpoint,
                metadata,
                new_versions,
                parent,
                self._family_of(thread_id),
                fresh_lists=attempt > 0,
            )
            try:
                await self._write_checkpoint(plan)
            except psycopg.Error as exc:
                if not self._is_conflict(exc):
                    raise
                if attempt:
                    raise ConcurrentUpdateError(
                        f"could not store checkpoint {checkpoint['id']} of thread {thread_id!r}: "
                        f"its stored values kept changing under it ({exc.diag.message_primary})"
                    ) from exc
                family = await self._source.run(
                    lambda: ops.family_op(self._statements, self.tenant_id, thread_id), read=True
                )
                self._families.put(thread_id, family or thread_id)
                parent = await self._afetch_parent(config)
                continue
            return self._stored(config, checkpoint, plan)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _write_checkpoint(self, plan: PutPlan) -> None:
        try:
            await self._source.run(lambda: ops.put_op(self._statements, plan.params))
        except psycopg.errors.FeatureNotSupported as exc:
            if not self._statements.learn_partitioned(exc):
                raise
            await self._source.run(lambda: ops.put_op(self._statements, plan.params))

    async def _afetch_parent(self, config: RunnableConfig) -> StoredRefs | None:
        conf = config["configurable"]
        if not conf.get("checkpoint_id"):
            return None
        thread_id, ns = text_id(conf["thread_id"], "thread_id"), str(conf.get("checkpoint_ns", ""))
        cid = str(conf["checkpoint_id"])
        row = await self._source.run(
            lambda: ops.get_op(self._statements, self.tenant_id, thread_id, ns, cid), read=True
        )
        if row is None:
            return None
        self._load_row(row, hand_out=False)
        return self._refs.get((thread_id, ns, cid))

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store a task's pending writes for the checkpoint ``config`` names."""
        if not writes:
            return
        params, replace = self._plan_writes(config, writes, task_id, task_path)
        await self._source.run(lambda: ops.put_writes_op(self._statements, params, replace))

    async def adelete_thread(self, thread_id: str) -> None:
        """Delete a thread's checkpoints and writes, and values no other thread shares."""
        await self.adelete_threads([thread_id])

    async def adelete_threads(self, thread_ids: Sequence[str]) -> ops.DeleteReport:
        """Delete several threads in one transaction; returns what was removed."""
        threads = self._prune_args(thread_ids, "delete")
        report = await self._source.run(
            lambda: ops.delete_threads_op(
                self._statements, S.LOCK_CLASS_FAMILY, self.tenant_id, threads
            ),
            transaction=True,
        )
        self._forget_threads(threads)
        return report

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint and write of a thread to a new thread (values shared)."""
        src = text_id(source_thread_id, "source_thread_id")
        dst = text_id(target_thread_id, "target_thread_id")
        await self._source.run(
            lambda: ops.copy_thread_op(
                self._statements, S.LOCK_CLASS_FAMILY, self.tenant_id, src, dst
            ),
            transaction=True,
        )
        self._families.discard(dst)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their writes) created by the given runs."""
        if isinstance(run_ids, str):
            raise TypeError("run_ids must be a sequence of run IDs, not a str")
        runs = [text_id(r, "run_id") for r in run_ids]
        if not runs:
            return
        await self._source.run(
            lambda: ops.delete_for_runs_op(
                self._statements, S.LOCK_CLASS_FAMILY, self.tenant_id, runs
            ),
            transaction=True,
        )
        self._forget_threads([])

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Prune threads (see :meth:`PostgresCheckpointer.prune`)."""
        threads = self._prune_args(thread_ids, strategy)
        if not threads:
            return
        if strategy == "delete":
            await self.adelete_threads(threads)
            return
        for th in threads:
            await self._source.run(
                lambda th=th: ops.prune_keep_latest_op(  # type: ignore[misc]
                    self._statements, S.LOCK_CLASS_FAMILY, self.tenant_id, th
                ),
                transaction=True,
            )
        self._forget_threads(threads)

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        """Writes and seed of ``DeltaChannel`` channels along the parent chain, in one query."""
        if not channels:
            return {}
        thread_id, ns, cid = self._target(config)
        rows, raw = await self._source.run(
            lambda: ops.delta_history_op(
                self._statements, self.tenant_id, thread_id, ns, cid, channels
            ),
            read=True,
            route="fresh",
        )
        return self._delta_history(rows, list(channels), raw)

    async def aget_thread(self, thread_id: str) -> ThreadInfo | None:
        """Registry entry of a thread (no checkpoint is read), or ``None``."""
        th = text_id(thread_id, "thread_id")
        row = await self._source.run(
            lambda: ops.get_thread_op(self._statements, self.tenant_id, th),
            read=True,
            route="fresh",
        )
        return thread_info(row) if row is not None else None

    async def alist_threads(
        self,
        filter: dict[str, Any] | None = None,
        *,
        limit: int | None = 100,
        cursor: str | None = None,
    ) -> ThreadPage:
        """Threads most recently updated first (see :meth:`PostgresCheckpointer.list_threads`)."""
        limit = None if limit is None else check_count("limit", limit)
        after = decode_cursor(cursor) if cursor else None
        rows = await self._source.run(
            lambda: ops.list_threads_op(
                self._statements,
                self.tenant_id,
                filter=json_filter(filter, "filter"),
                limit=limit,
                after=after,
            ),
            read=True,
            route="replica",
        )
        return thread_page(rows, limit)

    # -- time travel ----------------------------------------------------------------------

    async def atag(self, config: RunnableConfig, *tags: str) -> None:
        """Tag the checkpoint ``config`` names (see :meth:`PostgresCheckpointer.tag`)."""
        th, ns, cid = self._checkpoint_of(config, "tag")
        names = self._tags(tags)
        found, _ = await self._source.run(
            lambda: ops.tag_op(self._statements, self.tenant_id, th, ns, cid, names, remove=False)
        )
        if not found:
            raise NotFoundError(f"checkpoint {cid} not found in thread {th!r}")

    async def auntag(self, config: RunnableConfig, *tags: str) -> None:
        """Remove tags from the checkpoint ``config`` names."""
        th, ns, cid = self._checkpoint_of(config, "untag")
        names = self._tags(tags)
        found, _ = await self._source.run(
            lambda: ops.tag_op(self._statements, self.tenant_id, th, ns, cid, names, remove=True)
        )
        if not found:
            raise NotFoundError(f"checkpoint {cid} not found in thread {th!r}")

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
        th = text_id(thread_id, "thread_id")
        args = self._find_args(tags, metadata, before, after, state_matching, limit)
        rows = await self._source.run(
            lambda: ops.find_op(self._statements, self.tenant_id, th, checkpoint_ns, **args),
            read=True,
            route="replica",
        )
        return self._summaries(th, rows)

    async def acreate_branch(
        self,
        config: RunnableConfig,
        name: str,
        *,
        thread_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> RunnableConfig:
        """Branch a thread at a checkpoint (see :meth:`PostgresCheckpointer.create_branch`)."""
        th, cid, dst = self._branch_args(config, name, thread_id)
        if cid is None:
            latest = await self.aget_tuple({"configurable": {"thread_id": th, "checkpoint_ns": ""}})
            if latest is None:
                raise NotFoundError(f"thread {th!r} has no checkpoint to branch from")
            cid = str(latest.config["configurable"]["checkpoint_id"])
        point = cid
        try:
            await self._source.run(
                lambda: ops.create_branch_op(
                    self._statements,
                    S.LOCK_CLASS_FAMILY,
                    self.tenant_id,
                    th,
                    point,
                    name,
                    dst,
                    metadata_json(metadata or {}),
                ),
                transaction=True,
            )
        except ops.BranchError as exc:
            raise self._branch_error(exc.reason, th, point, name, dst) from None
        except psycopg.errors.UniqueViolation:
            raise self._branch_error("name", th, point, name, dst) from None
        # The branch's thread, not the branch point: LangGraph forks from a config's
        # checkpoint_id at every invoke, where the thread continues from its head.
        return {"configurable": {"thread_id": dst, "checkpoint_ns": ""}}

    async def alist_branches(self, thread_id: str) -> builtins.list[BranchInfo]:
        """The named branches made from a thread, oldest first."""
        th = text_id(thread_id, "thread_id")
        rows = await self._source.run(
            lambda: ops.list_branches_op(self._statements, self.tenant_id, th),
            read=True,
            route="replica",
        )
        return self._branches(th, rows)

    async def adiff(
        self,
        config_a: RunnableConfig,
        config_b: RunnableConfig,
        *,
        include_internal: bool = False,
    ) -> CheckpointDiff:
        """Per-channel differences between two checkpoints (see :meth:`PostgresCheckpointer.diff`)."""
        tuples = []
        for config in (config_a, config_b):
            target, th, cid = self._checkpoint_or_latest(config, "diff")
            tup = await self.aget_tuple(target)
            if tup is None:
                raise self._not_found(th, cid)
            tuples.append(tup)
        return diff_tuples(tuples[0], tuples[1], include_internal=include_internal)

    async def arestore(self, config: RunnableConfig) -> RunnableConfig:
        """Make a checkpoint the head of its thread again (see :meth:`PostgresCheckpointer.restore`)."""
        th, ns, cid = self._checkpoint_of(config, "restore")
        source = await self.aget_tuple(config)
        if source is None:
            raise NotFoundError(f"checkpoint {cid} not found in thread {th!r}")
        new_id, body, meta = self._restore_args(source)
        done = await self._source.run(
            lambda: ops.restore_op(
                self._statements,
                S.LOCK_CLASS_FAMILY,
                self.tenant_id,
                th,
                ns,
                cid,
                new_id,
                body,
                meta,
            )
        )
        if not done:
            raise NotFoundError(f"checkpoint {cid} not found in thread {th!r}")
        return {"configurable": {"thread_id": th, "checkpoint_ns": ns, "checkpoint_id": new_id}}

    async def aapply_retention(
        self,
        policy: RetentionPolicy,
        *,
        dry_run: bool = False,
        thread_ids: Sequence[str] | None = None,
    ) -> RetentionReport:
        """Remove what ``policy`` does not keep (see :meth:`PostgresCheckpointer.apply_retention`)."""
        now = datetime.now(UTC)
        report = RetentionReport(dry_run=dry_run)
        threads = await self._source.run(
            lambda: ops.retention_threads_op(
                self._statements, self.tenant_id, policy, thread_ids, now
            ),
            read=True,
        )
        for th, family, expired in threads:
            await self._source.run(
                lambda th=th, family=family, expired=expired: ops.retain_thread_op(  # type: ignore[misc]
                    self._statements,
                    S.LOCK_CLASS_FAMILY,
                    self.tenant_id,
                    th,
                    family,
                    expired,
                    policy,
                    now,
                    report,
                ),
                transaction=True,
                rollback=dry_run,
            )
        if not dry_run:
            self._forget_threads([t[0] for t in threads])
        return report

    # -- sync API (from other threads only) --------------------------------------------------

    def _sync(self, coro: Coroutine[Any, Any, T], hint: str) -> T:
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            coro.close()
            raise asyncio.InvalidStateError(
                "Synchronous calls to AsyncPostgresCheckpointer are only allowed from a "
                "different thread. From the main thread, use the async interface, "
                f"for example `await checkpointer.{hint}(...)`."
            )
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._sync(self.aget_tuple(config), "aget_tuple")

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        async def collect() -> list[CheckpointTuple]:
            return [t async for t in self.alist(config, filter=filter, before=before, limit=limit)]

        yield from self._sync(collect(), "alist")

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self._sync(self.aput(config, checkpoint, metadata, new_versions), "aput")

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self._sync(self.aput_writes(config, writes, task_id, task_path), "aput_writes")

    def delete_thread(self, thread_id: str) -> None:
        self._sync(self.adelete_thread(thread_id), "adelete_thread")

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._sync(self.acopy_thread(source_thread_id, target_thread_id), "acopy_thread")

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self._sync(self.adelete_for_runs(run_ids), "adelete_for_runs")

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self._sync(self.aprune(thread_ids, strategy=strategy), "aprune")

    def get_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        return self._sync(
            self.aget_delta_channel_history(config=config, channels=channels),
            "aget_delta_channel_history",
        )
