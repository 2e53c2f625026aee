"""Hybrid search: full-text and vector rankings fused by reciprocal rank (``index["hybrid"]``)."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from langgraph.store.base import PutOp

from haive_langgraph.codec import HaiveCodec, KeyRing
from haive_langgraph.errors import ConfigurationError
from haive_langgraph.stores import PostgresStore
from tests.stores.conftest import Driver, Factory, embed_text, index_config, store_factory

NS = tuple[str, ...]

VOCABULARY = [
    "apple",
    "river",
    "stone",
    "cloud",
    "tiger",
    "piano",
    "garden",
    "window",
    "silver",
    "orange",
    "candle",
    "forest",
    "bridge",
    "rocket",
    "castle",
    "pepper",
    "violin",
    "desert",
    "island",
    "meadow",
    "hammer",
    "lantern",
    "marble",
    "needle",
    "ocean",
    "pillow",
    "quartz",
    "saddle",
    "thunder",
    "umbrella",
    "velvet",
    "walnut",
    "yellow",
    "zephyr",
    "anchor",
    "barrel",
    "cactus",
    "dragon",
    "engine",
    "falcon",
    "glacier",
    "harbor",
    "igloo",
    "jungle",
    "kettle",
    "lemon",
    "mirror",
    "nectar",
]


@pytest.fixture(params=["sync", "async"])
async def make(request: pytest.FixtureRequest, dsn: str) -> AsyncIterator[Factory]:
    """Opens stores of the parametrized kind, each in a fresh schema unless one is given."""
    async with store_factory(request.param, dsn, "h", index=index_config(hybrid=True)) as factory:
        yield factory


async def hybrid(store: Driver, *args: Any, **kwargs: Any) -> list[Any]:
    return await store.call("hybrid_search", *args, **kwargs)  # type: ignore[no-any-return]


def cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def keyword_corpus(query: str) -> dict[str, str]:
    """Five items whose embeddings are close to ``query`` without its word, and one
    item holding the word among far-off ones (so its embedding is far)."""
    qv = embed_text(query)
    ranked = sorted(VOCABULARY, key=lambda w: (-cos(qv, embed_text(w)), w))
    docs = {f"near{i}": f"{w} {w}" for i, w in enumerate(ranked[:5])}
    docs["exact"] = " ".join([query, *ranked[-10:]])
    return docs


async def test_exact_keyword_match_ranks_first(make: Factory, ns: NS) -> None:
    store = await make()
    docs = keyword_corpus("zucchini")
    await store.batch([PutOp(ns, k, {"text": t}) for k, t in docs.items()])
    # Vector search alone ranks the keyword match last ...
    vector = await store.search(ns, query="zucchini", limit=10)
    assert [h.key for h in vector][-1] == "exact" and len(vector) == 6
    # ... hybrid search first: it tops the text ranking, and is in the vector one.
    hits = await hybrid(store, ns, "zucchini", limit=10)
    assert hits[0].key == "exact"
    assert {h.key for h in hits} == set(docs)
    k = 60
    assert hits[0].score == pytest.approx(1 / (k + 1) + 1 / (k + 6))
    assert hits[1].key == "near0" and hits[1].score == pytest.approx(1 / (k + 1))
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    # Pages: limit and offset over the fused order.
    page1 = await hybrid(store, ns, "zucchini", limit=3)
    page2 = await hybrid(store, ns, "zucchini", limit=3, offset=3)
    assert [h.key for h in page1 + page2] == [h.key for h in hits]
    # websearch syntax: an exclusion leaves the item to the vector ranking only.
    other_word = docs["exact"].split()[1]
    hits = await hybrid(store, ns, f"zucchini -{other_word}", limit=10)
    [excluded] = [h for h in hits if h.key == "exact"]
    assert excluded.score <= 1 / (k + 1) + 1e-12


async def test_rrf_k_and_text_config(make: Factory, ns: NS) -> None:
    store = await make(index=index_config(hybrid={"rrf_k": 10, "text_search_config": "English"}))
    await store.put(ns, "a", {"text": "running shoes"})
    await store.put(ns, "b", {"text": "shoe rack"})
    hits = await hybrid(store, ns, "run", limit=5)
    # english stems "running" to "run": a matches by text (rank 1) and by vector.
    assert hits[0].key == "a"
    assert hits[0].score > 1 / 11


async def test_filters_namespaces_ttl_and_tenants(make: Factory, ns: NS, dsn: str) -> None:
    admin = await make()
    a, b = admin.for_tenant("acme"), admin.for_tenant("globex")
    for i in range(6):
        await a.put((*ns, "x"), f"k{i}", {"text": f"quokka note {i}", "cat": i % 2})
    await a.put((*ns, "y"), "other", {"text": "quokka elsewhere", "cat": 1})
    await a.put((*ns, "x"), "gone", {"text": "quokka quokka", "cat": 1})
    await b.put((*ns, "x"), "theirs", {"text": "quokka quokka quokka", "cat": 1})
    schema = admin.store.schema  # type: ignore[attr-defined]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            psycopg.sql.SQL(
                "UPDATE {}.store_items SET expires_at = now() - interval '1 second' WHERE key = 'gone'"
            ).format(psycopg.sql.Identifier(schema))
        )
    hits = await hybrid(a, (*ns, "x"), "quokka", filter={"cat": 1}, limit=10)
    assert sorted(h.key for h in hits) == ["k1", "k3", "k5"]
    hits = await hybrid(a, ns, "quokka", limit=10)
    assert sorted(h.key for h in hits) == [*(f"k{i}" for i in range(6)), "other"]
    assert [h.key for h in await hybrid(b, ns, "quokka", limit=10)] == ["theirs"]
    assert await hybrid(a, ns, "quokka", filter={"cat": 7}) == []


async def test_reput_and_unindexed_items(make: Factory, ns: NS) -> None:
    store = await make()
    await store.put(ns, "k", {"text": "wombat burrow"})
    assert [h.key for h in await hybrid(store, ns, "wombat")] == ["k"]
    await store.put(ns, "k", {"text": "kangaroo pouch"})
    await store.put(ns, "hidden", {"text": "wombat"}, index=False)
    await store.put(ns, "notext", {"other": "wombat"})
    # The old word is gone from k; index=False and items without the field are not indexed.
    hits = await hybrid(store, ns, '"wombat burrow"')
    assert hits and all(h.score <= 1 / 61 + 1e-12 for h in hits)  # the vector ranking only
    hits = await hybrid(store, ns, "wombat")
    assert [h.key for h in hits] == ["k"]
    assert hits[0].score == pytest.approx(1 / 61)


async def test_store_without_hybrid_refuses_hybrid_search(make: Factory, ns: NS) -> None:
    vector_only = await make(index=index_config())
    with pytest.raises(ConfigurationError, match="hybrid"):
        await hybrid(vector_only, ns, "tea")
    plain = await make(index=None)
    with pytest.raises(ConfigurationError, match="no index"):
        await hybrid(plain, ns, "tea")
    store = await make()
    with pytest.raises(ConfigurationError, match="non-empty query"):
        await hybrid(store, ns, "  ")
    with pytest.raises(ConfigurationError, match="limit"):
        await hybrid(store, ns, "tea", limit=-1)


async def test_unknown_text_search_config(make: Factory) -> None:
    with pytest.raises(ConfigurationError, match="klingon"):
        await make(index=index_config(hybrid={"text_search_config": "klingon"}))
    with pytest.raises(ConfigurationError, match="klingon"):
        await make(index=index_config(hybrid={"text_search_config": "public.klingon"}))


async def test_setup_refuses_mixing_hybrid_and_vector_only(make: Factory) -> None:
    schema = f"h_{uuid.uuid4().hex[:10]}"
    await make(schema=schema)
    with pytest.raises(ConfigurationError, match="text_search"):
        await make(schema=schema, index=index_config())
    with pytest.raises(ConfigurationError, match="english"):
        await make(schema=schema, index=index_config(hybrid={"text_search_config": "english"}))


@pytest.mark.parametrize(
    ("hybrid_option", "message"),
    [
        ({"text_search_config": "english; drop table x"}, "text-search configuration"),
        ({"text_search_config": 3}, "text-search configuration"),
        ({"rrf_k": 0}, "rrf_k"),
        ({"rrf": 60}, "unknown"),
        ({"allow_plaintext_terms": "yes"}, "allow_plaintext_terms"),
        ("yes", "must be True, False or a dict"),
    ],
)
def test_bad_hybrid_config(dsn: str, hybrid_option: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        PostgresStore(dsn, index=index_config(hybrid=hybrid_option))


def test_encrypting_codec_needs_explicit_consent(dsn: str) -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    codec = HaiveCodec(keyring=KeyRing.from_string(f"k1:{key}"))
    with pytest.raises(ConfigurationError, match="allow_plaintext_terms"):
        PostgresStore(dsn, codec=codec, index=index_config(hybrid=True))
    schema = f"h_{uuid.uuid4().hex[:10]}"
    index = index_config(hybrid={"allow_plaintext_terms": True})
    with PostgresStore.from_conn_string(dsn, schema=schema, codec=codec, index=index) as store:
        store.setup()
        store.put(("n",), "k", {"text": "secret aardvark"})
        assert [h.key for h in store.hybrid_search(("n",), "aardvark")] == ["k"]


async def test_filtered_pages_on_the_ann_index(make: Factory, ns: NS) -> None:
    # A tiny exact-search threshold sends the vector ranking through the HNSW index.
    store = await make(index=index_config(hybrid=True, exact_search_threshold=20))
    words = ["tea", "coffee", "juice", "water", "milk", "soda", "wine", "beer"]
    values = {f"k{i:03}": {"text": f"{words[i % 8]} {i}", "cat": i % 10} for i in range(300)}
    values["k123"]["text"] = "platypus"
    await store.batch([PutOp(ns, k, v) for k, v in values.items()])
    for flt in ({"cat": 3}, None):
        hits = await hybrid(store, ns, "platypus", filter=flt, limit=10)
        assert len(hits) == 10, flt  # full pages
        assert all(flt is None or h.value["cat"] == 3 for h in hits)
        assert hits[0].key == "k123"
        page2 = await hybrid(store, ns, "platypus", filter=flt, limit=10, offset=10)
        assert len(page2) == 10 and not {h.key for h in hits} & {h.key for h in page2}
