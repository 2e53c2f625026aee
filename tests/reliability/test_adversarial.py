"""Scenario 6: adversarial input, property-based (Hypothesis), on the checkpointer.

Thread ids, checkpoint namespaces, task ids and channels, metadata and
metadata filters, tags, branch names and tenant ids are generated with
quotes, NUL bytes, unicode (combining marks, RTL overrides, emoji), SQL
fragments, placeholder look-alikes (``$1``, ``%s``, ``{schema}``), near-miss
tenant names and huge sizes. Each example runs on the sync or the async
class (lent connections, so examples are cheap) and must either work or
raise one of our documented errors (:class:`~haive_langgraph.errors.HaiveError`
subclasses); when it raises, nothing is written. In no case may a call

* return a row of another tenant (a ``victim`` tenant holds threads with the
  same ids and metadata the attacker uses) or of another thread, or a row a
  filter does not match (checked against JSON containment computed here);
* reach the server unparameterised: the examples' connections run with
  ``log_statement=all`` on the suite's private server, and a marker carried
  by the generated values must appear only in the logged parameters, never
  in a logged statement text.

CI runs 100 examples per property, derandomized (the same examples each
run) and without shrinking (bounded time); soak mode runs 10,000 per
property with fresh randomness and shrinks a failure to a minimal example.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, cast

import psycopg
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import empty_checkpoint, get_serializable_checkpoint_metadata
from psycopg import AsyncConnection

from haive_langgraph.checkpointers import AsyncPostgresCheckpointer, PostgresCheckpointer
from haive_langgraph.errors import HaiveError

from ._attacks import tenant_digest
from ._server import PrivateServer
from .conftest import Budget, Figures

# Hypothesis warns before printing a 100 KB example; printing it is what we want.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

MARK = "Zq7MARK"
VICTIM = "victim"
SECRET = "VICTIM-SECRET"
VICTIM_THREADS = ("t-victim", "shared-id", "x")
LOG_OPTIONS = "-c log_statement=all -c log_parameter_max_length=120"
TABLES = (
    "threads", "checkpoints", "writes", "blobs", "lineages", "lineage_items", "checkpoint_tags",
)  # fmt: skip

FRAGMENTS = [
    "'", "''", '"', "\\", "\\'", "';--", "' OR '1'='1", "' OR 1=1 --",
    "'; DROP TABLE haive.checkpoints; --", "$1", "$$", "%s", "%(t)s", "{schema}", "{}",
    "*/", "/*", "--", ";", "\x00", "\u202e", "\ufeff", "\u200b", "😀", "é", "e\u0301",
    "ß", "İ", "\n", "\r\n", "\t", "%", "_", "[", "]", "{", "}", ":", "|", ",",
    VICTIM, "victim ", "VICTIM", "Victim", "victim%", "victim'--", *VICTIM_THREADS, " ", "",
    "NULL", "null", "true", "E'\\x00'", "U&'\\0000'", "\\x00",
    "set_config('haive.tenant_id', 'victim', false)", "current_setting('haive.tenant_id')",
    "pg_sleep(10)", "' || (SELECT string_agg(thread_id, ',') FROM haive.threads) || '",
]  # fmt: skip

_small = st.one_of(
    st.text(max_size=24),
    st.sampled_from(FRAGMENTS),
    st.lists(
        st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=6)), min_size=2, max_size=5
    ).map("".join),
)
_huge = st.one_of(
    # Repetitive: compresses to almost nothing, so even 100 KB fits an index entry.
    st.builds(
        lambda unit, n: unit * n,
        st.sampled_from(["a", "'", "é", "😀", "\\", "x'--", MARK]),
        st.sampled_from([1_000, 10_000, 100_000]),
    ),
    # Incompressible: past ~2.7 KB it no longer fits a btree entry.
    st.builds(
        lambda seed, n: random.Random(seed).randbytes(n // 2).hex(),
        st.integers(0, 2**32),
        st.sampled_from([1_000, 2_000, 3_000, 20_000]),
    ),
)
_marked = st.builds(lambda a, b: a + MARK + b, _small, _small)
NASTY = st.one_of(_small, _small, _small, _marked, _marked, _huge)
KEYS = st.one_of(_small, _marked)
JSON_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),  # NaN and infinities included
    KEYS,
)
JSON_VALUE = st.recursive(
    JSON_SCALAR,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=3)),
    max_leaves=6,
)
FLAVOUR = st.sampled_from(["sync", "async"])


# -- JSON containment, as jsonb's @> computes it --------------------------------


def _same_scalar(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return Decimal(json.dumps(a)) == Decimal(json.dumps(b))
    return type(a) is type(b) and a == b


def contains(a: Any, b: Any) -> bool:
    """``a @> b`` for JSON values (metadata is an object, so no top-level array rule)."""
    if isinstance(b, dict):
        return isinstance(a, dict) and all(k in a and contains(a[k], v) for k, v in b.items())
    if isinstance(b, list):
        return isinstance(a, list) and all(any(contains(x, y) for x in a) for y in b)
    if isinstance(a, dict | list):
        return False
    return _same_scalar(a, b)


def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values, numbers compared as numbers."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict | list) or isinstance(b, dict | list):
        return False
    return _same_scalar(a, b)


# -- the arena: a database with a victim tenant, and the attacker's connections ---------


class LoopThread:
    """An event loop in a thread, so that sync Hypothesis tests can drive the async class."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(120)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class Arena:
    server: PrivateServer
    dsn: str
    conn: psycopg.Connection[Any]
    aconn: AsyncConnection[Any]
    loop: LoopThread
    admin: psycopg.Connection[Any]
    stats: dict[str, int] = field(default_factory=dict)
    tables: tuple[str, ...] = TABLES  # where the victim's rows are

    def saver(self, flavour: str, tenant: str) -> Any:
        if flavour == "async":

            async def make() -> AsyncPostgresCheckpointer:  # binds to the running loop
                return AsyncPostgresCheckpointer(self.aconn, tenant_id=tenant)

            return self.loop.run(make())
        return PostgresCheckpointer(self.conn, tenant_id=tenant)

    def call(self, saver: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        if isinstance(saver, AsyncPostgresCheckpointer):

            async def go() -> Any:
                result = getattr(saver, f"a{method}")(*args, **kwargs)
                if hasattr(result, "__aiter__"):
                    return [x async for x in result]
                return await result

            return self.loop.run(go())
        out = getattr(saver, method)(*args, **kwargs)
        return list(out) if method == "list" else out

    def attempt(
        self, fn: Callable[[], Any], documented: tuple[type[Exception], ...] = (HaiveError,)
    ) -> tuple[bool, Any]:
        """(True, result), or (False, error) for a documented error; anything else propagates."""
        try:
            result = fn()
        except documented as exc:
            name = type(exc).__name__
            self.stats[name] = self.stats.get(name, 0) + 1
            return False, exc
        self.stats["ok"] = self.stats.get("ok", 0) + 1
        return True, result

    def rows_of(self, tenant: str) -> int:
        """Rows of ``tenant`` in every table of the component under test."""
        total = 0
        for table in self.tables:
            stmt = psycopg.sql.SQL("SELECT count(*) FROM haive.{} WHERE tenant_id = %s").format(
                psycopg.sql.Identifier(table)
            )
            row = self.admin.execute(stmt, (tenant,)).fetchone()
            assert row is not None
            total += int(row[0])
        return total

    def victim_digest(self) -> str:
        return tenant_digest(self.dsn, VICTIM, self.tables)

    @contextmanager
    def guarded(self) -> Iterator[None]:
        """Around a property: the victim is untouched, no marker reached a statement text."""
        before = self.victim_digest()
        offset = self.server.log_size()
        yield
        assert self.victim_digest() == before, "the victim tenant's rows changed"
        entries = self.server.log_entries(offset)
        statements = [
            e
            for e in entries
            if "LOG:  statement:" in e or "LOG:  execute" in e or "STATEMENT:" in e
        ]
        leaked = [e for e in statements if MARK in e]
        assert not leaked, f"a generated value reached the server as SQL text: {leaked[0][:500]}"
        assert any(MARK in e for e in entries if "Parameters:" in e), (
            "no marked value was logged as a parameter: statement logging is not working"
        )
        self.stats["statements logged"] = self.stats.get("statements logged", 0) + len(statements)


def checkpoint_with(values: dict[str, Any]) -> Any:
    cp = empty_checkpoint()
    cp["channel_values"] = values
    cp["channel_versions"] = dict.fromkeys(values, 1)
    return cp


def no_secret(*objects: Any) -> None:
    for obj in objects:
        assert SECRET not in repr(obj), f"the victim's data came back: {repr(obj)[:300]}"


@pytest.fixture(scope="module")
def arena(private_server: PrivateServer) -> Iterator[Arena]:
    if not private_server.is_running():
        private_server.start()
    dsn = private_server.create_database("adv")
    with PostgresCheckpointer.from_conn_string(dsn) as saver:
        saver.setup()
    # The victim: threads with the ids, metadata and tags the attacker will try.
    with psycopg.connect(dsn, autocommit=True) as conn:
        victim = PostgresCheckpointer(conn, tenant_id=VICTIM)
        for tid in VICTIM_THREADS:
            config: RunnableConfig = {"configurable": {"thread_id": tid, "checkpoint_ns": ""}}
            meta: Any = {
                "source": "input",
                "step": -1,
                "user_id": "alice",
                "k": "it's",
                "s": SECRET,
            }
            saved = victim.put(config, checkpoint_with({"v": f"{SECRET} {tid}"}), meta, {"v": 1})
            victim.put_writes(saved, [("v", f"{SECRET} write")], "task-1")
            victim.tag(saved, "release", "it's")
            victim.create_branch(saved, "b1", thread_id=f"{tid}-branch")
    loop = LoopThread()
    conn = psycopg.connect(dsn, autocommit=True, options=LOG_OPTIONS)
    aconn = loop.run(AsyncConnection.connect(dsn, autocommit=True, options=LOG_OPTIONS))
    admin = psycopg.connect(dsn, autocommit=True)
    try:
        yield Arena(private_server, dsn, conn, aconn, loop, admin)
    finally:
        admin.close()
        conn.close()
        loop.run(aconn.close())
        loop.close()


def hypothesis_settings(budget: Budget) -> settings:
    # CI: the same 100 examples each run, and no shrinking (which has no time
    # bound); soak: fresh examples, and failures shrunk to a minimal example.
    phases = tuple(Phase) if budget.soak else (Phase.explicit, Phase.reuse, Phase.generate)
    return settings(
        max_examples=budget.pick(100, 10_000),
        phases=phases,
        derandomize=not budget.soak,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        report_multiple_bugs=False,
    )


def _config(thread_id: str, ns: str = "", cid: str | None = None) -> dict[str, Any]:
    conf: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ns}
    if cid is not None:
        conf["checkpoint_id"] = cid
    return {"configurable": conf}


