"""One memory API over three backends, for real: our pgvector store, langchain-postgres'
``PGVector`` on the test server, and Qdrant in-process (``qdrant-client``, ``:memory:``).

Every test runs the same body on each backend, sync and async, with the
offline ``HashingEmbeddings`` (nothing is downloaded: the vector stores are
given our embedder, never a default model).
"""

from __future__ import annotations

import asyncio
import uuid
import warnings
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
from langchain_core.vectorstores import InMemoryVectorStore, VectorStore
from langgraph.store.memory import InMemoryStore
from psycopg import conninfo

from haive_langgraph.errors import ConfigurationError
from haive_langgraph.memory import AsyncVectorMemory, HashingEmbeddings, VectorMemory
from haive_langgraph.memory.vector._langchain_backend import VectorStoreBackend
from tests.memory.vector_helpers import DIMS, Clock, Side, user

pytestmark = pytest.mark.timeout(180)

EMB = HashingEmbeddings(DIMS)
BACKENDS = [f"{b}-{m}" for b in ("ours", "pgvector", "qdrant") for m in ("sync", "async")]


def sqlalchemy_url(dsn: str) -> str:
    """PGVector takes SQLAlchemy URLs only."""
    params = conninfo.conninfo_to_dict(dsn)
    host = str(params.get("host", "localhost"))
    auth = quote(str(params.get("user", "postgres")), safe="")
    if params.get("password"):
        auth += ":" + quote(str(params["password"]), safe="")
    port = params.get("port", 5432)
    if host.startswith("/"):
        return f"postgresql+psycopg://{auth}@/{params['dbname']}?host={host}&port={port}"
    return f"postgresql+psycopg://{auth}@{host}:{port}/{params['dbname']}"


def qdrant_store() -> VectorStore:
    from langchain_qdrant import QdrantVectorStore
    from qdrant_client import QdrantClient
    from qdrant_client.models import Distance, VectorParams

    client = QdrantClient(location=":memory:")
    name = f"m{uuid.uuid4().hex[:8]}"
    client.create_collection(name, vectors_config=VectorParams(size=DIMS, distance=Distance.COSINE))
    return QdrantVectorStore(client=client, collection_name=name, embedding=EMB)


def pgvector_store(dsn: str, is_async: bool) -> VectorStore:
    from langchain_postgres import PGVector

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return PGVector(
            embeddings=EMB,
            connection=sqlalchemy_url(dsn),
            collection_name=f"m{uuid.uuid4().hex[:8]}",
            # No embedding_length: langchain-postgres builds its table classes once per
            # process, with the first PGVector's dimensions, and other tests of this
            # process (tests/ops/test_import.py) embed with other dimensions.
            use_jsonb=True,
            async_mode=is_async,
        )


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=BACKENDS)
async def mem(request: pytest.FixtureRequest, dsn: str, clock: Clock) -> AsyncIterator[Side]:
    clock.now = clock.now + timedelta(days=60)
    kind, mode = request.param.split("-")
    is_async = mode == "async"
    conn: Any = dsn
    if kind == "qdrant":
        conn = qdrant_store()
    elif kind == "pgvector":
        conn = pgvector_store(dsn, is_async)
    if is_async:
        amemory = AsyncVectorMemory(conn, embeddings=EMB, clock=clock)
        await amemory.setup()
        yield Side(amemory, True)
        await amemory.aclose()
    else:
        memory = VectorMemory(conn, embeddings=EMB, clock=clock)
        memory.setup()
        yield Side(memory, False)
        memory.close()
    engine = getattr(conn, "_async_engine", None) or getattr(conn, "_engine", None)
    if engine is not None:  # PGVector's SQLAlchemy pool
        result = engine.dispose()
        if hasattr(result, "__await__"):
            await result


FACTS = [
    "The user likes green tea with jasmine.",
    "The user lives in Lyon, France.",
    "The user's dog is called Rex.",
    "The user works as a nurse at night.",
]
TOPICS = ["drinks", "home", "pets", "work"]


