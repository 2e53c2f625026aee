"""Time travel's sans-I/O operations and calls: tags, search, branches, restore, diff.

The results they build (``CheckpointSummary``, ``BranchInfo``, diffs) are in
``_timetravel``; the arguments are checked in ``_args``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import psycopg
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import Checkpoint, CheckpointTuple
from langgraph.checkpoint.base.id import uuid6
from psycopg.types.json import Jsonb

from haive_langgraph.checkpointers import _sql as S
from haive_langgraph.checkpointers._args import (
    branch_args,
    checkpoint_of,
    checkpoint_or_latest,
    json_filter,
    tag_names,
    text_id,
)
from haive_langgraph.checkpointers._calls import get_tuple
from haive_langgraph.checkpointers._ops import Statements
from haive_langgraph.checkpointers._threads import lock_step
from haive_langgraph.checkpointers._timetravel import (
    BranchInfo,
    CheckpointDiff,
    CheckpointSummary,
    TimeBound,
    diff_tuples,
    time_bound,
)
from haive_langgraph.checkpointers._values import (
    encode_body,
    encrypts,
    is_inline,
    metadata_json,
    payload_of,
    seal_metadata,
)
from haive_langgraph.db._arrays import TextArray
from haive_langgraph.db._call import Call, Calls
from haive_langgraph.db._driver import Op, Step
from haive_langgraph.db._limits import check_count
from haive_langgraph.db._render import render
from haive_langgraph.errors import ConfigurationError, HaiveError, NotFoundError

if TYPE_CHECKING:
    from haive_langgraph.checkpointers._base import Saver

# -- operations ------------------------------------------------------------------


def tag_op(
    st: Statements, t: str, th: str, ns: str, cid: str, tags: Sequence[str], *, remove: bool
) -> Op[tuple[bool, int]]:
    """Tag (or untag) a checkpoint: (checkpoint found, tags changed)."""
    found, changed = yield Step(
        st.untag if remove else st.tag,
        {"t": t, "th": th, "ns": ns, "cid": cid, "tags": TextArray(tags)},
        fetch="one",
    )
    return bool(found), int(changed)


def find_op(
    st: Statements,
    t: str,
    th: str,
    ns: str,
    *,
    tags: Sequence[str],
    metadata: dict[str, Any] | None,
    inline: dict[str, Any],
    keyed: Sequence[tuple[str, bytes]],
    before: str | None,
    after: str | None,
    limit: int | None,
) -> Op[list[tuple[Any, ...]]]:
    """Checkpoints of a thread (and the history it inherits), newest first."""
    params: dict[str, Any] = {"t": t, "th": th, "ns": ns, "tags": TextArray(tags)}
    where = ["true"]
    if metadata:
        where.append("c.metadata @> %(meta)s")
        params["meta"] = Jsonb(metadata)
    if inline:
        where.append("c.inline_values @> %(inline)s")
        params["inline"] = Jsonb(inline)
    for i, (channel, key) in enumerate(keyed):
        params[f"kch{i}"], params[f"kkey{i}"] = channel, key
        where.append(
            f"c.value_keys[array_position(c.value_channels, %(kch{i})s::text)] = %(kkey{i})s"
        )
    for bound, op, name in ((before, "<", "before"), (after, ">", "after")):
        if bound is not None:
            where.append(f"c.checkpoint_id {op} %({name})s")
            params[name] = bound
    query = render(
        S.CHAIN + S.FIND_SELECT,
        st.schema,
        tagged=S.FIND_TAGGED if tags else "",
        where=" AND ".join(where),
        limit="LIMIT %(limit)s" if limit is not None else "",
    )
    params["limit"] = limit
    rows = yield Step(query, params)
    return [tuple(r) for r in rows]


class BranchError(Exception):
    """Raised inside create_branch_op; turned into the public errors by the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def create_branch_op(
    st: Statements,
    lock: int,
    t: str,
    th: str,
    cid: str,
    name: str,
    dst: str,
    meta: dict[str, Any],
) -> Op[None]:
    """Create branch ``name`` of thread ``th`` at ``cid`` as thread ``dst`` (in a transaction)."""
    params = {"t": t, "th": th, "ns": "", "cid": cid, "dst": dst, "name": name}
    owner, family, dst_exists, name_taken = yield Step(st.branch_check, params, fetch="one")
    if owner is None:
        raise BranchError("missing")
    if name_taken:
        raise BranchError("name")
    if dst_exists:
        raise BranchError("thread")
    yield lock_step(st, lock, t, str(family), exclusive=False)
    yield Step(st.create_branch, {**params, "owner": owner, "meta": Jsonb(meta)}, fetch="one")


def list_branches_op(st: Statements, t: str, th: str) -> Op[list[tuple[Any, ...]]]:
    """The branches made from a thread, oldest first."""
    rows = yield Step(st.list_branches, {"t": t, "th": th})
    return [tuple(r) for r in rows]


