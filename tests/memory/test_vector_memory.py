"""VectorMemory and AsyncVectorMemory on a real PostgreSQL with pgvector: one body, both classes."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.runnables import RunnableLambda, RunnablePassthrough

from haive_langgraph.errors import ConfigurationError
from haive_langgraph.memory import (
    AsyncVectorMemory,
    HashingEmbeddings,
    InvalidMemoryError,
    VectorMemory,
)
from haive_langgraph.memory.vector._values import user_label
from haive_langgraph.stores import InvalidFilterError
from tests.memory.vector_helpers import DIMS, Clock, Side, user

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def sync_memory(dsn: str, clock: Clock) -> Iterator[VectorMemory]:
    with VectorMemory(dsn, embeddings=HashingEmbeddings(DIMS), clock=clock) as memory:
        memory.setup()
        yield memory


@pytest.fixture(scope="module")
async def async_memory(
    dsn: str, clock: Clock, sync_memory: VectorMemory
) -> AsyncIterator[AsyncVectorMemory]:
    memory = AsyncVectorMemory(dsn, embeddings=HashingEmbeddings(DIMS), clock=clock)
    await memory.setup()
    try:
        yield memory
    finally:
        await memory.aclose()


@pytest.fixture(params=["sync", "async"])
def mem(request: pytest.FixtureRequest, clock: Clock) -> Side:
    clock.now = clock.now + timedelta(days=1)  # every test starts later than the previous one
    if request.param == "sync":
        return Side(request.getfixturevalue("sync_memory"), False)
    return Side(request.getfixturevalue("async_memory"), True)


FACTS = [
    "The user likes green tea with jasmine.",
    "The user lives in Lyon, France.",
    "The user's dog is called Rex.",
    "The user works as a nurse at night.",
    "The user is allergic to peanuts.",
]


async def test_search_returns_known_neighbours_with_filters(mem: Side) -> None:
    u = user()
    ids = await mem(
        "add_memories", FACTS, [{"topic": f"t{n}", "n": n} for n in range(5)], user_id=u
    )
    assert len(set(ids)) == 5 and all(i.startswith("m_") for i in ids)
    hits = await mem("search", "what is the name of the dog", top_k=2, user_id=u)
    assert hits[0].text == FACTS[2]
    assert hits[0].id == ids[2] and hits[0].user_id == u
    assert hits[0].score is not None and hits[0].score >= (hits[1].score or 0)
    assert hits[0].metadata == {"topic": "t2", "n": 2}
    # Metadata keys filter as they are; operators compare numbers as numbers.
    hits = await mem("search", "dog", top_k=5, filters={"n": {"$gte": 3}}, user_id=u)
    assert {h.text for h in hits} == set(FACTS[3:])
    hits = await mem("search", "tea", top_k=5, filters={"topic": {"$in": ["t0", "t1"]}}, user_id=u)
    assert {h.text for h in hits} == set(FACTS[:2])
    # Another user's memories are never found.
    assert await mem("search", "dog", top_k=5, user_id=user()) == []


async def test_exact_duplicates_are_stored_once(mem: Side) -> None:
    u = user()
    first = await mem("add_memories", ["Likes  Green tea", "likes green tea"], user_id=u)
    again = await mem("add_memories", "LIKES GREEN TEA ", user_id=u)
    assert first[0] == first[1] == again[0]
    assert [m.text for m in await mem("list_memories", user_id=u)] == ["Likes  Green tea"]


async def test_bad_input_is_refused_naming_the_problem(mem: Side) -> None:
    u = user()
    with pytest.raises(InvalidMemoryError, match="empty"):
        await mem("add_memories", ["fine", "   "], user_id=u)
    assert await mem("list_memories", user_id=u) == []  # nothing of the call was written
    with pytest.raises(InvalidMemoryError, match="query is empty"):
        await mem("search", "", user_id=u)
    with pytest.raises(InvalidFilterError, match=r"\$regex"):
        await mem("search", "tea", filters={"topic": {"$regex": "t.*"}}, user_id=u)
    for bad in (0, 0.0, 1.5, -0.2, math.nan, True, "0.9"):
        with pytest.raises(
            ConfigurationError, match=r"similarity_threshold must be a number in \(0, 1\]"
        ):
            await mem("consolidate_memories", similarity_threshold=bad, user_id=u)
    with pytest.raises(ConfigurationError, match="temporal_weight"):
        await mem("get_episodic_memories", u, "tea", 1.5)
    with pytest.raises(ConfigurationError, match="no user"):
        await mem("search", "tea")


def test_dims_mismatch_names_both(dsn: str) -> None:
    def wrong(texts: list[str]) -> list[list[float]]:
        return [[0.1] * 32 for _ in texts]

    with (
        VectorMemory(dsn, embeddings=wrong, dims=DIMS, user_id="u") as memory,
        pytest.raises(ConfigurationError, match=r"dims=64.*32-dimensional"),
    ):
        memory.add_memories(["a fact"])
    with pytest.raises(ConfigurationError, match=r"dims=32 does not match .* 64-dimensional"):
        VectorMemory(dsn, embeddings=HashingEmbeddings(DIMS), dims=32)
    with pytest.raises(ConfigurationError, match="pass dims="):
        VectorMemory(dsn, embeddings=wrong)


async def test_mmr_trades_relevance_for_diversity(mem: Side) -> None:
    u = user()
    await mem(
        "add_memories",
        [
            "green tea in the morning",
            "green tea in the morning, every day",
            "green tea in the morning with honey",
            "black tea with milk in the afternoon",
        ],
        user_id=u,
    )
    plain = await mem("search", "green tea morning", top_k=2, user_id=u)
    assert all("green" in h.text for h in plain)
    diverse = await mem(
        "search", "green tea morning", top_k=2, rerank="mmr", mmr_lambda=0.3, user_id=u
    )
    assert diverse[0].text == plain[0].text
    assert "black tea" in diverse[1].text


class LengthEncoder:
    """A cross-encoder that prefers short texts (a real implementation of the protocol)."""

    def score(self, query: str, texts: list[str]) -> list[float]:
        return [-float(len(t)) for t in texts]


async def test_cross_encoder_reranks(mem: Side) -> None:
    u = user()
    await mem("add_memories", ["tea", "tea and biscuits", "tea, biscuits and jam"], user_id=u)
    hits = await mem("search", "tea biscuits jam", top_k=3, rerank=LengthEncoder(), user_id=u)
    assert [h.text for h in hits] == ["tea", "tea and biscuits", "tea, biscuits and jam"]
    assert hits[0].score == -3.0 and hits[0].similarity is not None


async def test_episodic_recall_weighs_time(mem: Side, clock: Clock) -> None:
    u = user()
    start = clock.now
    # Old episode, very similar to the query; recent episode, less similar.
    await mem(
        "add_memories",
        ["trip to Rome: visited the Colosseum and ate pasta"],
        user_id=u,
        created_at=start - timedelta(days=60),
        conversation_id="conv-old",
    )
    await mem(
        "add_memories",
        ["booked train tickets"],
        user_id=u,
        created_at=start - timedelta(days=60),
        conversation_id="conv-old",
    )
    await mem(
        "add_memories",
        ["trip planning: bought a new suitcase"],
        user_id=u,
        created_at=start - timedelta(hours=1),
        conversation_id="conv-new",
    )
    by_similarity = await mem("get_episodic_memories", u, "Rome Colosseum pasta trip", 0.0, 2)
    by_time = await mem("get_episodic_memories", u, "Rome Colosseum pasta trip", 1.0, 2)
    assert [e.episode_id for e in by_similarity] == ["conv-old", "conv-new"]
    assert [e.episode_id for e in by_time] == ["conv-new", "conv-old"]
    old = by_similarity[0]
    assert old.conversation_id == "conv-old" and len(old.memories) == 2
    # Recency: half-life 7 days, 60 days old.
    assert by_time[1].score == pytest.approx(0.5 ** (60 / 7), rel=1e-6)


async def test_access_counts_and_decay(mem: Side, clock: Clock) -> None:
    u = user()
    now = clock.now
    old = await mem(
        "add_memories", ["tea at the old house"], user_id=u, created_at=now - timedelta(days=30)
    )
    new = await mem("add_memories", ["tea at the new house"], user_id=u)
    first = await mem("search", "tea house", top_k=2, user_id=u)
    second = await mem("search", "tea house", top_k=2, user_id=u)
    assert [m.access_count for m in first] == [1, 1]
    assert [m.access_count for m in second] == [2, 2]
    assert second[0].last_accessed_at == clock.now
    # Decay: both were just accessed; move on, then access only the old one.
    clock.advance(timedelta(days=10))
    await mem("search", "old house", top_k=1, user_id=u)
    decayed = await mem(
        "search", "tea house", top_k=2, user_id=u, decay_half_life=timedelta(days=1)
    )
    assert decayed[0].id == old[0]  # recently accessed: fresh
    assert decayed[1].id == new[0]
    assert decayed[1].score == pytest.approx(decayed[1].similarity * 0.5 ** (10 / 1.5), rel=1e-6)


async def test_consolidation_supersedes_and_keeps_originals(mem: Side, clock: Clock) -> None:
    u, other = user(), user()
    dups = ["user likes green tea", "user likes green tea a lot", "the user likes green tea daily"]
    ids = await mem("add_memories", [*dups, "user owns a red bicycle"], user_id=u)
    await mem("add_memories", [*dups], user_id=other)
    important = await mem(
        "add_memories", ["user likes green tea very much"], user_id=u, importance=0.9
    )

    plan = await mem("consolidate_memories", similarity_threshold=0.6, dry_run=True, user_id=u)
    assert plan.dry_run and plan.superseded == 0 and len(plan.groups) == 1
    assert set(plan.groups[0].source_ids) == set(ids[:3]) and plan.preserved == 1
    assert len(await mem("list_memories", user_id=u)) == 5  # nothing changed

    before = clock.now
    clock.advance(timedelta(minutes=5))
    report = await mem("consolidate_memories", similarity_threshold=0.6, user_id=u)
    assert (report.superseded, report.created) == (3, 1)
    cid = report.groups[0].consolidated_id
    merged = await mem("get_memory", cid, user_id=u)
    assert merged.kind == "consolidated" and set(merged.sources) == set(ids[:3])
    # "merge" keeps every distinct sentence of the group, leader first.
    assert all(d in merged.text for d in dups) and merged.text.startswith(plan.groups[0].text[:10])
    for i in ids[:3]:
        original = await mem("get_memory", i, user_id=u)
        assert original.superseded_by == cid and original.valid_to == clock.now
    current = {m.id for m in await mem("list_memories", user_id=u)}
    assert current == {cid, ids[3], important[0]}
    # Search hides superseded memories unless asked; as_of shows the past.
    assert not {h.id for h in await mem("search", "green tea", top_k=10, user_id=u)} & set(ids[:3])
    everything = await mem("search", "green tea", top_k=10, include_superseded=True, user_id=u)
    assert set(ids[:3]) <= {h.id for h in everything}
    past = await mem("search", "green tea", top_k=10, as_of=before, user_id=u)
    assert set(ids[:3]) <= {h.id for h in past} and cid not in {h.id for h in past}
    # Audit record of the merge.
    (record,) = await mem("consolidation_history", u, memory_id=ids[0])
    assert record.consolidated_id == cid and set(record.source_ids) == set(ids[:3])
    assert record.similarity_threshold == 0.6 and record.at == clock.now
    # The other user's identical memories are untouched.
    assert len(await mem("list_memories", user_id=other)) == 3


async def test_consolidation_never_crosses_tenants(mem: Side, tenant_ids: tuple[str, str]) -> None:
    a, b = (mem.for_tenant(t) for t in tenant_ids)
    u = "shared-user-id"
    texts = ["user likes green tea", "user likes green tea a lot"]
    await a("add_memories", texts, user_id=u)
    await b("add_memories", texts, user_id=u)
    report = await a("consolidate_memories", similarity_threshold=0.6)  # every user of tenant a
    assert report.users == (u,) and report.superseded == 2
    assert len(await b("list_memories", user_id=u)) == 2
    assert all(m.is_current for m in await b("list_memories", user_id=u, include_superseded=True))


@pytest.fixture
def tenant_ids() -> tuple[str, str]:
    import uuid

    return (f"ta-{uuid.uuid4().hex[:6]}", f"tb-{uuid.uuid4().hex[:6]}")


async def test_forget_and_forget_user(mem: Side) -> None:
    u, other = user(), user()
    ids = await mem(
        "add_memories",
        ["user likes green tea", "user likes green tea a lot", "user has a cat"],
        user_id=u,
    )
    await mem("add_memories", ["user likes green tea"], user_id=other)
    await mem("search", "tea", top_k=3, user_id=u)  # creates access records
    report = await mem("consolidate_memories", similarity_threshold=0.6, user_id=u)
    cid = report.groups[0].consolidated_id
    # Forgetting the consolidated memory takes its sources along.
    counts = await mem("forget", [cid], user_id=u)
    assert counts == {"memories": 3, "access_records": 2}
    assert [m.id for m in await mem("list_memories", user_id=u, include_superseded=True)] == [
        ids[2]
    ]
    assert await mem("forget", ["m_missing"], user_id=u) == {"memories": 0, "access_records": 0}
    erased = await mem("forget_user", u)
    assert erased == {"memories": 1, "access_records": 1, "audit_records": 1}
    assert len(await mem("list_memories", user_id=other)) == 1


async def test_retriever_inside_a_chain(mem: Side) -> None:
    u = user()
    await mem("add_memories", FACTS, {"source": "profile"}, user_id=u)
    retriever = mem.memory.as_retriever(search_kwargs={"k": 2, "user_id": u})

    def fmt(docs: list[Document]) -> str:
        return "\n".join(d.page_content for d in docs)

    chain = {"context": retriever | fmt, "question": RunnablePassthrough()} | RunnableLambda(
        lambda x: f"Q: {x['question']}\n{x['context']}"
    )
    out = await chain.ainvoke("what is the dog called")
    assert out.splitlines()[1] == FACTS[2]
    if mem.is_async:
        docs = await asyncio.to_thread(retriever.invoke, "dog")  # sync path from another thread
    else:
        docs = await asyncio.to_thread(chain.invoke, "what is the dog called")
        assert docs.splitlines()[1] == FACTS[2]
        docs = retriever.invoke("dog")
    assert docs[0].page_content == FACTS[2]
    meta: dict[str, Any] = docs[0].metadata
    assert meta["memory_id"] == docs[0].id and meta["source"] == "profile"
    assert meta["score"] > 0 and meta["user_id"] == u
    with pytest.raises(ConfigurationError, match="search arguments go in search_kwargs"):
        mem.memory.as_retriever(k=3)
    with pytest.raises(ConfigurationError, match="unknown search argument 'colour'"):
        mem.memory.as_retriever(search_kwargs={"colour": "red"})


async def test_consolidating_again_keeps_the_consolidated_memory(mem: Side, clock: Clock) -> None:
    u = user()
    a, b = await mem(
        "add_memories", ["user likes green tea", "user likes green tea a lot"], user_id=u
    )
    first = await mem("consolidate_memories", similarity_threshold=0.6, user_id=u)
    cid = first.groups[0].consolidated_id
    clock.advance(timedelta(hours=1))
    (d,) = await mem("add_memories", ["user likes tea"], user_id=u)
    # "longest" picks the consolidated memory's own text: it stays, and takes d in.
    second = await mem(
        "consolidate_memories", similarity_threshold=0.6, strategy="longest", user_id=u
    )
    assert (second.created, second.superseded) == (0, 1)
    assert second.groups[0].consolidated_id == cid and second.groups[0].source_ids == (d,)
    merged = await mem("get_memory", cid, user_id=u)
    assert merged.is_current and set(merged.sources) == {a, b, d}
    assert (await mem("get_memory", d, user_id=u)).superseded_by == cid
    assert len(await mem("consolidation_history", u)) == 2


async def test_consolidation_window_importance_and_custom_strategy(mem: Side, clock: Clock) -> None:
    u = user()
    now = clock.now
    old = await mem(
        "add_memories",
        ["user plays the violin", "user plays the violin well"],
        user_id=u,
        created_at=now - timedelta(days=40),
    )
    new = await mem("add_memories", ["user runs marathons", "user runs marathons often"], user_id=u)
    report = await mem(
        "consolidate_memories",
        time_window=timedelta(days=7),
        similarity_threshold=0.6,
        strategy=lambda ms: "SUMMARY: " + " | ".join(sorted(m.text for m in ms)),
        user_id=u,
    )
    assert report.candidates == 2 and [set(g.source_ids) for g in report.groups] == [set(new)]
    assert report.groups[0].text == "SUMMARY: user runs marathons | user runs marathons often"
    for i in old:
        assert (await mem("get_memory", i, user_id=u)).is_current
    # Numeric preserve_important: 0.4 keeps every memory of importance 0.5 out.
    report = await mem(
        "consolidate_memories", similarity_threshold=0.6, preserve_important=0.4, user_id=u
    )
    assert report.groups == [] and report.preserved == report.candidates == 3


async def test_access_tracking_can_be_turned_off(dsn: str, clock: Clock) -> None:
    u = user()
    memory = VectorMemory(dsn, embeddings=HashingEmbeddings(DIMS), clock=clock, track_access=False)
    try:
        await asyncio.to_thread(memory.add_memories, ["a quiet fact"], user_id=u)
        await asyncio.to_thread(memory.search, "quiet fact", user_id=u)
        (m,) = await asyncio.to_thread(memory.list_memories, user_id=u)
        assert m.access_count == 0 and m.last_accessed_at is None
        assert memory.store.search(("memories-access", user_label(u))) == []
    finally:
        memory.close()
