"""Scenario 7: tampered checkpointer rows are rejected, and nothing of them is loaded.

Two tenants (``acme``, ``globex``) write chat threads through encrypting
checkpointers (AES-256-GCM, zstd, the ``patient`` metadata key sealed), with
pending writes on the latest checkpoint. Someone with write access to the
database (but not to the keys) then alters rows, one case at a time, and a
fresh reader (nothing cached) loads the checkpoint:

* flipped bytes, at every header position and through the body, of value,
  list-item and pending-write frames;
* ciphertexts swapped within a thread, between threads and between tenants;
* truncated frames;
* zip bombs (a 256 MiB payload compressed to a few KB, with and without a
  declared size) planted as plaintext frames;
* msgpack records that construct objects from modules no value may use;
* sealed metadata flipped, swapped, truncated or malformed.

Each must raise :class:`~haive_langgraph.errors.DecryptionError` or the
documented decode error (:class:`~haive_langgraph.errors.CorruptDataError`,
of which ``DecryptionError``, ``DecompressionLimitError`` and
``UnsafeValueError`` are kinds), and with ``require_encryption`` a
``DecryptionError``. The decode path is pure code shared by both classes,
so the sync class reads.
"""

from __future__ import annotations

import base64
import os
import resource
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ormsgpack
import psutil  # type: ignore[import-untyped]
import psycopg
import pytest
import zstandard
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, MessagesState, StateGraph
from psycopg.types.json import Jsonb

from haive_langgraph._demo import DemoChatModel
from haive_langgraph.checkpointers import PostgresCheckpointer
from haive_langgraph.codec import DecompressionLimitError, KeyRing
from haive_langgraph.codec._guard import UnsafeValueError
from haive_langgraph.errors import CorruptDataError, DecryptionError

from .conftest import Budget, Figures

MIB = 1024 * 1024
KEYS = KeyRing.from_string("k1:" + base64.b64encode(os.urandom(32)).decode())
SEALED = "$haive_sealed"


@dataclass
class Target:
    """The latest checkpoint of a thread, and the frames it reads."""

    tenant: str
    thread: str
    config: RunnableConfig
    value_keys: list[bytes]  # blobs of plain channel values
    item_keys: list[bytes]  # blobs of list items (messages)
    write_keys: list[bytes]  # blobs only its pending writes use


@dataclass
class Rows:
    dsn: str
    conn: psycopg.Connection[Any]
    targets: dict[str, Target]

    def reader(self, tenant: str, *, require: bool = False) -> PostgresCheckpointer:
        return PostgresCheckpointer(
            self.conn,
            tenant_id=tenant,
            keyring=KEYS,
            require_encryption=require,
            encrypt_metadata=["patient"],
        )

    def load(self, target: Target, *, require: bool = False) -> Any:
        """A fresh reader's ``get_tuple`` of the target: its values, list items and writes."""
        return self.reader(target.tenant, require=require).get_tuple(target.config)

    def history(self, target: Target, *, require: bool = False) -> list[Any]:
        reader = self.reader(target.tenant, require=require)
        return list(reader.list({"configurable": {"thread_id": target.thread}}))

    def blob(self, target: Target, key: bytes) -> bytes:
        row = self.conn.execute(
            "SELECT data FROM haive.blobs WHERE tenant_id = %s AND family_id = %s AND key = %s",
            (target.tenant, target.thread, key),
        ).fetchone()
        assert row is not None
        return bytes(row[0])

    @contextmanager
    def blob_replaced(self, target: Target, key: bytes, data: bytes) -> Iterator[None]:
        original = self.blob(target, key)
        query = (
            "UPDATE haive.blobs SET data = %s WHERE tenant_id = %s AND family_id = %s AND key = %s"
        )
        self.conn.execute(query, (data, target.tenant, target.thread, key))
        try:
            yield
        finally:
            self.conn.execute(query, (original, target.tenant, target.thread, key))

    @contextmanager
    def column_replaced(self, target: Target, column: str, value: Any) -> Iterator[None]:
        cid = target.config["configurable"]["checkpoint_id"]
        ident = psycopg.sql.Identifier(column)
        where = "WHERE tenant_id = %s AND thread_id = %s AND checkpoint_id = %s"
        row = self.conn.execute(
            psycopg.sql.SQL("SELECT {} FROM haive.checkpoints " + where).format(ident),
            (target.tenant, target.thread, cid),
        ).fetchone()
        assert row is not None
        original = Jsonb(row[0]) if isinstance(row[0], dict) else row[0]
        update = psycopg.sql.SQL("UPDATE haive.checkpoints SET {} = %s " + where).format(ident)
        self.conn.execute(update, (value, target.tenant, target.thread, cid))
        try:
            yield
        finally:
            self.conn.execute(update, (original, target.tenant, target.thread, cid))


