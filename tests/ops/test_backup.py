"""Backup and restore on a real database: threads, tenants, encryption, tampering, chains.

Everything is checked against the live schema, so the tables of every
component (``all_components()``) are covered as they land.
"""

from __future__ import annotations

import base64
import io
import json
import os
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from langchain_core.messages import HumanMessage
from psycopg import sql
from typer.testing import CliRunner

from haive_langgraph._demo import chat_graph
from haive_langgraph.checkpointers import PostgresCheckpointer
from haive_langgraph.cli import app
from haive_langgraph.codec import HaiveCodec, KeyRing
from haive_langgraph.db._driver import run
from haive_langgraph.db._migrations import migrate_op
from haive_langgraph.errors import NotFoundError
from haive_langgraph.ops import all_components
from haive_langgraph.ops._schema import our_tables
from haive_langgraph.ops.backup import (
    ArchiveIntegrityError,
    BackupKeyError,
    RestoreConflictError,
    backup,
    new_backup_key,
    restore,
    verify,
)

# State, not data (the cache's versions): what backups leave out.
NOT_ARCHIVED = frozenset(t.name for c in all_components() for t in c.tables if not t.archived)

runner = CliRunner()


# -- helpers ----------------------------------------------------------------------------------


def tables_of(dsn: str, schema: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            """
            SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition
              AND c.relname <> 'haive_migrations'
            ORDER BY 1
            """,
            (schema,),
        ).fetchall()
    return [r[0] for r in rows]


def digests(
    dsn: str, schema: str, where: str = "true", ignore: tuple[str, ...] = ()
) -> dict[str, tuple[int, str]]:
    """Row count and a digest of every row's text form, per table, without ``ignore`` columns."""
    out = {}
    with psycopg.connect(dsn) as conn:
        for table in tables_of(dsn, schema):
            if (
                where != "true"
                and not conn.execute(
                    "SELECT 1 FROM information_schema.columns "
                    "WHERE table_schema = %s AND table_name = %s AND column_name = 'tenant_id'",
                    (schema, table),
                ).fetchone()
            ):
                continue
            row = conn.execute(
                sql.SQL(
                    "SELECT count(*), md5(coalesce(string_agg(r, '|' ORDER BY r), '')) "
                    "FROM (SELECT {row} AS r FROM {} AS x WHERE {}) AS rows"
                ).format(
                    sql.Identifier(schema, table),
                    sql.SQL(where),
                    row=sql.SQL("(to_jsonb(x) - %s::text[])::text" if ignore else "x::text"),
                ),
                [list(ignore)] if ignore else None,
            ).fetchone()
            assert row is not None
            out[table] = (int(row[0]), str(row[1]))
    return out


def converse(saver: PostgresCheckpointer, thread_id: str, turns: int, start: int = 0) -> None:
    graph = chat_graph().compile(checkpointer=saver)
    for i in range(start, start + turns):
        graph.invoke(
            {"messages": [HumanMessage(content=f"{thread_id} question {i} " + "y" * 300)]},
            {"configurable": {"thread_id": thread_id}},
        )


def state_of(saver: PostgresCheckpointer, thread_id: str) -> tuple[Any, list[Any]]:
    graph = chat_graph().compile(checkpointer=saver)
    config: Any = {"configurable": {"thread_id": thread_id}}
    return graph.get_state(config), list(graph.get_state_history(config))


def assert_same_thread(a: PostgresCheckpointer, b: PostgresCheckpointer, thread_id: str) -> None:
    state_a, history_a = state_of(a, thread_id)
    state_b, history_b = state_of(b, thread_id)
    assert state_a.values["messages"], "the original thread is empty"
    assert state_b == state_a
    assert len(history_b) == len(history_a) > 2
    for x, y in zip(history_a, history_b, strict=True):
        assert y == x
        # byte for byte: the serialised values are identical
        assert b.serde.dumps_typed(y.values) == a.serde.dumps_typed(x.values)
        assert y.metadata == x.metadata and y.created_at == x.created_at


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def saver(migrated: str) -> Iterator[PostgresCheckpointer]:
    with PostgresCheckpointer.from_conn_string(migrated) as cp:
        cp.setup()
        yield cp


