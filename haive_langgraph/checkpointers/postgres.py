"""``PostgresCheckpointer``: the synchronous LangGraph checkpointer."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

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
from psycopg import Connection
from psycopg_pool import ConnectionPool

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
from haive_langgraph.checkpointers._values import PutPlan, metadata_json
from haive_langgraph.codec import Codec, KeyRing
from haive_langgraph.db import ConnectionSource, PersistenceConfig, migrate_op
from haive_langgraph.db._conn_string import FromConnString
from haive_langgraph.db._limits import check_count
from haive_langgraph.errors import ConcurrentUpdateError, NotFoundError


class PostgresCheckpointer(TimeTravelMixin, FromConnString):
    """LangGraph checkpointer on PostgreSQL (sync API; async methods run it in a thread).

    Stores each value once: a conversation's storage grows with its length,
    not with its square, while ``get_tuple`` still reads the latest state in
    one round trip.

    Args:
        conn: A DSN (a pool is opened and owned; SQLAlchemy URLs such as
            ``postgresql+psycopg://`` too), ``None`` (``HAIVE_DATABASE_URL``,
            ``DATABASE_URL``, then the embedded server), a psycopg
            ``Connection`` (autocommit, any row factory; used one operation
            at a time) or a ``ConnectionPool`` (borrowed per operation; no
            instance-wide lock). See ``docs/architecture.md#connections``.
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
        cache_size: Checkpoints whose stored references are remembered, so
            the next checkpoint of a thread writes only what changed.
        replicas: DSNs of streaming read replicas (default:
            ``HAIVE_REPLICA_URLS``). History, search and thread listing read
            from them (they may lag by up to ``max_replica_lag``);
            ``get_tuple`` reads from one only once it has replayed this
            instance's writes, else from the primary. See ``docs/scaling.md``.
        strict_serialisation: Serialise every list item at every ``put``.
            By default an item this instance serialised or returned before is
            taken as unchanged while everything reachable from it (through
            dicts, lists, tuples and attributes) is the same objects; an
            in-place edit of a type the guard cannot see into (see
            ``docs/architecture.md#unchanged-values``) needs this on (also
            ``HAIVE_STRICT_SERIALISATION=1``).

    Example:
        >>> with PostgresCheckpointer.from_conn_string() as saver:  # embedded server
        ...     saver.setup()
        ...     graph = builder.compile(checkpointer=saver)
    """

    def __init__(
        self,
        conn: str | Connection[Any] | ConnectionPool[Any] | None = None,
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
        self._source = ConnectionSource(
            conn, config=self.config, replicas=replicas, scope=self._scope()
        )

    def close(self) -> None:
        """Close the pool this instance opened (a lent connection or pool stays open)."""
        self._source.close()

    def setup(self) -> None:
        """Create or upgrade the tables (idempotent; safe from many processes at once)."""
        self._source.run(lambda: migrate_op([S.COMPONENT], self.schema), transaction=True)

    # -- BaseCheckpointSaver --------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint ``config`` names, or the thread's latest one; ``None`` if absent."""
        thread_id, ns, cid = self._target(config)
        return self._source.run(
            lambda: self._get_tuple_op(thread_id, ns, cid), read=True, route="fresh"
        )

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first, by thread/namespace, metadata ``filter``, ``before``, ``limit``.

        Values are shared between the returned checkpoints (a message held by
        200 checkpoints is decoded once): treat them as read-only.
        """
        args = self._list_args(config, filter, before, limit)
        rows, raw = self._source.run(
            lambda: ops.list_op(self._statements, self.tenant_id, **args),
            read=True,
            route="replica",
        )
        yield from self._load_rows(rows, raw)

    def put(
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
            parent = self._fetch_parent(config)
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
                self._write_checkpoint(plan)
            except psycopg.Error as exc:
                if not self._is_conflict(exc):
                    raise
                if attempt:
                    raise ConcurrentUpdateError(
                        f"could not store checkpoint {checkpoint['id']} of thread {thread_id!r}: "
                        f"its stored values kept changing under it ({exc.diag.message_primary})"
                    ) from exc
                # Replan against what is stored now.
                family = self._source.run(
                    lambda: ops.family_op(self._statements, self.tenant_id, thread_id), read=True
                )
                self._families.put(thread_id, family or thread_id)
                parent = self._fetch_parent(config)
                continue
            return self._stored(config, checkpoint, plan)
        raise AssertionError("unreachable")  # pragma: no cover

    def _write_checkpoint(self, plan: PutPlan) -> None:
        try:
            self._source.run(lambda: ops.put_op(self._statements, plan.params))
        except psycopg.errors.FeatureNotSupported as exc:
            if not self._statements.learn_partitioned(exc):
                raise
            self._source.run(lambda: ops.put_op(self._statements, plan.params))

    def _fetch_parent(self, config: RunnableConfig) -> Any:
        conf = config["configurable"]
        if not conf.get("checkpoint_id"):
            return None
        thread_id, ns = text_id(conf["thread_id"], "thread_id"), str(conf.get("checkpoint_ns", ""))
        cid = str(conf["checkpoint_id"])
        row = self._source.run(
            lambda: ops.get_op(self._statements, self.tenant_id, thread_id, ns, cid), read=True
        )
        if row is None:
            return None
        self._load_row(row, hand_out=False)
        return self._refs.get((thread_id, ns, cid))

    def put_writes(
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
        self._source.run(lambda: ops.put_writes_op(self._statements, params, replace))

    def delete_thread(self, thread_id: str) -> None:
        """Delete a thread's checkpoints and writes, and values no other thread shares."""
        self.delete_threads([thread_id])

    def delete_threads(self, thread_ids: Sequence[str]) -> ops.DeleteReport:
        """Delete several threads in one transaction; returns what was removed."""
        threads = self._prune_args(thread_ids, "delete")
        report = self._source.run(
            lambda: ops.delete_threads_op(
                self._statements, S.LOCK_CLASS_FAMILY, self.tenant_id, threads
            ),
            transaction=True,
        )
        self._forget_threads(threads)
        return report

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint and write of a thread to a new thread.

        Stored values are shared, not copied: a copy costs a row per
        checkpoint and write. The target must not have checkpoints yet.
        """
        src = text_id(source_thread_id, "source_thread_id")
        dst = text_id(target_thread_id, "target_thread_id")
        self._source.run(
            lambda: ops.copy_thread_op(
                self._statements, S.LOCK_CLASS_FAMILY, self.tenant_id, src, dst
            ),
            transaction=True,
        )
        self._families.discard(dst)

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their writes) created by the given runs."""
        if isinstance(run_ids, str):
            raise TypeError("run_ids must be a sequence of run IDs, not a str")
        runs = [text_id(r, "run_id") for r in run_ids]
        if not runs:
            return
        self._source.run(
            lambda: ops.delete_for_runs_op(
                self._statements, S.LOCK_CLASS_FAMILY, self.tenant_id, runs
            ),
            transaction=True,
        )
        self._forget_threads([])

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Prune threads: ``"keep_latest"`` keeps each namespace's latest checkpoint
        (with its pending writes, and the ancestors a ``DeltaChannel`` needs to
        rebuild it); ``"delete"`` removes the threads entirely.

        Each thread is pruned in its own transaction, under its family's lock:
        writers of that thread wait meanwhile, and values still used by a kept
        checkpoint, a copy or a branch are kept.
        """
        threads = self._prune_args(thread_ids, strategy)
        if not threads:
            return
        if strategy == "delete":
            self.delete_threads(threads)
            return
        for th in threads:
            self._source.run(
                lambda th=th: ops.prune_keep_latest_op(  # type: ignore[misc]
                    self._statements, S.LOCK_CLASS_FAMILY, self.tenant_id, th
                ),
                transaction=True,
            )
        self._forget_threads(threads)

    def get_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        """Writes and seed of ``DeltaChannel`` channels along the parent chain, in one query."""
        if not channels:
            return {}
        thread_id, ns, cid = self._target(config)
        rows, raw = self._source.run(
            lambda: ops.delta_history_op(
                self._statements, self.tenant_id, thread_id, ns, cid, channels
            ),
            read=True,
            route="fresh",
        )
        return self._delta_history(rows, list(channels), raw)

    # -- thread registry --------------------------------------------------------------

    def get_thread(self, thread_id: str) -> ThreadInfo | None:
        """Registry entry of a thread (no checkpoint is read), or ``None``."""
        th = text_id(thread_id, "thread_id")
        row = self._source.run(
            lambda: ops.get_thread_op(self._statements, self.tenant_id, th),
            read=True,
            route="fresh",
        )
        return thread_info(row) if row is not None else None

    def list_threads(
        self,
        filter: dict[str, Any] | None = None,
        *,
        limit: int | None = 100,
        cursor: str | None = None,
    ) -> ThreadPage:
        """Threads most recently updated first, optionally by metadata containment.

        Args:
            filter: Metadata the threads must contain, e.g. ``{"user_id": "u1"}``.
            limit: Page size (0: an empty page; ``None``: every thread).
            cursor: ``next_cursor`` of the previous page.
        """
        limit = None if limit is None else check_count("limit", limit)
        after = decode_cursor(cursor) if cursor else None
        rows = self._source.run(
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

    def tag(self, config: RunnableConfig, *tags: str) -> None:
        """Tag the checkpoint ``config`` names (a branch may tag inherited checkpoints).

        Raises:
            NotFoundError: The checkpoint does not exist in that thread.
        """
        th, ns, cid = self._checkpoint_of(config, "tag")
        names = self._tags(tags)
        found, _ = self._source.run(
            lambda: ops.tag_op(self._statements, self.tenant_id, th, ns, cid, names, remove=False)
        )
        if not found:
            raise NotFoundError(f"checkpoint {cid} not found in thread {th!r}")

    def untag(self, config: RunnableConfig, *tags: str) -> None:
        """Remove tags from the checkpoint ``config`` names."""
        th, ns, cid = self._checkpoint_of(config, "untag")
        names = self._tags(tags)
        found, _ = self._source.run(
            lambda: ops.tag_op(self._statements, self.tenant_id, th, ns, cid, names, remove=True)
        )
        if not found:
            raise NotFoundError(f"checkpoint {cid} not found in thread {th!r}")

    def find_checkpoints(
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
        """Checkpoints of a thread matching every condition given, newest first.

        Args:
            thread_id: The thread (a branch includes the history it inherits).
            checkpoint_ns: Namespace (root graph by default).
            tags: Tags every result carries.
            metadata: Metadata every result contains (JSON containment).
            before: A timezone-aware datetime or a checkpoint config.
            after: A timezone-aware datetime or a checkpoint config.
            state_matching: Channel values to match exactly, e.g.
                ``{"status": "completed"}``; matched through the stored
                references and inline values, no value is decoded.
            limit: Most results to return.
        """
        th = text_id(thread_id, "thread_id")
        args = self._find_args(tags, metadata, before, after, state_matching, limit)
        rows = self._source.run(
            lambda: ops.find_op(self._statements, self.tenant_id, th, checkpoint_ns, **args),
            read=True,
            route="replica",
        )
        return self._summaries(th, rows)

    def create_branch(
        self,
        config: RunnableConfig,
        name: str,
        *,
        thread_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> RunnableConfig:
        """Branch a thread at a checkpoint (its latest if ``config`` names none or ``"latest"``).

        The branch is a new thread that shares the source's history up to that
        checkpoint (no value is copied) and continues from it.

        Returns:
            The branch thread's config, ``{"configurable": {"thread_id":
            <branch>, "checkpoint_ns": ""}}`` (no ``checkpoint_id``): every
            invoke with it continues from the branch's head, the branch point
            at first, so the branch's history stays linear. The branch point
            is in :meth:`list_branches`.

        Raises:
            NotFoundError: The checkpoint does not exist.
            ConfigurationError: ``name`` is already a branch of this thread, or
                ``thread_id`` exists.
        """
        th, cid, dst = self._branch_args(config, name, thread_id)
        if cid is None:
            latest = self.get_tuple({"configurable": {"thread_id": th, "checkpoint_ns": ""}})
            if latest is None:
                raise NotFoundError(f"thread {th!r} has no checkpoint to branch from")
            cid = str(latest.config["configurable"]["checkpoint_id"])
        point = cid
        try:
            self._source.run(
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

    def list_branches(self, thread_id: str) -> builtins.list[BranchInfo]:
        """The named branches made from a thread, oldest first."""
        th = text_id(thread_id, "thread_id")
        rows = self._source.run(
            lambda: ops.list_branches_op(self._statements, self.tenant_id, th),
            read=True,
            route="replica",
        )
        return self._branches(th, rows)

    def diff(
        self,
        config_a: RunnableConfig,
        config_b: RunnableConfig,
        *,
        include_internal: bool = False,
    ) -> CheckpointDiff:
        """Per-channel differences between two checkpoints (messages compared by id).

        The checkpoints may be in different threads; the result says so.

        Args:
            config_a: The first checkpoint; a thread's config without
                ``checkpoint_id`` (or with ``"latest"``) means its latest one.
            config_b: The second, likewise.
            include_internal: Also compare LangGraph's bookkeeping channels
                (``__start__``, ``branch:to:<node>``, any ``__``-prefixed one).

        Raises:
            NotFoundError: A checkpoint does not exist, or a thread has none.
        """
        tuples = []
        for config in (config_a, config_b):
            target, th, cid = self._checkpoint_or_latest(config, "diff")
            tup = self.get_tuple(target)
            if tup is None:
                raise self._not_found(th, cid)
            tuples.append(tup)
        return diff_tuples(tuples[0], tuples[1], include_internal=include_internal)

    def restore(self, config: RunnableConfig) -> RunnableConfig:
        """Make the checkpoint ``config`` names the head of its thread again.

        Writes a new checkpoint with its values and references (no value is
        copied); the history before it is kept. Its pending writes are not
        carried over (they record what happened after it), so
        ``graph.invoke(None, thread_config)`` runs the tasks that follow it
        again: an interrupt asks again, a finished step is redone.

        Returns:
            Config of the new head.
        """
        th, ns, cid = self._checkpoint_of(config, "restore")
        source = self.get_tuple(config)
        if source is None:
            raise NotFoundError(f"checkpoint {cid} not found in thread {th!r}")
        new_id, body, meta = self._restore_args(source)
        done = self._source.run(
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

    def apply_retention(
        self,
        policy: RetentionPolicy,
        *,
        dry_run: bool = False,
        thread_ids: Sequence[str] | None = None,
    ) -> RetentionReport:
        """Remove what ``policy`` does not keep, thread by thread.

        Each thread is handled in its own transaction under its family's lock;
        a thread a writer holds is skipped (and listed in the report). Values
        go only when nothing uses them any more (branches and copies share
        them); a branch keeps the history it inherits.

        Args:
            policy: What to keep.
            dry_run: Report what would be removed; change nothing.
            thread_ids: Only these threads (default: every thread of the tenant).
        """
        now = datetime.now(UTC)
        report = RetentionReport(dry_run=dry_run)
        threads = self._source.run(
            lambda: ops.retention_threads_op(
                self._statements, self.tenant_id, policy, thread_ids, now
            ),
            read=True,
        )
        for th, family, expired in threads:
            self._source.run(
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

    # -- async API (runs the sync API in a worker thread) ---------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        tuples = await asyncio.to_thread(
            lambda: list(self.list(config, filter=filter, before=before, limit=limit))
        )
        for tup in tuples:
            yield tup

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await asyncio.to_thread(self.delete_for_runs, run_ids)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await asyncio.to_thread(lambda: self.prune(thread_ids, strategy=strategy))

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        return await asyncio.to_thread(
            lambda: self.get_delta_channel_history(config=config, channels=channels)
        )