def _keys(conn: psycopg.Connection[Any], query: str, *params: Any) -> list[bytes]:
    return [bytes(r[0]) for r in conn.execute(query, params)]


class Notes(MessagesState):
    summary: str


def notes_graph() -> StateGraph[Any]:
    """The demo chat with a plain (non-list) channel too: a running summary."""
    model = DemoChatModel()

    def assistant(state: Notes) -> dict[str, Any]:
        reply = model.invoke(state["messages"])
        summary = f"summary after {len(state['messages'])} messages: {reply.content}"
        return {"messages": [reply], "summary": summary}

    builder: StateGraph[Any] = StateGraph(Notes)
    builder.add_node("assistant", assistant)
    builder.add_edge(START, "assistant")
    builder.add_edge("assistant", END)
    return builder


@pytest.fixture(scope="module")
def rows(dsn: str) -> Iterator[Rows]:
    conn = psycopg.connect(dsn, autocommit=True)
    targets: dict[str, Target] = {}
    for tenant, thread in (("acme", "t1"), ("acme", "t2"), ("globex", "t1")):
        saver = PostgresCheckpointer(
            conn, tenant_id=tenant, keyring=KEYS, encrypt_metadata=["patient"]
        )
        saver.setup()
        graph = notes_graph().compile(checkpointer=saver)
        config: RunnableConfig = {
            "configurable": {"thread_id": thread},
            "metadata": {"patient": f"{tenant} P1"},
        }
        for i in range(3):
            text = f"{tenant}/{thread} question {i}: " + "details " * 120
            graph.invoke({"messages": [HumanMessage(content=text)]}, config)
        latest = saver.get_tuple({"configurable": {"thread_id": thread}})
        assert latest is not None
        saver.put_writes(
            latest.config,
            [
                ("messages", [AIMessage(content=f"pending {tenant}/{thread} " + "x" * 900)]),
                ("notes", f"pending note of {tenant}/{thread} " + "y" * 900),
            ],
            "task-pending",
        )
        cid = latest.config["configurable"]["checkpoint_id"]
        row = conn.execute(
            "SELECT value_keys, list_lineages, list_lengths FROM haive.checkpoints "
            "WHERE tenant_id = %s AND thread_id = %s AND checkpoint_id = %s",
            (tenant, thread, cid),
        ).fetchone()
        assert row is not None
        items = _keys(
            conn,
            "SELECT i.key FROM haive.lineage_items AS i, unnest(%s::bigint[], %s::int[]) AS l(id, n) "
            "WHERE i.tenant_id = %s AND i.family_id = %s AND i.lineage_id = l.id AND i.seq < l.n "
            "ORDER BY i.seq",
            row[1],
            row[2],
            tenant,
            thread,
        )
        writes = _keys(
            conn,
            "SELECT DISTINCT k FROM haive.writes AS w, unnest(w.value_keys) AS k "
            "WHERE w.tenant_id = %s AND w.thread_id = %s AND w.checkpoint_id = %s",
            tenant,
            thread,
            cid,
        )
        values = [bytes(k) for k in row[0]]
        targets[f"{tenant}/{thread}"] = Target(
            tenant,
            thread,
            latest.config,
            values,
            items,
            [k for k in writes if k not in items and k not in values],
        )
    try:
        yield Rows(dsn, conn, targets)
    finally:
        conn.close()


