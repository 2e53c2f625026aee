"""Property: what a write accepts, a read returns; what it refuses, it refuses with our errors.

Ids, namespaces, keys, metadata, filters and values come from the
adversarial generators of ``tests/reliability/test_adversarial.py`` (quotes,
NUL bytes, unicode, SQL fragments, placeholder look-alikes, huge sizes),
extended here with lone surrogates, ids just at and just past the 512-byte
limit, values nested just inside and past the depth limit (and far past
it), and values just inside and past a lowered ``max_decompressed_size``.
They go through the checkpointer (``put``, ``put_writes``), the store
(``put``, ``get``, ``search``) and chat histories (``add_messages``), sync
or async. Each call either round-trips (the read returns what was written,
as LangGraph's serde gives it back: it stores ``?`` for a lone surrogate in a
serialised value, as every LangGraph saver does) or raises a documented
error (a :class:`~haive_langgraph.errors.HaiveError`, or LangGraph's
``InvalidNamespaceError`` for a namespace), and then the tenant's rows are
exactly as before (a digest of every row of every table).
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.base import get_serializable_checkpoint_metadata
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.store.base import InvalidNamespaceError
from psycopg import AsyncConnection

from haive_langgraph.checkpointers import AsyncPostgresCheckpointer, PostgresCheckpointer
from haive_langgraph.codec import Compression, HaiveCodec
from haive_langgraph.db._limits import MAX_DEPTH, MAX_ID_BYTES
from haive_langgraph.errors import HaiveError
from haive_langgraph.memory import (
    AsyncPostgresChatMessageHistory,
    ConversationStore,
    PostgresChatMessageHistory,
)
from haive_langgraph.stores import AsyncPostgresStore, PostgresStore
from tests.reliability._attacks import tenant_digest
from tests.reliability.test_adversarial import (
    FLAVOUR,
    JSON_VALUE,
    KEYS,
    NASTY,
    LoopThread,
    checkpoint_with,
    json_equal,
)

from .test_limits import deep

# Hypothesis warns before printing a large example; printing it is what we want.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

LIMIT = 64 * 1024  # a lowered max_decompressed_size, so that sizes around it stay cheap
DOCUMENTED = (HaiveError, InvalidNamespaceError)
SETTINGS = settings(
    max_examples=50,
    derandomize=True,  # the same examples each run
    database=None,
    deadline=None,
    phases=(Phase.explicit, Phase.reuse, Phase.generate),  # no shrinking: bounded time
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    report_multiple_bugs=False,
)

# -- the extensions ---------------------------------------------------------------------------

SURROGATES = st.sampled_from(["\ud800", "\udfff", "x\udc00y", "\ud83d", "\ud83d\ude00"])
# Just at and just past the id limit, in characters of 1 to 4 UTF-8 bytes.
AT_ID_LIMIT = st.builds(
    lambda ch, extra: ch * (MAX_ID_BYTES // len(ch.encode()) + extra),
    st.sampled_from(["a", "é", "€", "😀"]),
    st.sampled_from([0, 1]),
)
IDS = st.one_of(
    NASTY,
    NASTY,
    AT_ID_LIMIT,
    st.builds(lambda a, s, b: a + s + b, KEYS, SURROGATES, KEYS),
)
# Inside a one-level container: MAX_DEPTH - 1 fits, MAX_DEPTH is one level too deep.
DEEP = st.builds(deep, st.sampled_from([MAX_DEPTH - 2, MAX_DEPTH - 1, MAX_DEPTH, 300, 1500]))
TEXTS = st.one_of(KEYS, st.builds(lambda a, s: a + s, KEYS, SURROGATES))
JSON_ANY = st.one_of(JSON_VALUE, JSON_VALUE, DEEP, TEXTS)
# Serialised sizes around LIMIT (a few bytes of framing aside): fits, and does not.
SIZED = st.builds(
    lambda n, unit: unit * (n // len(unit.encode())),
    st.sampled_from([LIMIT - 512, LIMIT + 16, 2 * LIMIT]),
    st.sampled_from(["x", "é", "😀"]),
)
VALUES = st.one_of(JSON_ANY, SIZED)


def sometimes(strategy: st.SearchStrategy[Any], plain: Any) -> st.SearchStrategy[Any]:
    """``strategy`` one time in three, else ``plain``: so that other arguments get their turn."""
    return st.one_of(st.just(plain), st.just(plain), strategy)


_SERDE = JsonPlusSerializer()
_SURROGATE = re.compile("[\ud800-\udfff]")


def as_stored(value: Any) -> Any:
    """``value`` as LangGraph's serde gives it back (a lone surrogate becomes ``?``)."""
    return _SERDE.loads_typed(_SERDE.dumps_typed(value))


def same(a: Any, b: Any) -> bool:
    """Equal as stored values (NaN equals NaN: compared as serialised bytes)."""
    return _SERDE.dumps_typed(a) == _SERDE.dumps_typed(b)


def unsurrogate(text: str) -> str:
    return _SURROGATE.sub("?", text)


# -- the arena ----------------------------------------------------------------------------------


