"""Consolidation: near-duplicate memories of a user merged into one, with an audit trail (no I/O).

The merged memories are kept, superseded (``valid_to``, ``superseded_by``);
each merge leaves a record in the user's audit namespace.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np
from langgraph.store.base import GetOp, Item, PutOp
from langgraph.store.base import Op as StoreOp

from haive_langgraph.errors import ConfigurationError
from haive_langgraph.memory.vector._memories import Settings, read_all, users_op
from haive_langgraph.memory.vector._recall import Candidate
from haive_langgraph.memory.vector._scoring import near_duplicate_groups
from haive_langgraph.memory.vector._steps import Batch, EmbedDocuments, Op
from haive_langgraph.memory.vector._types import (
    ConsolidationReport,
    Memory,
    MergeGroup,
    MergeRecord,
)
from haive_langgraph.memory.vector._values import (
    OPEN_END,
    NewMemory,
    Spaces,
    as_list,
    build_value,
    check_duration,
    check_text,
    check_unit,
    consolidated_key,
    decode_memory,
    decode_record,
    encode_memory,
    iso,
    normalize_text,
    unpack_vector,
)

# -- consolidation ---------------------------------------------------------------------------------------------------

Strategy = Literal["merge", "latest", "longest"] | Callable[[Sequence[Memory]], str]
STRATEGIES = ("merge", "latest", "longest")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def merged_text(strategy: Strategy, members: Sequence[Memory]) -> str:
    """The consolidated text of a group (leader first, then the others oldest first)."""
    if strategy == "latest":
        return max(members, key=lambda m: (m.created_at, m.id)).text
    if strategy == "longest":
        return max(members, key=lambda m: (len(m.text), m.created_at)).text
    if strategy == "merge":
        seen: set[str] = set()
        parts: list[str] = []
        for m in members:
            for sentence in _SENTENCE.split(m.text.strip()):
                key = normalize_text(sentence).rstrip(".!? ")
                if key and key not in seen:
                    seen.add(key)
                    parts.append(sentence.strip())
        return " ".join(parts)
    text = strategy(members)  # type: ignore[operator]
    return check_text(text, "the text returned by the consolidation strategy")


def strategy_name(strategy: object) -> str:
    if isinstance(strategy, str):
        if strategy not in STRATEGIES:
            raise ConfigurationError(
                f"strategy must be one of {', '.join(STRATEGIES)} or a function "
                f"memories -> text, got {strategy!r}"
            )
        return strategy
    if not callable(strategy):
        raise ConfigurationError(
            f"strategy must be one of {', '.join(STRATEGIES)} or a function, got {strategy!r}"
        )
    return getattr(strategy, "__name__", type(strategy).__name__)


@dataclass(slots=True)
class _Planned:
    group: MergeGroup
    members: list[Candidate]
    survivor: Candidate | None  # an existing consolidated memory kept as the result
    vector: list[float] | None = None


@dataclass(slots=True)
class _UserPlan:
    user: str
    candidates: int
    preserved: int
    planned: list[_Planned] = field(default_factory=list)


def _plan_user(
    user: str,
    items: Sequence[Item],
    threshold: float,
    strategy: Strategy,
    preserve: float | None,
) -> _UserPlan:
    cands = [
        Candidate(decode_memory(it.value), unpack_vector(it.value["embedding"]))
        for it in items
        if "embedding" in it.value and it.value.get("kind") != "summary"  # summaries: derived
    ]
    kept = [c for c in cands if preserve is None or c.memory.importance < preserve]
    plan = _UserPlan(user, len(cands), len(cands) - len(kept))
    if len(kept) < 2:
        return plan
    order = sorted(
        range(len(kept)),
        key=lambda i: (
            -kept[i].memory.importance,
            -kept[i].memory.created_at.timestamp(),
            kept[i].memory.id,
        ),
    )
    groups = near_duplicate_groups(np.stack([c.vector for c in kept]), order, threshold)
    for leader, members in groups:
        others = sorted(
            members, key=lambda js: (kept[js[0]].memory.created_at, kept[js[0]].memory.id)
        )
        group = [kept[leader], *(kept[j] for j, _ in others)]
        text = merged_text(strategy, [c.memory for c in group])
        sims = {kept[leader].memory.id: 1.0, **{kept[j].memory.id: round(s, 6) for j, s in others}}
        plan.planned.append(
            _Planned(
                MergeGroup(
                    user_id=user,
                    consolidated_id=consolidated_key(text),
                    text=text,
                    source_ids=tuple(c.memory.id for c in group),
                    leader_id=kept[leader].memory.id,
                    similarities=sims,
                ),
                group,
                None,
            )
        )
    return plan


def _merged_new(planned: _Planned) -> NewMemory:
    members = [c.memory for c in planned.members]
    metadata: dict[str, Any] = {}
    for m in sorted(members, key=lambda m: (m.created_at, m.id)):
        metadata.update(m.metadata)  # newer values win
    convs = {m.conversation_id for m in members}
    episodes = {m.episode_id for m in members}
    conversation = convs.pop() if len(convs) == 1 else None
    message_ids: tuple[str, ...] = ()
    if conversation is not None:
        message_ids = tuple(dict.fromkeys(i for m in members for i in m.message_ids))
    return NewMemory(
        text=planned.group.text,
        metadata=metadata,
        importance=max(m.importance for m in members),
        created_at=max(m.created_at for m in members),
        kind="consolidated",
        conversation_id=conversation,
        episode_id=episodes.pop() if len(episodes) == 1 else None,
        message_ids=message_ids,
    )


def consolidate_op(
    settings: Settings,
    users: Sequence[str] | None,
    time_window: timedelta | None,
    similarity_threshold: float,
    strategy: Strategy,
    preserve_important: bool | float | None,
    dry_run: bool,
    max_ops_per_batch: int = 2000,
) -> Op[ConsolidationReport]:
    threshold = check_unit(similarity_threshold, "similarity_threshold", low_open=True)
    name = strategy_name(strategy)
    window = check_duration(time_window, "time_window")
    if preserve_important is True:
        preserve: float | None = 0.8
    elif preserve_important is False or preserve_important is None:
        preserve = None
    else:
        preserve = check_unit(preserve_important, "preserve_important")
    if users is None:
        users = yield from users_op(settings)
    spaces = settings.spaces
    now = settings.now()
    filter: dict[str, Any] = {"valid_to": OPEN_END}
    if window is not None:
        filter["created_at"] = {"$gte": iso(now - window)}
    report_groups: list[MergeGroup] = []
    total = preserved = superseded = created = 0
    for user in users:
        # Never across users: each user's memories are read and merged on their own.
        items = yield from read_all(spaces.memories(user), filter)
        plan = _plan_user(user, items, threshold, strategy, preserve)
        total += plan.candidates
        preserved += plan.preserved
        if not plan.planned:
            continue
        ns = spaces.memories(user)
        existing = yield Batch(
            [GetOp(ns, p.group.consolidated_id, refresh_ttl=False) for p in plan.planned]
        )
        for p, item in zip(plan.planned, existing, strict=True):
            if item is None:
                continue
            same = next((c for c in p.members if c.memory.id == item.key), None)
            if same is not None:
                # The group's text is that of one of its consolidated memories: it stays.
                p.survivor = same
                p.members.remove(same)
                p.members.insert(0, same)
            else:
                salt = hashlib.sha256(",".join(sorted(p.group.source_ids)).encode()).hexdigest()
                p.group = replace(p.group, consolidated_id=f"{p.group.consolidated_id}_{salt[:12]}")
            if p.survivor is not None:
                p.group = replace(
                    p.group,
                    consolidated_id=item.key,
                    source_ids=tuple(c.memory.id for c in p.members[1:]),
                )
        report_groups.extend(p.group for p in plan.planned)
        if dry_run:
            continue
        # Vectors: a text equal to a member's reuses its vector; others are embedded.
        by_text = {c.memory.text: c.vector for p in plan.planned for c in p.members}
        need = list(
            dict.fromkeys(
                p.group.text
                for p in plan.planned
                if p.survivor is None and p.group.text not in by_text
            )
        )
        if need:
            vectors = yield EmbedDocuments(need)
            by_text.update(
                zip(need, (np.asarray(v, dtype=np.float32) for v in vectors), strict=True)
            )
        ops: list[StoreOp] = []
        primed: dict[str, list[float]] = {}
        for p in plan.planned:
            ops.extend(_merge_ops(spaces, user, p, by_text, now, name, threshold, primed))
            if p.survivor is None:
                created += 1
            superseded += len(p.group.source_ids)
            if len(ops) >= max_ops_per_batch:
                yield Batch(ops, primed)
                ops, primed = [], {}
        if ops:
            yield Batch(ops, primed)
    return ConsolidationReport(
        dry_run=dry_run,
        strategy=name,
        similarity_threshold=threshold,
        users=tuple(users),
        candidates=total,
        preserved=preserved,
        groups=report_groups,
        superseded=superseded,
        created=created,
    )


def _merge_ops(
    spaces: Spaces,
    user: str,
    p: _Planned,
    by_text: Mapping[str, np.ndarray[Any, Any]],
    now: datetime,
    strategy: str,
    threshold: float,
    primed: dict[str, list[float]],
) -> list[StoreOp]:
    """One merge: the consolidated memory, its sources superseded, an audit record."""
    ns = spaces.memories(user)
    g = p.group
    ops: list[StoreOp] = []
    if p.survivor is not None:
        value = encode_memory(p.survivor.memory, p.survivor.vector)
        value["sources"] = list(dict.fromkeys([*value.get("sources", []), *g.source_ids]))
        value["importance"] = max(c.memory.importance for c in p.members)
        primed[value["text"]] = as_list(p.survivor.vector)
        sources = p.members[1:]
    else:
        vec = as_list(by_text[g.text])
        new = _merged_new(p)
        value = build_value(user, g.consolidated_id, new, vec, now, sources=g.source_ids)
        primed[g.text] = vec
        sources = p.members
    ops.append(PutOp(ns, g.consolidated_id, value))
    for c in sources:
        old = encode_memory(c.memory, c.vector)
        old["valid_to"] = iso(now)
        old["superseded_by"] = g.consolidated_id
        primed[old["text"]] = as_list(c.vector)
        ops.append(PutOp(ns, c.memory.id, old))
    record_id = f"{now.strftime('%Y%m%dT%H%M%S%fZ')}-{g.consolidated_id}"
    ops.append(
        PutOp(
            spaces.audit(user),
            record_id,
            {
                "event": "merge",
                "record_id": record_id,
                "user_id": user,
                "at": iso(now),
                "consolidated_id": g.consolidated_id,
                "source_ids": list(g.source_ids),
                "leader_id": g.leader_id,
                "similarities": g.similarities,
                "strategy": strategy,
                "similarity_threshold": threshold,
            },
            index=False,
        )
    )
    return ops


def history_op(settings: Settings, user: str, memory_id: str | None) -> Op[list[MergeRecord]]:
    items = yield from read_all(settings.spaces.audit(user))
    records = [decode_record(it.value) for it in items]
    if memory_id is not None:
        records = [
            r for r in records if memory_id == r.consolidated_id or memory_id in r.source_ids
        ]
    records.sort(key=lambda r: (r.at, r.record_id))
    return records
