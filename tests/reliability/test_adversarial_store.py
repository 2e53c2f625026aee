"""Scenario 6 (store): adversarial namespaces, keys, values and filters, property-based.

The generators of ``test_adversarial.py`` (quotes, NUL bytes, unicode, SQL
fragments, placeholder look-alikes, near-miss tenant names, huge sizes) feed
the store's public API, sync and async on lent connections: ``put``, ``get``,
``search`` (with filters on every operator, and unknown ones),
``list_namespaces`` and ``delete``. A ``victim`` tenant holds items under the
same namespaces and keys with the same field names. Each call must work or
raise a documented error (a :class:`~haive_langgraph.errors.HaiveError` or
LangGraph's ``InvalidNamespaceError``), and then nothing is written; no call
returns a row of the victim, of another namespace, or one its filter does not
match; and the marker carried by generated values never appears in a logged
statement text (only in its parameters).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import strategies as st
from langgraph.store.base import InvalidNamespaceError
from psycopg import AsyncConnection

from haive_langgraph.errors import HaiveError
from haive_langgraph.stores import AsyncPostgresStore, PostgresStore
from haive_langgraph.stores._sql import COMPONENT as STORE

from ._server import PrivateServer
from .conftest import Budget, Figures
from .test_adversarial import (
    FLAVOUR,
    JSON_VALUE,
    KEYS,
    LOG_OPTIONS,
    MARK,
    NASTY,
    SECRET,
    VICTIM,
    Arena,
    LoopThread,
    json_equal,
    no_secret,
    run_property,
)

pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

DOCUMENTED = (HaiveError, InvalidNamespaceError)
VICTIM_NAMESPACES = (("docs",), ("users", "alice"), ("x",))
VICTIM_KEYS = ("shared-id", "x", "'")
OPERATORS = ["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists"]
BOGUS_OPERATORS = ["$regex", "$or", "$where", "$", "$EQ", "$eq'--", MARK]


class StoreArena(Arena):
    def store(self, flavour: str, tenant: str) -> Any:
        if flavour == "async":

            async def make() -> AsyncPostgresStore:  # binds to the running loop
                return AsyncPostgresStore(self.aconn, tenant_id=tenant)

            return self.loop.run(make())
        return PostgresStore(self.conn, tenant_id=tenant)

    def call(self, store: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        if isinstance(store, AsyncPostgresStore):
            return self.loop.run(getattr(store, f"a{method}")(*args, **kwargs))
        return getattr(store, method)(*args, **kwargs)

    def try_call(self, store: Any, method: str, *args: Any, **kwargs: Any) -> tuple[bool, Any]:
        return self.attempt(lambda: self.call(store, method, *args, **kwargs), DOCUMENTED)


@pytest.fixture(scope="module")
def arena(private_server: PrivateServer) -> Iterator[StoreArena]:
    if not private_server.is_running():
        private_server.start()
    dsn = private_server.create_database("advstore")
    with psycopg.connect(dsn, autocommit=True) as conn:
        PostgresStore(conn).setup()
        victim = PostgresStore(conn, tenant_id=VICTIM)
        for ns in VICTIM_NAMESPACES:
            for key in VICTIM_KEYS:
                victim.put(ns, key, {"s": SECRET, "k": "it's", "n": 10, "x": {"y": SECRET}})
    loop = LoopThread()
    conn = psycopg.connect(dsn, autocommit=True, options=LOG_OPTIONS)
    aconn = loop.run(AsyncConnection.connect(dsn, autocommit=True, options=LOG_OPTIONS))
    admin = psycopg.connect(dsn, autocommit=True)
    tables = tuple(  # the vector table exists only with an index configured
        t
        for t in STORE.tenant_tables
        if admin.execute("SELECT to_regclass(%s)", (f"haive.{t}",)).fetchone()[0]
    )
    try:
        yield StoreArena(private_server, dsn, conn, aconn, loop, admin, tables=tables)
    finally:
        admin.close()
        conn.close()
        loop.run(aconn.close())
        loop.close()


def test_namespaces_keys_and_values(arena: StoreArena, budget: Budget, figures: Figures) -> None:
    def body(flavour: str, labels: list[str], key: str, value: Any) -> None:
        store = arena.store(flavour, "mallory")
        ns = ("adv", uuid.uuid4().hex, *labels)
        before = arena.rows_of("mallory")
        ok, err = arena.try_call(store, "put", ns, key, {"v": value, "m": MARK})
        if not ok:
            assert arena.rows_of("mallory") == before, f"a failed put left rows: {err!r}"
            return
        try:
            item = arena.call(store, "get", ns, key)
            assert item is not None and item.namespace == ns and item.key == key
            assert json_equal(item.value, {"v": value, "m": MARK})
            found = arena.call(store, "search", ns, limit=50)
            assert [(i.namespace, i.key) for i in found] == [(ns, key)]
            listed = arena.call(store, "list_namespaces", prefix=ns[:2], limit=50)
            assert listed == [ns]
            for victim_ns in VICTIM_NAMESPACES:
                for victim_key in (*VICTIM_KEYS, key):
                    no_secret(arena.call(store, "get", victim_ns, victim_key))
                no_secret(arena.call(store, "search", victim_ns, limit=50))
            no_secret(item, found, arena.call(store, "list_namespaces", limit=1000))
        finally:
            arena.try_call(store, "delete", ns, key)
        assert arena.call(store, "get", ns, key) is None
        assert arena.rows_of("mallory") == before

    run_property(
        arena, budget, figures, "store namespaces, keys and values", body,
        flavour=FLAVOUR, labels=st.lists(NASTY, min_size=0, max_size=3), key=NASTY,
        value=JSON_VALUE,
    )  # fmt: skip


def test_search_filters(arena: StoreArena, budget: Budget, figures: Figures) -> None:
    def body(flavour: str, field_name: str, value: Any, op: str | None, operand: Any) -> None:
        store = arena.store(flavour, "mallory")
        ns = ("adv", uuid.uuid4().hex)
        ok, _ = arena.try_call(store, "put", ns, "k", {field_name: value, "m": MARK})
        if not ok:
            return
        try:
            # Equality with the stored value finds the item (a dotted name is a path).
            ok, found = arena.try_call(store, "search", ns, filter={field_name: value}, limit=50)
            if ok and "." not in field_name and not isinstance(value, dict | list):
                assert [i.key for i in found] == ["k"], f"equality filter missed: {found!r}"
            if ok:
                for item in found:
                    assert item.namespace == ns
                    assert "." in field_name or json_equal(item.value[field_name], value)
            # Any operator, known or not, on this namespace and on the victim's.
            flt = {field_name: operand if op is None else {op: operand}}
            for prefix in (ns, ("docs",), ("users",), ()):
                ok, found = arena.try_call(store, "search", prefix, filter=flt, limit=50)
                if ok:
                    no_secret(found)
                    assert all(i.namespace[: len(prefix)] == prefix for i in found)
                elif op in BOGUS_OPERATORS:
                    assert isinstance(found, HaiveError), f"{op}: {found!r}"
        finally:
            arena.try_call(store, "delete", ns, "k")

    operand = st.one_of(JSON_VALUE, st.lists(JSON_VALUE, max_size=4))
    run_property(
        arena, budget, figures, "store filters", body,
        flavour=FLAVOUR, field_name=st.one_of(KEYS, st.sampled_from(["s", "n", "x.y", "k"])),
        value=JSON_VALUE, op=st.one_of(st.none(), st.sampled_from(OPERATORS + BOGUS_OPERATORS)),
        operand=operand,
    )  # fmt: skip
