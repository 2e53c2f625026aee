"""``haive-lg import``: databases written by ``langgraph-checkpoint-postgres`` and
``langchain-postgres`` themselves, imported and compared through those packages' own reads."""

from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import ormsgpack
import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.messages import AIMessage, HumanMessage, message_to_dict
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.types import Send
from psycopg import sql
from typer.testing import CliRunner

from haive_langgraph.checkpointers import PostgresCheckpointer
from haive_langgraph.cli import app
from haive_langgraph.codec import HaiveCodec, KeyRing
from haive_langgraph.errors import CorruptDataError, SourceSchemaError
from haive_langgraph.memory import PostgresChatMessageHistory, PostgresVectorStore
from haive_langgraph.ops.importers import (
    ImportProgress,
    import_chat_history,
    import_langgraph,
    import_pgvector,
    verify_chat_history,
    verify_langgraph,
    verify_pgvector,
)
from haive_langgraph.ops.importers._msgpack import array_of, split_array
from haive_langgraph.stores import PostgresStore
from tests.conftest import create_database, drop_database
from tests.ops._import_sources import (
    CHAT_TABLE,
    COLLECTION,
    DIMS,
    EMBED,
    THREADS,
    Note,
    fill_langchain,
    fill_langgraph,
    graph_builder,
    run_threads,
    sqlalchemy_url,
)

runner = CliRunner()
STORE_INDEX = {"dims": DIMS, "embed": EMBED, "fields": ["text", "tags[*]"]}


@dataclass
class Source:
    dsn: str
    sessions: list[tuple[str, list[Any]]]


@pytest.fixture(scope="module")
def source(pg_server: str) -> Iterator[Source]:
    dsn = create_database(pg_server, "import_source")
    fill_langgraph(dsn)
    sessions = fill_langchain(dsn)
    try:
        yield Source(dsn, sessions)
    finally:
        drop_database(pg_server, dsn)


@pytest.fixture
def fresh(pg_server: str) -> Iterator[str]:
    """An empty target database for one test."""
    dsn = create_database(pg_server, "import_target")
    try:
        yield dsn
    finally:
        drop_database(pg_server, dsn)


@pytest.fixture(scope="module")
def imported(source: Source, dsn: str) -> dict[str, Any]:
    """Everything of the source imported once into the module's database."""
    return {
        "langgraph": import_langgraph(source.dsn, dsn),
        "chat": import_chat_history(source.dsn, dsn, table=CHAT_TABLE),
        "pgvector": import_pgvector(source.dsn, dsn, collection=COLLECTION),
    }


def saver_of(dsn: str, **kw: Any) -> Any:
    from langgraph.checkpoint.postgres import PostgresSaver

    return PostgresSaver.from_conn_string(dsn, **kw)


def listing(saver: Any, thread_id: str) -> list[tuple[Any, ...]]:
    """``list()`` of a thread, every field LangGraph reads."""
    return [
        (t.config, t.checkpoint, t.metadata, t.parent_config, t.pending_writes)
        for t in saver.list({"configurable": {"thread_id": thread_id}})
    ]


def history(saver: Any, thread_id: str) -> list[tuple[Any, ...]]:
    graph = graph_builder(set()).compile(checkpointer=saver)
    config = {"configurable": {"thread_id": thread_id}}
    return [
        (
            s.values,
            s.next,
            s.config,
            s.metadata,
            s.created_at,
            s.parent_config,
            [(t.id, t.name, t.error, t.interrupts) for t in s.tasks],
        )
        for s in graph.get_state_history(config)
    ]


def table_rows(dsn: str, schema: str = "haive") -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
                "AND table_type = 'BASE TABLE' ORDER BY 1",
                (schema,),
            )
        ]
        return {
            n: conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, n))
            ).fetchone()[0]  # type: ignore[index]
            for n in names
        }


# -- checkpoints -------------------------------------------------------------------------------


