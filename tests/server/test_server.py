"""`langgraph dev` on our checkpointer and store, driven through langgraph-sdk.

One server for the module (``langgraph.json`` names only
``haive_langgraph.server.checkpointer`` and ``.store``; ``HAIVE_DATABASE_URL``
is the module's database), restarted once at the end: threads, runs, state,
history, a fork from a past checkpoint, thread copy, delete and prune,
multitask rollback and the store's put/get/search/list/delete go through the
server's HTTP API, and the rows are checked in our tables. The tests run in
order and share the threads they make (``STATE``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest

from tests.server._dev import DevServer, require_server, write_app

require_server()

from langgraph_sdk import get_client  # noqa: E402
from langgraph_sdk.client import LangGraphClient  # noqa: E402
from langgraph_sdk.errors import NotFoundError  # noqa: E402

pytestmark = pytest.mark.timeout(300)

STATE: dict[str, Any] = {}


@pytest.fixture(scope="module")
def server(dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    app = write_app(tmp_path_factory.mktemp("server") / "app")
    dev = DevServer(app, {"HAIVE_DATABASE_URL": dsn})
    dev.start()
    try:
        yield dev
    finally:
        dev.stop()


@pytest.fixture
async def client(server: DevServer) -> AsyncIterator[LangGraphClient]:
    async with get_client(url=server.url) as sdk:
        yield sdk


def rows(dsn: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query, params).fetchall()


def checkpoints_of(dsn: str, thread_id: str) -> int:
    ((count,),) = rows(
        dsn, "SELECT count(*) FROM haive.checkpoints WHERE thread_id = %s", thread_id
    )
    return int(count)


async def test_threads_runs_state_and_history(
    server: DevServer, client: LangGraphClient, dsn: str
) -> None:
    thread = await client.threads.create()
    tid = thread["thread_id"]
    for word in ("a", "b", "c"):
        await client.runs.wait(tid, "echo", input={"items": [word]})
    state = await client.threads.get_state(tid)
    assert state["values"]["items"] == ["a", "echo:a", "b", "echo:b", "c", "echo:c"]
    history = await client.threads.get_history(tid, limit=100)
    # Each run: its input, the step before the node and the step after it.
    assert len(history) == 3 * 3
    assert history[0]["checkpoint"]["checkpoint_id"] == state["checkpoint"]["checkpoint_id"]
    # In our tables: every checkpoint of the thread, and the thread in the registry.
    assert checkpoints_of(dsn, tid) == len(history)
    assert rows(dsn, "SELECT tenant_id FROM haive.threads WHERE thread_id = %s", tid) == [("",)]
    STATE["thread"], STATE["history"] = tid, history


async def test_fork_from_a_past_checkpoint(
    server: DevServer, client: LangGraphClient, dsn: str
) -> None:
    tid, history = STATE["thread"], STATE["history"]
    # The checkpoint after the first run ("a", "echo:a"), two runs ago.
    past = next(h for h in history if h["values"].get("items") == ["a", "echo:a"])
    before = checkpoints_of(dsn, tid)
    await client.runs.wait(
        tid, "echo", input={"items": ["x"]}, checkpoint_id=past["checkpoint"]["checkpoint_id"]
    )
    state = await client.threads.get_state(tid)
    assert state["values"]["items"] == ["a", "echo:a", "x", "echo:x"]
    assert state["parent_checkpoint"] is not None
    # The branch's checkpoints were added to ours; the old branch is still readable.
    after = checkpoints_of(dsn, tid)
    assert after > before
    assert after == len(await client.threads.get_history(tid, limit=100))
    old = await client.threads.get_state(
        tid, checkpoint_id=history[0]["checkpoint"]["checkpoint_id"]
    )
    assert old["values"]["items"][-1] == "echo:c"


async def test_copy_and_delete_threads(
    server: DevServer, client: LangGraphClient, dsn: str
) -> None:
    tid = STATE["thread"]
    copy = await client.threads.copy(tid)
    cid = copy["thread_id"]
    original = await client.threads.get_state(tid)
    copied = await client.threads.get_state(cid)
    assert copied["values"] == original["values"]
    assert checkpoints_of(dsn, cid) == checkpoints_of(dsn, tid)
    # Pruned with "delete" (`langgraph dev` refuses keep_latest in its in-memory runtime).
    pruned = (await client.threads.create())["thread_id"]
    await client.runs.wait(pruned, "echo", input={"items": ["pruned"]})
    assert checkpoints_of(dsn, pruned) > 0
    await client.threads.prune([pruned], strategy="delete")
    assert checkpoints_of(dsn, pruned) == 0
    # A throwaway thread, deleted: its rows go, the others stay.
    doomed = (await client.threads.create())["thread_id"]
    await client.runs.wait(doomed, "echo", input={"items": ["bye"]})
    assert checkpoints_of(dsn, doomed) > 0
    await client.threads.delete(doomed)
    assert checkpoints_of(dsn, doomed) == 0
    assert rows(dsn, "SELECT 1 FROM haive.threads WHERE thread_id = %s", doomed) == []
    assert checkpoints_of(dsn, tid) > 1
    STATE["copy"], STATE["deleted"] = cid, doomed


async def test_multitask_rollback_deletes_the_cancelled_run(
    server: DevServer, client: LangGraphClient, dsn: str
) -> None:
    tid = (await client.threads.create())["thread_id"]
    slow = await client.runs.create(tid, "echo", input={"items": ["slow"], "sleep": 30})
    # Wait until the slow run has written its first checkpoint to our tables.
    for _ in range(200):
        if rows(dsn, "SELECT 1 FROM haive.checkpoints WHERE run_id = %s", slow["run_id"]):
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail(f"the slow run wrote no checkpoint\n{server.tail()}")
    fast = await client.runs.create(
        tid, "echo", input={"items": ["fast"]}, multitask_strategy="rollback"
    )
    await client.runs.join(tid, fast["run_id"])
    state = await client.threads.get_state(tid)
    assert state["values"]["items"] == ["fast", "echo:fast"]
    assert rows(dsn, "SELECT 1 FROM haive.checkpoints WHERE run_id = %s", slow["run_id"]) == []
    assert rows(dsn, "SELECT 1 FROM haive.checkpoints WHERE run_id = %s", fast["run_id"])
    with pytest.raises(NotFoundError):
        await client.runs.get(tid, slow["run_id"])
    STATE["rolled_back"] = tid


async def test_store_put_get_search_list_delete(
    server: DevServer, client: LangGraphClient, dsn: str
) -> None:
    await client.store.put_item(["docs", "en"], key="tea", value={"text": "green tea"})
    await client.store.put_item(["docs", "fr"], key="the", value={"text": "the vert"})
    await client.store.put_item(["docs", "en"], key="gone", value={"text": "removed"})
    await client.store.delete_item(["docs", "en"], key="gone")
    item = await client.store.get_item(["docs", "en"], key="tea")
    assert item is not None and item["value"] == {"text": "green tea"}
    found = await client.store.search_items(["docs"], filter={"text": "the vert"})
    assert [(i["namespace"], i["key"]) for i in found["items"]] == [(["docs", "fr"], "the")]
    listed = await client.store.list_namespaces(prefix=["docs"])
    assert sorted(listed["namespaces"]) == [["docs", "en"], ["docs", "fr"]]
    # The graph's node put what it saw, through the same store.
    seen = await client.store.search_items(["seen"], limit=100)
    assert {"a", "b", "c", "x", "fast"} <= {i["key"] for i in seen["items"]}
    keys = rows(dsn, "SELECT key FROM haive.store_items WHERE key IN ('tea', 'the', 'gone')")
    assert sorted(k for (k,) in keys) == ["tea", "the"]


async def test_everything_survives_a_restart(
    server: DevServer, client: LangGraphClient, dsn: str
) -> None:
    tid, cid = STATE["thread"], STATE["copy"]
    before = {t: await client.threads.get_state(t) for t in (tid, cid, STATE["rolled_back"])}
    history = await client.threads.get_history(tid, limit=100)
    server.stop()
    server.start()
    for thread_id, state in before.items():
        again = await client.threads.get_state(thread_id)
        assert again["values"] == state["values"]
        assert again["checkpoint"] == state["checkpoint"]
    assert len(await client.threads.get_history(tid, limit=100)) == len(history)
    # A new run continues the thread from what was read back.
    await client.runs.wait(tid, "echo", input={"items": ["after"]})
    assert (await client.threads.get_state(tid))["values"]["items"][-2:] == ["after", "echo:after"]
    item = await client.store.get_item(["docs", "en"], key="tea")
    assert item is not None and item["value"] == {"text": "green tea"}
    assert checkpoints_of(dsn, STATE["deleted"]) == 0
    assert checkpoints_of(dsn, tid) == len(history) + 3
