"""Operations on a user's memories and access records: add, read, list, forget (no I/O).

Each operation is a generator of :mod:`~haive_langgraph.memory.vector._steps`;
the per-instance :class:`Settings` say where the memories are and what "now" is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from langgraph.store.base import GetOp, Item, ListNamespacesOp, MatchCondition, PutOp, SearchOp
from langgraph.store.base import Op as StoreOp

from haive_langgraph.errors import ConfigurationError
from haive_langgraph.memory.vector._filters import validity_filter
from haive_langgraph.memory.vector._steps import Batch, EmbedDocuments, Op
from haive_langgraph.memory.vector._types import CrossEncoder, Memory
from haive_langgraph.memory.vector._values import (
    NewMemory,
    Spaces,
    as_list,
    build_value,
    content_hash,
    decode_memory,
    iso,
    unpack_vector,
    user_from_label,
)

# -- context -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settings:
    """Per-instance settings the operations read."""

    spaces: Spaces
    clock: Callable[[], datetime]
    cross_encoder: CrossEncoder | None
    decay_half_life: timedelta | None
    track_access: bool

    def now(self) -> datetime:
        now = self.clock()
        if now.tzinfo is None:
            raise ConfigurationError("the memory's clock must return timezone-aware datetimes")
        return now


# -- store reads ---------------------------------------------------------------------------------------

PAGE = 1000


def read_all(namespace: tuple[str, ...], filter: dict[str, Any] | None = None) -> Op[list[Item]]:
    """Every item of a namespace (pages of :data:`PAGE`)."""
    out: list[Item] = []
    offset = 0
    while True:
        (page,) = yield Batch(
            [SearchOp(namespace, filter or None, PAGE, offset, None, refresh_ttl=False)]
        )
        out.extend(page)
        if len(page) < PAGE:
            return out
        offset += PAGE


def load_access(spaces: Spaces, user: str, ids: Sequence[str]) -> Op[dict[str, Any]]:
    if not ids:
        return {}
    ns = spaces.access(user)
    results = yield Batch([GetOp(ns, i, refresh_ttl=False) for i in ids])
    return {i: item.value for i, item in zip(ids, results, strict=True) if item is not None}


def write_access(
    spaces: Spaces, user: str, memories: Sequence[Memory], now: datetime
) -> tuple[list[StoreOp], list[Memory]]:
    ns = spaces.access(user)
    ops: list[StoreOp] = []
    out: list[Memory] = []
    for m in memories:
        count = m.access_count + 1
        ops.append(
            PutOp(ns, m.id, {"access_count": count, "last_accessed_at": iso(now)}, index=False)
        )
        out.append(replace(m, access_count=count, last_accessed_at=now))
    return ops, out


# -- add ------------------------------------------------------------------------------------------------------


def add_op(settings: Settings, user: str, news: Sequence[NewMemory]) -> Op[list[str]]:
    """Write memories not stored yet; returns the id of each (existing id for a duplicate)."""
    spaces = settings.spaces
    ns = spaces.memories(user)
    by_hash: dict[str, NewMemory] = {}
    hashes: list[str] = []
    for new in news:
        h = content_hash(new.text)
        hashes.append(h)
        by_hash.setdefault(h, new)
    unique = list(by_hash)
    found = yield Batch(
        [GetOp(ns, f"{p}_{h}", refresh_ttl=False) for h in unique for p in ("m", "c")]
    )
    ids: dict[str, str] = {}
    fresh: list[str] = []
    for n, h in enumerate(unique):
        m_item, c_item = found[2 * n], found[2 * n + 1]
        if m_item is not None:
            ids[h] = m_item.key
        elif c_item is not None:
            ids[h] = c_item.key
        else:
            ids[h] = f"m_{h}"
            fresh.append(h)
    if fresh:
        texts = [by_hash[h].text for h in fresh]
        vectors = yield EmbedDocuments(texts)
        now = settings.now()
        puts: list[StoreOp] = []
        primed: dict[str, list[float]] = {}
        for h, vec in zip(fresh, vectors, strict=True):
            new = by_hash[h]
            value = build_value(user, ids[h], new, vec, min(now, new.created_at))
            puts.append(PutOp(ns, ids[h], value))
            primed[new.text] = vec
        yield Batch(puts, primed)
    return [ids[h] for h in hashes]


# -- reads and erasure ---------------------------------------------------------------------------------------------


def get_op(settings: Settings, user: str, memory_ids: Sequence[str]) -> Op[list[Memory | None]]:
    ns = settings.spaces.memories(user)
    items = yield Batch([GetOp(ns, i, refresh_ttl=False) for i in memory_ids])
    access = yield from load_access(
        settings.spaces, user, [i for i, it in zip(memory_ids, items, strict=True) if it]
    )
    return [None if it is None else decode_memory(it.value, access.get(it.key)) for it in items]


def list_op(settings: Settings, user: str, include_superseded: bool) -> Op[list[Memory]]:
    items = yield from read_all(
        settings.spaces.memories(user), validity_filter(None, include_superseded)
    )
    access = yield from load_access(settings.spaces, user, [it.key for it in items])
    out = [decode_memory(it.value, access.get(it.key)) for it in items]
    out.sort(key=lambda m: (m.created_at, m.id))
    return out


def forget_op(settings: Settings, user: str, memory_ids: Sequence[str]) -> Op[dict[str, int]]:
    """Erase memories (and, for consolidated ones, what they were merged from; for any,
    the summaries made of it)."""
    spaces = settings.spaces
    ns, ans = spaces.memories(user), spaces.access(user)
    wanted = list(dict.fromkeys(memory_ids))
    seen: set[str] = set()
    found: list[str] = []
    children: list[str] = []
    while wanted:
        items = yield Batch([GetOp(ns, i, refresh_ttl=False) for i in wanted])
        seen.update(wanted)
        nxt: list[str] = []
        for item in items:
            if item is None:
                continue
            found.append(item.key)
            children.extend(item.value.get("children") or ())
            # What it was merged from holds its content, and so does the summary made of it.
            links = [*(item.value.get("sources") or ()), item.value.get("parent_id")]
            nxt.extend(s for s in links if s and s not in seen)
        wanted = list(dict.fromkeys(nxt))
    if not found:
        return {"memories": 0, "access_records": 0}
    access = yield from load_access(spaces, user, found)
    ops: list[StoreOp] = [PutOp(ns, i, None) for i in found]
    ops.extend(PutOp(ans, i, None) for i in access)
    # The children left of an erased summary lose their parent (summarised again later).
    kept = [i for i in dict.fromkeys(children) if i not in set(found)]
    primed: dict[str, list[float]] = {}
    if kept:
        for item in (yield Batch([GetOp(ns, i, refresh_ttl=False) for i in kept])):
            if item is not None and item.value.get("parent_id") in set(found):
                value = {**item.value, "parent_id": None}
                primed[value["text"]] = as_list(unpack_vector(value["embedding"]))
                ops.append(PutOp(ns, item.key, value))
    yield Batch(ops, primed or None)
    return {"memories": len(found), "access_records": len(access)}


def forget_user_op(settings: Settings, user: str) -> Op[dict[str, int]]:
    spaces = settings.spaces
    counts: dict[str, int] = {}
    for name, ns in (
        ("memories", spaces.memories(user)),
        ("access_records", spaces.access(user)),
        ("audit_records", spaces.audit(user)),
    ):
        total = 0
        while True:
            (page,) = yield Batch([SearchOp(ns, None, PAGE, 0, None, refresh_ttl=False)])
            if not page:
                break
            yield Batch([PutOp(ns, it.key, None) for it in page])
            total += len(page)
        counts[name] = total
    return counts


def users_op(settings: Settings) -> Op[list[str]]:
    """Every user with memories (in this tenant)."""
    users: list[str] = []
    offset = 0
    prefix = MatchCondition("prefix", (settings.spaces.root,))
    while True:
        (page,) = yield Batch(
            [ListNamespacesOp(match_conditions=(prefix,), max_depth=2, limit=PAGE, offset=offset)]
        )
        users.extend(user_from_label(ns[1]) for ns in page if len(ns) == 2)
        if len(page) < PAGE:
            return sorted(set(users))
        offset += PAGE
