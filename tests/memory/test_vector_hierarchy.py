"""Hierarchical consolidation on a real PostgreSQL: summaries of clusters, then of summaries.

A keyword embedder makes the clusters known in advance: texts about tea and
coffee are "drinks", dogs and cats "pets"; texts of one topic are nearly the
same vector (cosine > 0.99), two topics of one group are at 0.735, two groups
are orthogonal. Summaries come from LangChain's fake chat models.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from langchain_core.language_models import FakeListChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage

from haive_langgraph.errors import ConfigurationError
from haive_langgraph.memory import AsyncVectorMemory, InvalidMemoryError, VectorMemory
from tests.memory.vector_helpers import DIMS, Clock, Side, user

pytestmark = pytest.mark.timeout(120)

GROUPS = {"tea": "drinks", "coffee": "drinks", "dog": "pets", "cat": "pets"}
AXES = ["drinks", "pets", "tea", "coffee", "dog", "cat"]


def keyword_embed(texts: list[str]) -> list[list[float]]:
    """The first topic word of a text (or a group word) decides its direction."""
    out = []
    for text in texts:
        words = [w.strip(".,:;!?").lower() for w in text.split()]
        v = np.zeros(DIMS)
        topic = next((w for w in words if w in GROUPS), None)
        group = GROUPS[topic] if topic else next((w for w in words if w in AXES), "drinks")
        v[AXES.index(group)] = 1.0
        if topic:
            v[AXES.index(topic)] = 0.6
        rng = np.random.default_rng(zlib.crc32(text.encode()))
        v[10:] = rng.normal(0, 1e-3, DIMS - 10)
        out.append((v / np.linalg.norm(v)).tolist())
    return out


# Level 1 goes newest leader first: cat, dog, coffee, tea; level 2: pets, then drinks.
SUMMARIES = [
    "cat: the user has a grey cat that sleeps a lot.",
    "dog: the user walks Rex the dog daily.",
    "coffee: the user drinks espresso in the morning.",
    "tea: the user likes green tea.",
    "pets: the user has a cat and a dog.",
    "drinks: tea in the afternoon, coffee in the morning.",
]
FACTS = {
    "tea": ["tea green is a favourite", "tea with jasmine at four", "tea never with milk"],
    "coffee": ["coffee espresso at seven", "coffee double shot", "coffee from Lyon roaster"],
    "dog": ["dog Rex is a beagle", "dog walks at six", "dog eats at noon"],
    "cat": ["cat Mina is grey", "cat sleeps all day", "cat likes the sofa"],
}


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def sync_memory(dsn: str, clock: Clock) -> Iterator[VectorMemory]:
    with VectorMemory(dsn, embeddings=keyword_embed, dims=DIMS, clock=clock) as memory:
        memory.setup()
        yield memory


@pytest.fixture(scope="module")
async def async_memory(
    dsn: str, clock: Clock, sync_memory: VectorMemory
) -> AsyncIterator[AsyncVectorMemory]:
    memory = AsyncVectorMemory(dsn, embeddings=keyword_embed, dims=DIMS, clock=clock)
    await memory.setup()
    try:
        yield memory
    finally:
        await memory.aclose()


@pytest.fixture(params=["sync", "async"])
def mem(request: pytest.FixtureRequest, clock: Clock) -> Side:
    clock.now = clock.now + timedelta(days=30)
    if request.param == "sync":
        return Side(request.getfixturevalue("sync_memory"), False)
    return Side(request.getfixturevalue("async_memory"), True)


async def remember(mem: Side, clock: Clock, u: str) -> dict[str, list[str]]:
    """Three memories per topic, one topic after the other in time (tea oldest)."""
    ids: dict[str, list[str]] = {}
    start = clock.now - timedelta(days=20)
    for n, (topic, texts) in enumerate(FACTS.items()):
        ids[topic] = await mem(
            "add_memories", texts, {"topic": topic}, user_id=u,
            created_at=start + timedelta(days=n), importance=0.4,
        )  # fmt: skip
    return ids


def model() -> FakeListChatModel:
    return FakeListChatModel(responses=SUMMARIES)


async def test_dry_run_plans_and_apply_writes_two_levels(mem: Side, clock: Clock) -> None:
    u = user()
    ids = await remember(mem, clock, u)
    (vip,) = await mem("add_memories", ["tea only from Japan"], user_id=u, importance=0.9)
    before = await mem("list_memories", user_id=u)

    plan = await mem(
        "consolidate_hierarchy", model(), similarity_threshold=[0.95, 0.7], user_id=u, dry_run=True
    )
    assert plan.dry_run and plan.created == plan.linked == 0
    assert plan.candidates == 13 and plan.preserved == 1
    level1 = {g.text.split(":")[0]: g for g in plan.level(1)}
    assert {t: set(g.child_ids) for t, g in level1.items()} == {t: set(i) for t, i in ids.items()}
    assert [g.text.split(":")[0] for g in plan.level(2)] == ["pets", "drinks"]
    pets = plan.level(2)[0]
    assert set(pets.child_ids) == {level1["cat"].summary_id, level1["dog"].summary_id}
    assert 0.7 < pets.similarities[pets.child_ids[1]] < 0.75  # two topics of one group: 0.735
    # Nothing written: no summary, no parent, no audit record.
    assert await mem("list_memories", user_id=u) == before
    assert await mem("consolidation_history", u) == []

    done = await mem("consolidate_hierarchy", model(), similarity_threshold=[0.95, 0.7], user_id=u)
    assert [(g.summary_id, g.child_ids) for g in done.groups] == [
        (g.summary_id, g.child_ids) for g in plan.groups
    ]
    assert done.created == 6 and done.linked == 12 + 4
    after = {m.id: m for m in await mem("list_memories", user_id=u)}
    assert len(after) == 13 + 6
    for topic, children in ids.items():
        summary = after[level1[topic].summary_id]
        assert summary.kind == "summary" and summary.level == 1
        assert set(summary.children) == set(children)
        assert summary.metadata == {"topic": topic}  # what every child says alike
        assert summary.importance == 0.4
        for c in children:  # children stay current, linked to their summary
            assert after[c].parent_id == summary.id and after[c].valid_to is None
    drinks = after[plan.level(2)[1].summary_id]
    assert drinks.level == 2 and drinks.metadata == {} and drinks.parent_id is None
    assert after[level1["tea"].summary_id].parent_id == drinks.id
    assert after[vip].parent_id is None  # preserved: out of every summary
    records = await mem("consolidation_history", u)
    assert (
        sorted((r.event, r.level) for r in records)
        == [("summarize", 1)] * 4 + [("summarize", 2)] * 2
    )
    assert {r.consolidated_id for r in records} == {g.summary_id for g in done.groups}
    # Per memory: the record of its summary.
    (rec,) = await mem("consolidation_history", u, memory_id=ids["dog"][0])
    assert rec.consolidated_id == level1["dog"].summary_id and rec.similarity_threshold == 0.95

    # Search: children and summaries alike by default, the highest summaries with parents=True.
    hits = await mem("search", "tea jasmine", top_k=10, user_id=u)
    assert {h.kind for h in hits} == {"memory", "summary"}
    only = await mem("search", "tea", top_k=10, user_id=u, filters={"kind": {"$ne": "summary"}})
    assert only and {h.kind for h in only} == {"memory"}
    seen = (await mem("get_memory", drinks.id, user_id=u)).access_count
    top = await mem("search", "tea jasmine", top_k=2, user_id=u, parents=True)
    assert {h.id for h in top} == {drinks.id, vip}
    assert all(h.score is not None and h.score > 0.5 for h in top)
    assert (await mem("get_memory", drinks.id, user_id=u)).access_count == seen + 1
    # A retriever takes it too (search_kwargs, or per call).
    retriever = mem.memory.for_user(u).as_retriever(search_kwargs={"k": 1, "parents": True})
    if mem.is_async:
        found = await retriever.ainvoke("coffee espresso")
    else:
        found = await asyncio.to_thread(retriever.invoke, "coffee espresso")
    assert [d.metadata["memory_id"] for d in found] == [drinks.id]
    # Before the summaries existed, no parent held: the children themselves.
    early = await mem(
        "search", "tea", top_k=3, user_id=u, parents=True, as_of=clock.now - timedelta(seconds=1)
    )
    assert early and all(h.kind == "memory" for h in early)

    # Again: every memory has a parent, nothing to do.
    again = await mem("consolidate_hierarchy", model(), similarity_threshold=[0.95, 0.7], user_id=u)
    assert again.groups == [] and again.created == 0


async def test_new_memories_form_new_summaries_and_forget_takes_summaries(
    mem: Side, clock: Clock
) -> None:
    u = user()
    ids = await remember(mem, clock, u)
    await mem("consolidate_hierarchy", model(), 0.95, levels=1, user_id=u)
    clock.advance(timedelta(hours=1))
    new = await mem("add_memories", ["tea oolong on sundays", "tea from Taiwan"], user_id=u)
    gen = GenericFakeChatModel(messages=iter([AIMessage("tea: oolong from Taiwan on sundays.")]))
    report = await mem("consolidate_hierarchy", gen, 0.95, levels=1, user_id=u)
    ((group),) = report.groups
    assert set(group.child_ids) == set(new) and report.created == 1 and report.linked == 2
    assert report.candidates == 2  # the others have a parent already

    # Erasing a child erases the summaries made of it (they hold its content).
    tea_summary = (await mem("get_memory", ids["tea"][0], user_id=u)).parent_id
    counts = await mem("forget", ids["tea"][0], user_id=u)
    assert counts["memories"] == 2
    assert await mem("get_memory", tea_summary, user_id=u) is None
    # Its other children lose their parent: the next run summarises them again.
    assert (await mem("get_memory", ids["tea"][1], user_id=u)).parent_id is None
    again = await mem("consolidate_hierarchy", model(), 0.95, levels=1, user_id=u)
    assert [set(g.child_ids) for g in again.groups] == [set(ids["tea"][1:])]


async def test_a_model_without_text_writes_nothing(mem: Side, clock: Clock) -> None:
    u = user()
    await remember(mem, clock, u)
    before = await mem("list_memories", user_id=u)
    bad = FakeListChatModel(responses=[SUMMARIES[0], "   "])
    with pytest.raises(InvalidMemoryError, match="nothing was written"):
        await mem("consolidate_hierarchy", bad, 0.95, user_id=u)
    assert await mem("list_memories", user_id=u) == before
    assert await mem("consolidation_history", u) == []


async def test_function_summarizer_min_cluster_size_and_merge_leaves_summaries(
    mem: Side, clock: Clock
) -> None:
    u = user()
    await remember(mem, clock, u)
    await mem("add_memories", ["cat Mina is grey!"], user_id=u)  # four cat memories

    def join(texts: list[str]) -> str:
        return "cat: " + " / ".join(sorted(texts))

    report = await mem("consolidate_hierarchy", join, 0.95, levels=1, min_cluster_size=4, user_id=u)
    ((g),) = report.groups
    assert len(g.child_ids) == 4 and g.text.startswith("cat: cat Mina is grey")
    assert report.summarizer == "join"
    # Merging near-duplicates leaves summaries alone (they are derived).
    merged = await mem("consolidate_memories", similarity_threshold=0.9999, user_id=u)
    assert g.summary_id not in {i for grp in merged.groups for i in grp.source_ids}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"levels": 0}, "levels"),
        ({"levels": 9}, "levels"),
        ({"min_cluster_size": 1}, "min_cluster_size"),
        ({"similarity_threshold": 0}, "similarity_threshold"),
        ({"similarity_threshold": []}, "similarity_threshold"),
        ({"preserve_important": 2}, "preserve_important"),
    ],
)
def test_bad_arguments_are_refused(
    sync_memory: VectorMemory, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigurationError, match=match):
        sync_memory.consolidate_hierarchy(model(), user_id="u", **kwargs)
    with pytest.raises(ConfigurationError, match="summarizer"):
        sync_memory.consolidate_hierarchy(42, user_id="u")  # type: ignore[arg-type]
