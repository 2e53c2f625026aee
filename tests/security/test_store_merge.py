"""Concurrent calls on the async store, merged into one batch per event-loop tick.

``AsyncPostgresStore`` runs the single calls issued in one tick (``aget``,
``aput``, ``asearch``, ``adelete``, ``alist_namespaces``) as one batch, as
LangGraph's ``AsyncBatchedBaseStore`` does, and keeps what one call at a time
promised:

* a read sees the writes issued before it (LangGraph's merged reads do not);
* each call gets its own result or error: an op refused by validation, or a
  stage the server refuses (a quota), fails alone; the other calls succeed;
* calls of different tenants never share a batch;
* identical searches run once, yet each caller gets values of its own;
* a caller cancelled before the batch runs has no effect.

Each test runs on a lent ``AsyncConnection`` and on an ``AsyncConnectionPool``.
"""

from __future__ import annotations

import asyncio
import contextvars
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import psycopg
import pytest
from langgraph.store.base import GetOp, Item, ListNamespacesOp, PutOp, SearchOp
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from haive_langgraph.errors import ConfigurationError, SerializationError
from haive_langgraph.stores import (
    AsyncPostgresStore,
    InvalidFilterError,
    PostgresStore,
    QuotaExceededError,
    ResourceQuota,
)
from haive_langgraph.stores import _merge as merge
from haive_langgraph.stores._batch import BatchPlan, Reads, Stage
from tests.stores.conftest import embed, index_config


@pytest.fixture(scope="module", params=["connection", "pool"])
async def astore(request: pytest.FixtureRequest, dsn: str) -> AsyncIterator[AsyncPostgresStore]:
    """An async store (vector index, TTL) on a lent connection or on a pool."""
    resource: Any
    if request.param == "connection":
        resource = await psycopg.AsyncConnection.connect(dsn, autocommit=True, row_factory=dict_row)
    else:
        resource = AsyncConnectionPool(dsn, min_size=1, max_size=4, open=False)
        await resource.open(wait=True)
    store = AsyncPostgresStore(
        resource,
        index=index_config(),
        ttl={"refresh_on_read": True},
        schema=f"merge_{request.param}",
    )
    await store.setup()
    try:
        yield store
    finally:
        await store.aclose()
        await resource.close()


@pytest.fixture
def ns() -> tuple[str, ...]:
    return (f"m{uuid.uuid4().hex[:10]}",)


