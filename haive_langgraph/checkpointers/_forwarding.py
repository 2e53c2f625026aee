"""A checkpointer that runs each LangGraph call on another checkpointer, chosen per call.

Two of our classes are such wrappers: the cache layer's
``CachedCheckpointer`` (one inner checkpointer; reads cached, writes
invalidate) and the LangGraph server's ``TenantCheckpointer`` (the instance
of the caller's tenant). :class:`ForwardingCheckpointer` passes every call of
LangGraph's interface on, written once; a wrapper names the target
(:meth:`~ForwardingCheckpointer._target`), may be told of each write
(:meth:`~ForwardingCheckpointer._written`), and overrides only the calls it
adds something to.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
)

__all__ = ["ForwardingCheckpointer"]


class ForwardingCheckpointer(BaseCheckpointSaver[Any]):
    """Every call of LangGraph's checkpointer interface, passed to :meth:`_target`.

    ``_target`` gets the call's config, or ``None`` for the calls that carry
    none (thread deletes and copies, run deletes, prunes). The sync methods
    ask :meth:`_sync_target` (by default the same), for a target that must
    be found differently outside its event loop.
    """

    def _target(self, config: RunnableConfig | None) -> BaseCheckpointSaver[Any]:
        """The checkpointer this call runs on."""
        raise NotImplementedError

    def _sync_target(self, config: RunnableConfig | None) -> BaseCheckpointSaver[Any]:
        """The checkpointer a sync call runs on."""
        return self._target(config)

    def _written(self, thread_ids: Sequence[str] | str | None) -> Any:
        """Called after each write, even a failed one (it may have happened), with the
        threads it touched (``None``: not known). Does nothing here."""

    async def _awritten(self, thread_ids: Sequence[str] | str | None) -> Any:
        """:meth:`_written` of the async writes."""

    @contextmanager
    def _writing(self, thread_ids: Sequence[str] | str | None) -> Iterator[None]:
        try:
            yield
        finally:
            self._written(thread_ids)

    @asynccontextmanager
    async def _awriting(self, thread_ids: Sequence[str] | str | None) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await self._awritten(thread_ids)

    # -- reads --------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._sync_target(config).get_tuple(config)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self._target(config).aget_tuple(config)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        target = self._sync_target(config)
        return target.list(config, filter=filter, before=before, limit=limit)

    def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        # The target is chosen now, in the caller's context, not at the first item.
        return self._target(config).alist(config, filter=filter, before=before, limit=limit)

    def get_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        target = self._sync_target(config)
        return target.get_delta_channel_history(config=config, channels=channels)

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        target = self._target(config)
        return await target.aget_delta_channel_history(config=config, channels=channels)

    # -- writes -------------------------------------------------------------------

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        with self._writing(_thread(config)):
            return self._sync_target(config).put(config, checkpoint, metadata, new_versions)

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        async with self._awriting(_thread(config)):
            return await self._target(config).aput(config, checkpoint, metadata, new_versions)

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        with self._writing(_thread(config)):
            self._sync_target(config).put_writes(config, writes, task_id, task_path)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        async with self._awriting(_thread(config)):
            await self._target(config).aput_writes(config, writes, task_id, task_path)

    def delete_thread(self, thread_id: str) -> None:
        with self._writing(str(thread_id)):
            self._sync_target(None).delete_thread(thread_id)

    async def adelete_thread(self, thread_id: str) -> None:
        async with self._awriting(str(thread_id)):
            await self._target(None).adelete_thread(thread_id)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        with self._writing(str(target_thread_id)):
            self._sync_target(None).copy_thread(source_thread_id, target_thread_id)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        async with self._awriting(str(target_thread_id)):
            await self._target(None).acopy_thread(source_thread_id, target_thread_id)

    # The threads the runs wrote to are not known here.

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        with self._writing(None):
            self._sync_target(None).delete_for_runs(list(run_ids))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        async with self._awriting(None):
            await self._target(None).adelete_for_runs(list(run_ids))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        with self._writing(thread_ids):
            self._sync_target(None).prune(thread_ids, strategy=strategy)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        async with self._awriting(thread_ids):
            await self._target(None).aprune(thread_ids, strategy=strategy)


def _thread(config: RunnableConfig) -> str:
    return str(config["configurable"]["thread_id"])