# -- threads ----------------------------------------------------------------------------------


def test_a_thread_restored_into_another_schema_has_the_same_state_and_history(
    saver: PostgresCheckpointer, migrated: str, tmp_path: Path
) -> None:
    wanted, other = new_id("keep"), new_id("other")
    converse(saver, wanted, 4)
    converse(saver, other, 2)
    # a fork in the wanted thread's history, so the history is a tree
    graph = chat_graph().compile(checkpointer=saver)
    history = list(graph.get_state_history({"configurable": {"thread_id": wanted}}))
    graph.invoke({"messages": [HumanMessage(content="a fork")]}, history[3].config)

    report = backup(tmp_path / "thread.tar", migrated, threads=[wanted])
    assert report.tables["threads"] == 1 and report.tables["checkpoints"] > 8
    restored = restore(tmp_path / "thread.tar", migrated, schema=new_id("r").replace("-", "_"))
    with PostgresCheckpointer.from_conn_string(migrated, schema=restored.schema) as copy:
        assert_same_thread(saver, copy, wanted)
        assert copy.get_thread(other) is None
        assert [t.thread_id for t in copy.list_threads()] == [wanted]
        # the restored thread carries on
        before = len(state_of(copy, wanted)[0].values["messages"])
        converse(copy, wanted, 1, start=10)
        assert len(state_of(copy, wanted)[0].values["messages"]) == before + 2


def test_a_branch_brings_the_history_it_inherits(
    saver: PostgresCheckpointer, migrated: str, tmp_path: Path
) -> None:
    main = new_id("main")
    converse(saver, main, 3)
    head = saver.get_tuple({"configurable": {"thread_id": main}})
    assert head is not None
    branch = saver.create_branch(head.config, "alt", thread_id=new_id("alt"))
    branch_id = branch["configurable"]["thread_id"]
    converse(saver, branch_id, 1, start=5)
    backup(tmp_path / "branch.tar", migrated, threads=[branch_id])
    schema = new_id("b").replace("-", "_")
    restore(tmp_path / "branch.tar", migrated, schema=schema)
    with PostgresCheckpointer.from_conn_string(migrated, schema=schema) as copy:
        assert_same_thread(saver, copy, branch_id)


@pytest.mark.parametrize("tenant", ["", "tenant-enc"])
def test_encrypted_values_stay_readable_in_another_database(
    migrated: str, other_db: str, tmp_path: Path, tenant: str
) -> None:
    # Bodies, blobs and sealed metadata are frames bound to tenant, thread
    # family, namespace and checkpoint id (not to the schema or database):
    # copied as stored, they decrypt wherever they are restored.
    keyring = KeyRing([("k1", os.urandom(32))])
    thread = new_id("secret")
    options: dict[str, Any] = {
        "codec": HaiveCodec(keyring=keyring),
        "tenant_id": tenant,
        "encrypt_metadata": ("source", "step"),
    }
    with PostgresCheckpointer.from_conn_string(migrated, **options) as enc:
        converse(enc, thread, 3)
        key = new_backup_key()
        backup(tmp_path / "enc.tar", migrated, threads=[thread], key=key)
        restore(tmp_path / "enc.tar", other_db, key=key)
        schema = new_id("e").replace("-", "_")
        restore(tmp_path / "enc.tar", migrated, schema=schema, key=key)
        for target, where in ((other_db, None), (migrated, schema)):
            with PostgresCheckpointer.from_conn_string(target, schema=where, **options) as copy:
                assert_same_thread(enc, copy, thread)
    with psycopg.connect(other_db) as conn:
        meta = conn.execute("SELECT metadata::text FROM haive.checkpoints LIMIT 1").fetchone()
    assert meta is not None and '"source": "input"' not in meta[0] and "loop" not in meta[0]
    # stored frames were copied as they are: still encrypted
    with psycopg.connect(other_db) as conn:
        data = conn.execute("SELECT data FROM haive.blobs LIMIT 1").fetchone()
    assert data is not None and b"question" not in bytes(data[0])
    # and the archive itself holds no plain text
    assert b"question" not in (tmp_path / "enc.tar").read_bytes()


