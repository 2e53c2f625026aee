"""Forged stored values: plaintext rows that name a module to import or a function to call.

Someone who can write to the database (a compromised application role, a
restored archive) but holds no encryption key plants plaintext rows whose
msgpack records name modules with import side effects (a module planted on
``sys.path``, ``antigravity``, ``this``, ``IPython.__main__``) or functions.
Reading them through the checkpointer (``get_tuple``), the store (``get``)
and the chat history (``messages``) must refuse them with
:class:`~haive_langgraph.errors.CorruptDataError` naming the row, and import
nothing: the guard decides from the names, before any import.

The property test feeds the read path forged records of every shape (random
names, nested and malformed records, method records, deep chains): each
value is either decoded to allowed types or refused with
``CorruptDataError``, and ``sys.modules`` never grows.
"""

from __future__ import annotations

import base64
import enum
import json
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ormsgpack
import psycopg
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.serde._msgpack import SAFE_MSGPACK_TYPES
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from pydantic import BaseModel

from haive_langgraph.checkpointers import AsyncPostgresCheckpointer, PostgresCheckpointer
from haive_langgraph.checkpointers._decoding import Decoder
from haive_langgraph.checkpointers._values import payload_of
from haive_langgraph.codec import (
    HaiveCodec,
    KeyRing,
    Kind,
    RowContext,
    codec_from_config,
    frame_key_id,
)
from haive_langgraph.codec._guard import (
    DEFAULT_ALLOWED_MODULES,
    MAX_RECORD_DEPTH,
    UnsafeValueError,
    ValueGuard,
    guard_for,
)
from haive_langgraph.errors import ConfigurationError, CorruptDataError
from haive_langgraph.memory import AsyncPostgresChatMessageHistory, PostgresChatMessageHistory
from haive_langgraph.stores import AsyncPostgresStore, PostgresStore

PLAIN = b"HV\x01\x00"  # a plaintext, uncompressed frame header
# Modules whose import alone does something: none may ever be imported by a read.
SIDE_EFFECT_MODULES = ("antigravity", "this", "IPython.__main__")


def record(code: int, *fields: Any) -> ormsgpack.Ext:
    """An object record as LangGraph's serde writes it: (module, name, arguments ...)."""
    return ormsgpack.Ext(code, ormsgpack.packb(fields))


@dataclass
class SideEffect:
    """A module on ``sys.path`` whose import writes ``marker``."""

    module: str
    marker: Path

    def assert_never_imported(self) -> None:
        assert not self.marker.exists(), f"{self.module} was imported by a read"
        assert self.module not in sys.modules
        for name in SIDE_EFFECT_MODULES:
            assert name not in sys.modules, f"{name} was imported by a read"


@pytest.fixture
def sidefx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SideEffect]:
    module = f"haive_sidefx_{uuid.uuid4().hex}"
    marker = tmp_path / "imported"
    path = tmp_path / "mods"
    path.mkdir()
    (path / f"{module}.py").write_text(
        f"open({str(marker)!r}, 'a').write('imported')\n\n"
        "import dataclasses\n\n\n@dataclasses.dataclass\nclass Thing:\n    x: int = 0\n"
    )
    monkeypatch.syspath_prepend(str(path))
    for name in SIDE_EFFECT_MODULES:
        assert name not in sys.modules  # precondition: the test can see an import
    try:
        yield SideEffect(module, marker)
    finally:
        sys.modules.pop(module, None)


def forged(sidefx: SideEffect) -> dict[str, Any]:
    """Values holding records that import a side-effect module, by case name."""
    thing = record(0, sidefx.module, "Thing", 1)
    return {
        "planted module": thing,
        "planted module, pydantic record": record(5, sidefx.module, "Thing", {}, "x"),
        "antigravity": record(0, "antigravity", "geohash", 1),
        "this": record(1, "this", "s", []),
        "IPython.__main__": record(2, "IPython.__main__", "Shell", {}),
        "inside a message": record(
            5,
            "langchain_core.messages.human",
            "HumanMessage",
            {"content": "hi", "additional_kwargs": {"x": thing}},
            "model_validate_json",
        ),
        "inside a delta snapshot": ormsgpack.Ext(7, ormsgpack.packb([thing])),
        "method of a planted module": record(3, sidefx.module, "Thing", 1, "fromisoformat"),
    }


