"""Vector memory with its neighbours: stored conversations, and OpenAIEmbeddings over real HTTP."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest
from langchain_core.messages import AIMessage, HumanMessage

from haive_langgraph.memory import (
    AsyncConversationStore,
    AsyncVectorMemory,
    ConversationStore,
    HashingEmbeddings,
    VectorMemory,
)
from tests.memory.vector_helpers import DIMS, user

pytestmark = pytest.mark.timeout(120)

TURNS = [
    HumanMessage("Hi! I am planning a trip to Japan in April."),
    AIMessage("Great choice: April is cherry blossom season. Which cities?"),
    HumanMessage("Tokyo and Kyoto. I am vegetarian, so food tips would help."),
    AIMessage("In Kyoto try shojin ryori, the Buddhist temple cuisine; it is fully vegetarian."),
    HumanMessage("Also, my budget is about 3000 euros for two weeks."),
    AIMessage("That works with a JR pass and business hotels."),
]


@pytest.fixture(scope="module")
def conversations(dsn: str) -> Iterator[ConversationStore]:
    with ConversationStore(dsn) as store:
        store.setup()
        yield store


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_store_conversation_chunks_link_back_to_messages(
    dsn: str, conversations: ConversationStore, kind: str
) -> None:
    u = user()
    conv = conversations.create_conversation("travel-bot", u)
    stored = conversations.add_messages(conv.conversation_id, TURNS)
    by_id = {m.message_id: m for m in stored}
    if kind == "sync":
        with VectorMemory(
            dsn, embeddings=HashingEmbeddings(DIMS), conversations=conversations
        ) as memory:
            memory.setup()
            ids = memory.store_conversation(
                conv.conversation_id, {"channel": "web"}, chunk_size=160, chunk_overlap=40
            )
            again = memory.store_conversation(
                conversations.get_conversation(conv.conversation_id),
                {"channel": "web"},
                chunk_size=160,
                chunk_overlap=40,
            )
            chunks = [memory.get_memory(i, user_id=u) for i in ids]
            hits = memory.search("Buddhist temple cuisine", top_k=1, user_id=u)
    else:
        async with AsyncConversationStore(dsn) as aconv:
            memory = AsyncVectorMemory(dsn, embeddings=HashingEmbeddings(DIMS), conversations=aconv)
            try:
                await memory.setup()
                ids = await memory.astore_conversation(
                    conv.conversation_id, {"channel": "web"}, chunk_size=160, chunk_overlap=40
                )
                again = await memory.astore_conversation(
                    conv.conversation_id, {"channel": "web"}, chunk_size=160, chunk_overlap=40
                )
                chunks = [await memory.aget_memory(i, user_id=u) for i in ids]
                hits = await memory.asearch("Buddhist temple cuisine", top_k=1, user_id=u)
            finally:
                await memory.aclose()
    assert again == ids  # the same conversation stored twice: nothing new
    assert len(ids) >= 3
    seqs: list[int] = []
    for chunk in chunks:
        assert chunk is not None and chunk.kind == "chunk" and chunk.user_id == u
        assert chunk.conversation_id == chunk.episode_id == conv.conversation_id
        assert len(chunk.text) <= 160 and chunk.metadata == {"channel": "web"}
        covered = [by_id[m] for m in chunk.message_ids]
        assert chunk.message_range == (covered[0].seq, covered[-1].seq)
        assert chunk.created_at == covered[-1].created_at
        # Every covered message contributes text to the chunk.
        assert all(
            any(w in chunk.text for w in m.message.text.split()[:3] + m.message.text.split()[-3:])
            for m in covered
        )
        seqs.extend(m.seq for m in covered)
    assert sorted(set(seqs)) == list(range(len(TURNS)))  # every message is in some chunk
    assert "shojin" in hits[0].text and hits[0].conversation_id == conv.conversation_id


# -- OpenAIEmbeddings, for real, against an OpenAI-compatible server on loopback ------------


class EmbeddingServer(ThreadingHTTPServer):
    """``POST /v1/embeddings`` answering with HashingEmbeddings vectors (float or base64)."""

    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.embedder = HashingEmbeddings(DIMS)
        self.requests: list[dict[str, Any]] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    server: EmbeddingServer

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert self.path == "/v1/embeddings", self.path
        assert self.headers["Authorization"] == "Bearer test"
        self.server.requests.append(body)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = []
        for n, text in enumerate(inputs):
            vec = self.server.embedder.embed_query(text)
            if body.get("encoding_format") == "base64":
                emb: Any = base64.b64encode(np.asarray(vec, dtype="<f4").tobytes()).decode()
            else:
                emb = vec
            data.append({"object": "embedding", "index": n, "embedding": emb})
        out = json.dumps(
            {
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": len(inputs), "total_tokens": len(inputs)},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbeddingServer]:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    srv = EmbeddingServer()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_openai_embeddings_round_trip(dsn: str, server: EmbeddingServer, kind: str) -> None:
    from langchain_openai import OpenAIEmbeddings

    emb = OpenAIEmbeddings(
        model="text-embedding-3-small",
        base_url=server.base_url,
        api_key="test",  # type: ignore[arg-type]
        dimensions=DIMS,
        check_embedding_ctx_length=False,
        max_retries=0,
    )
    u = user()
    facts = [
        "The user likes green tea.",
        "The user's dog is called Rex.",
        "The user lives in Lyon.",
    ]
    if kind == "sync":
        with VectorMemory(
            dsn, embeddings=emb, user_id=u
        ) as memory:  # dims from OpenAI's `dimensions`
            memory.setup()
            memory.add_memories(facts)
            hits = memory.search("what is the dog called", top_k=1)
    else:
        memory = AsyncVectorMemory(dsn, embeddings=emb, user_id=u)
        try:
            await memory.setup()
            await memory.aadd_memories(facts)
            hits = await memory.asearch("what is the dog called", top_k=1)
        finally:
            await memory.aclose()
    assert hits[0].text == facts[1]
    # The vectors came over HTTP: same as the server's embedder, to float32 precision.
    expected = HashingEmbeddings(DIMS).embed_query("what is the dog called")
    assert hits[0].similarity == pytest.approx(
        float(np.dot(expected, HashingEmbeddings(DIMS).embed_query(facts[1]))), abs=1e-5
    )
    inputs = [r["input"] for r in server.requests]
    # One call for the documents, one for the query: the store re-embeds nothing.
    assert inputs == [facts, ["what is the dog called"]] or inputs == [
        facts,
        "what is the dog called",
    ]
    assert all(
        r["model"] == "text-embedding-3-small" and r["dimensions"] == DIMS for r in server.requests
    )
