"""Attacks on backup archives: restore is data only, inside the archive's declared scope.

* SQL in a manifest (``ddl``) is never run; a table or column that is not
  ours is refused; old (format 1) archives still restore, their ddl ignored.
* Every row must lie in the scope the archive declares: a tenant-A archive
  relabelled to tenant B writes nothing, with ``merge`` or ``refuse``.
* A keyed archive cannot be changed, re-signed, reordered or downgraded to
  an unkeyed one by anyone without the key.
* ``verify`` reads a part as a stream: bounded memory on a part without
  newlines, an overlong line named with part and offset.
* A restore killed half-way leaves the target as it was; run again, it works.
* Hypothesis: crafted manifests and parts are refused with our errors, and
  nothing is written.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import conninfo

from haive_langgraph.checkpointers import PostgresCheckpointer
from haive_langgraph.ops import migrate_all
from haive_langgraph.ops.backup import (
    BACKUP_KEY_ENV,
    MAX_LINE_BYTES,
    ArchiveContentError,
    ArchiveIntegrityError,
    BackupError,
    BackupKeyError,
    backup,
    new_backup_key,
    restore,
    verify,
)
from tests.conftest import create_database, drop_database
from tests.ops.test_backup import converse, digests, tables_of
from tests.security._archive_craft import (
    Archive,
    compress,
    lines,
    map_rows,
    read_archive,
    rows_of,
    set_part,
    write_archive,
)

TENANT_A = "tenant-aaaa"
TENANT_B = "tenant-bbbb"


def schema_exists(dsn: str, schema: str) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %s)", (schema,)
        ).fetchone()
    return bool(row and row[0])


def policies(dsn: str) -> list[tuple[str, str]]:
    with psycopg.connect(dsn) as conn:
        return [
            (str(t), str(p))
            for t, p in conn.execute(
                "SELECT tablename, policyname FROM pg_policies WHERE schemaname = 'haive' "
                "ORDER BY 1, 2"
            )
        ]


@pytest.fixture(scope="module")
def source(dsn: str) -> str:
    """Two tenants with threads of their own names (so a relabelled row collides with none)."""
    migrate_all(dsn)
    for tenant in (TENANT_A, TENANT_B):
        with PostgresCheckpointer.from_conn_string(dsn, tenant_id=tenant) as cp:
            converse(cp, f"{tenant}-t1", 2)
            converse(cp, f"{tenant}-t2", 1)
    return dsn


@pytest.fixture(scope="module")
def archives(source: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Archives of tenant A: unkeyed, keyed (with its key), and of one thread."""
    where = tmp_path_factory.mktemp("archives")
    key = new_backup_key()
    (where / "key").write_text(key)
    backup(where / "a.tar", source, tenants=[TENANT_A], encrypt=False)
    backup(where / "a-keyed.tar", source, tenants=[TENANT_A], key=key)
    backup(where / "t1.tar", source, threads=[f"{TENANT_A}-t1"], tenants=[TENANT_A])
    backup(where / "b.tar", source, tenants=[TENANT_B])
    return {
        "b": where / "b.tar",
        "plain": where / "a.tar",
        "keyed": where / "a-keyed.tar",
        "thread": where / "t1.tar",
        "key": where / "key",
    }


@pytest.fixture
def target(pg_server: str) -> Iterator[str]:
    url = create_database(pg_server, "haive_archive_target")
    try:
        yield url
    finally:
        drop_database(pg_server, url)


def relabel(archive: Archive, old: str, new: str, *, ids: bool = False) -> None:
    """Every row of every table: tenant ``old`` becomes ``new``; with ``ids``, so do the
    thread ids that name it (the relabelled rows then hit the other tenant's keys)."""
    for table in archive.manifest["tables"]:
        at = table["data_columns"].index("tenant_id")

        def change(row: list[Any], at: int = at) -> list[Any]:
            if ids:
                row = [v.replace(old, new) if isinstance(v, str) else v for v in row]
            row[at] = new
            return row

        map_rows(archive, table["name"], change)


# -- 1. restore runs no SQL from an archive ----------------------------------------------------


def _evil_ddl(marker: Path) -> list[str]:
    return [
        "CREATE TABLE {table} (x text)",
        "DROP POLICY IF EXISTS haive_tenant_isolation ON threads",
        "ALTER TABLE threads DISABLE ROW LEVEL SECURITY",
        f"COPY (SELECT 1) TO PROGRAM 'touch {marker}'",
    ]