CASES = list(forged(SideEffect("m", Path("/nonexistent"))))


# -- checkpointer --------------------------------------------------------------------


@pytest.fixture(scope="module")
def conn(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(dsn, autocommit=True) as c:
        PostgresCheckpointer(c).setup()
        PostgresStore(c).setup()
        PostgresChatMessageHistory("setup", c).setup()
        yield c


@pytest.fixture(scope="module")
async def aconn(dsn: str, conn: psycopg.Connection[Any]) -> AsyncIterator[Any]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as c:
        yield c


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def plaintext_thread(conn: psycopg.Connection[Any]) -> tuple[RunnableConfig, bytes, bytes]:
    """A thread with a stored value ('notes') and a list item ('messages'): its config and keys."""
    thread = f"forged-{uuid.uuid4().hex[:8]}"
    saver = PostgresCheckpointer(conn)
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {
        "notes": "n" * 400,
        "messages": [HumanMessage("question " * 40, id="h1")],
    }
    checkpoint["channel_versions"] = {"notes": 1, "messages": 1}
    config = saver.put(
        {"configurable": {"thread_id": thread, "checkpoint_ns": ""}},
        checkpoint,
        {"source": "input", "step": -1},
        {"notes": 1, "messages": 1},
    )
    row = conn.execute(
        "SELECT value_channels, value_keys, list_lineages FROM haive.checkpoints "
        "WHERE thread_id = %s",
        (thread,),
    ).fetchone()
    assert row is not None and row[0] == ["notes"]
    item = conn.execute(
        "SELECT key FROM haive.lineage_items WHERE family_id = %s AND lineage_id = %s AND seq = 0",
        (thread, row[2][0]),
    ).fetchone()
    assert item is not None
    return config, bytes(row[1][0]), bytes(item[0])


async def get_tuple(kind: str, conn: Any, aconn: Any, config: RunnableConfig) -> Any:
    """A fresh reader's get_tuple (nothing cached), sync or async."""
    if kind == "sync":
        return PostgresCheckpointer(conn).get_tuple(config)
    return await AsyncPostgresCheckpointer(aconn).aget_tuple(config)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("where", ["value", "list item"])
async def test_checkpointer_refuses_a_planted_module_without_importing_it(
    conn: psycopg.Connection[Any], aconn: Any, kind: str, sidefx: SideEffect, case: str, where: str
) -> None:
    config, value_key, item_key = plaintext_thread(conn)
    thread = config["configurable"]["thread_id"]
    frame = PLAIN + b"msgpack\x00" + ormsgpack.packb(forged(sidefx)[case])
    key = value_key if where == "value" else item_key
    conn.execute("UPDATE haive.blobs SET data = %s WHERE family_id = %s AND key = %s",
                 (frame, thread, key))  # fmt: skip
    with pytest.raises(UnsafeValueError) as info:
        await get_tuple(kind, conn, aconn, config)
    message = str(info.value)
    assert isinstance(info.value, CorruptDataError)
    assert f"thread {thread!r}" in message
    assert config["configurable"]["checkpoint_id"] in message
    assert ("channel 'notes'" if where == "value" else "channel 'messages', item 0") in message
    sidefx.assert_never_imported()


# -- store ---------------------------------------------------------------------------


async def store_get(kind: str, conn: Any, aconn: Any, ns: tuple[str, ...], key: str) -> Any:
    if kind == "sync":
        return PostgresStore(conn).get(ns, key)
    return await AsyncPostgresStore(aconn).aget(ns, key)


@pytest.mark.parametrize("case", CASES[:4])
async def test_store_refuses_a_planted_record_without_importing_it(
    conn: psycopg.Connection[Any], aconn: Any, kind: str, sidefx: SideEffect, case: str
) -> None:
    ns, key = ("forged", uuid.uuid4().hex[:8]), "item-1"
    PostgresStore(conn).put(ns, key, {"a": 1})
    # Store values are JSON: a msgpack record is refused, a LangChain
    # constructor envelope comes back as the plain data it is.
    frame = PLAIN + b"msgpack\x00" + ormsgpack.packb(forged(sidefx)[case])
    conn.execute("UPDATE haive.store_items SET value = %s WHERE namespace = %s AND key = %s",
                 (frame, list(ns), key))  # fmt: skip
    with pytest.raises(CorruptDataError) as info:
        await store_get(kind, conn, aconn, ns, key)
    assert repr(key) in str(info.value) and ".".join(ns) in str(info.value)
    envelope = {"lc": 1, "type": "constructor", "id": [sidefx.module, "Thing"], "kwargs": {}}
    conn.execute("UPDATE haive.store_items SET value = %s WHERE namespace = %s AND key = %s",
                 (PLAIN + json.dumps(envelope).encode(), list(ns), key))  # fmt: skip
    item = await store_get(kind, conn, aconn, ns, key)
    assert item is not None and item.value == envelope
    sidefx.assert_never_imported()


# -- chat history --------------------------------------------------------------------


async def history_messages(kind: str, conn: Any, aconn: Any, session: str, serde: Any) -> Any:
    if kind == "sync":
        return PostgresChatMessageHistory(session, conn, serde=serde).messages
    return await AsyncPostgresChatMessageHistory(session, aconn, serde=serde).aget_messages()


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("serde", ["default", "permissive"])
async def test_chat_history_refuses_a_planted_module_without_importing_it(
    conn: psycopg.Connection[Any], aconn: Any, kind: str, sidefx: SideEffect, case: str, serde: str
) -> None:
    # "permissive": the application passed LangGraph's default serde, which
    # imports any name it is given.
    user_serde = JsonPlusSerializer() if serde == "permissive" else None
    session = f"forged-{uuid.uuid4().hex[:8]}"
    PostgresChatMessageHistory(session, conn).add_messages([HumanMessage("hi", id="m-1")])
    fields = {"type": "human", "id": "m-1", "content": forged(sidefx)[case]}
    frame = PLAIN + ormsgpack.packb([[fields, None]])
    conn.execute("UPDATE haive.conversation_messages SET body = %s WHERE conversation_id = %s",
                 (frame, session))  # fmt: skip
    with pytest.raises(UnsafeValueError) as info:
        await history_messages(kind, conn, aconn, session, user_serde)
    assert f"conversation {session!r}" in str(info.value) and "'m-1'" in str(info.value)
    sidefx.assert_never_imported()


# -- the application's own state types -------------------------------------------------


class Unit(enum.Enum):
    CELSIUS = "C"


class Reading(BaseModel):
    value: float
    unit: Unit


@dataclass
class Station:
    name: str
    reading: Reading


STATION = Station("north", Reading(value=21.5, unit=Unit.CELSIUS))


async def test_declared_state_types_load_and_undeclared_ones_are_refused_by_name(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    """A plaintext row of the application's own types reads back once their module is declared
    (on the codec, or in the serde's allow-list); undeclared, it is refused with how to declare."""
    writer = PostgresCheckpointer(conn)
    thread = f"types-{uuid.uuid4().hex[:8]}"
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {"station": STATION}
    checkpoint["channel_versions"] = {"station": 1}
    config = writer.put(
        {"configurable": {"thread_id": thread, "checkpoint_ns": ""}},
        checkpoint,
        {"source": "input", "step": -1},
        {"station": 1},
    )
    with pytest.raises(UnsafeValueError) as info:
        PostgresCheckpointer(conn).get_tuple(config)
    assert f"refusing to construct {__name__}." in str(info.value)  # Unit, the innermost
    assert f"allowed_modules=({__name__!r},)" in str(info.value)
    readers = [
        PostgresCheckpointer(conn, codec=codec_from_config(allowed_modules=[__name__])),
        PostgresCheckpointer(conn, codec=codec_from_config(allowed_modules=["tests.security"])),
        PostgresCheckpointer(
            conn, serde=JsonPlusSerializer(allowed_msgpack_modules=[Station, Reading, Unit])
        ),
    ]
    for reader in readers:
        loaded = reader.get_tuple(config)
        assert loaded is not None and loaded.checkpoint["channel_values"]["station"] == STATION
    # A prefix matches whole module names only.
    with pytest.raises(UnsafeValueError):
        PostgresCheckpointer(
            conn, codec=codec_from_config(allowed_modules=["tests.sec"])
        ).get_tuple(config)


def test_allowed_modules_are_checked_and_read_from_the_environment() -> None:
    assert codec_from_config(environ={"HAIVE_ALLOWED_MODULES": "a.b, c"}).allowed_modules == (
        "a.b",
        "c",
    )
    assert codec_from_config(allowed_modules=["x"], environ={}).allowed_modules == ("x",)
    for bad in (["*"], ["a..b"], ["a.b-c"], [""], ["os;x"]):
        with pytest.raises(ConfigurationError, match="not a module name"):
            HaiveCodec(allowed_modules=bad)
    with pytest.raises(ConfigurationError, match="HAIVE_ALLOWED_MODULES"):
        codec_from_config(environ={"HAIVE_ALLOWED_MODULES": "myapp.*"})


def test_an_allowed_name_that_is_a_function_is_never_called() -> None:
    guard = ValueGuard(modules=["tests.security"])
    # Allowed module, but a function (and one of LangChain's): refused after the import.
    for module, name in (
        ("langchain_core.messages.utils", "convert_to_messages"),
        (__name__, "record"),
        (__name__, "SideEffect"),  # a dataclass: admitted
    ):
        payload = ormsgpack.packb(record(0, module, name, []))
        if name == "SideEffect":
            guard.check("msgpack", payload)
        else:
            with pytest.raises(UnsafeValueError, match="not a class"):
                guard.check("msgpack", payload)
    with pytest.raises(UnsafeValueError, match="pickle"):
        guard.check("pickle", b"cos\nsystem\n(S'true'\ntR.")


# -- encrypting a plaintext row vouches for it ------------------------------------------


def test_encrypting_a_plaintext_row_scans_it_first(sidefx: SideEffect) -> None:
    """Readers scan plaintext rows only; key rotation turning encryption on
    (``HaiveCodec.reencode``) must not launder a planted record into a trusted one."""
    keys = KeyRing.from_string("k1:" + base64.b64encode(bytes(range(32))).decode())
    encrypting = HaiveCodec(keyring=keys)
    serde = JsonPlusSerializer()
    blob = RowContext("acme", "thread-1", Kind.BLOB, b"k" * 16)
    batch = RowContext("acme", "conv-1", Kind.MESSAGE, "messages")
    planted = forged(sidefx)["planted module"]
    for ctx, payload in (
        (blob, b"msgpack\x00" + ormsgpack.packb({"notes": planted})),
        (batch, ormsgpack.packb([[{"type": "human", "id": "m-1", "content": planted}, None]])),
    ):
        with pytest.raises(UnsafeValueError, match=f"{ctx.kind.value} row .*not encrypted"):
            encrypting.reencode(PLAIN + payload, ctx)
    sidefx.assert_never_imported()
    # What a saver writes re-encrypts; the application's declared types too.
    for value, codec in (
        ([HumanMessage("hi", id="m-1")], encrypting),
        (STATION, HaiveCodec(keyring=keys, allowed_modules=[__name__])),
    ):
        payload = payload_of(*serde.dumps_typed(value))
        frame = codec.reencode(PLAIN + payload, blob)
        assert frame_key_id(frame) == "k1" and codec.decode(frame, blob) == payload
    with pytest.raises(UnsafeValueError, match="not encrypted"):
        encrypting.reencode(PLAIN + payload_of(*serde.dumps_typed(STATION)), blob)


# -- property: any forged record ---------------------------------------------------------

# Names a forger would try: planted or side-effect modules, code runners, allowed
# modules (with their classes and functions), and random dotted names.
DANGEROUS = ["os", "subprocess", "builtins", "importlib", "pickle", "timeit", "runpy", "antigravity",
             "this", "IPython.__main__", "webbrowser", "ctypes", "code", "pty", "numpy"]  # fmt: skip
ALLOWED = ["langchain_core.messages.human", "langchain_core.messages.utils", "langgraph.types",
           "langchain_core.documents.base", "datetime", "uuid", "decimal", "pathlib", "re",
           "collections", "builtins", "pydantic.types", "langgraph.store.base"]  # fmt: skip
NAMES = ["system", "Popen", "eval", "exec", "import_module", "loads", "timeit", "run_path",
         "geohash", "HumanMessage", "AIMessage", "convert_to_messages", "Send", "Command",
         "Interrupt", "Document", "datetime", "date", "UUID", "Decimal", "Path", "compile",
         "set", "frozenset", "deque", "SecretStr", "Item", "__class__", "__init__", "a.b"]  # fmt: skip

ADMITTED_PAIRS = [
    *sorted(SAFE_MSGPACK_TYPES),
    ("langgraph.types", "RetryPolicy"), ("langgraph.types", "CachePolicy"),
    ("langgraph.types", "StreamWriter"), ("langchain_core.messages.utils", "convert_to_messages"),
    ("langchain_core.outputs.generation", "Generation"), ("pydantic.types", "SecretStr"),
    ("langchain_core.messages.base", "merge_content"), ("langgraph.types", "ensure_valid_checkpointer"),
]  # fmt: skip
identifiers = st.from_regex(r"\A[a-z_][a-z0-9_]{0,8}\Z")
modules = st.one_of(
    st.sampled_from(DANGEROUS + ALLOWED),
    st.lists(identifiers, min_size=1, max_size=3).map(lambda p: "zz_" + ".".join(p)),
    st.tuples(st.sampled_from(DEFAULT_ALLOWED_MODULES), identifiers).map(
        lambda t: f"{t[0]}.zz_{t[1]}"  # under an allowed prefix, never a real module
    ),
    st.text(max_size=12),
)
names = st.one_of(st.sampled_from(NAMES), identifiers, st.text(max_size=8))
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(), st.text(max_size=20),
    st.binary(max_size=20),
)  # fmt: skip


@dataclass(frozen=True)
class Rec:
    """A msgpack extension record of any code (ormsgpack.Ext takes 0..127 only)."""

    code: int
    data: bytes


def pack(value: Any) -> bytes:
    """msgpack of plain values and :class:`Rec` records."""
    if isinstance(value, Rec):
        n, code = len(value.data), (value.code & 0xFF).to_bytes(1, "big")
        fixed = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}
        if n in fixed:
            return bytes([fixed[n]]) + code + value.data
        return (
            b"\xc7" + n.to_bytes(1, "big") + code + value.data
            if n < 256
            else (b"\xc8" + n.to_bytes(2, "big") + code + value.data)
        )
    if isinstance(value, list):
        head = (
            bytes([0x90 | len(value)])
            if len(value) < 16
            else b"\xdc" + len(value).to_bytes(2, "big")
        )
        return head + b"".join(pack(v) for v in value)
    if isinstance(value, dict):
        head = (
            bytes([0x80 | len(value)])
            if len(value) < 16
            else b"\xde" + len(value).to_bytes(2, "big")
        )
        return head + b"".join(pack(k) + pack(v) for k, v in value.items())
    return ormsgpack.packb(value)