# -- selections ---------------------------------------------------------------------------------


def test_tenant_selection_holds_only_that_tenant(
    migrated: str, other_db: str, tmp_path: Path
) -> None:
    a, b = new_id("tenant-a"), new_id("tenant-b")
    for tenant in (a, b):
        with PostgresCheckpointer.from_conn_string(migrated, tenant_id=tenant) as cp:
            converse(cp, "shared-thread-name", 2)
    report = backup(tmp_path / "tenant.tar", migrated, tenants=[a])
    assert report.tables["threads"] == 1
    restore(tmp_path / "tenant.tar", other_db)
    with psycopg.connect(other_db) as conn:
        tenants = {r[0] for r in conn.execute("SELECT DISTINCT tenant_id FROM haive.checkpoints")}
    assert tenants == {a}
    assert digests(other_db, "haive", f"tenant_id = '{a}'") == {
        k: v
        for k, v in digests(migrated, "haive", f"tenant_id = '{a}'").items()
        if k in tables_of(other_db, "haive")
    }


def test_a_selection_matching_nothing_is_an_error(migrated: str, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no rows match the selection thread_id"):
        backup(tmp_path / "none.tar", migrated, threads=["no-such-thread"])
    assert not (tmp_path / "none.tar").exists()


def test_include_and_exclude_patterns(
    saver: PostgresCheckpointer, migrated: str, tmp_path: Path
) -> None:
    converse(saver, new_id("pat"), 1)
    report = backup(
        tmp_path / "pat.tar",
        migrated,
        include=["thread*", "checkpoint*"],
        exclude=["checkpoint_tags"],
    )
    assert set(report.tables) == {"threads", "checkpoints"}


# -- full backups cover every component ---------------------------------------------------------


def test_every_component_table_is_backed_up_and_restored(
    saver: PostgresCheckpointer, migrated: str, other_db: str, tmp_path: Path
) -> None:
    converse(saver, new_id("full"), 2)
    _use_other_components(migrated)
    # the tables each component's migrations create, found by migrating it alone
    # (after the components it requires: tenant quotas put triggers on their tables)
    components = {c.name: c for c in all_components()}
    with psycopg.connect(migrated, autocommit=True) as conn:
        expected = set()
        for component in components.values():
            scratch = f"scratch_{component.name}"
            required = [components[name] for name in component.requires]
            with conn.transaction():
                run(conn, migrate_op([*required, component], scratch))
            expected |= set(tables_of(migrated, scratch))
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(scratch)))
    assert expected, "no component creates a table?"
    # what backup writes and restore accepts: these, and the store's vector table,
    # less the cache's versions (its state, not data)
    assert expected >= NOT_ARCHIVED
    expected -= NOT_ARCHIVED
    assert our_tables() - expected == {"store_vectors"} and expected <= our_tables()
    report = backup(tmp_path / "full.tar", migrated, tenant_keys=True)
    assert expected <= set(report.tables), expected - set(report.tables)
    assert set(report.tables) == set(tables_of(migrated, "haive")) - NOT_ARCHIVED
    restored = restore(tmp_path / "full.tar", other_db)
    assert restored.rows == report.rows
    # Everything comes back as it was, except conversation versions: a restore
    # renews them so that no cache serves what it held for the old rows.
    assert digests(other_db, "haive", ignore=("version",)) == digests(
        migrated, "haive", ignore=("version",)
    )
    info = verify(tmp_path / "full.tar")
    assert info.tables == report.tables and info.kind == "full"


def _use_other_components(dsn: str) -> None:
    """Put rows in the store's and conversations' tables."""
    from haive_langgraph.memory import ConversationStore
    from haive_langgraph.stores import PostgresStore

    with PostgresStore.from_conn_string(dsn) as store:
        store.setup()
        store.put(("users", "u1", "notes"), "n1", {"text": "remember the milk", "n": 1.5})
    with ConversationStore(dsn) as conversations:
        conv = conversations.create_conversation("bot", "alice")
        conversations.add_message(conv.conversation_id, "user", "hello there")