def test_history_is_the_one_postgres_saver_lists(source: Source, dsn: str, imported: Any) -> None:
    report = imported["langgraph"]
    assert report.ok and report.verification is not None
    counts = report.counts
    assert counts["threads"].source == counts["threads"].imported == len(THREADS)
    assert counts["checkpoints"].imported == counts["checkpoints"].source > 20
    assert counts["writes"].imported == counts["writes"].source > 50
    with saver_of(source.dsn) as theirs, PostgresCheckpointer.from_conn_string(dsn) as ours:
        for thread_id in THREADS:
            # ids, parents, checkpoints, metadata and pending writes, every namespace
            assert listing(ours, thread_id) == listing(theirs, thread_id)
            assert history(ours, thread_id) == history(theirs, thread_id)
            namespaces = {t[0]["configurable"]["checkpoint_ns"] for t in listing(ours, thread_id)}
            assert any(ns.startswith("sub:") for ns in namespaces)
            # the registry keeps the source's times
            first = min(
                t.checkpoint["ts"] for t in theirs.list({"configurable": {"thread_id": thread_id}})
            )
            info = ours.get_thread(thread_id)
            assert info is not None and info.created_at == datetime.fromisoformat(first)


def test_the_graph_continues_on_the_target(dsn: str, imported: Any) -> None:
    with PostgresCheckpointer.from_conn_string(dsn) as ours:
        ours.copy_thread("t1", "t1-continued")
        graph = graph_builder(set()).compile(checkpointer=ours)
        config: Any = {"configurable": {"thread_id": "t1-continued"}}
        paused = graph.get_state(config)
        assert paused.next == ("work",)  # the failed Send task, its siblings' writes kept
        out = graph.invoke(None, config)
    assert sorted(out["done"]) == ["a", "b", "c"]


def test_store_items_and_vectors_come_across(source: Source, dsn: str, imported: Any) -> None:
    from langgraph.store.postgres import PostgresStore as TheirStore

    counts = imported["langgraph"].counts
    assert counts["store_items"].imported == counts["store_items"].source == 27
    assert counts["store_items"].dropped == 1  # the expired item
    assert counts["store_vectors"].imported == counts["store_vectors"].source == 25 * 3 + 1
    with (
        TheirStore.from_conn_string(source.dsn, index=STORE_INDEX) as theirs,
        PostgresStore.from_conn_string(dsn, index=STORE_INDEX) as ours,
    ):
        # Every item scored alike (items sharing a tag tie, so compare sorted lists).
        for query in ("memory number 7", "tag3", "group1"):
            want = sorted(
                (-round(i.score, 5), i.namespace, i.key)
                for i in theirs.search(("users",), query=query, limit=30)
                if i.score is not None
            )
            got = sorted(
                (-round(i.score, 5), i.namespace, i.key)
                for i in ours.search(("users",), query=query, limit=30)
                if i.score is not None
            )
            assert len(got) == 25 and got == want
        assert ours.get(("docs",), "gone") is None
        kept = ours.get(("docs",), "ttl")
        assert kept is not None and kept.value == {"text": "kept an hour"}
        plain = ours.get(("users", "u0", "plain"), "p")
        assert plain is not None and plain.value == {"text": "not indexed"}


def test_a_run_again_doubles_nothing(source: Source, dsn: str, imported: Any) -> None:
    before = table_rows(dsn)
    again = [
        import_langgraph(source.dsn, dsn),
        import_chat_history(source.dsn, dsn, table=CHAT_TABLE),
        import_pgvector(source.dsn, dsn, collection=COLLECTION),
    ]
    for report in again:
        assert report.ok
        for kind, c in report.counts.items():
            assert c.imported == 0, (report.kind, kind)
            assert c.skipped == c.source, (report.kind, kind)
    assert table_rows(dsn) == before


def test_dry_run_reads_everything_and_writes_nothing(source: Source, fresh: str) -> None:
    reports = [
        import_langgraph(source.dsn, fresh, dry_run=True),
        import_chat_history(source.dsn, fresh, table=CHAT_TABLE, dry_run=True),
        import_pgvector(source.dsn, fresh, collection=COLLECTION, dry_run=True),
    ]
    for report in reports:
        assert report.dry_run and report.verification is None
        for kind, c in report.counts.items():
            assert c.imported == c.source > 0, (report.kind, kind)
    with psycopg.connect(fresh) as conn:
        assert conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'haive'"
        ).fetchone() == (0,)


