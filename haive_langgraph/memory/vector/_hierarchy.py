"""Hierarchical consolidation: clusters of related memories summarised into parents,
then clusters of parents, level by level (no I/O).

A summary is a memory (``kind="summary"``, ``level`` n, ``children``) written
next to its children; each child gets ``parent_id`` and stays current (nothing
is superseded or deleted). Every summary leaves an audit record
(``event="summarize"``) in the user's audit namespace. All summaries of a run
are asked for (and embedded) before anything is written, so a failing model
writes nothing; a dry run stops there and returns the plan.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from langgraph.store.base import GetOp, PutOp
from langgraph.store.base import Op as StoreOp

from haive_langgraph.errors import ConfigurationError
from haive_langgraph.memory.vector._hierarchy_model import Summarizer, summarizer_name
from haive_langgraph.memory.vector._memories import (
    Settings,
    load_access,
    read_all,
    users_op,
    write_access,
)
from haive_langgraph.memory.vector._recall import Candidate
from haive_langgraph.memory.vector._scoring import near_duplicate_groups
from haive_langgraph.memory.vector._steps import Batch, EmbedDocuments, Op, Summarize
from haive_langgraph.memory.vector._types import Memory
from haive_langgraph.memory.vector._values import (
    OPEN_END,
    as_list,
    check_unit,
    decode_memory,
    encode_memory,
    iso,
    unpack_vector,
)

__all__ = ["HierarchyReport", "SummaryGroup", "hierarchy_op", "parents_op"]

MAX_LEVELS = 8


@dataclass(frozen=True, slots=True)
class SummaryGroup:
    """One summary of a hierarchical consolidation (planned, or written).

    Attributes:
        user_id: Whose memories.
        summary_id: The summary's memory id (``s_<hash of its children's ids>``).
        level: 1 for a summary of memories, n for one of level-(n - 1) summaries.
        text: The summary the model wrote.
        child_ids: The memories it summarises (leader first); they stay current
            and get ``parent_id = summary_id``.
        leader_id: The memory the others were compared with.
        similarities: Cosine similarity of each child to the leader.
    """

    user_id: str
    summary_id: str
    level: int
    text: str
    child_ids: tuple[str, ...]
    leader_id: str
    similarities: dict[str, float]


@dataclass(frozen=True, slots=True)
class HierarchyReport:
    """What :meth:`VectorMemory.consolidate_hierarchy` did (or, in a dry run, would do).

    Attributes:
        dry_run: Nothing was written.
        summarizer: The model's (or function's) name.
        thresholds: The similarity threshold of each level.
        users: The users considered.
        candidates: Current level-0 memories without a parent considered.
        preserved: Memories left out of every summary for their importance.
        groups: The summaries, level by level.
        created: Summaries written (0 for a dry run).
        linked: Children given a parent (0 for a dry run).
    """

    dry_run: bool
    summarizer: str
    thresholds: tuple[float, ...]
    users: tuple[str, ...]
    candidates: int
    preserved: int
    groups: list[SummaryGroup] = field(default_factory=list)
    created: int = 0
    linked: int = 0

    def level(self, n: int) -> list[SummaryGroup]:
        """The summaries of level ``n``."""
        return [g for g in self.groups if g.level == n]


def check_levels(levels: object) -> int:
    if isinstance(levels, bool) or not isinstance(levels, int) or not 1 <= levels <= MAX_LEVELS:
        raise ConfigurationError(
            f"levels must be an integer from 1 to {MAX_LEVELS}, got {levels!r}"
        )
    return levels


def check_thresholds(value: float | Sequence[float], levels: int) -> tuple[float, ...]:
    """One threshold per level (a single number for all; a shorter list repeats its last)."""
    given = [value] if isinstance(value, int | float) else list(value)
    if not given:
        raise ConfigurationError("similarity_threshold must be a number or a non-empty list")
    out = [check_unit(v, "similarity_threshold", low_open=True) for v in given]
    return tuple((out + [out[-1]] * levels)[:levels])


def check_preserve(preserve_important: bool | float | None) -> float | None:
    if preserve_important is True:
        return 0.8
    if preserve_important is False or preserve_important is None:
        return None
    return check_unit(preserve_important, "preserve_important")


def summary_key(child_ids: Sequence[str]) -> str:
    return "s_" + hashlib.sha256(",".join(sorted(child_ids)).encode()).hexdigest()[:32]


def _shared(members: Sequence[Memory], attr: str) -> Any:
    values = {getattr(m, attr) for m in members}
    return values.pop() if len(values) == 1 else None


def _summary(user: str, key: str, level: int, text: str, group: Sequence[Candidate]) -> Memory:
    members = [c.memory for c in group]
    first = members[0].metadata
    metadata = {
        k: v
        for k, v in first.items()
        if all(k in m.metadata and m.metadata[k] == v for m in members)
    }  # what every child says alike
    return Memory(
        id=key,
        user_id=user,
        text=text,
        metadata=metadata,
        importance=max(m.importance for m in members),
        created_at=max(m.created_at for m in members),
        valid_from=members[0].valid_from,  # set when written
        kind="summary",
        conversation_id=_shared(members, "conversation_id"),
        episode_id=_shared(members, "episode_id"),
        level=level,
        children=tuple(m.id for m in members),
    )


def _clusters(
    pool: Sequence[Candidate], threshold: float, min_size: int
) -> list[tuple[list[Candidate], dict[str, float]]]:
    """Leader clusters of ``pool`` (importance, then recency first) of at least ``min_size``."""
    if len(pool) < max(min_size, 2):
        return []
    order = sorted(
        range(len(pool)),
        key=lambda i: (
            -pool[i].memory.importance,
            -pool[i].memory.created_at.timestamp(),
            pool[i].memory.id,
        ),
    )
    out = []
    for leader, members in near_duplicate_groups(
        np.stack([c.vector for c in pool]), order, threshold
    ):
        if len(members) + 1 < min_size:
            continue
        others = sorted(
            members, key=lambda js: (pool[js[0]].memory.created_at, pool[js[0]].memory.id)
        )
        group = [pool[leader], *(pool[j] for j, _ in others)]
        sims = {pool[leader].memory.id: 1.0, **{pool[j].memory.id: round(s, 6) for j, s in others}}
        out.append((group, sims))
    return out


@dataclass(slots=True)
class _UserPlan:
    candidates: int = 0
    preserved: int = 0
    groups: list[SummaryGroup] = field(default_factory=list)
    summaries: list[Candidate] = field(default_factory=list)  # new, with parent_id when linked
    linked: dict[str, Candidate] = field(default_factory=dict)  # existing memories given a parent


def _plan_user(
    settings: Settings,
    user: str,
    items: Sequence[Any],
    summarizer: Summarizer,
    thresholds: tuple[float, ...],
    min_size: int,
    preserve: float | None,
) -> Op[_UserPlan]:
    plan = _UserPlan()
    cands = [
        Candidate(decode_memory(it.value), unpack_vector(it.value["embedding"]))
        for it in items
        if "embedding" in it.value and not it.value.get("parent_id")
    ]
    kept: list[Candidate] = []
    for c in cands:
        if preserve is not None and c.memory.importance >= preserve:
            plan.preserved += 1
        else:
            kept.append(c)
    plan.candidates = sum(1 for c in cands if c.memory.level == 0)
    pool = [c for c in kept if c.memory.level == 0 and c.memory.kind != "summary"]
    new_ids: set[str] = set()
    for level, threshold in enumerate(thresholds, 1):
        made: list[Candidate] = []
        clusters = _clusters(pool, threshold, min_size)
        texts: list[str] = []
        for group, _ in clusters:
            text = yield Summarize(summarizer, [c.memory.text for c in group], level)
            texts.append(text)
        vectors = (yield EmbedDocuments(list(dict.fromkeys(texts)))) if texts else []
        by_text = dict(zip(dict.fromkeys(texts), vectors, strict=True))
        for (group, sims), text in zip(clusters, texts, strict=True):
            key = summary_key([c.memory.id for c in group])
            node = Candidate(
                _summary(user, key, level, text, group),
                np.asarray(by_text[text], dtype=np.float32),
            )
            for c in group:
                c.memory = replace(c.memory, parent_id=key)  # a new summary is written so
                if c.memory.id not in new_ids:
                    plan.linked[c.memory.id] = c  # an existing memory is rewritten with it
            made.append(node)
            new_ids.add(key)
            plan.summaries.append(node)
            plan.groups.append(
                SummaryGroup(
                    user_id=user,
                    summary_id=key,
                    level=level,
                    text=text,
                    child_ids=tuple(c.memory.id for c in group),
                    leader_id=group[0].memory.id,
                    similarities=sims,
                )
            )
        # The next level clusters this level's summaries: new ones and those of
        # earlier runs still without a parent.
        pool = [c for c in kept if c.memory.level == level and c.memory.parent_id is None]
        pool += made
    return plan


def _write_ops(
    settings: Settings,
    user: str,
    plan: _UserPlan,
    thresholds: tuple[float, ...],
    name: str,
    now: datetime,
) -> tuple[list[StoreOp], dict[str, list[float]]]:
    spaces = settings.spaces
    ns = spaces.memories(user)
    ops: list[StoreOp] = []
    primed: dict[str, list[float]] = {}
    for s in plan.summaries:
        memory = replace(s.memory, valid_from=now)
        primed[memory.text] = as_list(s.vector)
        ops.append(PutOp(ns, memory.id, encode_memory(memory, s.vector)))
    for c in plan.linked.values():
        primed[c.memory.text] = as_list(c.vector)
        ops.append(PutOp(ns, c.memory.id, encode_memory(c.memory, c.vector)))
    stamp = now.strftime("%Y%m%dT%H%M%S%fZ")
    for g in plan.groups:
        record_id = f"{stamp}-{g.summary_id}"
        ops.append(
            PutOp(
                spaces.audit(user),
                record_id,
                {
                    "event": "summarize",
                    "record_id": record_id,
                    "user_id": user,
                    "at": iso(now),
                    "consolidated_id": g.summary_id,
                    "source_ids": list(g.child_ids),
                    "leader_id": g.leader_id,
                    "similarities": g.similarities,
                    "strategy": name,
                    "similarity_threshold": thresholds[g.level - 1],
                    "level": g.level,
                },
                index=False,
            )
        )
    return ops, primed


def hierarchy_op(
    settings: Settings,
    users: Sequence[str] | None,
    summarizer: Summarizer,
    thresholds: tuple[float, ...],
    min_cluster_size: int,
    preserve: float | None,
    time_window: timedelta | None,
    dry_run: bool,
    max_ops_per_batch: int = 2000,
) -> Op[HierarchyReport]:
    """Summarise each user's clusters of related memories, level by level."""
    if users is None:
        users = yield from users_op(settings)
    name = summarizer_name(summarizer)
    now = settings.now()
    filter: dict[str, Any] = {"valid_to": OPEN_END}
    if time_window is not None:
        filter["created_at"] = {"$gte": iso(now - time_window)}
    groups: list[SummaryGroup] = []
    candidates = preserved = created = linked = 0
    for user in users:
        # Never across users: each user's memories are read and summarised on their own.
        items = yield from read_all(settings.spaces.memories(user), filter)
        plan = yield from _plan_user(
            settings, user, items, summarizer, thresholds, min_cluster_size, preserve
        )
        candidates += plan.candidates
        preserved += plan.preserved
        groups.extend(plan.groups)
        if dry_run or not plan.groups:
            continue
        ops, primed = _write_ops(settings, user, plan, thresholds, name, now)
        for start in range(0, len(ops), max_ops_per_batch):
            chunk = ops[start : start + max_ops_per_batch]
            texts = {
                op.value["text"]
                for op in chunk
                if isinstance(op, PutOp) and op.value and "text" in op.value
            }
            yield Batch(chunk, {t: v for t, v in primed.items() if t in texts})
        created += len(plan.summaries)
        linked += len(plan.linked) + sum(1 for s in plan.summaries if s.memory.parent_id)
    return HierarchyReport(
        dry_run=dry_run,
        summarizer=name,
        thresholds=thresholds,
        users=tuple(users),
        candidates=candidates,
        preserved=preserved,
        groups=groups,
        created=created,
        linked=linked,
    )