def restore_op(
    st: Statements,
    lock: int,
    t: str,
    th: str,
    ns: str,
    cid: str,
    new_id: str,
    body: bytes,
    meta: dict[str, Any],
) -> Op[bool]:
    """Write checkpoint ``new_id`` as a copy of ``cid`` at the head; whether ``cid`` exists."""
    inserted, _ = yield Step(
        st.restore,
        {
            "t": t,
            "th": th,
            "ns": ns,
            "cid": cid,
            "new_id": new_id,
            "body": body,
            "meta": Jsonb(meta),
            "lock": lock,
        },
        fetch="one",
    )
    return bool(inserted)


# -- arguments and results ----------------------------------------------------------


def not_found(thread_id: str, checkpoint_id: str | None) -> NotFoundError:
    """The error for a checkpoint (``None``: any checkpoint of the thread) not found."""
    if checkpoint_id is None:
        return NotFoundError(f"thread {thread_id!r} has no checkpoints")
    return NotFoundError(f"checkpoint {checkpoint_id} not found in thread {thread_id!r}")


def state_filters(
    saver: Saver, state_matching: Mapping[str, Any] | None
) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
    """Split ``state_matching`` into inline-JSON and content-key conditions."""
    inline: dict[str, Any] = {}
    keyed: list[tuple[str, bytes]] = []
    for channel, value in (state_matching or {}).items():
        if isinstance(value, list):
            raise ConfigurationError(
                f"state_matching compares single values; channel {channel!r} is given a "
                "list (match lists by their messages with diff or get_tuple instead)"
            )
        if not encrypts(saver.codec) and is_inline(value):
            inline[channel] = value
        else:
            type_tag, data = saver.serde.dumps_typed(value)
            keyed.append(
                (channel, saver.codec.content_key(payload_of(type_tag, data), saver.tenant_id))
            )
    return inline, keyed