def test_a_tenant_gets_its_own_copy(source: Source, dsn: str, imported: Any) -> None:
    report = import_langgraph(source.dsn, dsn, tenant_id="acme", store=False)
    assert report.tenant_id == "acme" and report.counts["checkpoints"].imported > 0
    import_chat_history(source.dsn, dsn, table=CHAT_TABLE, tenant_id="acme")
    with (
        saver_of(source.dsn) as theirs,
        PostgresCheckpointer.from_conn_string(dsn, tenant_id="acme") as acme,
        PostgresCheckpointer.from_conn_string(dsn, tenant_id="nobody") as nobody,
    ):
        assert listing(acme, "t0") == listing(theirs, "t0")
        assert listing(nobody, "t0") == []
    session_id, messages = source.sessions[0]
    with PostgresChatMessageHistory(session_id, dsn, tenant_id="acme") as acme_history:
        assert acme_history.messages == messages
    with PostgresChatMessageHistory(session_id, dsn, tenant_id="nobody") as other:
        assert other.messages == []


def test_an_encrypting_target(source: Source, fresh: str) -> None:
    codec = HaiveCodec(keyring=KeyRing([("k1", os.urandom(32))]))
    report = import_langgraph(source.dsn, fresh, codec=codec, tenant_id="sealed")
    assert report.ok and report.counts["checkpoints"].imported > 20, report.verification
    with psycopg.connect(fresh) as conn:  # no inline plaintext values
        assert conn.execute(
            "SELECT count(*) FROM haive.checkpoints WHERE inline_values <> '{}'"
        ).fetchone() == (0,)
    with (
        saver_of(source.dsn) as theirs,
        PostgresCheckpointer.from_conn_string(fresh, codec=codec, tenant_id="sealed") as ours,
    ):
        assert listing(ours, "t1") == listing(theirs, "t1")


def test_a_broken_source_row_stops_the_run_and_the_next_one_continues(
    source: Source, fresh: str
) -> None:
    with psycopg.connect(source.dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT channel, version, type FROM checkpoint_blobs WHERE thread_id = 't1' "
            "AND checkpoint_ns = '' AND channel = 'messages' ORDER BY version LIMIT 1"
        ).fetchone()
        assert row is not None
        conn.execute(
            "UPDATE checkpoint_blobs SET type = 'pickle' WHERE thread_id = 't1' "
            "AND checkpoint_ns = '' AND channel = %s AND version = %s",
            (row[0], row[1]),
        )
        try:
            with pytest.raises(CorruptDataError, match=r"source thread 't1'.*pickle"):
                import_langgraph(source.dsn, fresh, store=False)
        finally:
            conn.execute(
                "UPDATE checkpoint_blobs SET type = %s WHERE thread_id = 't1' "
                "AND checkpoint_ns = '' AND channel = %s AND version = %s",
                (row[2], *row[:2]),
            )
    with saver_of(source.dsn) as theirs, PostgresCheckpointer.from_conn_string(fresh) as ours:
        assert listing(ours, "t0") == listing(theirs, "t0")  # done before the broken row
        assert listing(ours, "t2") == []
        partial = len(listing(ours, "t1"))
        assert partial < len(listing(theirs, "t1"))
    report = import_langgraph(source.dsn, fresh, store=False)
    assert report.ok
    c = report.counts["checkpoints"]
    assert c.skipped > partial and c.imported + c.skipped == c.source
    with psycopg.connect(fresh) as conn:
        assert conn.execute("SELECT count(*) FROM haive.checkpoints").fetchone() == (c.source,)