def test_a_table_that_is_not_ours_is_refused_and_its_ddl_never_runs(
    archives: dict[str, Path], target: str, tmp_path: Path
) -> None:
    migrate_all(target)
    before = policies(target)
    assert ("threads", "haive_tenant_isolation") in before
    marker = tmp_path / "pwned"
    crafted = read_archive(archives["plain"])
    crafted.manifest["format_version"] = 1  # format 1 carried ddl
    crafted.manifest["tables"].append(
        {
            "name": "evil",
            "columns": [{"name": "x", "type": "text", "not_null": False}],
            "data_columns": ["x"],
            "primary_key": [],
            "ddl": _evil_ddl(marker),
            "scope": "all",
            "rows": 1,
            "parts": [{"name": "parts/9999-evil-0001.jsonl.zst", "rows": 1}],
        }
    )
    crafted.members["parts/9999-evil-0001.jsonl.zst"] = compress(b'["x"]\n')
    crafted.manifest["tables"][-1]["parts"][0].update(raw_bytes=6, size=0, sha256="0" * 64)
    scope = crafted.manifest["scope_part"]["name"]
    set_part(
        crafted,
        scope,
        b"".join(
            json.dumps(s).encode() + b"\n"
            for s in [*map(json.loads, _lines(crafted, scope)), {"table": "evil", "kind": "all"}]
        ),
        rows=crafted.manifest["scope_part"]["rows"] + 1,
    )
    path = write_archive(tmp_path / "evil.tar", crafted)
    with pytest.raises(ArchiveContentError, match="'evil', which is not a haive-langgraph table"):
        restore(path, target, on_existing="merge")
    assert not marker.exists()
    assert policies(target) == before
    assert "evil" not in tables_of(target, "haive")


def _lines(archive: Archive, name: str) -> list[bytes]:
    from tests.security._archive_craft import decompress

    return decompress(archive.members[name]).splitlines()


def test_a_format_2_manifest_carrying_ddl_is_refused(
    archives: dict[str, Path], target: str, tmp_path: Path
) -> None:
    crafted = read_archive(archives["plain"])
    crafted.table("threads")["ddl"] = ["DROP TABLE threads"]
    path = write_archive(tmp_path / "ddl.tar", crafted)
    with pytest.raises(ArchiveContentError, match=r"fields \['ddl'\].*runs no SQL"):
        restore(path, target)
    assert not schema_exists(target, "haive")


def test_a_format_1_archive_restores_and_its_ddl_is_ignored(
    migrated_vectors: tuple[str, Path], target: str, tmp_path: Path
) -> None:
    """The store's vector table, which no migration creates, comes from the store's own
    definition; the ddl an old archive carries for it is never run."""
    source, archive = migrated_vectors
    marker = tmp_path / "pwned"
    crafted = read_archive(archive)
    crafted.manifest["format_version"] = 1
    for table in crafted.manifest["tables"]:
        table["ddl"] = _evil_ddl(marker)
    path = write_archive(tmp_path / "v1.tar", crafted)
    report = restore(path, target)
    assert "store_vectors" in report.created_tables
    assert not marker.exists()
    src, dst = digests(source, "vec"), digests(target, "vec")
    assert {k: v for k, v in dst.items() if k in src} == src
    with psycopg.connect(target) as conn:
        rls = conn.execute(
            "SELECT relrowsecurity FROM pg_class WHERE oid = 'vec.store_vectors'::regclass"
        ).fetchone()
        indexes = {
            r[0]
            for r in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'store_vectors'"
            )
        }
    assert rls == (True,)
    assert "store_vectors_ann_idx" in indexes