@dataclass
class Arena:
    dsn: str
    conn: psycopg.Connection[Any]
    aconn: AsyncConnection[Any]
    loop: LoopThread
    tables: list[str]
    codec: HaiveCodec
    outcomes: Counter[str] = field(default_factory=Counter)

    def make(self, flavour: str, sync_cls: Any, async_cls: Any, *args: Any, **kw: Any) -> Any:
        if flavour == "async":

            async def build() -> Any:  # binds to the running loop
                return async_cls(*args, self.aconn, codec=self.codec, **kw)

            return self.loop.run(build())
        return sync_cls(*args, self.conn, codec=self.codec, **kw)

    def call(self, obj: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        if type(obj).__name__.startswith("Async"):

            async def go() -> Any:
                out = getattr(obj, f"a{method}")(*args, **kwargs)
                return [x async for x in out] if hasattr(out, "__aiter__") else await out

            return self.loop.run(go())
        out = getattr(obj, method)(*args, **kwargs)
        return list(out) if method == "list" else out

    def digest(self, tenant: str) -> str:
        return tenant_digest(self.dsn, tenant, self.tables)

    def attempt(self, tenant: str, fn: Callable[[], Any]) -> tuple[bool, Any]:
        """(True, result), or (False, error) for a documented error, the tenant's rows untouched."""
        before = self.digest(tenant)
        try:
            result = fn()
        except DOCUMENTED as exc:
            assert not isinstance(exc, psycopg.Error), f"a raw database error: {exc!r}"
            assert self.digest(tenant) == before, f"a refused call left rows: {exc!r:.300}"
            self.outcomes[type(exc).__name__] += 1
            return False, exc
        self.outcomes["ok"] += 1
        return True, result

    def run(self, prop: Callable[[], None], *expected: str) -> None:
        """Run a property; each ``expected`` outcome must have happened (no vacuous pass)."""
        self.outcomes.clear()
        prop()
        missing = [name for name in ("ok", *expected) if not self.outcomes[name]]
        assert not missing, f"never {missing}: {dict(self.outcomes)}"


@pytest.fixture(scope="module")
def arena(dsn: str) -> Iterator[Arena]:
    saver = PostgresCheckpointer(dsn)
    saver.setup()
    saver.close()
    store = PostgresStore(dsn)
    store.setup()
    store.close()
    with ConversationStore(dsn) as conversations:
        conversations.setup()
    with psycopg.connect(dsn, autocommit=True) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.columns "
                "WHERE table_schema = 'haive' AND column_name = 'tenant_id' ORDER BY 1"
            )
        ]
    loop = LoopThread()
    conn = psycopg.connect(dsn, autocommit=True)
    aconn = loop.run(AsyncConnection.connect(dsn, autocommit=True))
    codec = HaiveCodec(compression=Compression(max_decompressed_size=LIMIT))
    try:
        yield Arena(dsn, conn, aconn, loop, tables, codec)
    finally:
        conn.close()
        loop.run(aconn.close())
        loop.close()


def tenant() -> str:
    return f"prop-{uuid.uuid4().hex[:10]}"


def cfg(thread_id: str, ns: str = "", checkpoint_id: str | None = None) -> Any:
    conf = {"thread_id": thread_id, "checkpoint_ns": ns}
    if checkpoint_id is not None:
        conf["checkpoint_id"] = checkpoint_id
    return {"configurable": conf}


# -- properties ----------------------------------------------------------------------------------


def test_checkpointer_put(arena: Arena) -> None:
    who = tenant()

    @SETTINGS
    @given(
        flavour=FLAVOUR, thread_id=sometimes(IDS, "t"), ns=sometimes(IDS, ""), cid=sometimes(IDS, None),
        key=KEYS, meta=sometimes(JSON_ANY, 1), value=VALUES,
    )  # fmt: skip
    # Explicit examples (always run first): each outcome the run must see.
    @example("sync", "t", "", None, "k", 1, "fits")
    @example("async", "t", "", None, "k", 1, "x" * (2 * LIMIT))
    @example("sync", "x" * 3000, "", None, "k", 1, 1)
    def prop(
        flavour: str, thread_id: str, ns: str, cid: str | None, key: str, meta: Any, value: Any
    ) -> None:
        saver = arena.make(flavour, PostgresCheckpointer, AsyncPostgresCheckpointer, tenant_id=who)
        cp = checkpoint_with({"v": value})
        if cid is not None:
            cp["id"] = cid
        metadata = {"source": "input", "step": -1, key: meta}
        ok, saved = arena.attempt(
            who, lambda: arena.call(saver, "put", cfg(thread_id, ns), cp, metadata, {"v": 1})
        )
        if not ok:
            return
        reader = arena.make(flavour, PostgresCheckpointer, AsyncPostgresCheckpointer, tenant_id=who)
        try:
            got = arena.call(reader, "get_tuple", saved)
            conf = got.config["configurable"]
            assert (conf["thread_id"], conf["checkpoint_ns"], conf["checkpoint_id"]) == (
                thread_id, ns, cp["id"],
            )  # fmt: skip
            assert same(got.checkpoint["channel_values"]["v"], as_stored(value))
            expected = get_serializable_checkpoint_metadata(cfg(thread_id, ns), metadata)  # type: ignore[arg-type]
            assert json_equal(got.metadata, expected)
        finally:
            arena.call(saver, "delete_thread", thread_id)

    arena.run(prop, "ConfigurationError", "ValueTooLargeError")