async def test_dedupe_search_scores_and_filters(mem: Side) -> None:
    u = user()
    ids = await mem(
        "add_memories", FACTS, [{"topic": t} for t in TOPICS], user_id=u, importance=0.5
    )
    assert len(set(ids)) == 4
    # The same text (case and spaces aside) is stored once.
    assert await mem("add_memories", ["  the USER likes green tea with jasmine. "], user_id=u) == [
        ids[0]
    ]
    (vip,) = await mem("add_memories", ["The user drinks tea at noon."], user_id=u, importance=0.9)
    hits = await mem("search", "green tea with jasmine", top_k=2, user_id=u)
    assert hits[0].id == ids[0]
    want = float(np.dot(EMB.embed_query("green tea with jasmine"), EMB.embed_query(FACTS[0])))
    assert hits[0].similarity == pytest.approx(want, abs=1e-5)  # cosine, as ours computes it
    pets = await mem("search", "the user", top_k=5, user_id=u, filters={"topic": "pets"})
    assert [h.id for h in pets] == [ids[2]]
    important = await mem(
        "search", "tea", top_k=5, user_id=u, filters={"importance": {"$gte": 0.7}}
    )
    assert [h.id for h in important] == [vip]
    some = await mem(
        "search", "user", top_k=10, user_id=u, filters={"topic": {"$in": ["home", "work"]}}
    )
    assert {h.id for h in some} == {ids[1], ids[3]}
    assert await mem("search", "tea", top_k=0, user_id=u) == []
    assert await mem("search", "tea", top_k=5, user_id=user()) == []  # another user: nothing
    backend = mem.memory.store
    if isinstance(backend, VectorStoreBackend):  # the memories are the vector store's documents
        vs = backend.vectorstore
        if mem.is_async:
            docs = await vs.asimilarity_search(FACTS[0], k=1)
        else:
            docs = await asyncio.to_thread(vs.similarity_search, FACTS[0], k=1)
        assert docs[0].page_content == FACTS[0] and docs[0].metadata["haive_key"] == ids[0]
    got = await mem("get_memory", ids[0], user_id=u)
    assert got.text == FACTS[0] and got.metadata == {"topic": "drinks"} and got.access_count == 1


async def test_mmr_and_episodic_recency(mem: Side, clock: Clock) -> None:
    u = user()
    a, b, c, d = await mem(
        "add_memories",
        [
            "green tea every morning",
            "green tea every morning, always",
            "coffee with green cardamom",
            "jasmine tea in the evening",
        ],
        user_id=u,
    )
    plain = await mem("search", "green tea", top_k=2, user_id=u)
    assert [h.id for h in plain] == [a, b]
    diverse = await mem("search", "green tea", top_k=2, user_id=u, rerank="mmr", mmr_lambda=0.3)
    assert diverse[0].id == a and diverse[1].id in (c, d)

    old, new = f"c-old-{u}", f"c-new-{u}"
    await mem(
        "add_memories", ["planning a trip to Japan in spring"], user_id=u,
        conversation_id=old, created_at=clock.now - timedelta(days=30),
    )  # fmt: skip
    await mem("add_memories", ["trip to Japan: booking flights"], user_id=u, conversation_id=new)
    trips = {"conversation_id": {"$in": [old, new]}}
    q = "planning the trip to Japan"
    by_meaning = await mem("get_episodic_memories", u, q, 0.0, 2, filters=trips)
    by_time = await mem("get_episodic_memories", u, q, 0.9, 2, filters=trips)
    assert [e.episode_id for e in by_meaning] == [old, new]
    assert [e.episode_id for e in by_time] == [new, old]


async def test_consolidation_as_of_forget(mem: Side, clock: Clock) -> None:
    u = user()
    texts = [
        "The user likes green tea.",
        "The user likes green tea a lot.",
        "The user really likes green tea.",
    ]
    ids = []
    for n, t in enumerate(texts):  # the first is the newest: it leads the group
        ids += await mem("add_memories", [t], user_id=u, created_at=clock.now - timedelta(hours=n))
    before = clock.now
    clock.advance(timedelta(hours=1))
    plan = await mem("consolidate_memories", similarity_threshold=0.8, dry_run=True, user_id=u)
    ((group),) = plan.groups
    assert set(group.source_ids) == set(ids) and group.leader_id == ids[0]
    assert len(await mem("list_memories", user_id=u)) == 3  # a dry run writes nothing
    done = await mem("consolidate_memories", similarity_threshold=0.8, user_id=u)
    assert done.created == 1 and done.superseded == 3
    now = await mem("search", "green tea", top_k=5, user_id=u)
    assert [h.id for h in now] == [group.consolidated_id]
    then = await mem("search", "green tea", top_k=5, user_id=u, as_of=before)
    assert {h.id for h in then} == set(ids)
    every = await mem("search", "green tea", top_k=5, user_id=u, include_superseded=True)
    assert len(every) == 4
    (record,) = await mem("consolidation_history", u)
    assert record.consolidated_id == group.consolidated_id
    # Forgetting the consolidated memory takes its sources along.
    counts = await mem("forget", group.consolidated_id, user_id=u)
    assert counts["memories"] == 4
    assert await mem("list_memories", user_id=u, include_superseded=True) == []
    await mem("add_memories", ["The user is left-handed."], user_id=u)
    erased = await mem("forget_user", u)
    assert erased["memories"] == 1 and erased["audit_records"] == 1
    assert await mem("list_memories", user_id=u) == []


