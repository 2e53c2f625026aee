"""Reading and writing checkpoints as :class:`~haive_langgraph.db.Call` values.

Each function checks its arguments and builds the call (or, for a method that
runs several, :data:`~haive_langgraph.db._call.Calls`) with no I/O;
``PostgresCheckpointer`` runs it with ``source.call(c)`` / ``run_calls``,
``AsyncPostgresCheckpointer`` with their ``await``-ed twins. Threads,
retention and time travel build theirs beside their operations
(``_threads``, ``_retention``, ``_timetravel_ops``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import psycopg
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
    PendingWrite,
)

from haive_langgraph.checkpointers import _ops as ops
from haive_langgraph.checkpointers import _sql as S
from haive_langgraph.checkpointers._args import list_args, put_thread, target, text_id
from haive_langgraph.checkpointers._ops import RawLineages
from haive_langgraph.checkpointers._values import EMPTY_LINEAGE, PutPlan, StoredRefs
from haive_langgraph.db._call import Call, Calls
from haive_langgraph.db._driver import Op
from haive_langgraph.db._migrations import migrate_op
from haive_langgraph.errors import ConcurrentUpdateError, CorruptDataError

if TYPE_CHECKING:
    from haive_langgraph.checkpointers._base import Saver


def setup(saver: Saver) -> Call[Any]:
    """``setup``: create or upgrade the tables, in one transaction."""
    return Call(lambda: migrate_op([S.COMPONENT], saver.schema), transaction=True)


def get_tuple(saver: Saver, config: RunnableConfig) -> Call[CheckpointTuple | None]:
    """``get_tuple``: from a replica only once it has replayed this saver's writes."""
    thread_id, ns, cid = target(config)
    return Call(lambda: saver._get_tuple_op(thread_id, ns, cid), read=True, route="fresh")


def list_checkpoints(
    saver: Saver,
    config: RunnableConfig | None,
    filter: dict[str, Any] | None,
    before: RunnableConfig | None,
    limit: int | None,
) -> Call[Iterator[CheckpointTuple]]:
    """``list``: the rows are read by the call, decoded as the caller iterates."""
    args = list_args(config, filter, before, limit)

    def op() -> Op[Iterator[CheckpointTuple]]:
        rows, raw = yield from ops.list_op(saver._statements, saver.tenant_id, **args)
        return saver._load_rows(rows, raw)

    return Call(op, read=True, route="replica")


def put(
    saver: Saver,
    config: RunnableConfig,
    checkpoint: Checkpoint,
    metadata: CheckpointMetadata,
    new_versions: ChannelVersions,
) -> Calls[RunnableConfig]:
    """``put``: plan (no I/O), write in one statement; when rows the plan relied on
    changed under it, read the family and parent again, re-plan and write once more."""
    thread_id = put_thread(config, metadata)
    parent = saver._parent_refs(config)
    if parent is None and saver._needs_parent(config, checkpoint, new_versions):
        parent = yield from _parent(saver, config)
    for attempt in range(2):
        plan = saver._plan_put(
            config,
            checkpoint,
            metadata,
            new_versions,
            parent,
            saver._family_of(thread_id),
            fresh_lists=attempt > 0,
        )
        try:
            yield from _write(saver, plan)
        except psycopg.Error as exc:
            if not saver._is_conflict(exc):
                raise
            if attempt:
                raise ConcurrentUpdateError(
                    f"could not store checkpoint {checkpoint['id']} of thread {thread_id!r}: "
                    f"its stored values kept changing under it ({exc.diag.message_primary})"
                ) from exc
            # Re-plan against what is stored now.
            family = yield Call(
                lambda: ops.family_op(saver._statements, saver.tenant_id, thread_id), read=True
            )
            saver._families.put(thread_id, family or thread_id)
            parent = yield from _parent(saver, config)
            continue
        return saver._stored(config, checkpoint, plan)
    raise AssertionError("unreachable")  # pragma: no cover


def _write(saver: Saver, plan: PutPlan) -> Calls[None]:
    """The checkpoint's statement; again in the partitioned form if the table asks for it."""
    try:
        yield Call(lambda: ops.put_op(saver._statements, plan.params))
    except psycopg.errors.FeatureNotSupported as exc:
        if not saver._statements.learn_partitioned(exc):
            raise
        yield Call(lambda: ops.put_op(saver._statements, plan.params))