# -- properties ---------------------------------------------------------------------


def run_property(
    arena: Arena, budget: Budget, figures: Figures, title: str, body: Any, **strategies: Any
) -> None:
    """Run ``body`` over the strategies, guarded; record the cases run and their outcomes."""
    count = [0]
    arena.stats.clear()

    @hypothesis_settings(budget)
    @given(**strategies)
    def prop(**kwargs: Any) -> None:
        count[0] += 1
        body(**kwargs)

    failed = True
    try:
        with arena.guarded():
            prop()
        failed = False
    finally:
        outcomes = ", ".join(f"{k} {n}" for k, n in sorted(arena.stats.items()))
        figures.record(
            f"6 adversarial: {title}",
            f"{count[0]} generated cases (calls: {outcomes}): "
            + (
                "FAILED, see the test's error"
                if failed
                else "each worked or raised a documented error, nothing partial, 0 rows of "
                "another tenant or thread, 0 values sent as SQL text"
            ),
        )


def test_thread_ids_and_namespaces(arena: Arena, budget: Budget, figures: Figures) -> None:
    def body(flavour: str, thread_id: str, ns: str) -> None:
        saver = arena.saver(flavour, "mallory")
        token = f"{MARK}-own-{uuid.uuid4().hex}"
        config = _config(thread_id, ns)
        before = arena.rows_of("mallory")
        meta = {"source": "input", "step": -1}
        ok, saved = arena.attempt(
            lambda: arena.call(saver, "put", config, checkpoint_with({"v": token}), meta, {"v": 1})
        )
        if not ok:
            assert arena.rows_of("mallory") == before, f"a failed put left rows: {saved!r}"
            return
        try:
            tup = arena.call(saver, "get_tuple", saved)
            assert tup is not None
            assert tup.config["configurable"]["thread_id"] == thread_id
            assert tup.config["configurable"]["checkpoint_ns"] == ns
            assert tup.checkpoint["channel_values"]["v"] == token
            listed = arena.call(saver, "list", config)
            assert [t.config["configurable"]["checkpoint_id"] for t in listed] == [
                saved["configurable"]["checkpoint_id"]
            ]
            info = arena.call(saver, "get_thread", thread_id)
            assert info is not None and info.checkpoint_count == 1
            for victim_thread in VICTIM_THREADS:
                no_secret(arena.call(saver, "get_tuple", _config(victim_thread)))
            no_secret(listed, tup, info)
        finally:
            arena.attempt(lambda: arena.call(saver, "delete_thread", thread_id))
        assert arena.call(saver, "get_tuple", config) is None
        assert arena.rows_of("mallory") == before

    run_property(
        arena, budget, figures, "thread ids and namespaces", body,
        flavour=FLAVOUR, thread_id=NASTY, ns=st.one_of(st.just(""), NASTY),
    )  # fmt: skip


