"""Concurrent threads' calls on the sync store, merged into batches.

``PostgresStore`` runs the single calls that threads make while a batch runs
(``get``, ``put``, ``search``, ``delete``, ``list_namespaces``) as the next
batch, and keeps what one call at a time promised, as the async store does
for the calls of one tick (``tests/security/test_store_merge.py``): a read
sees the writes issued before it, each call gets its own result or error,
tenants never share a batch.

Up to one batch per connection the store may hold runs at once. To make the
merging deterministic, each test holds the first batch on the server's
doorstep (``Gate``) until the other threads have queued their calls; it
runs on a lent ``Connection`` and on a ``ConnectionPool`` of one connection
(a larger pool is the last test's).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from langgraph.store.base import Item, PutOp
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from haive_langgraph.db._call import Call
from haive_langgraph.stores import (
    InvalidFilterError,
    PostgresStore,
    QuotaExceededError,
    ResourceQuota,
)


@pytest.fixture(scope="module", params=["connection", "pool"])
def store(request: pytest.FixtureRequest, dsn: str) -> Iterator[PostgresStore]:
    """A sync store (no index: every call it sends is a batch) on a lent connection
    or a pool of one."""
    resource: Any
    if request.param == "connection":
        resource = psycopg.Connection.connect(dsn, autocommit=True, row_factory=dict_row)
    else:
        resource = ConnectionPool(dsn, min_size=1, max_size=1, open=False)
        resource.open(wait=True)
    s = PostgresStore(resource, schema=f"tmerge_{request.param}")
    s.setup()
    try:
        yield s
    finally:
        s.close()
        resource.close()


@pytest.fixture
def ns() -> tuple[str, ...]:
    return (f"t{uuid.uuid4().hex[:10]}",)


class Gate:
    """Holds the store's first batch until :meth:`open`; records every batch sent."""

    def __init__(self, store: PostgresStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.store = store
        self.batches: list[Call[Any]] = []
        self._open = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=16)
        real = store._source.call

        def call(c: Call[Any]) -> Any:
            self.batches.append(c)
            if len(self.batches) == 1:
                assert self._open.wait(30), "the gate was never opened"
            return real(c)

        monkeypatch.setattr(store._source, "call", call)

    def first(self, fn: Callable[[], Any]) -> Future[Any]:
        """Start the call the gate holds (it leads the first batch)."""
        future = self._pool.submit(fn)
        _until(lambda: len(self.batches) == 1)
        return future

    def queue(self, fn: Callable[[], Any]) -> Future[Any]:
        """Start a call and wait until it waits for the next batch (issue order kept)."""
        queued = len(self.store._shared.merger._queue)
        future = self._pool.submit(fn)
        _until(lambda: len(self.store._shared.merger._queue) > queued or future.done())
        return future

    def open(self) -> None:
        self._open.set()
        self._pool.shutdown(wait=True)


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "the call never got where it was expected"
        time.sleep(0.001)


def _outcome(future: Future[Any]) -> Any:
    exc = future.exception()
    return exc if exc is not None else future.result()


