"""Vector arithmetic of vector memory: recency, decay, MMR and near-duplicate clusters (no I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from haive_langgraph.memory.vector._types import Memory


def _unit_rows(matrix: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.float32]]:
    m = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(m, axis=-1, keepdims=True)
    norms[norms == 0] = 1.0
    return m / norms  # type: ignore[no-any-return]


def recency(created_at: datetime, now: datetime, half_life: timedelta) -> float:
    """``0.5 ** (age / half_life)``: 1 for a memory of now, 0.5 after one half-life."""
    age = max((now - created_at).total_seconds(), 0.0)
    return float(0.5 ** (age / half_life.total_seconds()))


def decay_factor(memory: Memory, now: datetime, half_life: timedelta) -> float:
    """Decay of a memory's search score: ``0.5 ** (idle / (half_life * (1 + importance)))``.

    ``idle`` runs from the later of its creation and its last access, so
    memories that keep being recalled stay fresh and important ones fade slower.
    """
    since = max(memory.created_at, memory.last_accessed_at or memory.created_at)
    idle = max((now - since).total_seconds(), 0.0)
    return float(0.5 ** (idle / (half_life.total_seconds() * (1.0 + memory.importance))))


def mmr(
    query: np.ndarray[Any, Any],
    candidates: np.ndarray[Any, Any],
    relevance: Sequence[float],
    k: int,
    lambda_mult: float,
) -> list[int]:
    """Maximal marginal relevance: indices picked one by one, trading relevance for novelty.

    Each pick maximises ``lambda * relevance - (1 - lambda) * max similarity
    to the picks so far`` (``lambda`` 1: plain ranking, 0: most diverse).
    """
    n = len(candidates)
    if n == 0 or k <= 0:
        return []
    vecs = _unit_rows(candidates)
    rel = np.asarray(relevance, dtype=np.float64)
    sims = (vecs @ vecs.T).astype(np.float64)
    picked = [int(np.argmax(rel))]
    closest = sims[:, picked[0]].copy()
    while len(picked) < min(k, n):
        objective = lambda_mult * rel - (1.0 - lambda_mult) * closest
        objective[picked] = -np.inf
        best = int(np.argmax(objective))
        picked.append(best)
        closest = np.maximum(closest, sims[:, best])
    return picked


def near_duplicate_groups(
    vectors: np.ndarray[Any, Any],
    priority: Sequence[int],
    threshold: float,
    *,
    block: int = 1024,
) -> list[tuple[int, list[tuple[int, float]]]]:
    """Leader clustering: each unassigned memory, in ``priority`` order, takes every
    unassigned memory within ``threshold`` cosine similarity of itself.

    Members are compared with their leader, not chained through each other,
    so a group never drifts: A~B and B~C with A and C apart do not make one
    group. Returns ``(leader, [(member, similarity), ...])``.
    """
    n = len(vectors)
    if n < 2:
        return []
    unit = _unit_rows(vectors)
    # float32 rounding: identical vectors score 0.99999994, not 1.
    cut = np.float32(threshold - 1e-6)
    neighbours: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    for start in range(0, n, block):
        sims = unit[start : start + block] @ unit.T
        rows, cols = np.nonzero(sims >= cut)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            i = start + r
            if i != c:
                neighbours[i].append((c, float(sims[r, c])))
    assigned = np.zeros(n, dtype=bool)
    groups = []
    for i in priority:
        if assigned[i] or not neighbours[i]:
            continue
        members = [(j, s) for j, s in neighbours[i] if not assigned[j]]
        if not members:
            continue
        assigned[i] = True
        for j, _ in members:
            assigned[j] = True
        groups.append((i, members))
    return groups