def test_metadata_keys_and_values(arena: Arena, budget: Budget, figures: Figures) -> None:
    def body(flavour: str, key: str, value: Any) -> None:
        saver = arena.saver(flavour, "mallory")
        thread_id = f"meta-{uuid.uuid4().hex}"
        config = _config(thread_id)
        meta = {"source": "input", "step": -1, key: value}
        ok, saved = arena.attempt(
            lambda: arena.call(saver, "put", config, checkpoint_with({"v": 1}), meta, {"v": 1})
        )
        if not ok:
            assert arena.call(saver, "get_thread", thread_id) is None, "a failed put left rows"
            return
        try:
            tup = arena.call(saver, "get_tuple", saved)
            # LangGraph itself drops NUL characters from top-level string values;
            # numbers compare as JSON numbers (jsonb gives 1e20 back as an integer).
            assert json_equal(
                tup.metadata,
                get_serializable_checkpoint_metadata(cast(Any, config), cast(Any, meta)),
            )
            filtered = arena.call(saver, "list", None, filter={key: tup.metadata[key]})
            assert saved["configurable"]["checkpoint_id"] in {
                t.config["configurable"]["checkpoint_id"] for t in filtered
            }
            no_secret(filtered)
        finally:
            arena.call(saver, "delete_thread", thread_id)

    run_property(
        arena, budget, figures, "metadata keys and values", body,
        flavour=FLAVOUR, key=KEYS.filter(lambda k: k not in ("source", "step")), value=JSON_VALUE,
    )  # fmt: skip