def test_calls_made_while_a_batch_runs_make_the_next_batch(
    store: PostgresStore, ns: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    store.put(ns, "seed", {"v": 0})
    gate = Gate(store, monkeypatch)
    first = gate.first(lambda: store.get(ns, "seed"))
    rest = [gate.queue(lambda i=i: store.put(ns, f"k{i}", {"v": i})) for i in range(8)]
    rest.append(gate.queue(lambda: store.search(ns, limit=50)))
    gate.open()
    assert first.result().value == {"v": 0}
    assert [f.result() for f in rest[:8]] == [None] * 8
    # The search came after the puts (in the same batch): it sees them.
    assert sorted(it.key for it in rest[8].result()) == sorted(
        ["seed", *(f"k{i}" for i in range(8))]
    )
    assert len(gate.batches) == 2


def test_a_read_sees_the_writes_issued_before_it(
    store: PostgresStore, ns: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    store.batch([PutOp(ns, "k", {"v": 0}), PutOp(ns, "d", {"v": 0})])
    sub = (*ns, "sub")
    gate = Gate(store, monkeypatch)
    first = gate.first(lambda: store.get(ns, "k"))
    calls = [
        gate.queue(lambda: store.get(ns, "k")),  # before the put: the old value
        gate.queue(lambda: store.search(ns)),  # before every write
        gate.queue(lambda: store.put(ns, "k", {"v": 1})),
        gate.queue(lambda: store.get(ns, "k")),  # after it
        gate.queue(lambda: store.delete(ns, "d")),
        gate.queue(lambda: store.get(ns, "d")),
        gate.queue(lambda: store.put(sub, "n", {"v": 2})),
        gate.queue(lambda: store.search(ns)),
        gate.queue(lambda: store.list_namespaces(prefix=ns)),
    ]
    gate.open()
    assert first.result().value == {"v": 0}
    old, before, _, new, _, deleted, _, after, listed = (f.result() for f in calls)
    assert old.value == {"v": 0}
    assert sorted(it.key for it in before) == ["d", "k"]
    assert new.value == {"v": 1}
    assert deleted is None
    assert sorted((it.namespace, it.key, it.value["v"]) for it in after) == [
        (ns, "k", 1),
        (sub, "n", 2),
    ]
    assert listed == [ns, sub]
    assert len(gate.batches) == 2


def test_each_call_gets_its_own_error(
    store: PostgresStore, ns: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = store.for_tenant(f"q-{uuid.uuid4().hex[:8]}")
    tenant.set_quota(ResourceQuota(max_items=3))
    gate = Gate(store, monkeypatch)
    first = gate.first(lambda: tenant.get(ns, "none"))
    puts = [gate.queue(lambda i=i: tenant.put(ns, f"k{i}", {"v": i})) for i in range(5)]
    bad = gate.queue(lambda: tenant.search(ns, filter={"v": {"$nope": 1}}))
    get = gate.queue(lambda: tenant.get(ns, "k0"))
    gate.open()
    assert first.result() is None
    outcomes = [_outcome(f) for f in puts]
    # The merged write went past the quota: the calls ran again one by one,
    # in the order they were issued, and the first three fit.
    assert outcomes[:3] == [None, None, None]
    assert all(isinstance(o, QuotaExceededError) for o in outcomes[3:])
    assert isinstance(_outcome(bad), InvalidFilterError)  # refused before it was queued
    got = get.result()
    assert isinstance(got, Item) and got.value == {"v": 0}
    assert tenant.get_usage().items == 3


def test_tenants_never_share_a_batch(
    store: PostgresStore, ns: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    a = store.for_tenant(f"a-{uuid.uuid4().hex[:8]}")
    b = store.for_tenant(f"b-{uuid.uuid4().hex[:8]}")
    gate = Gate(store, monkeypatch)
    first = gate.first(lambda: store.get(ns, "k"))
    calls = [
        gate.queue(lambda: a.put(ns, "k", {"who": "a"})),
        gate.queue(lambda: b.put(ns, "k", {"who": "b"})),
        gate.queue(lambda: a.get(ns, "k")),
        gate.queue(lambda: b.get(ns, "k")),
        gate.queue(lambda: store.get(ns, "k")),
    ]
    gate.open()
    assert first.result() is None
    _, _, got_a, got_b, unbound = (f.result() for f in calls)
    assert got_a.value == {"who": "a"} and got_b.value == {"who": "b"}
    assert unbound is None
    tenants = [c.scope.tenant_id for c in gate.batches[1:] if c.scope is not None]
    assert sorted(tenants) == sorted(["", a.tenant_id, b.tenant_id])


def test_a_pool_runs_a_batch_per_connection_at_once(
    dsn: str, ns: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    with ConnectionPool(dsn, min_size=2, max_size=2, open=True) as pool:
        store = PostgresStore(pool, schema="tmerge_pool2")
        store.setup()
        gate = Gate(store, monkeypatch)
        first = gate.first(lambda: store.put(ns, "held", {"v": 0}))
        # A second connection is free: this call does not wait for the held batch.
        assert gate.queue(lambda: store.put(ns, "k", {"v": 1})).result() is None
        assert not first.done()
        gate.open()
        assert first.result() is None
        assert store.get(ns, "k").value == {"v": 1}
        store.close()
