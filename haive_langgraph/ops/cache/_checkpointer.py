"""The checkpointer wrapper: ``get_tuple`` cached, writes invalidate."""

from __future__ import annotations

import builtins
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)

from haive_langgraph.checkpointers._forwarding import ForwardingCheckpointer
from haive_langgraph.codec import Codec, Kind, RowContext
from haive_langgraph.errors import HaiveError
from haive_langgraph.ops.cache._format import _NONE, _seal, _unseal
from haive_langgraph.ops.cache._memory import log
from haive_langgraph.ops.cache._origin import _Keyed

if TYPE_CHECKING:
    from haive_langgraph.ops.cache._layer import CacheLayer


# Methods of our checkpointers that only read (passed through as they are).
_READ_ONLY = frozenset(
    {
        "get_thread",
        "aget_thread",
        "list_threads",
        "alist_threads",
        "find_checkpoints",
        "afind_checkpoints",
        "list_branches",
        "alist_branches",
        "diff",
        "adiff",
        "close",
        "aclose",
        "schema",
        "tenant_id",
        "config",
        "codec",
        "encrypt_metadata",
    }
)


def _copy_config(config: RunnableConfig | None) -> Any:
    if config is None:
        return None
    out: dict[str, Any] = dict(config)
    if "configurable" in out:
        out["configurable"] = dict(out["configurable"])
    return out


def _copy_checkpoint(checkpoint: Checkpoint) -> Checkpoint:
    """New dicts (values shared), with exactly the keys of the original."""
    out: dict[str, Any] = dict(checkpoint)
    for key in ("channel_values", "channel_versions"):
        if key in out:
            out[key] = dict(out[key])
    if "versions_seen" in out:
        out["versions_seen"] = {k: dict(v) for k, v in out["versions_seen"].items()}
    if isinstance(out.get("pending_sends"), list):
        out["pending_sends"] = list(out["pending_sends"])
    return out  # type: ignore[return-value]


def _copy_tuple(tup: CheckpointTuple | None) -> CheckpointTuple | None:
    if tup is None:
        return None
    return CheckpointTuple(
        config=_copy_config(tup.config),
        checkpoint=_copy_checkpoint(tup.checkpoint),
        metadata=dict(tup.metadata),  # type: ignore[arg-type]
        parent_config=_copy_config(tup.parent_config),
        pending_writes=list(tup.pending_writes) if tup.pending_writes is not None else None,
    )


class _TupleFormat:
    """Checkpoint tuples of one thread in Redis: serde, then the codec (bound to the thread)."""

    __slots__ = ("ctx", "saver")

    def __init__(self, saver: CachedCheckpointer, thread_id: str) -> None:
        self.saver = saver
        self.ctx = RowContext(saver._tenant, thread_id, Kind.BLOB, f"cache:{saver._prefix}")

    copy = staticmethod(_copy_tuple)

    def dumps(self, tup: CheckpointTuple | None) -> bytes:
        if tup is None:
            return _NONE
        kind, payload = self.saver.serde.dumps_typed(
            [
                tup.config,
                tup.checkpoint,
                tup.metadata,
                tup.parent_config,
                [list(w) for w in tup.pending_writes or ()],
                tup.pending_writes is None,
            ]
        )
        return _seal(self.saver._codec, kind, payload, self.ctx)

    def loads(self, data: bytes) -> CheckpointTuple | None:
        if data == _NONE:
            return None
        config, checkpoint, metadata, parent, writes, no_writes = self.saver.serde.loads_typed(
            _unseal(self.saver._codec, data, self.ctx)
        )
        return CheckpointTuple(
            config=config,
            checkpoint=checkpoint,
            metadata=metadata,
            parent_config=parent,
            pending_writes=None if no_writes else [tuple(w) for w in writes],  # type: ignore[misc]
        )


