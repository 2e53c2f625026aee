"""Tenants on a LangGraph server: the authenticated identity picks the tenant.

`langgraph dev` with a custom auth handler (a bearer token ``<user>.<org>``),
``HAIVE_SERVER_TENANT_FROM=org``, and connecting as an application role that
does not own the tables, so that row-level security binds every statement.
Users of different organisations see nothing of each other's threads or
store items, whatever the server lets them ask for; users of one
organisation share them. The store also has a vector index from
``langgraph.json``'s ``store.index`` with ``HAIVE_STORE_INDEX`` over it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest

from haive_langgraph.checkpointers import AsyncPostgresCheckpointer
from haive_langgraph.stores import AsyncPostgresStore
from tests._roles import application_role
from tests.server._dev import DevServer, require_server, write_app

require_server()

from langgraph_sdk import get_client  # noqa: E402
from langgraph_sdk.client import LangGraphClient  # noqa: E402

pytestmark = pytest.mark.timeout(300)

# A deterministic embedding: letter counts of a, e, i, o (never all zero).
EMBED = """
def embed(texts):
    return [[1.0 + t.count(c) for c in "aeio"] for t in texts]
"""
INDEX = {"dims": 4, "embed": "./embed.py:embed", "fields": ["text"]}
OURS = {"distance_type": "l2", "ann_index_config": {"kind": "hnsw", "m": 8}}


def embed(texts: list[str]) -> list[list[float]]:
    return [[1.0 + t.count(c) for c in "aeio"] for t in texts]


@pytest.fixture(scope="module")
async def tables(dsn: str) -> None:
    """The tables, made by their owner (the server's role may only use them)."""
    saver = AsyncPostgresCheckpointer(dsn)
    await saver.setup()
    await saver.aclose()
    store = AsyncPostgresStore(dsn, index={**INDEX, "embed": embed, **OURS})  # type: ignore[typeddict-item]
    await store.setup()
    await store.aclose()


@pytest.fixture(scope="module")
def server(tables: None, dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    app = write_app(tmp_path_factory.mktemp("tenants") / "app", auth=True)
    (app / "embed.py").write_text(EMBED)
    config = json.loads((app / "langgraph.json").read_text())
    config["store"]["index"] = INDEX
    (app / "langgraph.json").write_text(json.dumps(config))
    with application_role(dsn) as app_dsn:
        dev = DevServer(
            app,
            {
                "HAIVE_DATABASE_URL": app_dsn,
                "HAIVE_SERVER_TENANT_FROM": "org",
                "HAIVE_SERVER_SETUP": "off",
                "HAIVE_STORE_INDEX": json.dumps(OURS),
            },
        )
        dev.start()
        try:
            yield dev
        finally:
            dev.stop()


@pytest.fixture
async def clients(server: DevServer) -> AsyncIterator[dict[str, LangGraphClient]]:
    tokens = {"alice": "alice.acme", "carol": "carol.acme", "bob": "bob.beta"}
    made = {
        name: get_client(url=server.url, headers={"Authorization": f"Bearer {token}"})
        for name, token in tokens.items()
    }
    try:
        yield made
    finally:
        for client in made.values():
            await client.aclose()


def rows(dsn: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query, params).fetchall()


async def test_threads_are_isolated_by_organisation(
    server: DevServer, clients: dict[str, LangGraphClient], dsn: str
) -> None:
    alice, carol, bob = clients["alice"], clients["carol"], clients["bob"]
    tid = (await alice.threads.create())["thread_id"]
    await alice.runs.wait(tid, "echo", input={"items": ["secret"]})
    await alice.runs.wait(tid, "echo", input={"items": ["plans"]})
    expected = ["secret", "echo:secret", "plans", "echo:plans"]
    assert (await alice.threads.get_state(tid))["values"]["items"] == expected
    # Carol is in Alice's organisation: the same tenant.
    assert (await carol.threads.get_state(tid))["values"]["items"] == expected
    # Bob's organisation reads nothing of it through any endpoint (the server
    # itself does not stop him: this app has no authorization handlers).
    assert (await bob.threads.get_state(tid))["values"] == {}
    assert await bob.threads.get_history(tid) == []
    # Bob's own thread lands in his tenant.
    own = (await bob.threads.create())["thread_id"]
    await bob.runs.wait(own, "echo", input={"items": ["mine"]})
    tenants = rows(
        dsn,
        "SELECT thread_id, array_agg(DISTINCT tenant_id) FROM haive.checkpoints "
        "WHERE thread_id IN (%s, %s) GROUP BY thread_id",
        tid,
        own,
    )
    assert dict(tenants) == {tid: ["acme"], own: ["beta"]}
    # Bob deleting or copying Alice's thread reaches none of her rows.
    before = rows(dsn, "SELECT count(*) FROM haive.checkpoints WHERE thread_id = %s", tid)
    copy = await bob.threads.copy(tid)
    assert (
        rows(dsn, "SELECT 1 FROM haive.checkpoints WHERE thread_id = %s", copy["thread_id"]) == []
    )
    await bob.threads.delete(tid)
    assert rows(dsn, "SELECT count(*) FROM haive.checkpoints WHERE thread_id = %s", tid) == before


async def test_store_items_are_isolated_by_organisation(
    server: DevServer, clients: dict[str, LangGraphClient], dsn: str
) -> None:
    alice, carol, bob = clients["alice"], clients["carol"], clients["bob"]
    await alice.store.put_item(["notes"], key="n1", value={"text": "banana bread"})
    await alice.store.put_item(["notes"], key="n2", value={"text": "ice"})
    await bob.store.put_item(["notes"], key="n1", value={"text": "bob's own"})
    got = await carol.store.get_item(["notes"], key="n1")
    assert got is not None and got["value"] == {"text": "banana bread"}
    got = await bob.store.get_item(["notes"], key="n1")
    assert got is not None and got["value"] == {"text": "bob's own"}
    assert [i["key"] for i in (await bob.store.search_items(["notes"]))["items"]] == ["n1"]
    assert sorted((await bob.store.list_namespaces())["namespaces"]) == [["notes"], ["seen"]]
    # What the graph's node put during each organisation's runs stayed with it.
    assert [i["key"] for i in (await bob.store.search_items(["seen"]))["items"]] == ["mine"]
    seen = await carol.store.search_items(["seen"])
    assert sorted(i["key"] for i in seen["items"]) == ["plans", "secret"]
    assert await bob.store.get_item(["notes"], key="n2") is None
    # Vector search, with the index langgraph.json and HAIVE_STORE_INDEX configured.
    found = await alice.store.search_items(["notes"], query="banana")
    assert next(i["key"] for i in found["items"]) == "n1"
    assert all(i["score"] is not None for i in found["items"])
    ((config,),) = rows(dsn, "SELECT config FROM haive.store_vector_config")
    assert (config["dims"], config["distance"], config["kind"]) == (4, "l2", "hnsw")
    owners = rows(
        dsn, "SELECT tenant_id, key FROM haive.store_items WHERE key IN ('n1', 'n2') ORDER BY 1, 2"
    )
    assert owners == [("acme", "n1"), ("acme", "n2"), ("beta", "n1")]