def test_a_value_outside_the_allow_list_is_refused_until_allowed(
    source: Source, fresh: str
) -> None:
    payload = JsonPlusSerializer().dumps_typed(Note("kept"))
    with psycopg.connect(source.dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT version, type, blob FROM checkpoint_blobs WHERE thread_id = 't2' "
            "AND checkpoint_ns = '' AND channel = 'messages' ORDER BY version LIMIT 1"
        ).fetchone()
        assert row is not None
        update = (
            "UPDATE checkpoint_blobs SET type = %s, blob = %s WHERE thread_id = 't2' "
            "AND checkpoint_ns = '' AND channel = 'messages' AND version = %s"
        )
        conn.execute(update, (*payload, row[0]))
        try:
            # LangGraph's serde would build it; the guard of our reads refuses it first,
            # naming the source row (nothing of it reaches the target).
            with pytest.raises(CorruptDataError) as refused:
                import_langgraph(source.dsn, fresh, store=False, verify=False)
            assert str(refused.value).startswith("source thread 't2'")
            assert "tests.ops._import_sources.Note" in str(refused.value)
            assert "HAIVE_ALLOWED_MODULES" in str(refused.value)
            codec = HaiveCodec(allowed_modules=("tests.ops._import_sources",))
            report = import_langgraph(source.dsn, fresh, store=False, codec=codec)
            assert report.ok, report.verification
            with PostgresCheckpointer.from_conn_string(fresh, codec=codec) as ours:
                values = [
                    t.checkpoint["channel_values"].get("messages")
                    for t in ours.list({"configurable": {"thread_id": "t2"}})
                ]
            assert Note("kept") in values
        finally:
            conn.execute(update, (row[1], row[2], row[0]))


class Stop(Exception):
    pass


def stop_after(phase: str, n: int) -> Any:
    def progress(event: ImportProgress) -> None:
        if event.phase == phase and event.done >= n:
            raise Stop

    return progress


def test_an_interrupted_run_is_completed_by_the_next(source: Source, fresh: str) -> None:
    with pytest.raises(Stop):
        import_langgraph(source.dsn, fresh, batch_size=3, progress=stop_after("checkpoints", 7))
    with pytest.raises(Stop):
        import_chat_history(
            source.dsn, fresh, table=CHAT_TABLE, batch_size=2, progress=stop_after("messages", 4)
        )
    with pytest.raises(Stop):
        import_pgvector(
            source.dsn,
            fresh,
            collection=COLLECTION,
            batch_size=5,
            progress=stop_after("documents", 10),
        )
    reports = [
        import_langgraph(source.dsn, fresh, batch_size=3),
        import_chat_history(source.dsn, fresh, table=CHAT_TABLE, batch_size=2),
        import_pgvector(source.dsn, fresh, collection=COLLECTION, batch_size=5),
    ]
    for report in reports:
        assert report.ok, report.verification
    assert reports[0].counts["checkpoints"].skipped == 7
    assert reports[1].counts["messages"].skipped == 4
    assert reports[2].counts["documents"].skipped == 10
    assert table_rows(fresh)["checkpoints"] == reports[0].counts["checkpoints"].source
    for session_id, messages in source.sessions:
        with PostgresChatMessageHistory(session_id, fresh) as history:
            assert history.messages == messages


def test_a_broken_message_stops_its_session_and_the_next_run_continues(
    source: Source, fresh: str
) -> None:
    session_id, messages = source.sessions[1]
    with psycopg.connect(source.dsn, autocommit=True) as conn:
        ids = [
            r[0]
            for r in conn.execute(
                sql.SQL("SELECT id FROM {} WHERE session_id = %s ORDER BY id").format(
                    sql.Identifier(CHAT_TABLE)
                ),
                (session_id,),
            )
        ]
        broken = ids[3]
        original = conn.execute(
            sql.SQL("SELECT message FROM {} WHERE id = %s").format(sql.Identifier(CHAT_TABLE)),
            (broken,),
        ).fetchone()
        assert original is not None
        update = sql.SQL("UPDATE {} SET message = %s WHERE id = %s").format(
            sql.Identifier(CHAT_TABLE)
        )
        conn.execute(update, (psycopg.types.json.Jsonb({"type": "telepathy"}), broken))
        try:
            with pytest.raises(CorruptDataError, match=f"row id {broken}"):
                import_chat_history(source.dsn, fresh, table=CHAT_TABLE, batch_size=1)
        finally:
            conn.execute(update, (psycopg.types.json.Jsonb(original[0]), broken))
    with PostgresChatMessageHistory(session_id, fresh) as history:
        assert history.messages == messages[:3]
    report = import_chat_history(source.dsn, fresh, table=CHAT_TABLE, batch_size=1)
    assert report.ok
    with PostgresChatMessageHistory(session_id, fresh) as history:
        assert history.messages == messages