def expect_rejected(rows: Rows, target: Target, *, require: bool) -> type[BaseException]:
    """Loading the target fails with the documented error; returns the class raised."""
    wanted = DecryptionError if require else CorruptDataError
    with pytest.raises(wanted) as info:
        rows.load(target, require=require)
    return type(info.value)


def flip(data: bytes, pos: int) -> bytes:
    out = bytearray(data)
    out[pos] ^= 0x01
    return bytes(out)


def positions(frame: bytes) -> list[int]:
    """Every header byte (magic, version, flags, key id, nonce), then through body and tag."""
    header = 4 + 1 + frame[4] + 12
    body = list(range(header, len(frame), max(1, (len(frame) - header) // 6)))
    return sorted({*range(header), *body, len(frame) - 16, len(frame) - 1})


@pytest.mark.parametrize("require", [False, True], ids=["default", "require_encryption"])
def test_flipped_bytes_in_frames(rows: Rows, figures: Figures, require: bool) -> None:
    target = rows.targets["acme/t1"]
    assert target.value_keys or target.item_keys
    kinds: dict[str, int] = {}
    cases = 0
    for what, keys in (
        ("value", target.value_keys[:1]),
        ("list item", target.item_keys[:1] + target.item_keys[-1:]),
        ("pending write", target.write_keys[:1]),
    ):
        assert keys, f"no {what} frame to tamper with"
        for key in keys:
            frame = rows.blob(target, key)
            for pos in positions(frame):
                with rows.blob_replaced(target, key, flip(frame, pos)):
                    name = expect_rejected(rows, target, require=require).__name__
                kinds[name] = kinds.get(name, 0) + 1
                cases += 1
    rows.load(target, require=require)  # restored rows load again
    figures.record(
        f"7 tampering: flipped bytes ({'require_encryption' if require else 'default reader'})",
        f"{cases} single-bit flips in value, list-item and pending-write frames, all rejected "
        f"({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}), nothing loaded",
    )


def test_swapped_ciphertexts_between_rows_threads_and_tenants(rows: Rows, figures: Figures) -> None:
    a1, a2, g1 = rows.targets["acme/t1"], rows.targets["acme/t2"], rows.targets["globex/t1"]
    cases = 0
    # Within a thread: another value's frame under this key.
    keys = a1.item_keys + a1.value_keys + a1.write_keys
    for key, other in zip(keys, keys[1:] + keys[:1], strict=True):
        with rows.blob_replaced(a1, key, rows.blob(a1, other)):
            assert expect_rejected(rows, a1, require=False) is DecryptionError
        cases += 1
    # Between threads of a tenant, and between tenants (globex has a thread "t1" too).
    for victim, source in ((a1, a2), (a2, a1), (a1, g1), (g1, a1)):
        for key, other in zip(victim.item_keys, source.item_keys, strict=False):
            with rows.blob_replaced(victim, key, rows.blob(source, other)):
                assert expect_rejected(rows, victim, require=False) is DecryptionError
                assert expect_rejected(rows, victim, require=True) is DecryptionError
            cases += 2
    for target in (a1, a2, g1):
        rows.load(target)
    figures.record(
        "7 tampering: swapped ciphertexts",
        f"{cases} frames moved within a thread, between threads and between tenants: all "
        "DecryptionError, nothing loaded",
    )


def test_truncated_frames(rows: Rows, figures: Figures) -> None:
    target = rows.targets["acme/t2"]
    cases = 0
    for key in target.item_keys[:1] + target.write_keys[:1] + target.value_keys[:1]:
        frame = rows.blob(target, key)
        header = 4 + 1 + frame[4] + 12
        for length in sorted({0, 1, 2, 3, 4, 5, header - 1, header, header + 8, len(frame) - 16,
                              len(frame) - 1}):  # fmt: skip
            with rows.blob_replaced(target, key, frame[:length]):
                expect_rejected(rows, target, require=False)
                expect_rejected(rows, target, require=True)
            cases += 2
    figures.record(
        "7 tampering: truncated frames",
        f"{cases} truncations (0 bytes to one byte short), all rejected, nothing loaded",
    )


def zstd_bomb(size: int, *, declared: bool) -> bytes:
    """``size`` zero bytes compressed, without ever holding them in memory."""
    cctx = zstandard.ZstdCompressor(level=1, write_content_size=declared)
    cobj = cctx.compressobj(size=size) if declared else cctx.compressobj()
    chunk = bytes(MIB)
    parts = [cobj.compress(chunk) for _ in range(size // MIB)]
    parts.append(cobj.flush())
    return b"".join(parts)


@pytest.mark.parametrize("declared", [True, False], ids=["declared-size", "undeclared-size"])
def test_zip_bombs(rows: Rows, budget: Budget, figures: Figures, declared: bool) -> None:
    size = budget.pick(256, 1024) * MIB
    bomb = b"HV\x01\x01" + zstd_bomb(size, declared=declared)  # a plaintext compressed frame
    target = rows.targets["acme/t2"]
    process = psutil.Process()
    rss_before = process.memory_info().rss
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with rows.blob_replaced(target, target.item_keys[0], bomb):
        with pytest.raises(DecompressionLimitError):
            rows.load(target, require=False)
        assert expect_rejected(rows, target, require=True) is DecryptionError
    peak_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before  # KiB
    rss_growth = process.memory_info().rss - rss_before
    figures.record(
        f"7 tampering: zip bomb ({'declared' if declared else 'undeclared'} size)",
        f"{len(bomb) / 1024:.0f} KB frame expanding to {size // MIB} MiB: "
        "DecompressionLimitError before expanding (DecryptionError with require_encryption); "
        f"peak RSS +{peak_growth / 1024:.0f} MiB, RSS {rss_growth / MIB:+.0f} MiB",
    )


# -- forged msgpack records -------------------------------------------------------------


def _record(code: int, *fields: Any) -> ormsgpack.Ext:
    return ormsgpack.Ext(code, ormsgpack.packb(fields))


def forged_payloads(marker: Path) -> dict[str, Any]:
    """msgpack values that, decoded by LangGraph's serde, would create ``marker``."""
    touch = f"touch {marker}"
    py = f"open({str(marker)!r}, 'a').close()"
    return {
        "os.system": _record(0, "os", "system", touch),
        "posix.system": _record(0, "posix", "system", touch),
        "subprocess.check_output": _record(0, "subprocess", "check_output", ["touch", str(marker)]),
        "subprocess.Popen(args)": _record(1, "subprocess", "Popen", [["touch", str(marker)]]),
        "builtins.eval": _record(0, "builtins", "eval", py),
        "builtins.exec": _record(0, "builtins", "exec", py),
        "importlib.import_module": _record(0, "importlib", "import_module", "os"),
        "pickle.loads": _record(0, "pickle", "loads", b"cos\nsystem\n(S'true'\ntR."),
        "functools.partial": _record(1, "functools", "partial", [1]),
        "nested in a dict": {"a": [1, {"b": _record(0, "os", "system", touch)}]},
        "inside a delta snapshot": ormsgpack.Ext(
            7, ormsgpack.packb([_record(0, "os", "system", touch)])
        ),
        # Modules outside the deny-list that still run code given as a string.
        "timeit.timeit": _record(2, "timeit", "timeit", {"stmt": py, "number": 1}),
        "cProfile.run": _record(0, "cProfile", "run", py),
        "profile.run": _record(0, "profile", "run", py),
    }


def plain_frame(value: Any) -> bytes:
    return b"HV\x01\x00" + b"msgpack\x00" + ormsgpack.packb(value)


def test_forged_constructors_in_values_and_writes(
    rows: Rows, tmp_path: Path, figures: Figures
) -> None:
    """Plaintext frames (readable when encryption is not required) carrying object records."""
    target = rows.targets["acme/t1"]
    ran: list[str] = []
    not_refused: list[str] = []
    cases = 0
    for name in forged_payloads(tmp_path):
        for where, key in (("value", target.item_keys[0]), ("write", target.write_keys[0])):
            marker = tmp_path / f"pwned-{cases}"
            frame = plain_frame(forged_payloads(marker)[name])
            cases += 1
            with rows.blob_replaced(target, key, frame):
                try:
                    rows.load(target, require=False)
                    not_refused.append(f"{name} ({where}): loaded")
                except UnsafeValueError:
                    pass
                except CorruptDataError as exc:
                    not_refused.append(f"{name} ({where}): {type(exc).__name__}: {exc}")
                if marker.exists():
                    ran.append(f"{name} ({where})")
                assert expect_rejected(rows, target, require=True) is DecryptionError
    figures.record(
        "7 tampering: forged msgpack records in values and pending writes",
        f"{cases} plaintext frames constructing from os, subprocess, builtins, pickle, ... : "
        f"{cases - len(not_refused)} refused with UnsafeValueError, {len(ran)} ran code "
        f"({', '.join(ran) or 'none'}); with require_encryption all {cases} DecryptionError",
    )
    assert not ran, f"forged values ran code when loaded: {ran}"
    assert not not_refused, f"forged values not refused by the guard: {not_refused}"


def test_forged_constructor_in_the_checkpoint_body(rows: Rows, tmp_path: Path) -> None:
    """The checkpoint body (versions, versions seen) is msgpack too, read on every load."""
    marker = tmp_path / "pwned"
    target = rows.targets["acme/t1"]
    body = b"msgpack\x00" + ormsgpack.packb(
        {
            "v": 4,
            "ts": "2026-11-23T00:00:00+00:00",
            "channel_versions": forged_payloads(marker)["os.system"],
            "versions_seen": {},
            "updated_channels": None,
        }
    )
    with rows.column_replaced(target, "checkpoint", body):
        try:
            rows.load(target, require=True)
            outcome = "it loaded"
        except CorruptDataError as exc:
            outcome = f"{type(exc).__name__}: {exc}"
        assert not marker.exists(), (
            f"a forged checkpoint body ran a command when loaded ({outcome})"
        )
        assert outcome != "it loaded", "a forged checkpoint body was loaded"


def test_flipped_bytes_in_the_checkpoint_body(rows: Rows) -> None:
    """The body is part of the row: with encryption on, altering it must not go unnoticed."""
    target = rows.targets["acme/t2"]
    cid = target.config["configurable"]["checkpoint_id"]
    row = rows.conn.execute(
        "SELECT checkpoint FROM haive.checkpoints WHERE tenant_id = %s AND thread_id = %s "
        "AND checkpoint_id = %s",
        (target.tenant, target.thread, cid),
    ).fetchone()
    assert row is not None
    body = bytes(row[0])
    loaded = []
    for pos in range(len(body)):
        with rows.column_replaced(target, "checkpoint", flip(body, pos)):
            try:
                rows.load(target, require=True)
            except CorruptDataError:
                continue
            loaded.append(pos)
    assert not loaded, (
        f"{len(loaded)} of {len(body)} single-bit flips of the checkpoint body loaded without "
        f"an error (e.g. at byte {loaded[0]}: {body[max(0, loaded[0] - 12) : loaded[0] + 4]!r})"
    )


def test_require_encryption_refuses_plaintext_in_a_row(rows: Rows) -> None:
    """``require_encryption`` promises to refuse unencrypted values: inline JSON values and
    sealed metadata keys replaced by plain ones are such values."""
    target = rows.targets["acme/t2"]
    failures = []
    with rows.column_replaced(target, "inline_values", Jsonb({"notes": "x"})):
        try:
            tup = rows.load(target, require=True)
            failures.append(
                f"a plaintext inline value was loaded: {tup.checkpoint['channel_values']['notes']!r}"
            )
        except DecryptionError:
            pass
    cid = target.config["configurable"]["checkpoint_id"]
    row = rows.conn.execute(
        "SELECT metadata FROM haive.checkpoints WHERE tenant_id = %s AND thread_id = %s "
        "AND checkpoint_id = %s",
        (target.tenant, target.thread, cid),
    ).fetchone()
    assert row is not None and SEALED in row[0]["patient"]
    downgraded = Jsonb({**row[0], "patient": "forged"})
    with rows.column_replaced(target, "metadata", downgraded):
        try:
            tup = rows.load(target, require=True)
            failures.append(
                f"a plaintext value of a sealed key was loaded: {tup.metadata['patient']!r}"
            )
        except DecryptionError:
            pass
    assert not failures, "; ".join(failures)


def test_sealed_metadata_tampering(rows: Rows, figures: Figures) -> None:
    a1, a2, g1 = rows.targets["acme/t1"], rows.targets["acme/t2"], rows.targets["globex/t1"]

    def metadata(target: Target) -> dict[str, Any]:
        cid = target.config["configurable"]["checkpoint_id"]
        row = rows.conn.execute(
            "SELECT metadata FROM haive.checkpoints WHERE tenant_id = %s AND thread_id = %s "
            "AND checkpoint_id = %s",
            (target.tenant, target.thread, cid),
        ).fetchone()
        assert row is not None
        return dict(row[0])

    meta = metadata(a1)
    frame = base64.b64decode(meta["patient"][SEALED])
    variants: dict[str, Any] = {}
    for pos in positions(frame):
        variants[f"flip {pos}"] = base64.b64encode(flip(frame, pos)).decode()
    for length in (0, 3, 10, len(frame) - 1):
        variants[f"truncate {length}"] = base64.b64encode(frame[:length]).decode()
    variants["not base64"] = "%%%not base64%%%"
    variants["from thread t2"] = metadata(a2)["patient"][SEALED]
    variants["from tenant globex"] = metadata(g1)["patient"][SEALED]
    earlier = rows.conn.execute(
        "SELECT metadata -> 'patient' ->> %s FROM haive.checkpoints WHERE tenant_id = 'acme' "
        "AND thread_id = 't1' AND checkpoint_id < %s ORDER BY checkpoint_id LIMIT 1",
        (SEALED, a1.config["configurable"]["checkpoint_id"]),
    ).fetchone()
    assert earlier is not None and earlier[0]
    variants["from an earlier checkpoint"] = earlier[0]
    kinds: dict[str, int] = {}
    for name, sealed in variants.items():
        forged = Jsonb({**meta, "patient": {SEALED: sealed}})
        with rows.column_replaced(a1, "metadata", forged):
            with pytest.raises(CorruptDataError) as info:
                rows.load(a1)
            if name.startswith("from"):
                assert isinstance(info.value, DecryptionError), name
        kinds[type(info.value).__name__] = kinds.get(type(info.value).__name__, 0) + 1
    figures.record(
        "7 tampering: sealed metadata",
        f"{len(variants)} flips, truncations, bad encodings and sealed values moved between "
        f"checkpoints, threads and tenants: all rejected "
        f"({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}), nothing loaded",
    )


def test_rows_load_when_untouched(rows: Rows) -> None:
    """The control: every target loads, with its pending writes, when nothing was altered."""
    for target in rows.targets.values():
        tup = rows.load(target, require=True)
        assert tup is not None and len(rows.history(target, require=True)) == 9
        assert {w[0] for w in tup.pending_writes} == {"task-pending"}
        assert tup.metadata["patient"] == f"{target.tenant} P1"
        first = tup.checkpoint["channel_values"]["messages"][0]
        assert f"{target.tenant}/{target.thread}" in first.content