def _records(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    code = st.one_of(st.integers(0, 7), st.integers(0, 7), st.integers(-128, 127))
    args = st.one_of(children, st.lists(children, max_size=3),
                     st.dictionaries(st.text(max_size=6), children, max_size=3))  # fmt: skip
    methods = st.one_of(
        st.sampled_from(["fromisoformat", "system", "model_validate_json", "__call__"]),
        st.lists(st.integers(0, 9), max_size=2),  # unhashable where a method name belongs
    )
    # Random names, and names that pass (LangGraph's safe types, classes and
    # functions under the allowed prefixes) so that admitted records are built.
    admitted = st.sampled_from(ADMITTED_PAIRS)
    pairs = st.one_of(st.tuples(modules, names), admitted, admitted)
    wellformed = st.builds(
        lambda c, mn, a, method: Rec(c, pack([*mn, a] + ([method] if c == 3 else []))),
        code, pairs, args, methods,
    )  # fmt: skip
    malformed = st.one_of(
        st.builds(Rec, code, st.binary(max_size=30)),
        st.builds(lambda c, v: Rec(c, pack(v)), code,
                  st.one_of(scalars, st.lists(st.one_of(scalars, modules, names), max_size=3))),
    )  # fmt: skip
    return st.one_of(wellformed, malformed)


values = st.recursive(
    scalars,
    lambda children: st.one_of(
        _records(children),
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=6), children, max_size=4),
    ),
    max_leaves=25,
)