# -- search: parents instead of their children ---------------------------------------------------


def _holds(memory: Memory, as_of: datetime | None) -> bool:
    if as_of is None:
        return memory.valid_to is None
    return memory.valid_from <= as_of and (memory.valid_to is None or as_of < memory.valid_to)


def parents_op(
    settings: Settings,
    user: str,
    search: Op[list[Memory]],
    top_k: int,
    as_of: datetime | None,
) -> Op[list[Memory]]:
    """Run ``search`` (untracked, widened), then put each hit's highest summary in its
    place (its score that of its best child), drop repeats and keep ``top_k``.

    A summary that did not hold (``as_of``, or superseded) is not climbed to.
    """
    found = yield from search
    ns = settings.spaces.memories(user)
    known: dict[str, Memory | None] = {}
    tops = list(found)
    for _ in range(MAX_LEVELS):
        need = list(
            dict.fromkeys(m.parent_id for m in tops if m.parent_id and m.parent_id not in known)
        )
        if need:
            items = yield Batch([GetOp(ns, i, refresh_ttl=False) for i in need])
            for i, item in zip(need, items, strict=True):
                known[i] = None if item is None else decode_memory(item.value)
        climbed = []
        for m in tops:
            parent = known.get(m.parent_id) if m.parent_id else None
            if parent is not None and _holds(parent, as_of):
                climbed.append(replace(parent, score=m.score, similarity=m.similarity))
            else:
                climbed.append(m)
        if climbed == tops:
            break
        tops = climbed
    out: list[Memory] = []
    seen: set[str] = set()
    for m in tops:
        if m.id not in seen:
            seen.add(m.id)
            out.append(m)
    out = out[:top_k]
    if settings.track_access and out:
        access = yield from load_access(settings.spaces, user, [m.id for m in out])
        out = [
            replace(m, access_count=int((access.get(m.id) or {}).get("access_count", 0)))
            for m in out
        ]
        ops, out = write_access(settings.spaces, user, out, settings.now())
        yield Batch(ops)
    return out