# -- integrity and keys -------------------------------------------------------------------------


def _member_offset(path: Path, name_part: str) -> tuple[str, int, int]:
    with tarfile.open(path) as tar:
        member = next(m for m in tar.getmembers() if name_part in m.name)
        return member.name, member.offset_data, member.size


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_changed_byte_is_refused_naming_the_part(
    saver: PostgresCheckpointer, migrated: str, tmp_path: Path
) -> None:
    thread = new_id("tamper")
    converse(saver, thread, 2)
    archive = tmp_path / "t.tar"
    backup(archive, migrated, threads=[thread])
    name, offset, size = _member_offset(archive, "-checkpoints-")
    _flip(archive, offset + size // 2)
    schema = new_id("tampered").replace("-", "_")
    with pytest.raises(ArchiveIntegrityError, match=rf"part {name} .*SHA-256"):
        restore(archive, migrated, schema=schema)
    with pytest.raises(ArchiveIntegrityError, match=name):
        verify(archive)
    # nothing was written: the schema was not even created
    assert tables_of(migrated, schema) == []
    result = runner.invoke(app, ["backup", "verify", str(archive), "--json"])
    assert result.exit_code == 1 and name in result.stderr


def test_a_changed_manifest_is_refused(
    saver: PostgresCheckpointer, migrated: str, tmp_path: Path
) -> None:
    thread = new_id("manifest")
    converse(saver, thread, 1)
    for key in (None, new_backup_key()):
        archive = tmp_path / f"m-{key is None}.tar"
        backup(archive, migrated, threads=[thread], key=key)
        _, offset, _ = _member_offset(archive, "manifest.json")
        # change a row count in the manifest: "rows": 1 -> "rows": 3
        data = archive.read_bytes()
        at = data.index(b'"rows": 1', offset)
        archive.write_bytes(data[:at] + b'"rows": 3' + data[at + 9 :])
        with pytest.raises(ArchiveIntegrityError, match="manifest"):
            verify(archive, key=key)


def test_wrong_or_missing_backup_key_is_refused(
    saver: PostgresCheckpointer, migrated: str, tmp_path: Path
) -> None:
    thread = new_id("keyed")
    converse(saver, thread, 1)
    key = new_backup_key()
    archive = tmp_path / "k.tar"
    backup(archive, migrated, threads=[thread], key=key)
    with pytest.raises(BackupKeyError, match="another backup key"):
        restore(archive, migrated, schema="wrong_key", key=new_backup_key())
    with pytest.raises(BackupKeyError, match="is encrypted: give its backup key"):
        verify(archive)
    with pytest.raises(BackupKeyError, match="not valid base64"):
        verify(archive, key="not a key!")
    assert verify(archive, key=key).encrypted
    # a key given for an unencrypted archive: refused (it could have been swapped)
    plain = tmp_path / "plain.tar"
    backup(plain, migrated, threads=[thread], encrypt=False)
    with pytest.raises(BackupKeyError, match="not encrypted"):
        verify(plain, key=key)
    # the key from a file, on the command line
    key_file = tmp_path / "backup.key"
    key_file.write_text(key + "\n")
    ok = runner.invoke(
        app, ["backup", "verify", str(archive), "--key-file", str(key_file), "--json"]
    )
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["ok"] is True


def test_parts_are_bound_to_their_archive(
    saver: PostgresCheckpointer, migrated: str, tmp_path: Path
) -> None:
    """Encrypted parts moved between two archives of the same key fail authentication."""
    thread = new_id("swap")
    converse(saver, thread, 1)
    key = base64.b64encode(os.urandom(32)).decode()
    one, two = tmp_path / "one.tar", tmp_path / "two.tar"
    backup(one, migrated, threads=[thread], key=key)
    backup(two, migrated, threads=[thread], key=key)
    # rebuild `two` with the checkpoint part of `one`, fixing up the manifest checksums
    with tarfile.open(one) as a:
        member = next(m for m in a.getmembers() if "-checkpoints-" in m.name)
        foreign = a.extractfile(member).read()  # type: ignore[union-attr]
    with tarfile.open(two) as b:
        members = [(m, b.extractfile(m).read()) for m in b.getmembers()]  # type: ignore[union-attr]
    rebuilt = tmp_path / "rebuilt.tar"
    with tarfile.open(rebuilt, "w") as out:
        for m, data in members:
            if m.name == member.name:
                data = foreign
            m.size = len(data)
            out.addfile(m, io.BytesIO(data))
    with pytest.raises(ArchiveIntegrityError):
        verify(rebuilt, key=key)


# -- existing rows ---------------------------------------------------------------------------------


def test_restoring_over_existing_rows_needs_merge_or_replace(
    saver: PostgresCheckpointer, migrated: str, tmp_path: Path
) -> None:
    thread = new_id("exists")
    converse(saver, thread, 2)
    archive = tmp_path / "e.tar"
    backup(archive, migrated, threads=[thread])
    schema = new_id("target").replace("-", "_")
    restore(archive, migrated, schema=schema)
    before = digests(migrated, schema)
    with pytest.raises(RestoreConflictError, match=r"already holds rows .* in .*threads"):
        restore(archive, migrated, schema=schema)
    assert digests(migrated, schema) == before
    result = runner.invoke(
        app, ["backup", "restore", str(archive), "--dsn", migrated, "--schema", schema]
    )
    assert result.exit_code == 1 and "--merge" in result.stderr
    # the target moves on; merge puts the archived rows back, keeps the rest
    with PostgresCheckpointer.from_conn_string(migrated, schema=schema) as target:
        converse(target, thread, 1, start=7)
        converse(target, new_id("unrelated"), 1)
    merged = restore(archive, migrated, schema=schema, on_existing="merge")
    assert merged.tables["threads"] == 1
    with PostgresCheckpointer.from_conn_string(migrated, schema=schema) as target:
        assert len(list(target.list_threads())) == 2
        # the newer checkpoints written in the target are still there
        assert len(state_of(target, thread)[0].values["messages"]) == 6
    # replace: the thread is exactly what the archive holds, the unrelated one stays
    replaced = restore(archive, migrated, schema=schema, on_existing="replace")
    assert replaced.deleted["checkpoints"] > replaced.tables["checkpoints"]
    with PostgresCheckpointer.from_conn_string(migrated, schema=schema) as target:
        assert_same_thread(saver, target, thread)
        assert len(list(target.list_threads())) == 2
    skipped = restore(archive, migrated, schema=schema, on_existing="skip")
    assert sum(skipped.tables.values()) == 0 and skipped.skipped["threads"] == 1


# -- incremental ------------------------------------------------------------------------------------


def test_an_incremental_chain_restores_the_latest_state(
    migrated: str, other_db: str, tmp_path: Path
) -> None:
    tenant = new_id("inc")
    with PostgresCheckpointer.from_conn_string(migrated, tenant_id=tenant) as cp:
        keep, drop = "t-keep", "t-drop"
        converse(cp, keep, 2)
        converse(cp, drop, 2)
        base = backup(tmp_path / "base.tar", migrated, tenants=[tenant])
        converse(cp, keep, 2, start=2)
        converse(cp, "t-new", 1)
        cp.delete_thread(drop)
        inc1 = backup(
            tmp_path / "inc1.tar", migrated, tenants=[tenant], since=tmp_path / "base.tar"
        )
        converse(cp, "t-new", 1, start=1)
        inc2 = backup(
            tmp_path / "inc2.tar", migrated, tenants=[tenant], since=tmp_path / "inc1.tar"
        )
    assert inc1.kind == "incremental" and inc1.base_archive_id == base.archive_id
    # only what changed: far fewer rows than the base
    assert inc2.tables["checkpoints"] < base.tables["checkpoints"]
    with pytest.raises(Exception, match="does not continue"):
        restore([tmp_path / "base.tar", tmp_path / "inc2.tar"], other_db)
    with pytest.raises(Exception, match="is an incremental backup"):
        restore([tmp_path / "inc1.tar"], other_db)
    restore([tmp_path / "base.tar", tmp_path / "inc1.tar", tmp_path / "inc2.tar"], other_db)
    where = f"tenant_id = '{tenant}'"
    source = digests(migrated, "haive", where)
    assert digests(other_db, "haive", where) == {
        k: v for k, v in source.items() if k in tables_of(other_db, "haive")
    }
    with PostgresCheckpointer.from_conn_string(other_db, tenant_id=tenant) as copy:
        assert copy.get_thread("t-drop") is None
        assert {t.thread_id for t in copy.list_threads()} == {"t-keep", "t-new"}


def test_an_incremental_backup_needs_the_same_selection(
    saver: PostgresCheckpointer, migrated: str, tmp_path: Path
) -> None:
    thread = new_id("sel")
    converse(saver, thread, 1)
    backup(tmp_path / "b.tar", migrated, threads=[thread])
    with pytest.raises(Exception, match="another selection"):
        backup(tmp_path / "i.tar", migrated, since=tmp_path / "b.tar")


# -- command line ------------------------------------------------------------------------------------


def test_cli_backup_verify_restore(
    saver: PostgresCheckpointer, migrated: str, tmp_path: Path
) -> None:
    thread = new_id("cli")
    converse(saver, thread, 2)
    archive = tmp_path / "cli.tar"
    made = runner.invoke(
        app, ["backup", "create", str(archive), "--thread", thread, "--dsn", migrated, "--json"]
    )
    assert made.exit_code == 0, made.output
    report = json.loads(made.stdout)
    assert report["tables"]["threads"] == 1 and report["rows"] > 0
    checked = runner.invoke(app, ["backup", "verify", str(archive), "--json"])
    assert (
        checked.exit_code == 0 and json.loads(checked.stdout)["archive_id"] == report["archive_id"]
    )
    schema = new_id("cli").replace("-", "_")
    done = runner.invoke(
        app, ["backup", "restore", str(archive), "--dsn", migrated, "--schema", schema, "--json"]
    )
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["tables"]["threads"] == 1
    both = runner.invoke(app, ["backup", "restore", str(archive), "--merge", "--replace"])
    assert both.exit_code == 2
    key = runner.invoke(app, ["backup", "key", "--json"])
    assert len(base64.b64decode(json.loads(key.stdout)["key"])) == 32
    # with a backup key set, an archive written without one is taken only when asked
    env = {"HAIVE_BACKUP_KEY": json.loads(key.stdout)["key"]}
    refused = runner.invoke(app, ["backup", "verify", str(archive)], env=env)
    assert refused.exit_code == 1 and "--unkeyed" in refused.stderr
    accepted = runner.invoke(app, ["backup", "verify", str(archive), "--unkeyed"], env=env)
    assert accepted.exit_code == 0, accepted.output


# -- other components ------------------------------------------------------------------------------


def test_a_store_with_vectors_is_restored_with_its_vector_table(
    migrated: str, other_db: str, tmp_path: Path
) -> None:
    from haive_langgraph import stores
    from tests.stores.conftest import index_config

    schema = "vec_src"
    docs = {"a": "red apples and pears", "b": "green pears", "c": "blue sky at night"}
    with stores.PostgresStore.from_conn_string(
        migrated, index=index_config(), schema=schema
    ) as store:
        store.setup()
        for key, text in docs.items():
            store.put(("docs",), key, {"text": text})
        expected = [(r.key, round(r.score or 0, 6)) for r in store.search(("docs",), query="pears")]
    report = backup(tmp_path / "vec.tar", migrated, schema=schema)
    assert report.tables["store_vectors"] == 3
    restored = restore(tmp_path / "vec.tar", other_db)
    assert restored.schema == schema
    # the vector table is made by the store's setup, not by a migration: restore
    # makes it from the store's own definition for the archived index
    # configuration (never from SQL in the archive), index included
    assert "store_vectors" in restored.created_tables
    source = digests(migrated, schema)
    assert {k: v for k, v in digests(other_db, schema).items() if k in source} == source
    with psycopg.connect(other_db) as conn:
        indexes = [
            r[0]
            for r in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = %s AND tablename = 'store_vectors'",
                (schema,),
            )
        ]
    assert len(indexes) >= 2, indexes
    with stores.PostgresStore.from_conn_string(
        other_db, index=index_config(), schema=schema
    ) as copy:
        copy.setup()
        got = [(r.key, round(r.score or 0, 6)) for r in copy.search(("docs",), query="pears")]
        assert got == expected
        item = copy.get(("docs",), "c")
        assert item is not None and item.value == {"text": "blue sky at night"}


