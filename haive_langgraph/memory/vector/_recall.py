"""Recall: semantic search (decay, MMR, cross-encoder rerank) and episodic recall (no I/O)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np
from langgraph.store.base import SearchItem, SearchOp

from haive_langgraph.db._limits import MAX_COUNT, check_count
from haive_langgraph.errors import ConfigurationError
from haive_langgraph.memory.vector._filters import search_filter
from haive_langgraph.memory.vector._hybrid import HybridSearch, check_mode
from haive_langgraph.memory.vector._memories import Settings, load_access, write_access
from haive_langgraph.memory.vector._scoring import decay_factor, mmr, recency
from haive_langgraph.memory.vector._steps import Batch, EmbedQuery, Op, Rescore
from haive_langgraph.memory.vector._types import CrossEncoder, Episode, Memory
from haive_langgraph.memory.vector._values import (
    check_duration,
    check_text,
    check_unit,
    decode_memory,
    parse_iso,
    unpack_vector,
)

# -- search -----------------------------------------------------------------------------------------------------

Rerank = bool | Literal["mmr"] | CrossEncoder


@dataclass(slots=True)
class Candidate:
    """A memory read back with its vector (a search result, or a consolidation candidate)."""

    memory: Memory
    vector: np.ndarray[Any, Any]


def candidates_of(items: Sequence[SearchItem]) -> list[Candidate]:
    """The scored memories of a search page, with their vectors."""
    out = []
    for item in items:
        if item.score is None or "embedding" not in item.value:
            continue  # not a memory with a vector (an unscored filler of the page)
        out.append(
            Candidate(
                decode_memory(item.value, similarity=float(item.score)),
                unpack_vector(item.value["embedding"]),
            )
        )
    return out


def _fetch(
    settings: Settings,
    user: str,
    query: str,
    qvec: list[float],
    filter: dict[str, Any],
    limit: int,
    with_access: bool,
    hybrid: bool = False,
) -> Op[list[Candidate]]:
    ns = settings.spaces.memories(user)
    if hybrid:
        items = yield HybridSearch(ns, query, qvec, filter or None, limit)
        cands = candidates_of(items)
        # The fused rank is the score; the similarity stays the vector one.
        q = np.asarray(qvec, dtype=np.float32)
        q /= float(np.linalg.norm(q)) or 1.0
        for c in cands:
            norm = float(np.linalg.norm(c.vector)) or 1.0
            sim = float(np.dot(q, c.vector) / norm)
            c.memory = replace(c.memory, similarity=sim, score=c.memory.similarity)
    else:
        (items,) = yield Batch(
            [SearchOp(ns, filter or None, limit, 0, query, refresh_ttl=False)], {query: qvec}
        )
        cands = candidates_of(items)
    if not with_access:
        return cands
    access = yield from load_access(settings.spaces, user, [c.memory.id for c in cands])
    for c in cands:
        a = access.get(c.memory.id)
        if a:
            c.memory = replace(
                c.memory,
                access_count=int(a.get("access_count", 0)),
                last_accessed_at=parse_iso(a["last_accessed_at"])
                if a.get("last_accessed_at")
                else None,
            )
    return cands


def search_op(
    settings: Settings,
    user: str,
    query: str,
    top_k: int,
    filters: Mapping[str, Any] | None,
    rerank: Rerank,
    as_of: datetime | None,
    include_superseded: bool,
    mmr_lambda: float,
    fetch_k: int | None,
    decay_half_life: timedelta | None,
    mode: str = "vector",
) -> Op[list[Memory]]:
    check_text(query, "query")
    hybrid = check_mode(mode)
    # Counts: 0 gives nothing (as LangChain's InMemoryVectorStore answers k=0), up to
    # a store search's limit (db._limits.check_count), checked before anything is embedded.
    top_k = check_count("top_k", top_k)
    mmr_lambda = check_unit(mmr_lambda, "mmr_lambda")
    decay = check_duration(decay_half_life, "decay_half_life") or settings.decay_half_life
    encoder: CrossEncoder | None = None
    use_mmr = False
    if rerank is True:
        encoder = settings.cross_encoder
        use_mmr = encoder is None
    elif rerank == "mmr":
        use_mmr = True
    elif rerank is not False:
        if not callable(getattr(rerank, "score", None)):
            raise ConfigurationError(
                f"rerank must be False, True, 'mmr' or a CrossEncoder (an object with "
                f"score(query, texts)), got {rerank!r}"
            )
        encoder = rerank  # type: ignore[assignment]
    widen = use_mmr or encoder is not None or decay is not None
    # A fetch_k below top_k (0 included) fetches top_k, as it always has.
    fetch = check_count("fetch_k", fetch_k) if fetch_k is not None else None
    widened = min(max(4 * top_k, 20), MAX_COUNT)
    limit = max(top_k, fetch if fetch is not None else (widened if widen else top_k))
    filter = search_filter(filters, as_of, include_superseded)
    if top_k == 0:
        return []
    qvec = yield EmbedQuery(query)
    # Access records are read when they are updated or decay needs them:
    # otherwise a search is one round trip.
    with_access = settings.track_access or decay is not None
    cands = yield from _fetch(settings, user, query, qvec, filter, limit, with_access, hybrid)
    now = settings.now()
    for c in cands:
        # Hybrid relevance is the fused score (the store's), else the similarity.
        sim = (c.memory.score if hybrid else c.memory.similarity) or 0.0
        score = sim * decay_factor(c.memory, now, decay) if decay is not None else sim
        c.memory = replace(c.memory, score=score)
    cands.sort(key=lambda c: -(c.memory.score or 0.0))
    if encoder is not None and cands:
        scores = yield Rescore(encoder, query, [c.memory.text for c in cands])
        if len(scores) != len(cands):
            raise ConfigurationError(
                f"the cross-encoder returned {len(scores)} scores for {len(cands)} texts"
            )
        for c, s in zip(cands, scores, strict=True):
            c.memory = replace(c.memory, score=float(s))
        cands.sort(key=lambda c: -(c.memory.score or 0.0))
        picked = cands[:top_k]
    elif use_mmr and cands:
        relevance = [c.memory.score or 0.0 for c in cands]
        if hybrid and relevance[0] > 0:  # fused scores, scaled to [0, 1] as similarities are
            relevance = [r / relevance[0] for r in relevance]
        order = mmr(
            np.asarray(qvec, dtype=np.float32),
            np.stack([c.vector for c in cands]),
            relevance,
            top_k,
            mmr_lambda,
        )
        picked = [cands[i] for i in order]
    else:
        picked = cands[:top_k]
    found = [c.memory for c in picked]
    if settings.track_access and found:
        ops, found = write_access(settings.spaces, user, found, now)
        yield Batch(ops)
    return found


# -- episodes -----------------------------------------------------------------------------------------------------


def episodic_op(
    settings: Settings,
    user: str,
    context_query: str,
    temporal_weight: float,
    max_episodes: int,
    half_life: timedelta,
    per_episode: int,
    candidates: int,
    filters: Mapping[str, Any] | None,
) -> Op[list[Episode]]:
    check_text(context_query, "context_query")
    w = check_unit(temporal_weight, "temporal_weight")
    max_episodes = check_count("max_episodes", max_episodes)
    per_episode = check_count("per_episode", per_episode)
    candidates = check_count("candidates", candidates)
    half = check_duration(half_life, "half_life")
    assert half is not None
    filter = search_filter(filters, None, False)
    if not (max_episodes and per_episode and candidates):
        return []
    qvec = yield EmbedQuery(context_query)
    cands = yield from _fetch(
        settings, user, context_query, qvec, filter, candidates, settings.track_access
    )
    now = settings.now()
    groups: dict[str, list[Memory]] = {}
    for c in cands:
        m = c.memory
        score = (1.0 - w) * (m.similarity or 0.0) + w * recency(m.created_at, now, half)
        m = replace(m, score=score)
        groups.setdefault(m.episode_id or m.conversation_id or m.id, []).append(m)
    ranked = sorted(groups.items(), key=lambda g: -max(m.score or 0.0 for m in g[1]))
    episodes: list[Episode] = []
    for episode_id, members in ranked[:max_episodes]:
        best = sorted(members, key=lambda m: -(m.score or 0.0))[:per_episode]
        best.sort(key=lambda m: (m.created_at, m.message_range or (0, 0), m.id))
        convs = {m.conversation_id for m in best}
        episodes.append(
            Episode(
                episode_id=episode_id,
                conversation_id=convs.pop() if len(convs) == 1 else None,
                memories=best,
                score=max(m.score or 0.0 for m in best),
                started_at=best[0].created_at,
                ended_at=best[-1].created_at,
            )
        )
    if settings.track_access and episodes:
        recalled = [m for e in episodes for m in e.memories]
        ops, updated = write_access(settings.spaces, user, recalled, now)
        yield Batch(ops)
        it = iter(updated)
        episodes = [replace(e, memories=[next(it) for _ in e.memories]) for e in episodes]
    return episodes