def summaries(thread_id: str, rows: list[tuple[Any, ...]]) -> list[CheckpointSummary]:
    """``find_op`` rows as the summaries ``find_checkpoints`` returns."""
    out = []
    for cid, ns, parent, created_at, metadata, tags in rows:
        conf = {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": cid}
        parent_config: RunnableConfig | None = (
            {"configurable": {**conf, "checkpoint_id": parent}} if parent else None
        )
        out.append(
            CheckpointSummary(
                config={"configurable": conf},
                created_at=created_at,
                metadata=dict(metadata or {}),
                tags=list(tags or []),
                parent_config=parent_config,
            )
        )
    return out


def branch_error(reason: str, thread_id: str, cid: str, name: str, dst: str) -> HaiveError:
    """The public error for a :class:`BranchError` reason (or ``"name"``: a taken name)."""
    if reason == "missing":
        return NotFoundError(f"checkpoint {cid} not found in thread {thread_id!r}")
    if reason == "name":
        return ConfigurationError(f"branch name {name!r} is already used in thread {thread_id!r}")
    return ConfigurationError(f"thread {dst!r} already exists; pick another thread_id")


def branches(thread_id: str, rows: list[tuple[Any, ...]]) -> list[BranchInfo]:
    """``list_branches_op`` rows as :class:`BranchInfo` values."""
    return [
        BranchInfo(
            name=str(name),
            thread_id=str(tid),
            branch_point={
                "configurable": {
                    "thread_id": thread_id,
                    "checkpoint_ns": "",
                    "checkpoint_id": point,
                }
            },
            created_at=created,
            updated_at=updated,
            checkpoint_count=int(count),
            metadata=dict(meta or {}),
        )
        for tid, name, point, created, updated, count, meta in rows
    ]


def restore_args(saver: Saver, source: CheckpointTuple) -> tuple[str, bytes, dict[str, Any]]:
    """(new id, body, metadata) of the checkpoint ``restore`` writes from ``source``."""
    conf = source.config["configurable"]
    th, ns, cid = (
        str(conf["thread_id"]),
        str(conf.get("checkpoint_ns", "")),
        conf["checkpoint_id"],
    )
    # The new checkpoint takes the source row's family (get_tuple just cached it).
    refs = saver._refs.get((th, ns, cid))
    family = refs.family if refs is not None else saver._family_of(th)
    new_id = str(uuid6(clock_seq=-2))
    checkpoint = dict(source.checkpoint)
    checkpoint["id"] = new_id
    checkpoint["ts"] = datetime.now(UTC).isoformat()
    # The new row takes the source row's references, so its body takes
    # their digest.
    body = encode_body(
        saver.serde, saver.codec, saver.tenant_id, family, ns, cast(Checkpoint, checkpoint), refs
    )
    meta = {k: v for k, v in source.metadata.items() if k not in ("run_id", "writes")}
    meta.update(source="fork", restored_from=cid)
    meta = metadata_json(meta)
    if saver.encrypt_metadata:
        meta = seal_metadata(
            meta, saver.encrypt_metadata, saver.codec, saver.tenant_id, family, ns, new_id
        )
    return new_id, body, meta


# -- calls -----------------------------------------------------------------------


def tag(saver: Saver, config: RunnableConfig, tags: Sequence[str], *, remove: bool) -> Calls[None]:
    """``tag`` (``remove``: ``untag``); ``NotFoundError`` if the checkpoint does not exist."""
    th, ns, cid = checkpoint_of(config, "untag" if remove else "tag")
    names = tag_names(tags)
    found, _ = yield Call(
        lambda: tag_op(saver._statements, saver.tenant_id, th, ns, cid, names, remove=remove)
    )
    if not found:
        raise NotFoundError(f"checkpoint {cid} not found in thread {th!r}")


def find_checkpoints(
    saver: Saver,
    thread_id: str,
    checkpoint_ns: str,
    tags: Sequence[str] | None,
    metadata: dict[str, Any] | None,
    before: TimeBound,
    after: TimeBound,
    state_matching: Mapping[str, Any] | None,
    limit: int | None,
) -> Call[list[CheckpointSummary]]:
    """``find_checkpoints``."""
    th = text_id(thread_id, "thread_id")
    inline, keyed = state_filters(saver, state_matching)
    args: dict[str, Any] = {
        "tags": tag_names(tags) if tags else [],
        "metadata": json_filter(metadata, "metadata filter"),
        "inline": inline,
        "keyed": keyed,
        "before": time_bound(before, "before"),
        "after": time_bound(after, "after"),
        "limit": None if limit is None else check_count("limit", limit),
    }

    def op() -> Op[list[CheckpointSummary]]:
        rows = yield from find_op(saver._statements, saver.tenant_id, th, checkpoint_ns, **args)
        return summaries(th, rows)

    return Call(op, read=True, route="replica")


def create_branch(
    saver: Saver,
    config: RunnableConfig,
    name: str,
    thread_id: str | None,
    metadata: dict[str, Any] | None,
) -> Calls[RunnableConfig]:
    """``create_branch``: the thread's latest checkpoint if ``config`` names none, then
    the branch, in one transaction."""
    th, cid, dst = branch_args(config, name, thread_id)
    if cid is None:
        latest = yield get_tuple(saver, {"configurable": {"thread_id": th, "checkpoint_ns": ""}})
        if latest is None:
            raise NotFoundError(f"thread {th!r} has no checkpoint to branch from")
        cid = str(latest.config["configurable"]["checkpoint_id"])
    point = cid
    meta = metadata_json(metadata or {})
    try:
        yield Call(
            lambda: create_branch_op(
                saver._statements, S.LOCK_CLASS_FAMILY, saver.tenant_id, th, point, name, dst, meta
            ),
            transaction=True,
        )
    except BranchError as exc:
        raise branch_error(exc.reason, th, point, name, dst) from None
    except psycopg.errors.UniqueViolation:
        raise branch_error("name", th, point, name, dst) from None
    # The branch's thread, not the branch point: LangGraph forks from a config's
    # checkpoint_id at every invoke, where the thread continues from its head.
    return {"configurable": {"thread_id": dst, "checkpoint_ns": ""}}


def list_branches(saver: Saver, thread_id: str) -> Call[list[BranchInfo]]:
    """``list_branches``."""
    th = text_id(thread_id, "thread_id")

    def op() -> Op[list[BranchInfo]]:
        return branches(th, (yield from list_branches_op(saver._statements, saver.tenant_id, th)))

    return Call(op, read=True, route="replica")


def diff(
    saver: Saver,
    config_a: RunnableConfig,
    config_b: RunnableConfig,
    include_internal: bool,
) -> Calls[CheckpointDiff]:
    """``diff``: both checkpoints read as ``get_tuple`` reads them, then compared."""
    tuples = []
    for config in (config_a, config_b):
        target, th, cid = checkpoint_or_latest(config, "diff")
        tup = yield get_tuple(saver, target)
        if tup is None:
            raise not_found(th, cid)
        tuples.append(tup)
    return diff_tuples(tuples[0], tuples[1], include_internal=include_internal)


def restore(saver: Saver, config: RunnableConfig) -> Calls[RunnableConfig]:
    """``restore``: the checkpoint read as ``get_tuple`` reads it, then written as the new head."""
    th, ns, cid = checkpoint_of(config, "restore")
    source = yield get_tuple(saver, config)
    if source is None:
        raise NotFoundError(f"checkpoint {cid} not found in thread {th!r}")
    new_id, body, meta = restore_args(saver, source)
    done = yield Call(
        lambda: restore_op(
            saver._statements,
            S.LOCK_CLASS_FAMILY,
            saver.tenant_id,
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
