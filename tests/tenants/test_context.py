"""The tenant context and tenant erasure, on the table owner's role and under row-level security.

Each test runs on the sync and the async registry (``side``): the same body
enters ``registry.context(...)`` and calls each component's method, the sync
one in a worker thread, the async one (``a``-prefixed) awaited.
"""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.base import empty_checkpoint
from psycopg import sql

from haive_langgraph.codec import HaiveCodec, KeyRing, frame_key_id
from haive_langgraph.errors import (
    ConfigurationError,
    TenantNotFoundError,
    TenantSuspendedError,
)
from haive_langgraph.memory import VectorMemory
from haive_langgraph.ops._migrate import tenant_tables
from haive_langgraph.tenants import (
    AsyncTenantRegistry,
    TenantRegistry,
    TenantSettings,
)
from tests._roles import application_role


async def call(obj: Any, is_async: bool, method: str, *args: Any, **kwargs: Any) -> Any:
    """``obj.a<method>`` awaited (async), or ``obj.<method>`` in a worker thread (sync)."""
    if is_async:
        return await getattr(obj, f"a{method}")(*args, **kwargs)
    return await asyncio.to_thread(getattr(obj, method), *args, **kwargs)


class Side:
    def __init__(self, registry: Any, is_async: bool) -> None:
        self.registry = registry
        self.is_async = is_async

    async def __call__(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return await call(self.registry, self.is_async, method, *args, **kwargs)

    @asynccontextmanager
    async def context(self, tenant_id: str) -> AsyncIterator[Any]:
        if self.is_async:
            async with self.registry.context(tenant_id) as ctx:
                yield ctx
        else:
            with self.registry.context(tenant_id) as ctx:
                yield ctx


def new_tenant(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def counts(dsn: str, tenant_id: str) -> dict[str, int]:
    """Rows of ``tenant_id`` in every tenant table that exists (as the tables' owner)."""
    out = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for table in tenant_tables():
            exists = conn.execute("SELECT to_regclass(%s)", (f"haive.{table}",)).fetchone()
            if exists is None or exists[0] is None:
                continue
            row = conn.execute(
                sql.SQL("SELECT count(*) FROM haive.{} WHERE tenant_id = %s").format(
                    sql.Identifier(table)
                ),
                (tenant_id,),
            ).fetchone()
            assert row is not None
            out[table] = int(row[0])
    return out


def set_up(dsn: str) -> None:
    """Every component's tables, and the store's vector table of the default memory."""
    with TenantRegistry(dsn) as registry:
        registry.setup()
    with VectorMemory(dsn) as memory:
        memory.setup()


@pytest.fixture(scope="module")
def migrated(dsn: str) -> str:
    set_up(dsn)
    return dsn


@pytest.fixture(scope="module")
def app_dsn(migrated: str) -> Iterator[str]:
    """A login role that uses every table without owning them: row security binds it."""
    with application_role(migrated) as app:
        yield app


@pytest.fixture(params=["owner", "app"])
def role_dsn(request: pytest.FixtureRequest, migrated: str) -> str:
    return migrated if request.param == "owner" else str(request.getfixturevalue("app_dsn"))


@pytest.fixture(params=["sync", "async"])
async def side(request: pytest.FixtureRequest, role_dsn: str) -> AsyncIterator[Side]:
    if request.param == "async":
        async with AsyncTenantRegistry(role_dsn) as registry:
            yield Side(registry, True)
    else:
        with TenantRegistry(role_dsn) as registry:
            yield Side(registry, False)


async def write_everything(ctx: Any, is_async: bool, secret: str) -> None:
    """One row of ``secret`` in each component the context opens (the same ids in every tenant)."""
    saver = ctx.checkpointer()
    config = {"configurable": {"thread_id": "thread-1", "checkpoint_ns": ""}}
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {"secret": secret}
    checkpoint["channel_versions"] = {"secret": 1}
    await call(saver, is_async, "put", config, checkpoint, {"source": "input", "step": -1}, {})
    store = ctx.store()
    await call(store, is_async, "put", ("docs",), "k", {"secret": secret})
    history = ctx.chat_history("chat-1")
    await history.aadd_messages([HumanMessage(secret), AIMessage("noted")])
    conversations = ctx.conversations()
    await call(
        conversations, is_async, "create_conversation", "bot", "alice", conversation_id="conv-1"
    )
    await call(conversations, is_async, "add_message", "conv-1", "user", secret)
    sessions = ctx.sessions()
    await call(sessions, is_async, "create_session", "alice", "bot", session_id="sess-1")
    memory = ctx.vector_memory(user_id="alice")
    await call(memory, is_async, "add_memories", [f"the secret is {secret}"])


async def read_everything(ctx: Any, is_async: bool) -> dict[str, Any]:
    """What each component of the context reads back of those rows."""
    config = {"configurable": {"thread_id": "thread-1", "checkpoint_ns": ""}}
    found = await call(ctx.checkpointer(), is_async, "get_tuple", config)
    item = await call(ctx.store(), is_async, "get", ("docs",), "k")
    messages = await ctx.chat_history("chat-1").aget_messages()
    page = await call(ctx.conversations(), is_async, "query_conversations")
    sessions = await call(ctx.sessions(), is_async, "list_sessions", user_id="alice")
    memories = await call(ctx.vector_memory(user_id="alice"), is_async, "search", "secret")
    return {
        "checkpoint": None if found is None else found.checkpoint["channel_values"]["secret"],
        "store": None if item is None else item.value["secret"],
        "history": [m.content for m in messages],
        # a session is a conversation row: each lists the other's rows of alice too
        "conversations": sorted(c.conversation_id for c in page.conversations),
        "sessions": sorted(s.session_id for s in sessions.sessions),
        "memories": [m.text for m in memories],
    }


def expected(secret: str) -> dict[str, Any]:
    return {
        "checkpoint": secret,
        "store": secret,
        "history": [secret, "noted"],
        "conversations": ["chat-1", "conv-1", "sess-1"],
        "sessions": ["conv-1", "sess-1"],
        "memories": [f"the secret is {secret}"],
    }


async def test_components_of_a_context_see_their_tenant_only(side: Side, migrated: str) -> None:
    a, b = new_tenant("a"), new_tenant("b")
    await side("create", a)
    await side("create", b)
    async with side.context(a) as ctx:
        assert ctx.tenant_id == a and ctx.tenant.status == "active"
        await write_everything(ctx, side.is_async, f"{a}'s secret")
    async with side.context(b) as ctx:
        await write_everything(ctx, side.is_async, f"{b}'s secret")
    for tenant in (a, b):
        async with side.context(tenant) as ctx:
            seen = await read_everything(ctx, side.is_async)
            assert ctx.checkpointer().tenant_id == tenant
        assert seen == expected(f"{tenant}'s secret")
    held_a, held_b = counts(migrated, a), counts(migrated, b)
    assert held_a == held_b and sum(held_a.values()) > 10


async def test_delete_erases_every_component_of_that_tenant_only(side: Side, migrated: str) -> None:
    gone, kept = new_tenant("gone"), new_tenant("kept")
    for tenant in (gone, kept):
        await side("create", tenant)
        async with side.context(tenant) as ctx:
            await write_everything(ctx, side.is_async, f"{tenant}'s secret")
    before = counts(migrated, kept)
    held = counts(migrated, gone)
    tables_with_rows = {t for t, n in held.items() if n}
    # every component wrote something: checkpoints, store, conversations, the cache's versions aside
    assert {"checkpoints", "store_items", "conversations", "conversation_messages"} <= (
        tables_with_rows
    )
    await side("suspend", gone)  # an admin suspends first: erasure still goes through
    erased = await side("delete", gone)
    assert erased["tenants"] == 1
    assert {t: n for t, n in erased.items() if t != "tenants"} == {
        t: n for t, n in held.items() if t in erased
    }
    assert sum(counts(migrated, gone).values()) == 0
    assert counts(migrated, kept) == before
    with pytest.raises(TenantNotFoundError):
        await side("get", gone)
    with pytest.raises(TenantNotFoundError):
        async with side.context(gone):
            pass
    async with side.context(kept) as ctx:
        assert await read_everything(ctx, side.is_async) == expected(f"{kept}'s secret")


async def test_a_suspended_or_unknown_tenant_has_no_context(side: Side) -> None:
    tid = new_tenant()
    await side("create", tid)
    await side("suspend", tid)
    with pytest.raises(TenantSuspendedError, match="suspended") as refused:
        async with side.context(tid):
            pass
    assert refused.value.tenant_id == tid and not isinstance(refused.value, OSError)
    await side("resume", tid)
    async with side.context(tid) as ctx:
        assert ctx.tenant.active
    with pytest.raises(TenantNotFoundError, match="no tenant"):
        async with side.context(new_tenant("ghost")):
            pass


async def test_suspending_a_tenant_stops_the_writes_of_its_open_context(side: Side) -> None:
    tid = new_tenant()
    await side("create", tid)
    async with side.context(tid) as ctx:
        store = ctx.store()
        await call(store, side.is_async, "put", ("docs",), "before", {"n": 1})
        await side("suspend", tid)
        with pytest.raises(TenantSuspendedError) as refused:
            await call(store, side.is_async, "put", ("docs",), "after", {"n": 2})
        assert refused.value.tenant_id == tid
        await side("resume", tid)
        await call(store, side.is_async, "put", ("docs",), "after", {"n": 2})
        assert (await call(store, side.is_async, "get", ("docs",), "after")).value == {"n": 2}


async def test_the_context_binds_the_tenant_and_the_source(side: Side) -> None:
    tid = new_tenant()
    await side("create", tid)
    async with side.context(tid) as ctx:
        for option in ("tenant_id", "conn", "schema"):
            with pytest.raises(ConfigurationError, match=f"{option} is set by the context"):
                ctx.store(**{option: "x"})
        store = ctx.store()
        # the audit log of this database does not record reads: nothing is written
        assert await call(ctx, side.is_async, "record_read", "store_items", ["k"]) is False
        with pytest.raises(ConfigurationError, match="table must be a non-empty str"):
            await call(ctx, side.is_async, "record_read", "", ["k"])
    with pytest.raises(ConfigurationError, match="closed"):
        ctx.store()
    # the registry's pool outlives the context and the components it closed
    assert (await side("get", tid)).tenant_id == tid
    assert store.tenant_id == tid


def test_under_row_security_a_role_sees_nothing_without_a_tenant(app_dsn: str) -> None:
    with psycopg.connect(app_dsn, autocommit=True) as conn:
        for table in ("checkpoints", "store_items", "conversations", "conversation_messages"):
            row = conn.execute(
                sql.SQL("SELECT count(*) FROM haive.{}").format(sql.Identifier(table))
            ).fetchone()
            assert row == (0,), table
        # while the registry itself (an admin table) is readable
        assert conn.execute("SELECT count(*) FROM haive.tenants").fetchone() != (0,)


def keyring() -> KeyRing:
    return KeyRing.from_string(f"k1:{base64.b64encode(os.urandom(32)).decode()}")


@pytest.fixture(scope="module")
def audited(pg_server: str) -> Iterator[str]:
    """A database whose audit log records changes and reads (what HIPAA asks for)."""
    from haive_langgraph.ops import audit
    from tests.conftest import create_database, drop_database

    url = create_database(pg_server)
    try:
        set_up(url)
        audit.enable(url, reads=True)
        yield url
    finally:
        drop_database(pg_server, url)


async def test_compliance_mode_encrypts_everything_or_refuses(
    migrated: str, audited: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HAIVE_ENCRYPTION_KEYS", raising=False)
    hipaa = TenantSettings(compliance_mode="HIPAA")
    tid = new_tenant("hipaa")
    # no keys: refused with a clear error, before anything is opened
    with TenantRegistry(audited) as registry:
        registry.create(tid, settings=hipaa)
        refused = pytest.raises(
            ConfigurationError, match=r"requires encryption.*no encryption keys"
        )
        with refused, registry.context(tid):
            pass
    # keys, but the audit log of the other database is off: refused too
    with TenantRegistry(migrated, keyring=keyring()) as registry:
        registry.create(tid, settings=hipaa)
        refused = pytest.raises(ConfigurationError, match="audit log to record changes")
        with refused, registry.context(tid):
            pass
    # keys and the audit log: every component encrypts and refuses plaintext
    aregistry = AsyncTenantRegistry(audited, keyring=keyring())
    async with aregistry, aregistry.context(tid) as ctx:
        assert ctx.settings.require_encryption and ctx.settings.audit_reads
        assert isinstance(ctx.codec, HaiveCodec) and ctx.codec.require_encryption
        saver, store = ctx.checkpointer(), ctx.store()
        assert saver.codec is ctx.codec and store.codec is ctx.codec
        assert ctx.conversations()._tables.codec is ctx.codec
        with pytest.raises(ConfigurationError, match="chooses the codec"):
            ctx.checkpointer(compression=False)
        with pytest.raises(ConfigurationError, match="does not encrypt"):
            ctx.store(codec=HaiveCodec())
        await write_everything(ctx, True, "phi")
        assert (await read_everything(ctx, True)) == expected("phi")
        assert await ctx.arecord_read("store_items", ["docs", "k"], user_id="dr-who")
    with psycopg.connect(audited) as conn:
        frame = conn.execute(
            "SELECT value FROM haive.store_items WHERE tenant_id = %s", (tid,)
        ).fetchone()
        assert frame is not None and b"phi" not in bytes(frame[0])
        assert frame_key_id(bytes(frame[0])) == "k1"  # encrypted under the registry's key
        audited_rows = conn.execute(
            "SELECT count(*) FROM haive.audit_log WHERE tenant_id = %s", (tid,)
        ).fetchone()
        assert audited_rows is not None and audited_rows[0] > 0
        read = conn.execute(
            "SELECT user_id, table_name, object_key FROM haive.audit_log "
            "WHERE tenant_id = %s AND operation = 'READ'",
            (tid,),
        ).fetchall()
        assert read == [("dr-who", "store_items", ["docs", "k"])]


async def lend(dsn: str, kind: str, is_async: bool) -> Any:
    """A psycopg connection or pool of the flavour asked for (autocommit)."""
    from psycopg_pool import AsyncConnectionPool, ConnectionPool

    if kind == "pool":
        if is_async:
            pool = AsyncConnectionPool(dsn, kwargs={"autocommit": True}, open=False)
            await pool.open()
            return pool
        return ConnectionPool(dsn, kwargs={"autocommit": True}, open=True)
    if is_async:
        return await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    return psycopg.connect(dsn, autocommit=True)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("kind", ["connection", "pool"])
async def test_a_lent_connection_or_pool_is_shared_and_left_open(
    migrated: str, kind: str, is_async: bool
) -> None:
    tid = new_tenant(kind)
    given = await lend(migrated, kind, is_async)
    registry: Any = (AsyncTenantRegistry if is_async else TenantRegistry)(given)
    side = Side(registry, is_async)
    try:
        await side("create", tid)
        async with side.context(tid) as ctx:
            store = ctx.store()
            await call(store, is_async, "put", ("docs",), "k", {"v": kind})
            history = ctx.chat_history("chat")
            await history.aadd_messages([HumanMessage("hi")])
            item = await call(store, is_async, "get", ("docs",), "k")
            assert item is not None and item.value == {"v": kind}
            assert [m.content for m in await history.aget_messages()] == ["hi"]
        await (registry.aclose() if is_async else asyncio.to_thread(registry.close))
        # neither the context nor the registry closed what was lent
        assert not given.closed
    finally:
        closing = given.close()
        if is_async:
            await closing
    assert counts(migrated, tid)["store_items"] == 1