async def test_tenants_and_users_never_meet(mem: Side) -> None:
    u = user()
    t = uuid.uuid4().hex[:8]
    a, b = mem.for_tenant(f"a{t}"), mem.for_tenant(f"b{t}")
    (one,) = await a("add_memories", ["The user's cat is called Mina."], user_id=u)
    assert [h.id for h in await a("search", "cat", top_k=3, user_id=u)] == [one]
    assert await b("search", "cat", top_k=3, user_id=u) == []
    assert await b("get_memory", one, user_id=u) is None
    # Consolidation of every user of a tenant sees that tenant's users only.
    report = await b("consolidate_memories", user_id=None)
    assert u not in report.users


async def test_hierarchy_runs_on_any_backend(mem: Side) -> None:
    u = user()
    await mem(
        "add_memories",
        ["green tea every morning", "green tea every morning, always", "the dog Rex barks"],
        user_id=u,
    )

    def summary(texts: list[str]) -> str:
        return "summary: " + " / ".join(texts)

    report = await mem("consolidate_hierarchy", summary, 0.8, levels=1, user_id=u)
    ((group),) = report.groups
    top = await mem("search", "green tea", top_k=1, user_id=u, parents=True)
    assert [h.id for h in top] == [group.summary_id]


def test_vector_store_options_and_limits(dsn: str) -> None:
    store = InMemoryVectorStore(EMB)
    with pytest.raises(ConfigurationError, match="schema"):
        VectorMemory(store, embeddings=EMB, schema="other")
    with pytest.raises(ConfigurationError, match="VectorStore"):
        VectorStoreBackend(object())  # type: ignore[arg-type]
    memory = VectorMemory(VectorStoreBackend(store, list_limit=3), embeddings=EMB, user_id="u")
    memory.add_memories(["one fact", "two facts", "three facts"])
    with pytest.raises(ConfigurationError, match="list_limit"):
        memory.list_memories()
    with pytest.raises(ConfigurationError, match="conversations="):
        memory.store_conversation("some-conversation-id")
    # Records kept apart: access counts and audit records in a LangGraph store.
    records = InMemoryStore()
    apart = VectorMemory(
        VectorStoreBackend(InMemoryVectorStore(EMB), records=records), embeddings=EMB, user_id="u"
    )
    (one,) = apart.add_memories(["a fact to find"])
    apart.search("fact")
    (item,) = records.search(("memories-access",), limit=5)
    assert item.key == one and item.value["access_count"] == 1


def test_python_filters_follow_the_store_semantics() -> None:
    from haive_langgraph.memory.vector._backend import matches

    value = {"a": 1, "s": "x", "n": None, "m": {"k": 2}, "t": "2025-01-02"}
    assert (
        matches(value, {"a": 1.0})
        and matches(value, {"m.k": 2})
        and matches(value, {"m": {"k": 2}})
    )
    assert matches(value, {"missing": None}) and matches(value, {"n": None})
    assert matches(value, {"missing": {"$ne": 1}}) and not matches(
        value, {"missing": {"$ne": None}}
    )
    assert matches(value, {"a": {"$gt": 0, "$lte": 1}}) and not matches(value, {"s": {"$gt": 0}})
    assert matches(value, {"t": {"$gte": "2025-01-01"}}) and not matches(value, {"a": {"$gt": "0"}})
    assert matches(value, {"s": {"$in": ["x", "y"]}}) and matches(value, {"missing": {"$nin": [1]}})
    assert matches(value, {"n": {"$exists": True}}) and matches(value, {"zz": {"$exists": False}})
    assert not matches(value, {"a": True}) and not matches(value, {"s": {"$eq": "y"}})