# -- chat histories and PGVector ---------------------------------------------------------------


def test_chat_histories_read_back_as_langchain_postgres_reads_them(
    source: Source, dsn: str, imported: Any
) -> None:
    from langchain_postgres import PostgresChatMessageHistory as TheirHistory

    report = imported["chat"]
    assert report.ok and report.counts["messages"].imported == 15
    with psycopg.connect(source.dsn) as conn:
        for session_id, messages in source.sessions:
            theirs = TheirHistory(CHAT_TABLE, session_id, sync_connection=conn).messages
            assert theirs == messages
            with PostgresChatMessageHistory(session_id, dsn) as ours:
                assert [message_to_dict(m) for m in ours.messages] == [
                    message_to_dict(m) for m in theirs
                ]


def test_pgvector_documents_keep_ids_metadata_and_vectors(
    source: Source, dsn: str, imported: Any
) -> None:
    from langchain_postgres import PGVector

    report = imported["pgvector"]
    assert report.ok and report.counts["documents"].imported == 22
    ids = [f"d{i:02}" for i in range(22)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = PGVector(
            embeddings=EMBED,
            collection_name=COLLECTION,
            connection=sqlalchemy_url(source.dsn),
            use_jsonb=True,
        )
        want = {d.id: d for d in theirs.get_by_ids(ids)}
        nearest = [d.id for d in theirs.similarity_search("document 3", k=4)]
        assert theirs._engine is not None
        theirs._engine.dispose()
    with PostgresVectorStore(dsn, embeddings=EMBED, dims=DIMS, collection_name=COLLECTION) as ours:
        got = {d.id: d for d in ours.get_by_ids(ids)}
        assert [d.id for d in ours.similarity_search("document 3", k=4)] == nearest
    assert {k: (d.page_content, d.metadata) for k, d in got.items()} == {
        k: (d.page_content, d.metadata) for k, d in want.items()
    }


# -- verification ------------------------------------------------------------------------------


def test_verification_finds_what_was_changed_in_the_target(source: Source, fresh: str) -> None:
    for report in (
        import_langgraph(source.dsn, fresh),
        import_chat_history(source.dsn, fresh, table=CHAT_TABLE),
        import_pgvector(source.dsn, fresh, collection=COLLECTION),
    ):
        assert report.ok
    session_id = source.sessions[2][0]
    with psycopg.connect(fresh, autocommit=True) as conn:
        conn.execute(
            "DELETE FROM haive.writes WHERE ctid = (SELECT ctid FROM haive.writes "
            "WHERE thread_id = 't2' AND idx >= 0 ORDER BY checkpoint_id LIMIT 1)"
        )
        conn.execute(
            "UPDATE haive.checkpoints SET metadata = metadata || '{\"step\": 99}' "
            "WHERE ctid = (SELECT ctid FROM haive.checkpoints WHERE thread_id = 't0' "
            "ORDER BY checkpoint_id LIMIT 1)"
        )
        conn.execute(
            "UPDATE haive.store_vectors SET embedding = (SELECT embedding FROM "
            "haive.store_vectors WHERE key = 'k2' AND field = 'text') "
            "WHERE key = 'k3' AND field = 'text'"
        )
        conn.execute(
            "DELETE FROM haive.conversation_messages WHERE conversation_id = %s AND seq = "
            "(SELECT max(seq) FROM haive.conversation_messages WHERE conversation_id = %s)",
            (session_id, session_id),
        )
    with PostgresStore.from_conn_string(fresh) as store:
        store.put(("users", "u1", "memories"), "k1", {"text": "changed"}, index=False)
    with PostgresVectorStore(fresh, embeddings=EMBED, dims=DIMS, collection_name=COLLECTION) as vs:
        vs.delete(["d03"])
        vs.add_texts(["document 4"], [{"i": 4, "kind": "changed"}], ids=["d04"])

    result = verify_langgraph(source.dsn, fresh)
    assert not result.ok
    text = "\n".join(result.mismatches)
    assert "thread 't2'" in text and "pending writes differ" in text
    assert "thread 't0'" in text and "metadata differs at ['step']" in text
    assert "('users.u1.memories', 'k1'): the value differs" in text
    assert "'k3'): the vector of field 'text' differs" in text
    chat = verify_chat_history(source.dsn, fresh, table=CHAT_TABLE)
    assert not chat.ok and session_id in chat.mismatches[0]
    docs = verify_pgvector(source.dsn, fresh, collection=COLLECTION)
    assert not docs.ok
    assert docs.mismatches == [
        "document 'd03': missing from the target",
        "document 'd04': the metadata differs",
    ]
    # A run again adds what is missing and rewrites items, messages and documents whose
    # value differs; a checkpoint or a vector changed in place stays reported.
    import_langgraph(source.dsn, fresh, verify=False)
    import_chat_history(source.dsn, fresh, table=CHAT_TABLE, verify=False)
    import_pgvector(source.dsn, fresh, collection=COLLECTION, verify=False)
    left = verify_langgraph(source.dsn, fresh).mismatches
    assert len(left) == 2
    assert "metadata differs at ['step']" in left[0] and "'k3'): the vector" in left[1]
    assert verify_chat_history(source.dsn, fresh, table=CHAT_TABLE).ok
    assert verify_pgvector(source.dsn, fresh, collection=COLLECTION).ok
    out = runner.invoke(
        app,
        ["import", "langgraph", source.dsn, "--dsn", fresh, "--verify-only"],
        env={"COLUMNS": "200"},
    )
    assert out.exit_code == 1 and "verification failed" in out.stderr


# -- older layouts -----------------------------------------------------------------------------


def v3_thread(saver: Any) -> None:
    """A parent and a child checkpoint of format v3: the child's pending sends are its
    parent's ``__pregel_tasks`` writes (PostgresSaver moves them at read time)."""
    parent = empty_checkpoint()
    parent.update(v=3, channel_values={"x": 1}, channel_versions={"x": f"{1:032}.0.5"})
    config: Any = {"configurable": {"thread_id": "v3", "checkpoint_ns": ""}}
    pconf = saver.put(config, parent, {"source": "loop", "step": 0}, {"x": f"{1:032}.0.5"})
    saver.put_writes(
        pconf,
        [("__pregel_tasks", Send("n", {"a": 1})), ("__pregel_tasks", Send("n", {"a": 2}))],
        "task-1",
    )
    child = empty_checkpoint()
    child.update(v=3, channel_values={"x": 2}, channel_versions={"x": f"{2:032}.0.7"})
    saver.put(pconf, child, {"source": "loop", "step": 1}, {"x": f"{2:032}.0.7"})


def test_a_database_before_task_path_with_v3_checkpoints(pg_server: str, fresh: str) -> None:
    src = create_database(pg_server, "import_old")
    try:
        with saver_of(src) as theirs:
            theirs.setup()
            run_threads(theirs, ("old",))
            v3_thread(theirs)
            want = {t: listing(theirs, t) for t in ("old", "v3")}
        assert Send("n", {"a": 2}) in want["v3"][0][1]["channel_values"]["__pregel_tasks"]
        with psycopg.connect(src, autocommit=True) as conn:
            conn.execute("ALTER TABLE checkpoint_writes DROP COLUMN task_path")
            conn.execute("DELETE FROM checkpoint_migrations WHERE v = 9")
        report = import_langgraph(src, fresh)
        assert report.ok, report.verification
        assert any("version 8; without checkpoint_writes.task_path" in n for n in report.notes)
        with PostgresCheckpointer.from_conn_string(fresh) as ours:
            assert listing(ours, "v3") == want["v3"]
            got = listing(ours, "old")
        # Without task_path, writes are ordered by task id (as PostgresSaver did then).
        assert [g[:4] for g in got] == [w[:4] for w in want["old"]]
        assert [Counter(map(repr, g[4])) for g in got] == [
            Counter(map(repr, w[4])) for w in want["old"]
        ]
    finally:
        drop_database(pg_server, src)


def test_a_shallow_saver_database(pg_server: str, fresh: str) -> None:
    from langgraph.checkpoint.postgres.shallow import ShallowPostgresSaver

    src = create_database(pg_server, "import_shallow")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            with ShallowPostgresSaver.from_conn_string(src) as theirs:
                theirs.setup()
                run_threads(theirs, ("s0", "s1"))
                want = {t: listing(theirs, t) for t in ("s0", "s1")}
        report = import_langgraph(src, fresh)
        assert report.ok and "ShallowPostgresSaver" in report.notes[0]
        with PostgresCheckpointer.from_conn_string(fresh) as ours:
            for thread_id, rows in want.items():
                got = sorted(
                    listing(ours, thread_id), key=lambda r: r[0]["configurable"]["checkpoint_ns"]
                )
                rows = sorted(rows, key=lambda r: r[0]["configurable"]["checkpoint_ns"])
                for g, w in zip(got, rows, strict=True):
                    body = {k: v for k, v in w[1].items() if k != "pending_sends"}
                    assert (g[0], g[1], g[2], g[4]) == (w[0], body, w[2], w[4])
    finally:
        drop_database(pg_server, src)


# -- list values decoded past their shared prefix ------------------------------------------------

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=300)  # bin 8 and 16
    | st.text(min_size=300, max_size=320),  # str 16
    lambda inner: (
        st.lists(inner, max_size=18) | st.dictionaries(st.text(max_size=4), inner, max_size=18)
    ),
    max_leaves=25,
)


