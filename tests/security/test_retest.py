"""A hostile re-test after issue 17's fixes: what still got through.

Each test reproduces one finding of the re-test. Those fixed carry no mark;
those whose fix belongs to code being changed elsewhere are
``xfail(strict=True)`` with the fix they need (an XPASS means the fix landed:
remove the mark).

Archives (fixed):
* a row holding a lone surrogate, a null where the target requires a value
  (or a required column left out), or a NUL in text is refused with our
  error, not a ``UnicodeEncodeError`` or a psycopg ``NotNullViolation``;
* a scope part whose ``kind`` is not a string is refused with our error,
  not a ``TypeError``;
* a long row line is parsed in memory about its size (``json.loads`` built
  25 times the line before its shape was checked: 1.5 GB from a 30 KB
  archive);
* an archive taken before a tenant was crypto-shredded, restored with
  ``merge`` or ``replace``, brought the tenant's keys back over the
  shredding marker: the tenant's rows read again;
* the same archive restored into another database read the shredded
  tenant's rows (archives held the wrapped tenant keys; they now leave them
  out unless ``tenant_keys=True``).

Checkpointer and store inputs (fixed): raw psycopg errors from the
checkpointer (a checkpoint id of another type, a limit past bigint, a
channel that is not a string) and the store (limits, offsets and depths past
their column types, a TTL past PostgreSQL's interval) are our errors now;
checkpoint metadata text with NUL, which LangGraph's metadata helper
stripped, is refused (``tests/security/test_counts.py`` holds the rule).
"""

from __future__ import annotations

import base64
import json
import os
import tracemalloc
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from langgraph.checkpoint.base import empty_checkpoint
from psycopg import sql

from haive_langgraph.checkpointers import PostgresCheckpointer
from haive_langgraph.codec import HaiveCodec, KeyDestroyedError, KeyRing
from haive_langgraph.errors import DecryptionError, HaiveError
from haive_langgraph.ops._archive_rows import parse_row
from haive_langgraph.ops.backup import ArchiveIntegrityError, backup, restore
from haive_langgraph.ops.keys import PostgresTenantKeyStore
from haive_langgraph.stores import PostgresStore
from tests.conftest import create_database, drop_database
from tests.security._archive_craft import (
    Archive,
    compress,
    map_rows,
    read_archive,
    write_archive,
)

CFG = {"configurable": {"thread_id": "t1", "checkpoint_ns": ""}}


def _checkpoint(value: Any) -> Any:
    cp = empty_checkpoint()
    cp["channel_values"] = {"x": value}
    cp["channel_versions"] = {"x": 1}
    return cp


@pytest.fixture(scope="module")
def source(dsn: str) -> str:
    """Tenants A and B, each with a checkpoint and a store item."""
    for tenant in ("A", "B"):
        with (
            closing(PostgresCheckpointer(dsn, tenant_id=tenant)) as saver,
            closing(PostgresStore(dsn, tenant_id=tenant)) as store,
        ):
            saver.setup()
            saver.put(CFG, _checkpoint(f"secret of {tenant}"), {"source": "input"}, {"x": 1})
            store.setup()
            store.put(("ns",), "k", {"owner": tenant})
    return dsn


@pytest.fixture(scope="module")
def tenant_a(source: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("retest") / "a.tar"
    backup(path, source, tenants=["A"], encrypt=False)
    return path


@pytest.fixture
def target(pg_server: str) -> Iterator[str]:
    url = create_database(pg_server, "haive_retest")
    try:
        yield url
    finally:
        drop_database(pg_server, url)


def _rows(dsn: str, table: str) -> int:
    with psycopg.connect(dsn) as conn:
        exists = conn.execute("SELECT to_regclass(%s)", (f"haive.{table}",)).fetchone()
        if exists is None or exists[0] is None:
            return 0
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("haive", table))
        ).fetchone()
        return int(row[0]) if row else 0


def _restore_crafted(archive: Archive, tmp_path: Path, target: str) -> ArchiveIntegrityError:
    path = write_archive(tmp_path / "crafted.tar", archive)
    with pytest.raises(ArchiveIntegrityError) as err:
        restore(path, target)
    assert _rows(target, "checkpoints") == 0
    assert _rows(target, "threads") == 0
    return err.value


# -- archives: our errors, not Python's or psycopg's ----------------------------------------


def _set_column(archive: Archive, table: str, column: str, value: Any) -> None:
    at = archive.table(table)["data_columns"].index(column)
    map_rows(archive, table, lambda row: [*row[:at], value, *row[at + 1 :]])