class CachedCheckpointer(_Keyed, ForwardingCheckpointer):
    """A checkpointer whose ``get_tuple`` is cached (see the module docstring).

    Build it with :meth:`CacheLayer.wrap`. Everything else is the wrapped
    checkpointer's: reads pass through, writes pass through and invalidate.
    Entries are keyed by the database (its system identifier, oid and
    name), schema, tenant and thread, so one layer can front checkpointers
    on several databases.

    Args:
        inner: The checkpointer (``PostgresCheckpointer`` or
            ``AsyncPostgresCheckpointer``; with an ``InMemoryCache``-only
            layer, any LangGraph checkpointer).
        layer: The cache levels.
        refresh_on_put: Read the new latest checkpoint into the cache after
            each ``put`` (write-through), so the next read is a hit.
        codec: Frames (and encrypts) values stored in Redis; default: the
            checkpointer's codec, else :func:`default_codec`.
    """

    _KIND = "cp"
    _PASSTHROUGH = _READ_ONLY

    def __init__(
        self,
        inner: BaseCheckpointSaver[Any],
        layer: CacheLayer,
        *,
        refresh_on_put: bool = True,
        codec: Codec | None = None,
    ) -> None:
        super().__init__(serde=inner.serde)
        self.inner = inner
        self.layer = layer
        self.refresh_on_put = refresh_on_put
        self._bind(inner, layer, codec)

    # -- plumbing -----------------------------------------------------------------------

    @property
    def config_specs(self) -> builtins.list[Any]:
        return list(self.inner.config_specs)

    def get_next_version(self, current: Any, channel: Any) -> Any:
        return self.inner.get_next_version(current, channel)

    def _target(self, config: RunnableConfig | None) -> BaseCheckpointSaver[Any]:
        return self.inner

    def setup(self) -> Any:
        """The checkpointer's tables, and the cache's versions table beside them (a
        coroutine when the checkpointer's ``setup`` is one)."""
        return self._origin.setup_with(self.inner.setup())  # type: ignore[attr-defined]

    def _group(self, thread_id: Any) -> str:
        self._known()
        return self._prefix + str(thread_id)

    def _keys(self, config: RunnableConfig) -> tuple[str, str]:
        conf = config["configurable"]
        ns = str(conf.get("checkpoint_ns", ""))
        return self._group(conf["thread_id"]), f"{ns}\x00{conf.get('checkpoint_id') or ''}"

    # -- reads --------------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint ``config`` names (or the thread's latest), from the cache if there."""
        try:
            group, sub = self._keys(config)
        except Exception:  # no identity, no cache: the call is the source's
            return self.inner.get_tuple(config)
        thread = str(config["configurable"]["thread_id"])
        return self.layer.read(
            group,
            sub,
            lambda: self.inner.get_tuple(config),
            _TupleFormat(self, thread),
            self._origin,
        )

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        try:
            await self._aknown()
            group, sub = self._keys(config)
        except Exception:
            return await self.inner.aget_tuple(config)
        thread = str(config["configurable"]["thread_id"])
        return await self.layer.aread(
            group,
            sub,
            lambda: self.inner.aget_tuple(config),
            _TupleFormat(self, thread),
            self._origin,
        )

    def with_allowlist(self, extra_allowlist: Collection[tuple[str, ...]]) -> CachedCheckpointer:
        inner = self.inner.with_allowlist(extra_allowlist)
        if inner is self.inner:
            return self
        return CachedCheckpointer(
            inner, self.layer, refresh_on_put=self.refresh_on_put, codec=self._codec
        )

    # -- writes -------------------------------------------------------------------------
    #
    # Every write runs on the source, then (in ``_writing``, even when it failed: it
    # may have happened) gives the threads it touched new versions in
    # PostgreSQL and drops them from every level of every process.

    def _groups(self, thread_ids: Sequence[str] | str | None) -> builtins.list[str] | None:
        if thread_ids is None:
            return None
        ids = [thread_ids] if isinstance(thread_ids, str) else builtins.list(thread_ids)
        try:
            return [self._group(t) for t in ids]
        except Exception:  # no identity: drop everything instead
            log.warning("the database's identity is unknown: the whole cache is dropped")
            return None

    def _written(self, thread_ids: Sequence[str] | str | None) -> dict[str, str]:
        return self.layer.written(self._origin, self._groups(thread_ids))

    async def _awritten(self, thread_ids: Sequence[str] | str | None) -> dict[str, str]:
        try:
            await self._aknown()
        except Exception:  # _groups falls back to everything
            pass
        return await self.layer.awritten(self._origin, self._groups(thread_ids))

    @staticmethod
    def _thread(config: RunnableConfig) -> str:
        return str(config["configurable"]["thread_id"])

    def _latest(self, config: RunnableConfig) -> RunnableConfig:
        conf = config["configurable"]
        return {
            "configurable": {
                "thread_id": conf["thread_id"],
                "checkpoint_ns": conf.get("checkpoint_ns", ""),
            }
        }

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        try:
            return self.inner.put(config, checkpoint, metadata, new_versions)
        finally:
            versions = self._written(self._thread(config))
            if self.refresh_on_put:
                self._refresh(config, versions)

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        try:
            return await self.inner.aput(config, checkpoint, metadata, new_versions)
        finally:
            versions = await self._awritten(self._thread(config))
            if self.refresh_on_put:
                await self._arefresh(config, versions)

    def _load_head(self, config: RunnableConfig, versions: Mapping[str, str]) -> None:
        """Load a thread's latest checkpoint from the source into the levels."""
        head = self._latest(config)
        group, sub = self._keys(head)
        self.layer.read(
            group,
            sub,
            lambda: self.inner.get_tuple(head),
            _TupleFormat(self, self._thread(config)),
            self._origin,
            refresh=True,
            version=versions.get(group),
        )

    async def _aload_head(self, config: RunnableConfig, versions: Mapping[str, str]) -> None:
        head = self._latest(config)
        await self._aknown()
        group, sub = self._keys(head)
        await self.layer.aread(
            group,
            sub,
            lambda: self.inner.aget_tuple(head),
            _TupleFormat(self, self._thread(config)),
            self._origin,
            refresh=True,
            version=versions.get(group),
        )

    def _refresh(self, config: RunnableConfig, versions: Mapping[str, str]) -> None:
        try:
            self._load_head(config, versions)
        except Exception:  # the write succeeded; a failed read-back only costs a miss
            log.debug("read-back after put failed", exc_info=True)

    async def _arefresh(self, config: RunnableConfig, versions: Mapping[str, str]) -> None:
        try:
            await self._aload_head(config, versions)
        except Exception:
            log.debug("read-back after put failed", exc_info=True)

    def delete_threads(self, thread_ids: Sequence[str]) -> Any:
        with self._writing(thread_ids):
            return self.inner.delete_threads(thread_ids)  # type: ignore[attr-defined]

    async def adelete_threads(self, thread_ids: Sequence[str]) -> Any:
        async with self._awriting(thread_ids):
            return await self.inner.adelete_threads(thread_ids)  # type: ignore[attr-defined]

    def tag(self, config: RunnableConfig, *tags: str) -> None:
        with self._writing(self._thread(config)):
            self.inner.tag(config, *tags)  # type: ignore[attr-defined]

    async def atag(self, config: RunnableConfig, *tags: str) -> None:
        async with self._awriting(self._thread(config)):
            await self.inner.atag(config, *tags)  # type: ignore[attr-defined]

    def untag(self, config: RunnableConfig, *tags: str) -> None:
        with self._writing(self._thread(config)):
            self.inner.untag(config, *tags)  # type: ignore[attr-defined]

    async def auntag(self, config: RunnableConfig, *tags: str) -> None:
        async with self._awriting(self._thread(config)):
            await self.inner.auntag(config, *tags)  # type: ignore[attr-defined]

    def create_branch(self, config: RunnableConfig, name: str, **kwargs: Any) -> RunnableConfig:
        out: RunnableConfig = self.inner.create_branch(config, name, **kwargs)  # type: ignore[attr-defined]
        self._written([self._thread(out), self._thread(config)])
        return out

    async def acreate_branch(
        self, config: RunnableConfig, name: str, **kwargs: Any
    ) -> RunnableConfig:
        out: RunnableConfig = await self.inner.acreate_branch(config, name, **kwargs)  # type: ignore[attr-defined]
        await self._awritten([self._thread(out), self._thread(config)])
        return out

    def restore(self, config: RunnableConfig) -> RunnableConfig:
        with self._writing(self._thread(config)):
            out: RunnableConfig = self.inner.restore(config)  # type: ignore[attr-defined]
            return out

    async def arestore(self, config: RunnableConfig) -> RunnableConfig:
        async with self._awriting(self._thread(config)):
            out: RunnableConfig = await self.inner.arestore(config)  # type: ignore[attr-defined]
            return out

    def apply_retention(
        self, policy: Any, *, dry_run: bool = False, thread_ids: Sequence[str] | None = None
    ) -> Any:
        try:
            return self.inner.apply_retention(policy, dry_run=dry_run, thread_ids=thread_ids)  # type: ignore[attr-defined]
        finally:
            if not dry_run:
                self._written(thread_ids)

    async def aapply_retention(
        self, policy: Any, *, dry_run: bool = False, thread_ids: Sequence[str] | None = None
    ) -> Any:
        try:
            return await self.inner.aapply_retention(  # type: ignore[attr-defined]
                policy, dry_run=dry_run, thread_ids=thread_ids
            )
        finally:
            if not dry_run:
                await self._awritten(thread_ids)

    # -- warm-up ------------------------------------------------------------------------

    def warm(self, thread_ids: Sequence[str] | None = None, *, recent: int = 100) -> int:
        """Load threads' latest checkpoints from the source into the cache.

        What is cached for them is replaced (not served), in every process,
        and they get new versions in PostgreSQL (so that no entry read
        before can be served again): warm-up after a deployment or after
        writes made outside the cache. Returns how many threads were loaded.

        Args:
            thread_ids: These threads; default: the ``recent`` most recently
                updated threads (needs a checkpointer with ``list_threads``).
            recent: How many recent threads to warm.
        """
        ids = list(thread_ids) if thread_ids is not None else self._recent(recent)
        # New versions first: an entry of the old value put back into Redis is a miss.
        versions = self._written(ids) if ids else {}
        for thread_id in ids:
            self._load_head(
                {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}, versions
            )
        return len(ids)

    async def awarm(self, thread_ids: Sequence[str] | None = None, *, recent: int = 100) -> int:
        if thread_ids is not None:
            ids = list(thread_ids)
        else:
            lister = getattr(self.inner, "alist_threads", None)
            if lister is None:
                raise HaiveError("this checkpointer cannot list threads: give thread_ids")
            ids = [t.thread_id for t in await lister(limit=recent)]
        versions = await self._awritten(ids) if ids else {}
        for thread_id in ids:
            await self._aload_head(
                {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}, versions
            )
        return len(ids)

    def _recent(self, limit: int) -> builtins.list[str]:
        lister = getattr(self.inner, "list_threads", None)
        if lister is None:
            raise HaiveError("this checkpointer cannot list threads: give thread_ids")
        return [t.thread_id for t in lister(limit=limit)]