@settings(max_examples=80, deadline=None)
@given(st.lists(msgpack_values, max_size=20))
def test_a_msgpack_array_splits_into_its_items(items: list[Any]) -> None:
    data = ormsgpack.packb(items)
    parts = split_array(data)
    assert parts == [ormsgpack.packb(i) for i in items]
    assert array_of(parts) == data
    assert split_array(data + b"\x00") is None  # not exactly one array
    assert split_array(data[:-1]) is None or not items


def test_messages_decoded_past_a_shared_prefix_are_the_whole_lists(source: Source) -> None:
    """Each version of ``messages`` read by the prefix path equals it decoded in full."""
    serde = JsonPlusSerializer()
    with psycopg.connect(source.dsn) as conn:
        rows = conn.execute(
            "SELECT thread_id, checkpoint_ns, version, type, blob FROM checkpoint_blobs "
            "WHERE channel = 'messages' ORDER BY thread_id, checkpoint_ns, version"
        ).fetchall()
    assert len(rows) > 10
    from haive_langgraph.codec._guard import ValueGuard
    from haive_langgraph.ops.importers._langgraph_read import Layout, ThreadReader

    layout = Layout("public", 9, shallow=False, blobs=True, writes=True, task_path=True)
    reader = ThreadReader(None, layout, serde, ValueGuard())  # type: ignore[arg-type]
    reused = 0
    previous: list[Any] = []
    for thread_id, ns, version, type_tag, blob in rows:
        got = reader._decode((ns, "messages", version), type_tag, blob, "test")
        assert got == serde.loads_typed((type_tag, blob)), (thread_id, version)
        reused += sum(1 for a, b in zip(previous, got, strict=False) if a is b)
        previous = got
    assert reused > 10  # the objects of a version's shared prefix are the previous ones
    # A list that is not an extension of the previous one (an edited message, a fork).
    a, b, c = HumanMessage("a", id="1"), AIMessage("b", id="2"), HumanMessage("c", id="1")
    for version, items in enumerate(([a, b], [c, b], [c, b, a], [c], [1, 1.0, True])):
        type_tag, blob = serde.dumps_typed(items)
        got = reader._decode(("", "edited", str(version)), type_tag, blob, "test")
        assert got == items and [type(x) for x in got] == [type(x) for x in items]