@pytest.fixture(scope="module")
def migrated_vectors(source: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    from haive_langgraph.stores import PostgresStore
    from tests.stores.conftest import index_config

    with PostgresStore.from_conn_string(source, index=index_config(), schema="vec") as store:
        store.setup()
        for key, text in {"a": "red apples", "b": "green pears"}.items():
            store.put(("docs",), key, {"text": text})
    path = tmp_path_factory.mktemp("vec") / "vec.tar"
    backup(path, source, schema="vec")
    return source, path


def test_a_crafted_vector_index_configuration_is_refused(
    migrated_vectors: tuple[str, Path], target: str, tmp_path: Path
) -> None:
    _, archive = migrated_vectors
    crafted = read_archive(archive)
    at = crafted.table("store_vector_config")["data_columns"].index("config")

    def change(row: list[Any]) -> list[Any]:
        config = json.loads(row[at])
        config["kind"] = "hnsw) WITH (m = 4); DROP TABLE threads; --"
        row[at] = json.dumps(config)
        return row

    map_rows(crafted, "store_vector_config", change)
    path = write_archive(tmp_path / "vec.tar", crafted)
    with pytest.raises(ArchiveContentError, match="not a vector index this store sets up"):
        restore(path, target)
    assert not schema_exists(target, "vec")


# -- 2. every row inside the declared scope -------------------------------------------------------


@pytest.mark.parametrize(
    ("on_existing", "ids"),
    [("merge", True), ("merge", False), ("refuse", False), ("skip", True), ("replace", False)],
)
def test_a_tenant_a_archive_relabelled_to_tenant_b_writes_nothing(
    archives: dict[str, Path], target: str, tmp_path: Path, on_existing: Any, ids: bool
) -> None:
    """Into a database holding tenant B: ``merge`` would overwrite B's rows with A's (ids
    relabelled too), ``refuse`` would add A's threads to B."""
    restore(archives["b"], target)
    crafted = read_archive(archives["plain"])
    relabel(crafted, TENANT_A, TENANT_B, ids=ids)
    path = write_archive(tmp_path / "relabelled.tar", crafted)
    before = digests(target, "haive")
    assert before["threads"][0] == 2
    with pytest.raises(ArchiveContentError, match="outside the scope its archive declares"):
        restore(path, target, on_existing=on_existing)
    assert digests(target, "haive") == before


def test_a_row_of_another_thread_in_a_thread_archive_writes_nothing(
    archives: dict[str, Path], source: str, tmp_path: Path
) -> None:
    crafted = read_archive(archives["thread"])
    victim = f"{TENANT_A}-t2"
    at = crafted.table("checkpoints")["data_columns"].index("thread_id")

    def change(row: list[Any]) -> list[Any]:
        row[at] = victim
        return row

    map_rows(crafted, "checkpoints", change)
    path = write_archive(tmp_path / "thread.tar", crafted)
    where = f"tenant_id = '{TENANT_A}'"
    before = digests(source, "haive", where)
    with pytest.raises(ArchiveContentError, match="outside the scope"):
        restore(path, source, on_existing="merge")
    assert digests(source, "haive", where) == before


def test_a_scope_wider_than_the_declared_selection_is_refused(
    archives: dict[str, Path], source: str, tmp_path: Path
) -> None:
    """A tenant archive whose scope part claims every row of a table (so that ``replace``
    would delete every tenant's rows) does not match its declared selection."""
    crafted = read_archive(archives["plain"])
    scope = crafted.manifest["scope_part"]["name"]
    scopes = [json.loads(x) for x in _lines(crafted, scope)]
    for s in scopes:
        if s["table"] == "threads":
            s.clear()
            s.update(table="threads", kind="all")
    crafted.table("threads")["scope"] = "all"
    set_part(crafted, scope, b"".join(json.dumps(s).encode() + b"\n" for s in scopes))
    path = write_archive(tmp_path / "wide.tar", crafted)
    before = digests(source, "haive")
    with pytest.raises(ArchiveContentError, match="all scope for table threads"):
        restore(path, source, on_existing="replace")
    assert digests(source, "haive") == before


def test_a_table_outside_the_declared_patterns_is_refused(
    archives: dict[str, Path], target: str, tmp_path: Path
) -> None:
    crafted = read_archive(archives["plain"])
    crafted.manifest["selection"]["exclude"] = ["blobs"]
    path = write_archive(tmp_path / "patterns.tar", crafted)
    with pytest.raises(ArchiveContentError, match="table patterns leave out"):
        restore(path, target)
    assert not schema_exists(target, "haive")


# -- keyed archives -----------------------------------------------------------------------------------


def test_a_keyed_archive_cannot_be_changed_reordered_or_downgraded(
    archives: dict[str, Path], target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = archives["key"].read_text()
    original = read_archive(archives["keyed"])
    # reordered parts of a table, in the manifest (the tar's order does not matter)
    reordered = original.copy()
    parts = reordered.table("checkpoints")["parts"]
    many = reordered.table("writes")["parts"] + parts
    reordered.table("checkpoints")["parts"] = list(reversed(many))
    # a part dropped, a part swapped with another's bytes
    dropped = original.copy()
    del dropped.members[original.table("threads")["parts"][0]["name"]]
    swapped = original.copy()
    a, b = (
        original.table("threads")["parts"][0]["name"],
        original.table("blobs")["parts"][0]["name"],
    )
    swapped.members[a], swapped.members[b] = original.members[b], original.members[a]
    for name, crafted in (("reordered", reordered), ("dropped", dropped), ("swapped", swapped)):
        path = write_archive(tmp_path / f"{name}.tar", crafted, resign=False)
        with pytest.raises(ArchiveIntegrityError):
            restore(path, target, key=key)
    # the same changes re-signed as an unkeyed archive: refused while a key is in effect,
    # given or from the environment
    downgraded = read_archive(archives["plain"])
    relabel(downgraded, TENANT_A, TENANT_B)
    path = write_archive(tmp_path / "downgraded.tar", downgraded)
    with pytest.raises(BackupKeyError, match="not encrypted, but a backup key is in effect"):
        restore(path, target, key=key)
    monkeypatch.setenv(BACKUP_KEY_ENV, key)
    with pytest.raises(BackupKeyError, match="not encrypted"):
        restore(path, target)
    with pytest.raises(BackupKeyError, match="not encrypted"):
        verify(path)
    assert not schema_exists(target, "haive")
    # an unkeyed archive is accepted only when asked for, and still scope-checked
    with pytest.raises(ArchiveContentError):
        restore(path, target, unkeyed=True)
    assert restore(archives["plain"], target, unkeyed=True).rows > 0


# -- 11. verify is a stream ----------------------------------------------------------------------------


def _one_line_part(archives: dict[str, Path], tmp_path: Path, size: int) -> tuple[Path, str]:
    """The plain archive with its threads part replaced by ``size`` bytes and no newline."""
    crafted = read_archive(archives["plain"])
    name = crafted.table("threads")["parts"][0]["name"]
    compressor = zstandard.ZstdCompressor(level=1)
    crafted.members[name] = compressor.compress(b"a" * size)
    crafted.table("threads")["parts"][0]["raw_bytes"] = size
    return write_archive(tmp_path / "long.tar", crafted), name


def test_verify_of_a_part_without_newlines_is_bounded_and_names_part_and_offset(
    archives: dict[str, Path], tmp_path: Path
) -> None:
    size = MAX_LINE_BYTES + (8 << 20)
    path, name = _one_line_part(archives, tmp_path, size)
    tracemalloc.start()
    try:
        with pytest.raises(
            ArchiveIntegrityError,
            match=rf"part {name} holds a line longer than {MAX_LINE_BYTES:,} bytes at offset 0",
        ):
            verify(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # One chunk at a time, not the line: the whole part is 264 MiB.
    assert peak < 16 << 20, f"verify held {peak:,} bytes"


def test_a_long_line_within_the_limit_verifies_in_bounded_memory(
    archives: dict[str, Path], tmp_path: Path
) -> None:
    crafted = read_archive(archives["plain"])
    part = crafted.table("threads")["parts"][0]
    raw = b"".join(json.dumps(r).encode() + b"\n" for r in rows_of(crafted.members[part["name"]]))
    # the same rows, after a first row padded to 64 MiB (one JSON line)
    first = json.loads(raw.splitlines()[0])
    first[-1] = "x" * (64 << 20)
    raw = lines([first]) + raw
    crafted.members[part["name"]] = compress(raw)
    part.update(raw_bytes=len(raw), rows=part["rows"] + 1)
    path = write_archive(tmp_path / "long-ok.tar", crafted)
    tracemalloc.start()
    try:
        info = verify(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.tables["threads"] == part["rows"]
    assert peak < 16 << 20, f"verify held {peak:,} bytes"


def test_restore_refuses_an_overlong_line_before_writing(
    archives: dict[str, Path], target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import haive_langgraph.ops._archive_rows as rows_module

    monkeypatch.setattr(rows_module, "MAX_LINE_BYTES", 1 << 20)
    path, name = _one_line_part(archives, tmp_path, 3 << 20)
    with pytest.raises(
        ArchiveIntegrityError, match=rf"part {name} holds a line longer .* offset 0"
    ):
        restore(path, target)
    assert not schema_exists(target, "haive")


def test_backup_refuses_a_row_no_reader_would_accept(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The line limit holds at write time: what backup writes, restore reads."""
    import haive_langgraph.ops._archive as archive_module

    monkeypatch.setattr(archive_module, "MAX_LINE_BYTES", 200)
    with pytest.raises(BackupError, match="more than an archive line may hold"):
        backup(tmp_path / "long.tar", source, tenants=[TENANT_A])
    assert not (tmp_path / "long.tar").exists()


# -- a restore killed half-way ---------------------------------------------------------------------------

_CHILD = """
import sys
from haive_langgraph.ops.backup import restore

def hook(event):
    if event.phase == "restore" and event.rows > 0:
        print("writing", event.table, flush=True)
        sys.stdin.readline()  # held here until the test kills the process

restore(sys.argv[1], sys.argv[2], progress=hook)
print("committed", flush=True)
"""


def test_a_restore_killed_while_writing_leaves_the_target_unchanged(
    pg_server: str, target: str, tmp_path: Path
) -> None:
    source = create_database(pg_server, "haive_crash_source")
    try:
        migrate_all(source)
        with psycopg.connect(source) as conn:
            conn.execute(
                "INSERT INTO haive.threads (tenant_id, thread_id, family_id) "
                "SELECT 'bulk', 't' || g, 'f' || g FROM generate_series(1, 40000) AS g"
            )
        archive = tmp_path / "bulk.tar"
        backup(archive, source, tenants=["bulk"])
    finally:
        drop_database(pg_server, source)
    migrate_all(target)
    with PostgresCheckpointer.from_conn_string(target, tenant_id="resident") as cp:
        converse(cp, "resident-thread", 1)
    before = digests(target, "haive")
    size_sql = "SELECT pg_relation_size('haive.threads')"
    with psycopg.connect(target) as conn:
        size_before = conn.execute(size_sql).fetchone()
    app = f"haive-crash-{uuid.uuid4().hex[:8]}"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _CHILD,
            str(archive),
            conninfo.make_conninfo(target, application_name=app),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    watchdog = threading.Timer(300, child.kill)
    watchdog.start()
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.startswith("writing threads"), (
            line,
            child.stderr.read() if child.stderr else "",
        )
        # The rows reach the server, uncommitted: the table grows while the
        # restore's transaction is open (the server takes them in as they come:
        # wait for that, bounded).
        assert size_before is not None
        with psycopg.connect(target, autocommit=True) as conn:
            deadline = time.monotonic() + 60
            while (grown := conn.execute(size_sql).fetchone()) is not None and grown[
                0
            ] <= size_before[0]:
                assert time.monotonic() < deadline, "the restore wrote nothing"
                time.sleep(0.05)
            open_tx = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                "AND xact_start IS NOT NULL",
                (app,),
            ).fetchone()
        assert open_tx == (1,)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    finally:
        watchdog.cancel()
        child.kill()
        child.wait()
        for stream in (child.stdin, child.stdout, child.stderr):
            if stream is not None:
                stream.close()
    assert child.returncode == -signal.SIGKILL
    assert digests(target, "haive") == before
    again = restore(archive, target)
    assert again.tables["threads"] == 40000
    with psycopg.connect(target) as conn:
        counts = dict(
            conn.execute("SELECT tenant_id, count(*) FROM haive.threads GROUP BY 1").fetchall()
        )
    assert counts == {"bulk": 40000, "resident": 1}


# -- Hypothesis: crafted archives ------------------------------------------------------------------------

_TRAVERSAL = [
    "../escape.jsonl.zst",
    "/etc/passwd",
    "parts/../../escape.jsonl.zst",
    "parts/a/b.jsonl.zst",
    "parts/x\x00.jsonl.zst",
    "parts/..jsonl.zst",
    "C:\\parts\\x.jsonl.zst",
    "manifest.json",
]
_FIELDS = ["rows", "size", "raw_bytes"]

Attack = Callable[[Archive, st.DataObject], bool]
"""Changes an archive; returns whether to re-sign it (recompute its checksums)."""


def _a_table(archive: Archive, data: st.DataObject) -> dict[str, Any]:
    return data.draw(st.sampled_from(archive.manifest["tables"]), label="table")


def _a_part(archive: Archive, data: st.DataObject) -> str:
    return data.draw(st.sampled_from(archive.part_names()), label="part")


def unknown_table(archive: Archive, data: st.DataObject) -> bool:
    name = data.draw(st.from_regex(r"[a-z_][a-z0-9_]{0,20}", fullmatch=True), label="name")
    if name in {t["name"] for t in archive.manifest["tables"]}:
        name += "_x"
    part = f"parts/9999-{name}-0001.jsonl.zst"
    archive.members[part] = compress(b'["v"]\n')
    archive.manifest["tables"].append(
        {
            "name": name,
            "columns": [{"name": "v", "type": "text", "not_null": False}],
            "data_columns": ["v"],
            "primary_key": [],
            "scope": "all",
            "rows": 1,
            "parts": [{"name": part, "rows": 1, "size": 0, "raw_bytes": 6, "sha256": "0" * 64}],
        }
    )
    return True


def unknown_column(archive: Archive, data: st.DataObject) -> bool:
    table = _a_table(archive, data)
    column = data.draw(st.from_regex(r"[a-z]{1,12}", fullmatch=True), label="column") + "_x"
    table["columns"].append({"name": column, "type": "text", "not_null": False})
    table["data_columns"].append(column)
    map_rows(archive, table["name"], lambda row: [*row, "smuggled"])
    return True


def ddl_field(archive: Archive, data: st.DataObject) -> bool:
    table = _a_table(archive, data)
    table[data.draw(st.sampled_from(["ddl", "sql", "create"]))] = [
        data.draw(st.text(max_size=30), label="statement")
    ]
    return True


def out_of_scope_row(archive: Archive, data: st.DataObject) -> bool:
    table = data.draw(st.sampled_from([t for t in archive.manifest["tables"] if t["rows"]]))
    at = table["data_columns"].index("tenant_id")
    other = data.draw(st.text(min_size=1, max_size=12).filter(lambda t: t != TENANT_A))
    which = data.draw(st.integers(0, table["rows"] - 1), label="row")
    seen = iter(range(table["rows"]))

    def change(row: list[Any]) -> list[Any]:
        if next(seen) == which:
            row[at] = other
        return row

    map_rows(archive, table["name"], change)
    return True


def traversal(archive: Archive, data: st.DataObject) -> bool:
    old = _a_part(archive, data)
    new = data.draw(st.sampled_from(_TRAVERSAL), label="name")
    archive.members[new] = archive.members.pop(old)
    for entry in [archive.manifest["scope_part"]] + [
        p for t in archive.manifest["tables"] for p in t["parts"]
    ]:
        if entry["name"] == old:
            entry["name"] = new
    return True


def count(archive: Archive, data: st.DataObject) -> bool:
    name = _a_part(archive, data)
    field = data.draw(st.sampled_from(_FIELDS), label="field")
    entries = [archive.manifest["scope_part"]] + [
        p for t in archive.manifest["tables"] for p in t["parts"]
    ]
    entry = next(e for e in entries if e["name"] == name)
    value = data.draw(
        st.one_of(st.integers(-(2**70), -1), st.integers(2**41, 2**70), st.integers(0, 10**6)),
        label="value",
    )
    if entry.get(field) == value:
        value += 1
    entry[field] = value
    return field != "size"  # a re-signed size would be put back


def flip(archive: Archive, data: st.DataObject) -> bool:
    name = _a_part(archive, data)
    blob = bytearray(archive.members[name])
    at = data.draw(st.integers(0, len(blob) - 1), label="offset")
    blob[at] ^= data.draw(st.integers(1, 255), label="mask")
    archive.members[name] = bytes(blob)
    return False


def truncate(archive: Archive, data: st.DataObject) -> bool:
    # A part with rows, cut by at least 4 bytes: the last block is cut (a frame cut
    # only after its last data block would decompress to the same rows).
    name = data.draw(st.sampled_from(_parts_with_rows(archive)), label="part")
    blob = archive.members[name]
    archive.members[name] = blob[: data.draw(st.integers(0, len(blob) - 4), label="length")]
    return data.draw(st.booleans(), label="resign")


def _parts_with_rows(archive: Archive) -> list[str]:
    entries = [archive.manifest["scope_part"]] + [
        p for t in archive.manifest["tables"] for p in t["parts"]
    ]
    return [e["name"] for e in entries if e["rows"] > 0]


def bomb(archive: Archive, data: st.DataObject) -> bool:
    name = _a_part(archive, data)
    size = data.draw(st.integers(1 << 20, 24 << 20), label="size")
    filler = data.draw(st.sampled_from([b"\x00", b"a", b"\n", b'["x"]\n']), label="filler")
    if data.draw(st.booleans(), label="huge window"):
        # a frame asking for a 1 GiB window (streamed: its size unknown upfront)
        params = zstandard.ZstdCompressionParameters.from_level(1, window_log=30)
        out = io.BytesIO()
        with zstandard.ZstdCompressor(compression_params=params).stream_writer(
            out, closefd=False
        ) as writer:
            writer.write(filler * (size // len(filler)))
        archive.members[name] = out.getvalue()
    else:
        archive.members[name] = zstandard.ZstdCompressor(level=1).compress(
            filler * (size // len(filler))
        )
    return True


def drop(archive: Archive, data: st.DataObject) -> bool:
    del archive.members[_a_part(archive, data)]
    return data.draw(st.booleans(), label="resign")


ATTACKS: list[Attack] = [
    unknown_table,
    unknown_column,
    ddl_field,
    out_of_scope_row,
    traversal,
    count,
    flip,
    truncate,
    bomb,
    drop,
]


@pytest.fixture(scope="module")
def hostile_target(pg_server: str) -> Iterator[str]:
    url = create_database(pg_server, "haive_hostile")
    try:
        migrate_all(url)
        yield url
    finally:
        drop_database(pg_server, url)


def _refused(path: Path, dsn: str, key: str | None) -> BaseException:
    schema = "hostile"
    with pytest.raises(BackupError) as caught:
        restore(path, dsn, schema=schema, key=key, on_existing="merge")
    # nothing written: the target schema was not even created
    assert not schema_exists(dsn, schema)
    return caught.value


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_crafted_unkeyed_archives_are_refused_and_write_nothing(
    archives: dict[str, Path], hostile_target: str, tmp_path: Path, data: st.DataObject
) -> None:
    crafted = read_archive(archives["plain"])
    attack = data.draw(st.sampled_from(ATTACKS), label="attack")
    resign = attack(crafted, data)
    path = write_archive(tmp_path / f"{uuid.uuid4().hex}.tar", crafted, resign=resign)
    try:
        error = _refused(path, hostile_target, None)
        assert isinstance(error, ArchiveIntegrityError), repr(error)
    finally:
        path.unlink()


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_keyed_archives_changed_without_the_key_are_refused(
    archives: dict[str, Path], hostile_target: str, tmp_path: Path, data: st.DataObject
) -> None:
    key = archives["key"].read_text()
    crafted = read_archive(archives["keyed"])
    # Without the key, nothing can be re-signed: whatever is changed, the
    # manifest keeps its HMAC (or becomes an unkeyed archive: a downgrade).
    attack = data.draw(
        st.sampled_from([traversal, count, flip, truncate, drop, ddl_field, unknown_table]),
        label="attack",
    )
    attack(crafted, data)
    resign = data.draw(st.booleans(), label="downgrade")
    path = write_archive(tmp_path / f"{uuid.uuid4().hex}.tar", crafted, resign=resign)
    try:
        error = _refused(path, hostile_target, key)
        assert isinstance(error, ArchiveIntegrityError | BackupKeyError), repr(error)
    finally:
        path.unlink()


def test_no_part_name_leaves_the_archive(archives: dict[str, Path], tmp_path: Path) -> None:
    """A member named outside parts/ is never looked up, and nothing is extracted."""
    for name in _TRAVERSAL:
        crafted = read_archive(archives["plain"])
        old = crafted.table("threads")["parts"][0]["name"]
        crafted.members[name] = crafted.members.pop(old)
        crafted.table("threads")["parts"][0]["name"] = name
        path = write_archive(tmp_path / "t.tar", crafted)
        with pytest.raises(ArchiveIntegrityError, match=r"part name|twice"):
            verify(path)
    assert not (tmp_path.parent / "escape.jsonl.zst").exists()