def _is_allowed(value: Any, guard: ValueGuard) -> bool:
    """Whether a decoded value holds only plain data and instances of allowed types."""
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return True
    cls = type(value)
    if cls.__name__ in ("Pattern", "_DeltaSnapshot", "PosixPath", "WindowsPath"):
        return True  # built by re.compile, a delta record, pathlib.Path
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        # An allowed NamedTuple: what the record gave it must be allowed; the
        # defaults its class fills in (RetryPolicy's retry_on function) are
        # the library's own, not the row's.
        if guard.verdict(cls.__module__, cls.__name__) is not None:
            return False
        defaults = getattr(cls, "_field_defaults", {})
        return all(
            _is_allowed(v, guard)
            for name, v in zip(value._fields, value, strict=True)
            if not (name in defaults and defaults[name] is v)
        )
    if isinstance(value, list | tuple | set | frozenset):
        return all(_is_allowed(v, guard) for v in value)
    if isinstance(value, dict):
        return all(_is_allowed(k, guard) and _is_allowed(v, guard) for k, v in value.items())
    if guard.verdict(cls.__module__, cls.__name__) is not None:
        return False
    fields = (
        value.__dict__ if hasattr(value, "__dict__") and not isinstance(value, enum.Enum) else {}
    )
    return all(_is_allowed(v, guard) for v in fields.values())