# -- errors and the command line ---------------------------------------------------------------


def test_missing_source_tables_are_named(source: Source, fresh: str) -> None:
    with pytest.raises(SourceSchemaError, match=r"no table public\.nope"):
        import_chat_history(source.dsn, fresh, table="nope")
    with pytest.raises(SourceSchemaError, match=r"no PGVector collection named 'nope'.*'docs'"):
        import_pgvector(source.dsn, fresh, collection="nope")
    with pytest.raises(SourceSchemaError, match="schema 'elsewhere'"):
        import_langgraph(source.dsn, fresh, source_schema="elsewhere")


def test_the_commands(source: Source, fresh: str) -> None:
    def cli(*args: str, code: int = 0) -> Any:
        out = runner.invoke(app, ["import", *args], env={"COLUMNS": "200"})
        assert out.exit_code == code, (out.stdout, out.stderr)
        return out

    lg = json.loads(cli("langgraph", source.dsn, "--dsn", fresh, "--json").stdout)
    assert lg["verification"]["ok"] and lg["counts"]["checkpoints"]["imported"] > 20
    chat = json.loads(
        cli(
            "chat-history",
            source.dsn,
            "--table",
            CHAT_TABLE,
            "--dsn",
            fresh,
            "--tenant",
            "acme",
            "--json",
        ).stdout
    )
    assert chat["tenant_id"] == "acme" and chat["counts"]["messages"]["imported"] == 15
    out = cli("pgvector", source.dsn, "--collection", COLLECTION, "--dsn", fresh, "--dry-run")
    assert "Dry run" in out.stdout and "would import" in out.stdout
    out = cli("pgvector", source.dsn, "--collection", COLLECTION, "--dsn", fresh)
    assert "verified: 22 documents identical" in out.stdout
    # A source DSN that does not parse, or a server that cannot be reached: named, never shown.
    out = cli("langgraph", "postgresql://me:s3cret@db/x?nosuchoption=1", "--dsn", fresh, code=2)
    assert "SOURCE_DSN" in out.stderr and "s3cret" not in out.stderr + out.stdout
    out = cli("langgraph", "postgresql://me:s3cret@127.0.0.1:1/x", "--dsn", fresh, code=1)
    assert "could not connect" in out.stderr and "s3cret" not in out.stderr + out.stdout
    out = cli("langgraph", source.dsn, "--dsn", fresh, "--dry-run", "--verify-only", code=2)
    out = cli("chat-history", source.dsn, "--table", "nope", "--dsn", fresh, code=1)
    assert "no table public.nope" in out.stderr


