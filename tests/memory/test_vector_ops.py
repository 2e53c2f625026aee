"""Pure parts of vector memory: embedder, filters, MMR, clustering, chunking (no database)."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from haive_langgraph.memory import HashingEmbeddings, Memory
from haive_langgraph.memory.vector._chunks import Line, chunk_lines, conversation_news
from haive_langgraph.memory.vector._consolidation import merged_text, strategy_name
from haive_langgraph.memory.vector._filters import (
    search_filter,
    translate_filters,
    validity_filter,
)
from haive_langgraph.memory.vector._scoring import mmr, near_duplicate_groups
from haive_langgraph.memory.vector._values import OPEN_END, iso, user_from_label, user_label
from haive_langgraph.stores import InvalidFilterError


def cos(a: list[float], b: list[float]) -> float:
    return float(np.dot(a, b))


def test_hashing_embeddings_are_deterministic_unit_and_lexical() -> None:
    emb = HashingEmbeddings(384)
    a = emb.embed_query("The user likes green tea")
    assert a == HashingEmbeddings(384).embed_documents(["The user likes green tea"])[0]
    assert len(a) == 384 and math.isclose(math.fsum(x * x for x in a), 1.0, rel_tol=1e-9)
    near = emb.embed_query("the user liked green teas")
    far = emb.embed_query("prefers espresso coffee")
    assert cos(a, near) > 0.6 > 0.2 > cos(a, far)
    # Stopwords and punctuation only: still a unit vector.
    assert math.isclose(math.fsum(x * x for x in emb.embed_query("the, of!")), 1.0)


def test_filters_translate_metadata_keys_and_reject_unknown_operators() -> None:
    when = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert translate_filters(
        {
            "topic": "tea",
            "importance": {"$gte": 0.5},
            "metadata.a.b": 1,
            "created_at": {"$lt": when},
        }
    ) == {
        "metadata.topic": "tea",
        "importance": {"$gte": 0.5},
        "metadata.a.b": 1,
        "created_at": {"$lt": "2025-01-02T03:04:05.000000+00:00"},
    }
    with pytest.raises(InvalidFilterError, match=r"'\$like' on 'metadata.topic'"):
        translate_filters({"topic": {"$like": "t%"}})
    with pytest.raises(InvalidFilterError, match="operator"):
        translate_filters({"$or": []})
    with pytest.raises(InvalidFilterError, match="valid_to"):
        search_filter({"valid_to": "x"}, None, False)


def test_as_of_filter_is_an_interval() -> None:
    t = datetime(2025, 1, 1, tzinfo=UTC)
    f = validity_filter(t, False)
    assert f == {"valid_from": {"$lte": iso(t)}, "valid_to": {"$gt": iso(t)}}
    assert iso(t) < OPEN_END
    assert validity_filter(None, True) == {}


def test_user_labels_round_trip() -> None:
    for u in ("alice@example.com", "a.b%2E", "%", "x"):
        label = user_label(u)
        assert "." not in label and user_from_label(label) == u
    with pytest.raises(ValueError, match="user_id"):
        user_label("")


def test_mmr_prefers_novelty_as_lambda_drops() -> None:
    q = np.array([1.0, 0.0, 0.0])
    cands = np.array([[1.0, 0.0, 0.0], [0.99, 0.14, 0.0], [0.8, 0.0, 0.6]])
    rel = list(cands @ q)
    assert mmr(q, cands, rel, 2, 1.0) == [0, 1]
    assert mmr(q, cands, rel, 2, 0.3) == [0, 2]
    assert mmr(q, cands, rel, 5, 0.5) == [0, 2, 1]


def test_leader_clustering_does_not_chain() -> None:
    # a~b and b~c above 0.9, a and c below: with a first, c stays alone.
    angle = math.acos(0.93)
    vecs = np.array([[math.cos(k * angle), math.sin(k * angle)] for k in range(3)])
    groups = near_duplicate_groups(vecs, [0, 1, 2], 0.9)
    assert [(g, [j for j, _ in m]) for g, m in groups] == [(0, [1])]
    assert near_duplicate_groups(vecs, [0, 1, 2], 1.0) == []
    same = np.array([[0.3, 0.4], [0.3, 0.4]])
    assert len(near_duplicate_groups(same, [0, 1], 1.0)) == 1  # identical merge at 1.0


def test_merge_strategies() -> None:
    t = datetime(2025, 1, 1, tzinfo=UTC)

    def mem(text: str, days: int) -> Memory:
        return Memory(
            id=text,
            user_id="u",
            text=text,
            metadata={},
            importance=0.5,
            created_at=t + timedelta(days=days),
            valid_from=t,
        )

    group = [
        mem("Likes tea. Lives in Lyon.", 0),
        mem("likes tea! Has a dog.", 2),
        mem("Likes tea", 1),
    ]
    assert merged_text("merge", group) == "Likes tea. Lives in Lyon. Has a dog."
    assert merged_text("latest", group) == "likes tea! Has a dog."
    assert merged_text("longest", group) == "Likes tea. Lives in Lyon."
    assert merged_text(lambda ms: " / ".join(m.text for m in ms), group).count(" / ") == 2
    with pytest.raises(ValueError, match="strategy"):
        strategy_name("summarize")


def test_chunks_cover_every_message_with_overlap() -> None:
    lines = [
        Line(f"m{n}", n, f"human: message number {n} " + "word " * (n % 4 * 5), None)
        for n in range(12)
    ]
    chunks = chunk_lines(lines, 120, 30)
    assert all(len(text) <= 120 for text, _ in chunks)
    covered = [line.seq for _, c in chunks for line in c]
    assert sorted(set(covered)) == list(range(12))
    # Neighbouring chunks share text (the overlap).
    assert any(a[1][-1].seq == b[1][0].seq for a, b in itertools.pairwise(chunks))
    with pytest.raises(ValueError, match="chunk_overlap"):
        conversation_news("c", lines, {}, 100, 100, 0.5, datetime.now(UTC))