def _has_record(value: Any) -> bool:
    if isinstance(value, Rec):
        return True
    if isinstance(value, list):
        return any(map(_has_record, value))
    if isinstance(value, dict):
        return any(map(_has_record, value.values()))
    return False


@pytest.fixture(scope="module")
def read_path() -> tuple[Decoder, ValueGuard, JsonPlusSerializer]:
    serde = JsonPlusSerializer()  # LangGraph's default: imports whatever the guard admits
    codec = HaiveCodec()
    for module in (*DEFAULT_ALLOWED_MODULES, "langchain_core.documents.base"):
        __import__(module)  # what an allowed record may import, loaded up front
    return Decoder(serde, codec, "", share=False), guard_for(serde, codec), serde


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=values)
# Found by hypothesis: an allowed NamedTuple whose class default is a function.
@example(value=Rec(code=0, data=b"\x93\xaflanggraph.types\xabRetryPolicy\xc0"))
def test_forged_records_are_decoded_to_allowed_values_or_refused(
    read_path: tuple[Decoder, ValueGuard, JsonPlusSerializer], value: Any
) -> None:
    decoder, guard, serde = read_path
    payload = pack(value)
    loaded = set(sys.modules)
    try:
        guard.check("msgpack", payload)
    except CorruptDataError as exc:
        admitted = False
        event(f"refused: {type(exc).__name__}")
        if _has_record(value) and not isinstance(exc, UnsafeValueError):
            assert "not well-formed" in str(exc)
    else:
        admitted = True
        decoded = serde.loads_typed(("msgpack", payload))  # must not raise once admitted
        assert _is_allowed(decoded, guard), decoded
        event(f"admitted: {'with records' if _has_record(value) else 'plain'}")
    frame = PLAIN + b"msgpack\x00" + payload
    try:
        through = decoder.value("family", b"k" * 16, frame, "channel 'x'")
    except CorruptDataError as exc:
        assert not admitted, exc
        assert str(exc).startswith("channel 'x': ")
    else:
        assert admitted and _is_allowed(through, guard)
    assert set(sys.modules) == loaded, set(sys.modules) - loaded


@pytest.mark.parametrize("depth", [MAX_RECORD_DEPTH, MAX_RECORD_DEPTH + 1, 5000])
def test_deeply_nested_records_are_bounded(
    read_path: tuple[Decoder, ValueGuard, JsonPlusSerializer], depth: int
) -> None:
    decoder, guard, _ = read_path
    value: Any = 1
    for _ in range(depth):
        value = ormsgpack.Ext(7, ormsgpack.packb(value))
    payload = ormsgpack.packb(value)
    frame = PLAIN + b"msgpack\x00" + payload
    if depth <= MAX_RECORD_DEPTH:
        guard.check("msgpack", payload)
        decoder.value("family", b"k" * 16, frame, "channel 'x'")
    else:
        with pytest.raises(UnsafeValueError, match="nest more than"):
            decoder.value("family", b"k" * 16, frame, "channel 'x'")