def test_task_ids_and_channels(arena: Arena, budget: Budget, figures: Figures) -> None:
    tenant = f"mallory-w-{uuid.uuid4().hex[:6]}"

    def body(flavour: str, task: str, channel: str, path: str) -> None:
        saver = arena.saver(flavour, tenant)
        token = f"{MARK}-own-{uuid.uuid4().hex}"
        thread_id = f"writes-{uuid.uuid4().hex}"
        saved = arena.call(
            saver,
            "put",
            _config(thread_id),
            checkpoint_with({"v": 1}),
            {"source": "input", "step": -1},
            {"v": 1},
        )
        try:
            ok, _ = arena.attempt(
                lambda: arena.call(saver, "put_writes", saved, [(channel, token)], task, path)
            )
            tup = arena.call(saver, "get_tuple", saved)
            assert tup.pending_writes == ([(task, channel, token)] if ok else [])
            no_secret(tup)
        finally:
            arena.call(saver, "delete_thread", thread_id)

    run_property(
        arena, budget, figures, "task ids, channels and task paths", body,
        flavour=FLAVOUR, task=NASTY, channel=NASTY, path=st.one_of(st.just(""), NASTY),
    )  # fmt: skip


SEED_META: list[dict[str, Any]] = [
    {"user_id": "alice", "k": "it's", "n": 1, "f": 0.5, "b": True},
    {"user_id": "alice", "nested": {"a": [1, "x"], "q": "'; --"}, "u": "é😀", "z": None},
    {"user_id": "bob", "k": "\\", "n": 2, "l": ["a", "b"], "s": "' OR '1'='1"},
    {"user_id": "bob", "k": "VICTIM", "deep": {"x": {"y": [True, None, 3]}}},
]