def test_checkpointer_put_writes(arena: Arena) -> None:
    who = tenant()

    @SETTINGS
    @given(
        flavour=FLAVOUR,
        task=sometimes(IDS, "task"),
        path=sometimes(IDS, ""),
        channel=sometimes(IDS, "c"),
        value=VALUES,
    )
    @example("async", "task", "", "c", "fits")
    @example("sync", "task", "", "c", "x" * (2 * LIMIT))
    @example("async", "x" * 3000, "", "c", 1)
    def prop(flavour: str, task: str, path: str, channel: str, value: Any) -> None:
        saver = arena.make(flavour, PostgresCheckpointer, AsyncPostgresCheckpointer, tenant_id=who)
        thread_id = f"w-{uuid.uuid4().hex}"
        saved = arena.call(
            saver, "put", cfg(thread_id), checkpoint_with({}), {"source": "input", "step": -1}, {}
        )
        try:
            ok, _ = arena.attempt(
                who,
                lambda: arena.call(
                    saver, "put_writes", saved, [("ok", 1), (channel, value)], task, path
                ),
            )
            reader = arena.make(
                flavour, PostgresCheckpointer, AsyncPostgresCheckpointer, tenant_id=who
            )
            got = arena.call(reader, "get_tuple", saved)
            if ok:
                assert [w[:2] for w in got.pending_writes] == [(task, "ok"), (task, channel)]
                assert same(got.pending_writes[1][2], as_stored(value))
            else:
                assert got.pending_writes == []  # neither write of the call
        finally:
            arena.call(saver, "delete_thread", thread_id)

    arena.run(prop, "ConfigurationError", "ValueTooLargeError")


def test_store_put_get_and_search(arena: Arena) -> None:
    who = tenant()

    @SETTINGS
    @given(
        flavour=FLAVOUR, namespace=sometimes(st.lists(IDS, min_size=1, max_size=4), ["ns"]),
        key=sometimes(IDS, "k"), name=KEYS, value=VALUES, probe=JSON_ANY,
    )  # fmt: skip
    @example("sync", ["ns"], "k", "v", "fits", "fits")
    @example("async", ["ns"], "k", "v", "x" * (2 * LIMIT), 1)
    @example("sync", ["a.b"], "k", "v", 1, 1)
    def prop(
        flavour: str, namespace: list[str], key: str, name: str, value: Any, probe: Any
    ) -> None:
        store = arena.make(flavour, PostgresStore, AsyncPostgresStore, tenant_id=who)
        ns = tuple(namespace)
        ok, _ = arena.attempt(who, lambda: arena.call(store, "put", ns, key, {name: value}))
        if ok:
            try:
                item = arena.call(store, "get", ns, key)
                assert item is not None and json_equal(item.value, {name: value})
            finally:
                arena.call(store, "delete", ns, key)
        arena.attempt(who, lambda: arena.call(store, "search", ns, filter={name: probe}))

    arena.run(prop, "InvalidNamespaceError", "ValueTooLargeError")


def test_chat_history_add_messages(arena: Arena) -> None:
    who = tenant()

    @SETTINGS
    @given(
        flavour=FLAVOUR, session=sometimes(IDS, "s"), user=sometimes(IDS, None), mid=sometimes(IDS, None),
        content=st.one_of(NASTY, TEXTS, SIZED), extra=sometimes(JSON_ANY, 1),
    )  # fmt: skip
    @example("async", "s", None, None, "fits", 1)
    @example("sync", "s", None, None, "x" * (2 * LIMIT), 1)
    @example("async", "x" * 3000, None, None, "hi", 1)
    def prop(
        flavour: str, session: str, user: str | None, mid: str | None, content: str, extra: Any
    ) -> None:
        ok, history = arena.attempt(
            who,
            lambda: arena.make(
                flavour, PostgresChatMessageHistory, AsyncPostgresChatMessageHistory, session,
                tenant_id=who, user_id=user,
            ),
        )  # fmt: skip
        if not ok:
            return  # a bad session or user id, refused before anything runs
        batch = [HumanMessage(content, id=mid), AIMessage("ok", additional_kwargs={"x": extra})]
        ok, _ = arena.attempt(who, lambda: arena.call(history, "add_messages", batch))
        if not ok:
            return
        try:
            got = arena.call(history, "get_messages")
            assert [m.type for m in got] == ["human", "ai"]
            assert got[0].content == unsurrogate(content)
            assert got[0].id == (mid or None)  # an empty id is no id
            assert same(got[1].additional_kwargs, as_stored({"x": extra}))
        finally:
            arena.call(history, "clear")

    arena.run(prop, "ConfigurationError", "ValueTooLargeError")