async def test_calls_of_one_tick_run_as_one_batch(
    astore: AsyncPostgresStore, ns: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    await astore.aput(ns, "seed", {"text": "seed"})
    runs: list[object] = []
    real = astore._source.call

    async def counted(*args: Any, **kwargs: Any) -> Any:
        runs.append(args)
        return await real(*args, **kwargs)

    monkeypatch.setattr(astore._source, "call", counted)
    calls = []
    for i in range(50):
        calls += [
            astore.aput(ns, f"k{i}", {"text": f"item {i}", "n": i}),
            astore.aget(ns, f"k{i}"),
            astore.asearch(ns, filter={"n": i}),
            astore.adelete(ns, f"gone{i}"),
        ]
    results = await asyncio.gather(*calls)
    assert len(runs) == 1
    gets = results[1::4]
    assert [g.value["n"] for g in gets] == list(range(50))
    assert [[it.key for it in found] for found in results[2::4]] == [[f"k{i}"] for i in range(50)]


async def test_a_read_sees_the_writes_issued_before_it(
    astore: AsyncPostgresStore, ns: tuple[str, ...]
) -> None:
    await astore.abatch([PutOp(ns, "k", {"v": 0}), PutOp(ns, "d", {"v": 0})])
    sub = (*ns, "sub")
    results = await asyncio.gather(
        astore.aget(ns, "k"),  # before the put: the old value
        astore.asearch(ns),  # before every write
        astore.aput(ns, "k", {"v": 1}),
        astore.aget(ns, "k"),  # after it
        astore.adelete(ns, "d"),
        astore.aget(ns, "d"),
        astore.aput(sub, "n", {"v": 2}),
        astore.asearch(ns),
        astore.alist_namespaces(prefix=ns),
    )
    old, before, _, new, _, deleted, _, after, listed = results
    assert old.value == {"v": 0}
    assert sorted(it.key for it in before) == ["d", "k"]
    assert new.value == {"v": 1}
    assert deleted is None
    assert sorted((it.namespace, it.key, it.value["v"]) for it in after) == [
        (ns, "k", 1),
        (sub, "n", 2),
    ]
    assert listed == [ns, sub]


async def test_each_call_gets_its_own_validation_error(
    astore: AsyncPostgresStore, ns: tuple[str, ...]
) -> None:
    results = await asyncio.gather(
        astore.aput(ns, "good", {"v": 1}),
        astore.aput(ns, "bad-value", {"v": {1, 2}}),
        astore.aput(ns, "nul\x00key", {"v": 1}),
        astore.asearch(ns, filter={"v": {"$near": 1}}),
        astore.aget(ns, "good"),
        astore.aput(ns, "also-good", {"v": 2}),
        return_exceptions=True,
    )
    ok, bad_value, bad_key, bad_filter, got, also = results
    assert ok is None and also is None
    assert isinstance(bad_value, SerializationError)
    assert isinstance(bad_key, ConfigurationError)
    assert isinstance(bad_filter, InvalidFilterError)
    assert isinstance(got, Item) and got.value == {"v": 1}
    stored = await astore.asearch(ns)
    assert sorted(it.key for it in stored) == ["also-good", "good"]


async def test_of_two_writes_of_a_key_a_refused_one_leaves_the_other(
    astore: AsyncPostgresStore, ns: tuple[str, ...]
) -> None:
    results = await asyncio.gather(
        astore.aput(ns, "k", {"v": "kept"}),
        astore.aput(ns, "k", {"v": float("nan")}),
        return_exceptions=True,
    )
    assert results[0] is None
    assert isinstance(results[1], SerializationError)
    got = await astore.aget(ns, "k")
    assert got is not None and got.value == {"v": "kept"}


async def test_a_quota_refuses_only_the_calls_past_it(
    astore: AsyncPostgresStore, ns: tuple[str, ...]
) -> None:
    tenant = astore.for_tenant(f"q-{uuid.uuid4().hex[:8]}")
    await tenant.set_quota(ResourceQuota(max_items=3))
    results = await asyncio.gather(
        *(tenant.aput(ns, f"k{i}", {"v": i}) for i in range(6)),
        tenant.aget(ns, "k0"),
        return_exceptions=True,
    )
    # Run one by one in the order they were issued: the first three fit.
    assert results[:3] == [None, None, None]
    assert all(isinstance(r, QuotaExceededError) for r in results[3:6])
    assert isinstance(results[6], Item) and results[6].value == {"v": 0}
    assert (await tenant.get_usage()).items == 3
    assert sorted(it.key for it in await tenant.asearch(ns)) == ["k0", "k1", "k2"]


async def test_tenants_never_share_a_batch(astore: AsyncPostgresStore, ns: tuple[str, ...]) -> None:
    a = astore.for_tenant(f"a-{uuid.uuid4().hex[:8]}")
    b = astore.for_tenant(f"b-{uuid.uuid4().hex[:8]}")
    results = await asyncio.gather(
        a.aput(ns, "k", {"who": "a"}),
        b.aput(ns, "k", {"who": "b"}),
        a.aget(ns, "k"),
        b.aget(ns, "k"),
        a.asearch(ns),
        b.asearch(ns),
        astore.aget(ns, "k"),
    )
    _, _, got_a, got_b, found_a, found_b, unbound = results
    assert got_a.value == {"who": "a"} and got_b.value == {"who": "b"}
    assert [it.value for it in found_a] == [{"who": "a"}]
    assert [it.value for it in found_b] == [{"who": "b"}]
    assert unbound is None


async def test_identical_searches_get_values_of_their_own(
    astore: AsyncPostgresStore, ns: tuple[str, ...]
) -> None:
    await astore.aput(ns, "k", {"text": "green tea", "tags": ["a"]})
    first, second, third = await asyncio.gather(
        astore.asearch(ns, filter={"tags": ["a"]}),
        astore.asearch(ns, filter={"tags": ["a"]}),
        astore.asearch(ns, query="green tea", filter={"tags": ["a"]}),
    )
    assert [it.value for it in first] == [it.value for it in second]
    first[0].value["tags"].append("changed")
    assert second[0].value == {"text": "green tea", "tags": ["a"]}
    assert third[0].value == {"text": "green tea", "tags": ["a"]}


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_identical_searches_of_a_batch_get_values_of_their_own(
    dsn: str, ns: tuple[str, ...], flavour: str
) -> None:
    ops = [
        PutOp(ns, "k", {"text": "green tea", "tags": ["a"]}),
        SearchOp(ns, None, 10, 0, "green tea"),
        SearchOp(ns, None, 10, 0, "green tea"),
    ]
    kwargs: dict[str, Any] = {"index": index_config(), "schema": f"merge_batch_{flavour}"}
    if flavour == "sync":

        def run() -> list[Any]:
            with PostgresStore.from_conn_string(dsn, **kwargs) as store:
                store.setup()
                store.batch(ops[:1])
                return store.batch(ops[1:])

        first, second = await asyncio.to_thread(run)
    else:
        async with AsyncPostgresStore.from_conn_string(dsn, **kwargs) as store:
            await store.setup()
            await store.abatch(ops[:1])
            first, second = await store.abatch(ops[1:])
    first[0].value["tags"].append("changed")
    assert second[0].value == {"text": "green tea", "tags": ["a"]}


WHO: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")


async def test_each_call_is_embedded_in_its_caller_context(dsn: str, ns: tuple[str, ...]) -> None:
    """Context variables (tracing, vectors primed by the caller) reach the embedder
    as they would for a call on its own, and an embedder failing for one call
    fails that call only."""
    seen: list[tuple[str, tuple[str, ...]]] = []

    async def aembed(texts: Sequence[str]) -> list[list[float]]:
        seen.append((WHO.get(), tuple(texts)))
        if WHO.get() == "unlucky":
            raise ValueError("the embedding service refused this caller")
        return embed(texts)

    async def as_(who: str, make: Callable[[], Awaitable[Any]]) -> Any:
        WHO.set(who)
        return await make()

    async with AsyncPostgresStore.from_conn_string(
        dsn, index=index_config(embed=aembed), schema="merge_context"
    ) as store:
        await store.setup()
        results = await asyncio.gather(
            as_("writer", lambda: store.aput(ns, "k", {"text": "green tea"})),
            as_("reader", lambda: store.asearch(ns, query="green tea")),
            as_("unlucky", lambda: store.aput(ns, "lost", {"text": "coffee"})),
            as_("getter", lambda: store.aget(ns, "k")),
            return_exceptions=True,
        )
        assert results[0] is None
        assert [it.key for it in results[1]] == ["k"]  # issued after the put: sees it
        assert isinstance(results[2], ValueError)
        assert results[3].value == {"text": "green tea"}
        assert await store.aget(ns, "lost") is None
    assert sorted(seen) == [
        ("reader", ("green tea",)),
        ("unlucky", ("coffee",)),
        ("writer", ("green tea",)),
    ]


async def test_a_call_cancelled_before_its_batch_runs_has_no_effect(
    astore: AsyncPostgresStore, ns: tuple[str, ...]
) -> None:
    put = asyncio.create_task(astore.aput(ns, "cancelled", {"v": 1}))
    get = asyncio.create_task(astore.aget(ns, "cancelled"))
    await asyncio.sleep(0)  # both calls queued; their batch has not run yet
    put.cancel()
    assert await get is None
    with pytest.raises(asyncio.CancelledError):
        await put
    assert await astore.aget(ns, "cancelled") is None


# -- what each call gets when a merged batch fails (no I/O) ---------------------------------

OPS = [
    GetOp(("n",), "k"),  # 0: a read before the write
    PutOp(("n",), "k", {"v": 1}),  # 1: the write
    GetOp(("n",), "k"),  # 2: a read after it
    ListNamespacesOp(),  # 3: after it too
]


def _plan(stage: Stage) -> BatchPlan:
    plan = BatchPlan(size=len(OPS))
    plan.reads = Reads(gets=[(0, OPS[0])])  # type: ignore[list-item]
    plan.after = Reads(gets=[(2, OPS[2])], lists=[(3, OPS[3])])  # type: ignore[list-item]
    plan.stage = stage
    plan.results[0] = "before"  # type: ignore[call-overload]
    if stage == "after":
        plan.results[2] = "half-done"  # type: ignore[call-overload]
    return plan


LOST = psycopg.OperationalError("server closed the connection unexpectedly")
REFUSED = psycopg.errors.CheckViolation("refused")


@pytest.mark.parametrize("stage", ["reads", "write"])
def test_a_stage_the_server_refused_is_run_again_call_by_call(stage: Stage) -> None:
    _, redo = merge.resolve(OPS, _plan(stage), {}, REFUSED)
    assert redo == [0, 1, 2, 3]


def test_reads_after_a_committed_write_are_run_again_alone() -> None:
    outcomes, redo = merge.resolve(OPS, _plan("after"), {}, REFUSED)
    assert redo == [2, 3]
    assert outcomes[:2] == ["before", None]


def test_a_write_whose_fate_is_unknown_is_never_run_again() -> None:
    outcomes, redo = merge.resolve(OPS, _plan("write"), {}, LOST)
    assert redo == []
    assert outcomes[0] == "before"
    assert [o.error for o in outcomes[1:]] == [LOST, LOST, LOST]  # type: ignore[union-attr]


def test_after_a_committed_write_a_lost_connection_fails_only_the_reads_after_it() -> None:
    outcomes, redo = merge.resolve(OPS, _plan("after"), {}, LOST)
    assert redo == []
    assert outcomes[:2] == ["before", None]
    assert [o.error for o in outcomes[2:]] == [LOST, LOST]  # type: ignore[union-attr]


def test_refused_ops_keep_their_own_error_whatever_happens() -> None:
    bad = ValueError("bad")
    for exc in (None, REFUSED, LOST):
        plan = _plan("done" if exc is None else "write")
        outcomes, redo = merge.resolve(OPS, plan, {2: bad}, exc)
        assert isinstance(outcomes[2], merge.Failed) and outcomes[2].error is bad
        assert 2 not in redo


def test_only_reads_that_could_see_an_earlier_write_run_after_it() -> None:
    ops = [
        GetOp(("a",), "k"),
        PutOp(("a", "b"), "k", {"v": 1}),
        GetOp(("a", "b"), "k"),  # the key written: after
        GetOp(("a", "b"), "other"),  # another key: before
        SearchOp(("a",), None, 10, 0, None),  # covers ("a", "b"): after
        SearchOp(("c",), None, 10, 0, None),  # does not: before
        ListNamespacesOp(),  # any write may change the list: after
    ]
    assert merge.after_writes(ops) == {2, 4, 6}


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_grouped_filter_searches_return_what_each_returns_alone(
    dsn: str, ns: tuple[str, ...], flavour: str
) -> None:
    """Filter searches of one shape share a statement; each still gets its own page,
    and only those that refresh a TTL refresh it."""
    puts = [
        PutOp((*ns, f"p{i % 3}"), f"k{i}", {"n": i % 4, "tag": "x" if i % 2 else "y"}, ttl=10)
        for i in range(24)
    ]
    searches = [
        SearchOp((*ns, f"p{p}"), {"n": n}, limit, offset)
        for p in range(3)
        for n in range(4)
        for limit, offset in ((10, 0), (1, 1))
    ]
    searches += [
        SearchOp(ns, {"tag": "x"}, 5, 2),
        SearchOp(ns, {"tag": "y"}, 50, 0),
        SearchOp((), {"tag": "x", "n": 1}, 50, 0, refresh_ttl=False),
        SearchOp((*ns, "p0"), {"n": {"$gte": 2}}, 10, 0),  # a path: a statement of its own
    ]
    kwargs: dict[str, Any] = {"schema": f"merge_group_{flavour}", "ttl": {"default_ttl": 10}}
    if flavour == "sync":

        def run() -> tuple[list[Any], list[Any]]:
            with PostgresStore.from_conn_string(dsn, **kwargs) as store:
                store.setup()
                store.batch(puts)
                return store.batch(searches), [store.batch([op])[0] for op in searches]

        together, alone = await asyncio.to_thread(run)
    else:
        async with AsyncPostgresStore.from_conn_string(dsn, **kwargs) as store:
            await store.setup()
            await store.abatch(puts)
            together = await store.abatch(searches)
            alone = [(await store.abatch([op]))[0] for op in searches]
    assert [[(it.namespace, it.key) for it in r] for r in together] == [
        [(it.namespace, it.key) for it in r] for r in alone
    ]
    assert sum(len(r) for r in together) > len(searches)  # pages are not empty


async def test_grouped_searches_refresh_only_what_asks_for_it(
    astore: AsyncPostgresStore, ns: tuple[str, ...]
) -> None:
    a, b = (*ns, "a"), (*ns, "b")
    await astore.abatch([PutOp(a, "k", {"n": 1}, ttl=10), PutOp(b, "k", {"n": 1}, ttl=10)])
    schema = astore.schema

    async def expiry(namespace: tuple[str, ...]) -> Any:
        async with astore._source.connection() as conn:
            cur = await conn.execute(
                psycopg.sql.SQL(
                    "SELECT expires_at FROM {}.store_items WHERE namespace = %s AND key = 'k'"
                ).format(psycopg.sql.Identifier(schema)),
                (list(namespace),),
            )
            row = await cur.fetchone()
            return row[0] if isinstance(row, tuple) else row["expires_at"]  # type: ignore[index]

    before = (await expiry(a), await expiry(b))
    found = await astore.abatch(
        [
            SearchOp(a, {"n": 1}, 10, 0, refresh_ttl=True),
            SearchOp(b, {"n": 1}, 10, 0, refresh_ttl=False),
        ]
    )
    assert [len(r) for r in found] == [1, 1]  # type: ignore[arg-type]
    assert await expiry(a) > before[0]
    assert await expiry(b) == before[1]
