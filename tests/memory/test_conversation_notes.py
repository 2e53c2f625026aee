"""store_conversation(summarize=, keywords=) and search(mode="hybrid"), sync and async."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from haive_langgraph.errors import ConfigurationError, InvalidMemoryError
from haive_langgraph.memory import (
    AsyncVectorMemory,
    ConversationStore,
    HashingEmbeddings,
    VectorMemory,
)

from .vector_helpers import DIMS, Side, user

HYBRID = {"hybrid": True}
SUMMARY = "The user asked how VACUUM works and whether it blocks writes; only VACUUM FULL does."
VACUUM_CHAT = [
    ("user", "How does vacuum work in postgres?"),
    ("assistant", "Vacuum removes dead tuples; autovacuum runs vacuum for you."),
    ("user", "Can vacuum block writes?"),
    ("assistant", "Plain vacuum does not block writes; vacuum full does."),
]
TRIP_CHAT = [
    ("user", "Book a train to Lyon on Friday"),
    ("assistant", "Done: the 9:04 train to Lyon, seat 42."),
]


def model(text: str = SUMMARY) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=iter([AIMessage(content=text)]))


@pytest.fixture(scope="module")
def conversations(dsn: str) -> Iterator[ConversationStore]:
    with ConversationStore(dsn) as store:
        store.setup()
        yield store


@pytest.fixture(scope="module")
def sync_memory(dsn: str, conversations: ConversationStore) -> Iterator[VectorMemory]:
    with VectorMemory(dsn, embeddings=HashingEmbeddings(DIMS), index_options=HYBRID) as memory:
        memory.setup()
        yield memory


@pytest.fixture(scope="module")
async def async_memory(dsn: str, sync_memory: VectorMemory) -> AsyncIterator[AsyncVectorMemory]:
    memory = AsyncVectorMemory(dsn, embeddings=HashingEmbeddings(DIMS), index_options=HYBRID)
    await memory.setup()
    try:
        yield memory
    finally:
        await memory.aclose()


@pytest.fixture(params=["sync", "async"])
def mem(request: pytest.FixtureRequest) -> Side:
    return Side(request.getfixturevalue(f"{request.param}_memory"), request.param == "async")


def conversation(store: ConversationStore, owner: str, chat: list[tuple[str, str]]) -> str:
    conv = store.create_conversation("helper", owner)
    for role, text in chat:
        store.add_message(conv.conversation_id, role, text)
    return conv.conversation_id


async def test_summary_and_keywords(mem: Side, conversations: ConversationStore) -> None:
    owner = user()
    cid = conversation(conversations, owner, VACUUM_CHAT)
    other = conversation(conversations, owner, TRIP_CHAT)
    ids = await mem(
        "store_conversation",
        cid,
        {"source": "support"},
        chunk_size=80,
        chunk_overlap=0,
        summarize=True,
        keywords=3,
        model=model(),
    )
    assert len(ids) > 2  # chunks, then the summary
    summary = await mem("get_memory", ids[-1], user_id=owner)
    assert summary.kind == "conversation_summary" and summary.text == SUMMARY
    assert summary.conversation_id == cid and summary.message_range == (0, 3)
    assert len(summary.message_ids) == 4
    chunks = [await mem("get_memory", i, user_id=owner) for i in ids[:-1]]
    assert {c.kind for c in chunks} == {"chunk"}
    # ts_stat over the four messages: 'vacuum' 6 times; 'block' and 'writes' twice each
    # in two messages (ties by word); stop words ('does', 'can', 'not') left out.
    keywords = {"vacuum": 6, "block": 2, "writes": 2}
    for m in [*chunks, summary]:
        assert m.metadata == {"source": "support", "keywords": keywords}
    await mem("store_conversation", other, keywords=True)
    trip = await mem("search", "train to Lyon", top_k=5, user_id=owner)
    assert trip[0].conversation_id == other
    assert set(trip[0].metadata["keywords"]) >= {"lyon", "train"}
    # Keywords filter.
    hits = await mem(
        "search", "train to Lyon", top_k=10, user_id=owner, filters={"keywords.vacuum": {"$gte": 3}}
    )
    assert hits and {h.conversation_id for h in hits} == {cid}
    hits = await mem(
        "search", "vacuum", top_k=10, user_id=owner, filters={"kind": "conversation_summary"}
    )
    assert [h.id for h in hits] == [ids[-1]]


async def test_notes_check_their_arguments(mem: Side, conversations: ConversationStore) -> None:
    owner = user()
    cid = conversation(conversations, owner, VACUUM_CHAT)
    with pytest.raises(ConfigurationError, match="needs model="):
        await mem("store_conversation", cid, summarize=True)
    with pytest.raises(ConfigurationError, match="summarize=True"):
        await mem("store_conversation", cid, model=model())
    with pytest.raises(ConfigurationError, match="positive number"):
        await mem("store_conversation", cid, keywords=0)
    with pytest.raises(ConfigurationError, match='"keywords" key'):
        await mem("store_conversation", cid, {"keywords": "x"}, keywords=True)
    with pytest.raises(ConfigurationError, match="keywords_config"):
        await mem("store_conversation", cid, keywords=True, keywords_config="english; drop")
    # A model without a text writes nothing.
    with pytest.raises(InvalidMemoryError, match="no summary"):
        await mem("store_conversation", cid, summarize=True, model=model(" "))
    assert await mem("list_memories", user_id=owner) == []


async def test_hybrid_search_fuses_words_and_vectors(mem: Side) -> None:
    owner = user()
    texts = [
        "Invoice INV-2291 from Acme was paid in March",
        "The March invoice from Acme is late",
        "Acme sent a reminder about an invoice",
        "Lunch with the Acme team on Friday",
    ]
    await mem("add_memories", texts, user_id=owner)
    hits = await mem("search", "INV-2291", top_k=3, user_id=owner, mode="hybrid")
    assert hits[0].text == texts[0]
    # Fused scores: at most 2 / (60 + 1), the best first in both rankings.
    assert hits[0].score == pytest.approx(2 / 61)
    assert all(h.score is not None and h.score <= 2 / 61 + 1e-9 for h in hits)
    assert all(h.similarity is not None and -1.0 <= h.similarity <= 1.0 for h in hits)
    vector = await mem("search", "INV-2291", top_k=3, user_id=owner)
    assert vector[0].score == vector[0].similarity
    mmr = await mem("search", "invoice Acme", top_k=2, user_id=owner, mode="hybrid", rerank="mmr")
    assert len(mmr) == 2
    with pytest.raises(ConfigurationError, match="mode must be"):
        await mem("search", "invoice", user_id=owner, mode="text")


def test_hybrid_needs_the_index_option(dsn: str) -> None:
    with VectorMemory(dsn, embeddings=HashingEmbeddings(DIMS), schema="plain_vectors") as plain:
        plain.setup()
        plain.add_memories(["an invoice"], user_id="u")
        with pytest.raises(ConfigurationError, match='index_options=\\{"hybrid": True\\}'):
            plain.search("invoice", user_id="u", mode="hybrid")


async def test_a_retriever_searches_hybrid(mem: Side) -> None:
    owner = user()
    await mem("add_memories", ["Ticket HX-77 is closed", "Another ticket is open"], user_id=owner)
    retriever = mem.memory.as_retriever(search_kwargs={"k": 1, "user_id": owner, "mode": "hybrid"})
    docs = await (
        retriever.ainvoke("HX-77") if mem.is_async else asyncio.to_thread(retriever.invoke, "HX-77")
    )
    assert docs[0].page_content == "Ticket HX-77 is closed"
    assert docs[0].metadata["score"] == pytest.approx(2 / 61)


def test_keywords_and_hybrid_need_our_store() -> None:
    from langchain_core.messages import HumanMessage
    from langchain_core.vectorstores import InMemoryVectorStore

    embeddings = HashingEmbeddings(DIMS)
    memory = VectorMemory(InMemoryVectorStore(embedding=embeddings), embeddings=embeddings)
    chat = [HumanMessage("vacuum twice: vacuum")]
    with pytest.raises(ConfigurationError, match="runs in PostgreSQL"):
        memory.store_conversation(chat, keywords=True, user_id="u")
    with pytest.raises(ConfigurationError, match="needs the PostgreSQL store"):
        memory.search("vacuum", user_id="u", mode="hybrid")
    # A summary needs only the model.
    ids = memory.store_conversation(chat, summarize=True, model=model(), user_id="u")
    assert memory.get_memory(ids[-1], user_id="u").kind == "conversation_summary"
