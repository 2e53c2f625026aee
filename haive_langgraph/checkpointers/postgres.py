"""``PostgresCheckpointer``: the synchronous LangGraph checkpointer.

Every method runs a call built in ``_calls``, ``_threads``, ``_retention`` or
``_timetravel_ops``: the logic is there, written once for both classes.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
)
from psycopg import Connection
from psycopg_pool import ConnectionPool

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
from haive_langgraph.checkpointers._twins import in_thread, iter_in_thread
from haive_langgraph.db._call import run_calls
from haive_langgraph.db._conn_string import FromConnString
from haive_langgraph.db._connections import ConnectionSource
from haive_langgraph.db._source_hook import ConnectionSourceHook


class PostgresCheckpointer(
    CheckpointerBase[Connection[Any] | ConnectionPool[Any]],
    FromConnString,
    ConnectionSourceHook[ConnectionSource],
):
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

    def _open_source(
        self,
        conn: str | Connection[Any] | ConnectionPool[Any] | None,
        replicas: Sequence[str] | None,
    ) -> None:
        self._source = ConnectionSource(
            conn, config=self.config, replicas=replicas, scope=self._scope()
        )

    def close(self) -> None:
        """Close the pool this instance opened (a lent connection or pool stays open)."""
        self._source.close()

    def setup(self) -> None:
        """Create or upgrade the tables (idempotent; safe from many processes at once)."""
        self._source.call(calls.setup(self))

    # -- BaseCheckpointSaver --------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint ``config`` names, or the thread's latest one; ``None`` if absent."""
        return self._source.call(calls.get_tuple(self, config))

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
        yield from self._source.call(calls.list_checkpoints(self, config, filter, before, limit))

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store a checkpoint (one statement, one round trip)."""
        return run_calls(self._source, calls.put(self, config, checkpoint, metadata, new_versions))

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store a task's pending writes for the checkpoint ``config`` names."""
        run_calls(self._source, calls.put_writes(self, config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        """Delete a thread's checkpoints and writes, and values no other thread shares."""
        self.delete_threads([thread_id])

    def delete_threads(self, thread_ids: Sequence[str]) -> DeleteReport:
        """Delete several threads in one transaction; returns what was removed."""
        return run_calls(self._source, threads.delete_threads(self, thread_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint and write of a thread to a new thread.

        Stored values are shared, not copied: a copy costs a row per
        checkpoint and write. The target must not have checkpoints yet.
        """
        run_calls(self._source, threads.copy_thread(self, source_thread_id, target_thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their writes) created by the given runs."""
        run_calls(self._source, threads.delete_for_runs(self, run_ids))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Prune threads: ``"keep_latest"`` keeps each namespace's latest checkpoint
        (with its pending writes, and the ancestors a ``DeltaChannel`` needs to
        rebuild it); ``"delete"`` removes the threads entirely.

        Each thread is pruned in its own transaction, under its family's lock:
        writers of that thread wait meanwhile, and values still used by a kept
        checkpoint, a copy or a branch are kept.
        """
        run_calls(self._source, threads.prune(self, thread_ids, strategy))

    def get_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        """Writes and seed of ``DeltaChannel`` channels along the parent chain, in one query."""
        return run_calls(self._source, calls.delta_channel_history(self, config, channels))

    # -- thread registry --------------------------------------------------------------

    def get_thread(self, thread_id: str) -> ThreadInfo | None:
        """Registry entry of a thread (no checkpoint is read), or ``None``."""
        return self._source.call(threads.get_thread(self, thread_id))

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
        return self._source.call(threads.list_threads(self, filter, limit, cursor))

    # -- time travel ----------------------------------------------------------------------

    def tag(self, config: RunnableConfig, *tags: str) -> None:
        """Tag the checkpoint ``config`` names (a branch may tag inherited checkpoints).

        Raises:
            NotFoundError: The checkpoint does not exist in that thread.
        """
        run_calls(self._source, tt.tag(self, config, tags, remove=False))

    def untag(self, config: RunnableConfig, *tags: str) -> None:
        """Remove tags from the checkpoint ``config`` names."""
        run_calls(self._source, tt.tag(self, config, tags, remove=True))

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
        return self._source.call(
            tt.find_checkpoints(
                self, thread_id, checkpoint_ns, tags, metadata, before, after, state_matching, limit
            )
        )

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
        return run_calls(self._source, tt.create_branch(self, config, name, thread_id, metadata))

    def list_branches(self, thread_id: str) -> builtins.list[BranchInfo]:
        """The named branches made from a thread, oldest first."""
        return self._source.call(tt.list_branches(self, thread_id))

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
        return run_calls(self._source, tt.diff(self, config_a, config_b, include_internal))

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
        return run_calls(self._source, tt.restore(self, config))

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
        return run_calls(self._source, apply_retention(self, policy, dry_run, thread_ids))

    # -- async API (runs the sync API in a worker thread) ---------------------------------

    aget_tuple = in_thread(get_tuple)
    alist = iter_in_thread(list)
    aput = in_thread(put)
    aput_writes = in_thread(put_writes)
    adelete_thread = in_thread(delete_thread)
    acopy_thread = in_thread(copy_thread)
    adelete_for_runs = in_thread(delete_for_runs)
    aprune = in_thread(prune)
    aget_delta_channel_history = in_thread(get_delta_channel_history)