def _parent(saver: Saver, config: RunnableConfig) -> Calls[StoredRefs | None]:
    """The stored references of the checkpoint ``config`` names (read, not handed out)."""
    conf = config["configurable"]
    if not conf.get("checkpoint_id"):
        return None
    thread_id, ns = text_id(conf["thread_id"], "thread_id"), str(conf.get("checkpoint_ns", ""))
    cid = str(conf["checkpoint_id"])
    row = yield Call(
        lambda: ops.get_op(saver._statements, saver.tenant_id, thread_id, ns, cid), read=True
    )
    if row is None:
        return None
    saver._load_row(row, hand_out=False)
    return saver._refs.get((thread_id, ns, cid))


def put_writes(
    saver: Saver,
    config: RunnableConfig,
    writes: Sequence[tuple[str, Any]],
    task_id: str,
    task_path: str,
) -> Calls[None]:
    """``put_writes`` (no call for no writes)."""
    if not writes:
        return
    params, replace = saver._plan_writes(config, writes, task_id, task_path)
    yield Call(lambda: ops.put_writes_op(saver._statements, params, replace))


def delta_channel_history(
    saver: Saver, config: RunnableConfig, channels: Sequence[str]
) -> Calls[Mapping[str, DeltaChannelHistory]]:
    """``get_delta_channel_history``: the parent chain in one query (no call for no channels)."""
    if not channels:
        return {}
    thread_id, ns, cid = target(config)
    rows, raw = yield Call(
        lambda: ops.delta_history_op(
            saver._statements, saver.tenant_id, thread_id, ns, cid, channels
        ),
        read=True,
        route="fresh",
    )
    return delta_history(saver, rows, list(channels), raw)


def delta_history(
    saver: Saver,
    rows: list[tuple[Any, ...]],
    channels: Sequence[str],
    raw: RawLineages | None,
) -> dict[str, DeltaChannelHistory]:
    """Assemble ``get_delta_channel_history`` from the chain rows (oldest first)."""
    decoder = saver._decoder(share=True)
    writes: dict[str, list[PendingWrite]] = {ch: [] for ch in channels}
    seeds: dict[str, Any] = {}
    for (
        _depth,
        need,
        family,
        inline,
        v_channels,
        v_keys,
        v_data,
        l_channels,
        l_lineages,
        l_lengths,
        w_task_ids,
        w_channels,
        w_is_lists,
        w_counts,
        w_keys,
        w_data,
    ) in rows:
        need_set = set(need or ())
        where = f"delta history of channel(s) {sorted(need_set)}"
        # Seeds: the nearest stored value wins, and rows come oldest first.
        for ch, val in (inline or {}).items():
            if ch in need_set:
                seeds[ch] = val
        for ch, key, data in zip(v_channels or [], v_keys or [], v_data or [], strict=True):
            seeds[ch] = decoder.value(family, bytes(key), data, f"{where}: seed of {ch!r}")
        for ch, lineage, length in zip(
            l_channels or [], l_lineages or [], l_lengths or [], strict=True
        ):
            if lineage == EMPTY_LINEAGE:
                seeds[ch] = []
                continue
            assert raw is not None
            keys, datas = raw.get((family, lineage), ([], []))
            if len(keys) < length:
                raise CorruptDataError(f"{where}: list seed of {ch!r} is missing items")
            seeds[ch] = [
                decoder.value(family, k, d, f"{where}: seed of {ch!r}")
                for k, d in zip(keys[:length], datas[:length], strict=True)
            ]
        pos = 0
        keys_w = w_keys or []
        data_w = w_data or []
        for task_id, ch, is_list, count in zip(
            w_task_ids or [], w_channels or [], w_is_lists or [], w_counts or [], strict=True
        ):
            vals = [
                decoder.value(family, bytes(k), d, f"{where}: write of task {task_id}")
                for k, d in zip(keys_w[pos : pos + count], data_w[pos : pos + count], strict=True)
            ]
            pos += count
            writes[ch].append((task_id, ch, vals if is_list else vals[0]))
    result: dict[str, DeltaChannelHistory] = {}
    for ch in channels:
        entry: DeltaChannelHistory = {"writes": writes[ch]}
        if ch in seeds:
            entry["seed"] = seeds[ch]
        result[ch] = entry
    return result