def _sub_filters() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for meta in SEED_META:
        out += [{key: value} for key, value in meta.items()]
        out.append(dict(list(meta.items())[:2]))
    out += [{"user_id": "alice", "s": SECRET}, {"s": SECRET}, {"nested": {"a": [1]}}]
    return out


FILTERS = st.one_of(
    st.sampled_from(_sub_filters()),
    st.dictionaries(KEYS, JSON_VALUE, min_size=1, max_size=3),
    st.builds(
        lambda a, b: {**a, **b},
        st.sampled_from(_sub_filters()),
        st.dictionaries(KEYS, JSON_VALUE, max_size=2),
    ),
)


def test_metadata_filters(arena: Arena, budget: Budget, figures: Figures) -> None:
    """``list``, ``list_threads`` and ``find_checkpoints`` return exactly the tenant's matches."""
    tenant = f"mallory-f-{uuid.uuid4().hex[:6]}"
    seeder = arena.saver("sync", tenant)
    seeds: dict[str, tuple[str, dict[str, Any]]] = {}  # checkpoint id -> (thread, metadata)
    for i, meta in enumerate(SEED_META):
        thread_id = f"seed-{i}" if i < 3 else "shared-id"  # an id the victim uses too
        config = _config(thread_id)
        for step in range(2):
            full = {"source": "loop", "step": step, **meta}
            saved = seeder.put(config, checkpoint_with({"v": f"{MARK}-own"}), full, {"v": 1})
            seeds[saved["configurable"]["checkpoint_id"]] = (thread_id, full)
            config = saved
    thread_meta = {t.thread_id: t.metadata for t in seeder.list_threads(limit=100)}

    def body(flavour: str, filter: dict[str, Any]) -> None:
        saver = arena.saver(flavour, tenant)
        ok, found = arena.attempt(lambda: arena.call(saver, "list", None, filter=filter))
        if ok:
            ids = {t.config["configurable"]["checkpoint_id"] for t in found}
            assert ids == {cid for cid, (_, meta) in seeds.items() if contains(meta, filter)}
            no_secret(found)
        ok, page = arena.attempt(lambda: arena.call(saver, "list_threads", filter, limit=100))
        if ok:
            got = {t.thread_id for t in page}
            assert got == {t for t, meta in thread_meta.items() if contains(meta, filter)}
            no_secret(list(page))
        ok, summaries = arena.attempt(
            lambda: arena.call(saver, "find_checkpoints", "shared-id", metadata=filter)
        )
        if ok:
            assert {s.config["configurable"]["checkpoint_id"] for s in summaries} == {
                cid
                for cid, (thread, meta) in seeds.items()
                if thread == "shared-id" and contains(meta, filter)
            }
            no_secret(summaries)

    run_property(
        arena, budget, figures, "metadata filters (list, list_threads, find_checkpoints)", body,
        flavour=FLAVOUR, filter=FILTERS,
    )  # fmt: skip