def test_user_selection_follows_the_users_conversations(
    migrated: str, other_db: str, tmp_path: Path
) -> None:
    from haive_langgraph import memory

    tenant = new_id("users")
    with memory.ConversationStore(migrated, tenant_id=tenant) as conversations:
        mine = conversations.create_conversation("bot", "alice")
        theirs = conversations.create_conversation("bot", "bob")
        for conv, who in ((mine, "alice"), (theirs, "bob")):
            for i in range(3):
                conversations.add_message(conv.conversation_id, "user", f"{who} says {i}")
    report = backup(tmp_path / "alice.tar", migrated, users=["alice"], tenants=[tenant])
    assert report.tables["conversations"] == 1
    assert report.tables["conversation_messages"] >= 1
    restore(tmp_path / "alice.tar", other_db)
    with memory.ConversationStore(other_db, tenant_id=tenant) as copy:
        got = copy.get_conversation(mine.conversation_id)
        assert [m.message.content for m in got.messages] == [f"alice says {i}" for i in range(3)]
        with pytest.raises(memory.ConversationNotFoundError):
            copy.get_conversation(theirs.conversation_id)


def test_restored_conversations_get_new_versions(migrated: str, tmp_path: Path) -> None:
    """A cache keyed by conversation version never serves what it held before a restore."""
    from haive_langgraph import memory

    tenant = new_id("versions")
    with memory.ConversationStore(migrated, tenant_id=tenant) as conversations:
        conv = conversations.create_conversation("bot", "alice")
        conversations.add_message(conv.conversation_id, "user", "archived words")
    archive = tmp_path / "v.tar"
    backup(archive, migrated, tenants=[tenant])

    def version() -> int:
        with psycopg.connect(migrated) as conn:
            row = conn.execute(
                "SELECT version FROM haive.conversations WHERE tenant_id = %s AND conversation_id = %s",
                (tenant, conv.conversation_id),
            ).fetchone()
        assert row is not None
        return int(row[0])

    archived = version()
    restore(archive, migrated, on_existing="replace")
    assert version() != archived


def test_progress_is_reported_for_backup_verify_and_restore(
    saver: PostgresCheckpointer, migrated: str, tmp_path: Path
) -> None:
    from haive_langgraph.ops.backup import BackupProgress

    thread = new_id("progress")
    converse(saver, thread, 3)
    events: list[BackupProgress] = []
    report = backup(
        tmp_path / "p.tar", migrated, threads=[thread], part_rows=7, progress=events.append
    )
    made = [e for e in events if e.phase == "backup"]
    assert made and [e.rows for e in made] == sorted(e.rows for e in made)
    assert made[-1].rows == report.rows
    assert {e.table for e in made} >= {"threads", "checkpoints"}
    events.clear()
    info = verify(tmp_path / "p.tar", progress=events.append)
    assert events and all(e.phase == "verify" for e in events) and info.rows == report.rows
    events.clear()
    schema = new_id("p").replace("-", "_")
    done = restore(tmp_path / "p.tar", migrated, schema=schema, progress=events.append)
    phases = [e.phase for e in events]
    assert phases.index("restore") > phases.index("verify")  # checked first, then written
    written = [e for e in events if e.phase == "restore"]
    assert written[-1].rows == done.rows == report.rows
    assert all(e.total == report.rows for e in written)