def test_a_lone_surrogate_in_an_archived_row_is_an_archive_error(
    tenant_a: Path, tmp_path: Path, target: str
) -> None:
    archive = read_archive(tenant_a)
    _set_column(archive, "threads", "thread_id", "t\ud800")
    error = _restore_crafted(archive, tmp_path, target)
    assert "surrogate" in str(error)


@pytest.mark.parametrize("how", ["null value", "column left out"])
def test_a_null_where_the_target_requires_a_value_is_an_archive_error(
    tenant_a: Path, tmp_path: Path, target: str, how: str
) -> None:
    archive = read_archive(tenant_a)
    if how == "null value":
        _set_column(archive, "checkpoints", "checkpoint", None)
    else:
        table = archive.table("checkpoints")
        at = table["data_columns"].index("checkpoint")
        del table["data_columns"][at]
        table["columns"] = [c for c in table["columns"] if c["name"] != "checkpoint"]
        map_rows(archive, "checkpoints", lambda row: row[:at] + row[at + 1 :])
    error = _restore_crafted(archive, tmp_path, target)
    assert "checkpoint" in str(error)


def test_a_nul_in_archived_text_is_named(tenant_a: Path, tmp_path: Path, target: str) -> None:
    archive = read_archive(tenant_a)
    _set_column(archive, "threads", "thread_id", "t\x00")
    error = _restore_crafted(archive, tmp_path, target)
    assert "NUL" in str(error), str(error)  # was "(None; )"


def test_a_scope_kind_that_is_not_a_string_is_an_archive_error(
    tenant_a: Path, tmp_path: Path, target: str
) -> None:
    archive = read_archive(tenant_a)
    name = archive.manifest["scope_part"]["name"]
    scopes = [
        {"table": t["name"], "kind": [] if t["name"] == "threads" else t["scope"], "tenants": ["A"]}
        for t in archive.manifest["tables"]
    ]
    raw = b"".join(json.dumps(s).encode() + b"\n" for s in scopes)
    archive.members[name] = compress(raw)
    archive.manifest["scope_part"]["raw_bytes"] = len(raw)
    _restore_crafted(archive, tmp_path, target)


def test_a_long_row_line_is_parsed_in_memory_about_its_size() -> None:
    # 3 MB of "[]," decompress from a few kilobytes; json.loads built a list
    # of a million lists (~70 MB) before the row's width was checked.
    line = b"[" + b"[]," * 1_000_000 + b"[]]"
    tracemalloc.start()
    try:
        with pytest.raises(ArchiveIntegrityError):
            parse_row(line, 16, "parts/x.jsonl.zst")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * len(line), f"{peak:,} bytes to refuse a {len(line):,}-byte line"
    # A long legitimate row still reads.
    row = ["x" * 200_000, None, ""]
    assert parse_row(json.dumps(row).encode(), 3, "p") == row


# -- archives and crypto-shredding ----------------------------------------------------------


_SPEC = "g1:" + base64.b64encode(os.urandom(32)).decode()


@contextmanager
def _ring(dsn: str) -> Iterator[KeyRing]:
    with closing(PostgresTenantKeyStore(dsn)) as keys:
        keys.setup()
        yield KeyRing.from_string(_SPEC, tenant_store=keys)


def _read_item(dsn: str) -> Any:
    with (
        _ring(dsn) as ring,
        closing(PostgresStore(dsn, tenant_id="A", codec=HaiveCodec(keyring=ring))) as store,
    ):
        item = store.get(("ns",), "k")
        return item.value if item is not None else None


@pytest.fixture
def shredded(target: str, tmp_path: Path) -> tuple[str, Path]:
    """Tenant A with a key of its own and an item; a full backup; then A shredded."""
    path = tmp_path / "before-shred.tar"
    with (
        _ring(target) as ring,
        closing(PostgresStore(target, tenant_id="A", codec=HaiveCodec(keyring=ring))) as store,
    ):
        ring.create_tenant_key("A")
        store.setup()
        store.put(("ns",), "k", {"secret": "of A"})
        # with the tenant's keys: the restore below must still leave A shredded
        backup(path, target, encrypt=False, tenant_keys=True)
        backup(path.with_name("no-keys.tar"), target, encrypt=False)
        ring.forget_tenant("A")
    with pytest.raises(KeyDestroyedError):
        _read_item(target)
    return target, path


