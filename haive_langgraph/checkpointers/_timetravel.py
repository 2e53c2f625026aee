"""Time travel: results of find/branch queries, and checkpoint diffs (pure Python)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import CheckpointTuple

from haive_langgraph.errors import ConfigurationError


@dataclass(frozen=True, slots=True)
class CheckpointSummary:
    """A checkpoint found by ``find_checkpoints`` (no values: use ``get_tuple``).

    Attributes:
        config: Config naming the checkpoint (in the thread that was searched).
        created_at: When it was stored.
        metadata: Its metadata.
        tags: Its tags.
        parent_config: Its parent, if any.
    """

    config: RunnableConfig
    created_at: dt.datetime
    metadata: dict[str, Any]
    tags: list[str]
    parent_config: RunnableConfig | None

    @property
    def checkpoint_id(self) -> str:
        return str(self.config["configurable"]["checkpoint_id"])


@dataclass(frozen=True, slots=True)
class BranchInfo:
    """A named branch of a thread.

    Attributes:
        name: The branch's name (unique among the thread's branches).
        thread_id: The branch's own thread.
        branch_point: Config of the checkpoint it was branched at (in the parent thread).
        created_at: When the branch was created.
        updated_at: When it was last written.
        checkpoint_count: Checkpoints it owns (its inherited history excluded).
        metadata: The branch thread's metadata.
    """

    name: str
    thread_id: str
    branch_point: RunnableConfig
    created_at: dt.datetime
    updated_at: dt.datetime
    checkpoint_count: int
    metadata: dict[str, Any]

    @property
    def config(self) -> RunnableConfig:
        """Config to invoke the graph on the branch."""
        return {"configurable": {"thread_id": self.thread_id}}


# -- diff -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MessageListDiff:
    """Messages added, removed and edited between two message lists (by message id)."""

    added: list[BaseMessage] = field(default_factory=list)
    removed: list[BaseMessage] = field(default_factory=list)
    edited: list[tuple[BaseMessage, BaseMessage]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ChannelChange:
    """How one channel differs between two checkpoints.

    Attributes:
        channel: The channel.
        kind: ``"added"`` (only in the second), ``"removed"`` (only in the
            first) or ``"changed"``.
        before: Value in the first checkpoint (None when added).
        after: Value in the second checkpoint (None when removed).
        messages: For lists of messages, the change by message id.
    """

    channel: str
    kind: Literal["added", "removed", "changed"]
    before: Any
    after: Any
    messages: MessageListDiff | None = None


@dataclass(frozen=True, slots=True)
class CheckpointDiff:
    """The differences between two checkpoints' channel values.

    Attributes:
        a: Config of the first checkpoint.
        b: Config of the second checkpoint.
        same_thread: Whether both are in one thread (diffing across threads is
            allowed; the printout says so).
        changes: Changed channels, sorted by name.
    """

    a: RunnableConfig
    b: RunnableConfig
    same_thread: bool
    changes: list[ChannelChange]

    @property
    def is_empty(self) -> bool:
        return not self.changes

    def __str__(self) -> str:
        def name(config: RunnableConfig) -> str:
            conf = config["configurable"]
            ns = f" [{conf['checkpoint_ns']}]" if conf.get("checkpoint_ns") else ""
            return f"{conf['thread_id']}{ns} @ {conf['checkpoint_id']}"

        lines = [f"diff {name(self.a)} -> {name(self.b)}"]
        if not self.same_thread:
            lines.append("  (the two checkpoints are in different threads)")
        if not self.changes:
            lines.append("  no differences")
        for change in self.changes:
            if change.messages is not None:
                m = change.messages
                lines.append(
                    f"  ~ {change.channel}: {len(m.added)} added, {len(m.removed)} removed, "
                    f"{len(m.edited)} edited"
                )
                lines += [f"      + {_msg(x)}" for x in m.added]
                lines += [f"      - {_msg(x)}" for x in m.removed]
                lines += [f"      ~ {_msg(x)} -> {_msg(y)}" for x, y in m.edited]
            elif change.kind == "added":
                lines.append(f"  + {change.channel} = {_short(change.after)}")
            elif change.kind == "removed":
                lines.append(f"  - {change.channel} (was {_short(change.before)})")
            else:
                lines.append(
                    f"  ~ {change.channel}: {_short(change.before)} -> {_short(change.after)}"
                )
        return "\n".join(lines)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _msg(message: BaseMessage) -> str:
    return f"{message.type}({message.id}): {_short(message.content, 50)}"


def _is_messages(value: Any) -> bool:
    return (
        isinstance(value, list) and bool(value) and all(isinstance(m, BaseMessage) for m in value)
    )


def diff_messages(before: Sequence[BaseMessage], after: Sequence[BaseMessage]) -> MessageListDiff:
    """Compare two message lists by message id (messages without id by position)."""

    def keyed(messages: Sequence[BaseMessage]) -> dict[str, BaseMessage]:
        return {m.id or f"#{i}": m for i, m in enumerate(messages)}

    old, new = keyed(before), keyed(after)
    return MessageListDiff(
        added=[m for k, m in new.items() if k not in old],
        removed=[m for k, m in old.items() if k not in new],
        edited=[(old[k], m) for k, m in new.items() if k in old and old[k] != m],
    )


def is_internal_channel(channel: str) -> bool:
    """Whether ``channel`` is LangGraph's bookkeeping rather than the graph's state.

    ``__start__`` (the input), ``__pregel_*``, ``__interrupt__`` and any other
    ``__``-prefixed name, and ``branch:to:<node>`` (edge triggers).
    """
    return channel.startswith(("__", "branch:"))


def diff_tuples(
    a: CheckpointTuple, b: CheckpointTuple, *, include_internal: bool = False
) -> CheckpointDiff:
    """The differences between two checkpoints' channel values.

    Internal channels (:func:`is_internal_channel`) are left out unless
    ``include_internal``.
    """
    va = a.checkpoint["channel_values"]
    vb = b.checkpoint["channel_values"]
    changes: list[ChannelChange] = []
    for channel in sorted(set(va) | set(vb)):
        if not include_internal and is_internal_channel(channel):
            continue
        if channel not in vb:
            changes.append(ChannelChange(channel, "removed", va[channel], None))
        elif channel not in va:
            after = vb[channel]
            messages = diff_messages([], after) if _is_messages(after) else None
            changes.append(ChannelChange(channel, "added", None, after, messages))
        elif va[channel] != vb[channel]:
            before, after = va[channel], vb[channel]
            messages = None
            if (_is_messages(before) or before == []) and (_is_messages(after) or after == []):
                messages = diff_messages(before, after)
            changes.append(ChannelChange(channel, "changed", before, after, messages))
    same = a.config["configurable"]["thread_id"] == b.config["configurable"]["thread_id"]
    return CheckpointDiff(a.config, b.config, same, changes)


# -- find arguments ------------------------------------------------------------------

TimeBound = dt.datetime | RunnableConfig | None


def time_bound(value: TimeBound, what: str) -> str | None:
    """The checkpoint id a before/after argument compares with.

    A checkpoint config gives its id. A datetime gives the smallest uuid6 of
    that instant: LangGraph's checkpoint ids are uuid6, ordered by the time
    the graph created the checkpoint, so time bounds use the primary-key
    index (a thread of 10,000 checkpoints is searched in about a
    millisecond).
    """
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ConfigurationError(f"{what} must be a timezone-aware datetime, got {value!r}")
        return uuid6_floor(value)
    if isinstance(value, Mapping):
        cid = value.get("configurable", {}).get("checkpoint_id")
        if cid:
            return str(cid)
    raise ConfigurationError(f"{what} must be a datetime or a checkpoint config, got {value!r}")


# 100-ns intervals between the UUID epoch (1582-10-15) and the Unix epoch.
_UUID_EPOCH_OFFSET = 0x01B21DD213814000


def uuid6_floor(when: dt.datetime) -> str:
    """The smallest uuid6 string of instant ``when`` (as LangGraph's ``uuid6`` lays it out)."""
    delta = when - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    ticks = (delta.days * 86_400 + delta.seconds) * 10_000_000 + delta.microseconds * 10
    timestamp = ticks + _UUID_EPOCH_OFFSET
    high = (timestamp >> 12) & 0xFFFFFFFFFFFF
    low = timestamp & 0x0FFF
    h = f"{high:012x}"
    return f"{h[:8]}-{h[8:]}-6{low:03x}-0000-000000000000"