def test_tags_and_branch_names(arena: Arena, budget: Budget, figures: Figures) -> None:
    tenant = f"mallory-t-{uuid.uuid4().hex[:6]}"
    seeder = arena.saver("sync", tenant)
    first = seeder.put(
        _config("shared-id"),
        checkpoint_with({"v": f"{MARK}-own"}),
        {"source": "input", "step": -1},
        {"v": 1},
    )
    head = seeder.put(
        first, checkpoint_with({"v": f"{MARK}-own-2"}), {"source": "loop", "step": 0}, {"v": 2}
    )
    head_id = head["configurable"]["checkpoint_id"]

    def body(flavour: str, tags: list[str], name: str, dst: str | None, ns: str) -> None:
        saver = arena.saver(flavour, tenant)
        ok, _ = arena.attempt(lambda: arena.call(saver, "tag", head, *tags))
        if ok:
            found = arena.call(saver, "find_checkpoints", "shared-id", tags=tags)
            assert [s.config["configurable"]["checkpoint_id"] for s in found] == [head_id]
            no_secret(found)
            arena.call(saver, "untag", head, *tags)
            assert arena.call(saver, "find_checkpoints", "shared-id", tags=tags) == []
        ok, found = arena.attempt(
            lambda: arena.call(saver, "find_checkpoints", "shared-id", checkpoint_ns=ns, tags=tags)
        )
        if ok:
            assert found == [], "find_checkpoints returned checkpoints without the tags"
        ok, branch = arena.attempt(
            lambda: arena.call(saver, "create_branch", first, name, thread_id=dst)
        )
        if ok:
            try:
                branch_thread = branch["configurable"]["thread_id"]
                assert not dst or branch_thread == dst
                branches = {
                    b.name: b.thread_id for b in arena.call(saver, "list_branches", "shared-id")
                }
                assert branches == {name: branch_thread}
                tup = arena.call(saver, "get_tuple", branch)
                assert tup is not None and tup.checkpoint["channel_values"]["v"] == f"{MARK}-own"
                no_secret(tup)
            finally:
                arena.call(saver, "delete_thread", branch["configurable"]["thread_id"])
        assert arena.call(saver, "list_branches", "shared-id") == []

    run_property(
        arena, budget, figures, "tags and branch names", body,
        flavour=FLAVOUR, tags=st.lists(NASTY, min_size=1, max_size=4), name=NASTY,
        dst=st.one_of(st.none(), NASTY), ns=st.one_of(st.just(""), NASTY),
    )  # fmt: skip


def test_tenant_ids(arena: Arena, budget: Budget, figures: Figures) -> None:
    def body(flavour: str, tenant: str) -> None:
        if tenant == VICTIM:
            return  # being the victim is not an attack
        ok, saver = arena.attempt(lambda: arena.saver(flavour, tenant))
        if not ok:
            return
        token = f"{MARK}-own-{uuid.uuid4().hex}"
        before = arena.rows_of(tenant)
        meta = {"source": "input", "step": -1, "user_id": "alice"}
        ok, _ = arena.attempt(
            lambda: arena.call(
                saver, "put", _config("t-victim"), checkpoint_with({"v": token}), meta, {"v": 1}
            )
        )
        if not ok:
            assert arena.rows_of(tenant) == before, "a failed put left rows"
            return
        try:
            tup = arena.call(saver, "get_tuple", _config("t-victim"))
            assert tup is not None and tup.checkpoint["channel_values"]["v"] == token
            everything = arena.call(saver, "list", None, filter={"user_id": "alice"})
            assert [t.checkpoint["channel_values"]["v"] for t in everything] == [token]
            info = arena.call(saver, "get_thread", "t-victim")
            assert info is not None and info.checkpoint_count == 1
            for other in VICTIM_THREADS[1:]:
                assert arena.call(saver, "get_tuple", _config(other)) is None
            assert arena.call(saver, "list_branches", "t-victim") == []
            no_secret(tup, everything, info)
        finally:
            arena.call(saver, "delete_thread", "t-victim")
        assert arena.rows_of(tenant) == before

    run_property(arena, budget, figures, "tenant ids", body, flavour=FLAVOUR, tenant=NASTY)