@pytest.mark.parametrize("mode", ["merge", "replace", "skip"])
def test_restoring_an_archive_taken_before_a_shred_never_undoes_it(
    shredded: tuple[str, Path], mode: str
) -> None:
    dsn, archive = shredded
    restore(archive, dsn, on_existing=mode)
    with pytest.raises(KeyDestroyedError):
        _read_item(dsn)
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT destroyed, keys FROM haive.tenant_keys WHERE tenant_id = 'A'"
        ).fetchone()
    assert row == (True, [])


def test_an_archive_taken_before_a_shred_does_not_read_the_tenant_elsewhere(
    shredded: tuple[str, Path], pg_server: str
) -> None:
    """Archives hold no tenant keys by default: restored into another database with
    the same global keys, a shredded tenant's rows stay unreadable there too."""
    _, archive = shredded
    elsewhere = create_database(pg_server, "haive_retest")
    try:
        restore(archive.with_name("no-keys.tar"), elsewhere)
        with pytest.raises(DecryptionError, match="not in the key ring"):
            _read_item(elsewhere)
    finally:
        drop_database(pg_server, elsewhere)


def test_an_archive_taken_with_tenant_keys_reads_the_tenant_elsewhere(
    shredded: tuple[str, Path], pg_server: str
) -> None:
    """The documented trade-off of ``tenant_keys=True``: such an archive is self-contained."""
    _, archive = shredded
    elsewhere = create_database(pg_server, "haive_retest")
    try:
        restore(archive, elsewhere)
        assert _read_item(elsewhere) == {"secret": "of A"}
    finally:
        drop_database(pg_server, elsewhere)


# -- raw errors from the checkpointer and the store -----------------------------------------


def _ours_or_works(call: Any) -> None:
    """The call works, or raises one of our errors (never psycopg's or a bare Python one)."""
    try:
        result = call()
        if hasattr(result, "__next__"):
            list(result)
    except HaiveError:
        pass


@pytest.mark.parametrize("where", ["get_tuple", "list before"])
def test_a_checkpoint_id_of_another_type_is_our_error(source: str, where: str) -> None:
    config = {"configurable": {**CFG["configurable"], "checkpoint_id": 5}}
    with closing(PostgresCheckpointer(source, tenant_id="A")) as saver:
        if where == "get_tuple":
            _ours_or_works(lambda: saver.get_tuple(config))
        else:
            _ours_or_works(lambda: saver.list(CFG, before=config))


def test_a_list_limit_past_bigint_is_our_error_or_works(source: str) -> None:
    with closing(PostgresCheckpointer(source, tenant_id="A")) as saver:
        _ours_or_works(lambda: saver.list(None, limit=10**20))


def test_a_write_channel_that_is_not_a_string_is_our_error(source: str) -> None:
    with closing(PostgresCheckpointer(source, tenant_id="A")) as saver:
        config = saver.put(CFG, _checkpoint(1), {"source": "input", "step": 2}, {"x": 2})
        _ours_or_works(lambda: saver.put_writes(config, [(5, "value")], "task"))  # type: ignore[list-item]


def test_checkpoint_metadata_with_nul_reads_back_or_is_refused(source: str) -> None:
    with closing(PostgresCheckpointer(source, tenant_id="A")) as saver:
        try:
            config = saver.put(CFG, _checkpoint(1), {"note": "a\x00b"}, {"x": 3})
        except HaiveError:
            return
        read = saver.get_tuple(config)
    assert read is not None
    assert read.metadata["note"] == "a\x00b"


@pytest.mark.parametrize(
    "call",
    ["search limit", "search offset", "namespaces limit", "namespaces offset", "max_depth"],
)
def test_store_counts_past_their_sql_type_are_our_error_or_work(source: str, call: str) -> None:
    huge = 10**20
    with closing(PostgresStore(source, tenant_id="A")) as store:
        calls = {
            "search limit": lambda: store.search(("ns",), limit=huge),
            "search offset": lambda: store.search(("ns",), offset=huge),
            "namespaces limit": lambda: store.list_namespaces(limit=huge),
            "namespaces offset": lambda: store.list_namespaces(offset=huge),
            "max_depth": lambda: store.list_namespaces(max_depth=huge),
        }
        _ours_or_works(calls[call])


def test_a_store_ttl_past_the_interval_range_is_our_error(source: str) -> None:
    with closing(PostgresStore(source, tenant_id="A")) as store:
        _ours_or_works(lambda: store.put(("ns",), "ttl", {"a": 1}, ttl=1e300))