# A model of other dimensions than the source's: what `--embeddings` names below.
RE_EMBED = DeterministicFakeEmbedding(size=8)


def test_the_pgvector_command_embeds_again_with_the_model_it_names(
    source: Source, fresh: str
) -> None:
    def cli(*args: str, code: int = 0) -> Any:
        base = ["import", "pgvector", source.dsn, "--collection", COLLECTION, "--dsn", fresh]
        out = runner.invoke(app, [*base, *args], env={"COLUMNS": "200"})
        assert out.exit_code == code, (out.stdout, out.stderr)
        return out

    out = cli("--re-embed", code=2)
    assert "--re-embed needs --embeddings" in " ".join(out.stderr.split())
    out = cli("--dims", "8", code=1)  # copying 16-dimension vectors into 8
    assert "16 dimensions" in out.stderr
    report = json.loads(
        cli(
            "--re-embed", "--embeddings", "tests.ops.test_import:RE_EMBED", "--dims", "8", "--json"
        ).stdout
    )
    assert report["verification"]["ok"] and report["counts"]["documents"]["imported"] == 22
    with PostgresVectorStore(
        fresh, embeddings=RE_EMBED, dims=8, collection_name=COLLECTION
    ) as ours:
        assert ours.dims == 8
        found = ours.similarity_search_with_score("document 3", k=1)
        assert found[0][0].page_content == "document 3"
