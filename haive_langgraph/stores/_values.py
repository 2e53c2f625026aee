"""Pure conversions: namespaces, values to stored bytes and back, vectors to pgvector's binary form."""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
import psycopg
from langgraph.store.base import (
    GetOp,
    InvalidNamespaceError,
    ListNamespacesOp,
    PutOp,
    SearchOp,
    validate_op_namespace,
)
from psycopg import pq
from psycopg.adapt import Dumper, PyFormat

from haive_langgraph.codec import Codec, Kind, RowContext
from haive_langgraph.db._limits import MAX_DEPTH, check_depth, has_lone_surrogate, utf8_len
from haive_langgraph.errors import (
    ConfigurationError,
    CorruptDataError,
    SerializationError,
    ValueTooLargeError,
)

Namespace = tuple[str, ...]

# Namespace labels never contain ".", so the dotted text names one namespace
# unambiguously. It is only how a batch of namespaces travels to the server
# (``string_to_array`` splits it back there); the tables store and compare
# namespaces as text[] arrays, segment by segment.
SEPARATOR = "."


def ns_text(namespace: Namespace) -> str:
    return SEPARATOR.join(namespace)


def ns_upper(prefix: Namespace) -> list[str]:
    """The smallest namespace after every namespace starting with ``prefix``.

    Arrays compare element by element (``COLLATE "C"``: bytewise), so the
    namespaces starting with ``prefix`` are exactly those ``>= prefix`` and
    ``< prefix[:-1] + [prefix[-1] + "\\x01"]``: no label can sort between a
    label and itself followed by ``\\x01``, since labels hold no NUL.
    """
    return [*prefix[:-1], prefix[-1] + "\x01"]


def check_key(key: Any) -> str:
    """A key as text; what PostgreSQL text cannot hold (NUL, a lone surrogate) is refused.

    Raises:
        ConfigurationError: naming the key.
    """
    text = key if isinstance(key, str) else str(key)
    if "\x00" in text:
        raise ConfigurationError(
            f"key {text!r:.80} contains a NUL character, which PostgreSQL cannot store"
        )
    if has_lone_surrogate(text):
        raise ConfigurationError(f"key {text!r:.80} contains a lone surrogate (not UTF-8)")
    return text


def check_labels(namespace: Sequence[Any], what: str = "namespace") -> None:
    """Refuse namespace labels PostgreSQL text cannot hold (NUL, a lone surrogate).

    LangGraph's own check (non-empty strings without ``.``) runs first.

    Raises:
        InvalidNamespaceError: naming the label.
    """
    for label in namespace:
        if not isinstance(label, str):
            continue
        if "\x00" in label:
            problem = "a NUL character"
        elif has_lone_surrogate(label):
            problem = "a lone surrogate (not UTF-8)"
        else:
            continue
        raise InvalidNamespaceError(
            f"{what} label {label!r:.80} contains {problem}, which PostgreSQL text cannot hold"
        )


def validate_op(op: Any) -> None:
    """LangGraph's namespace check of an operation, then :func:`check_labels`.

    Raises:
        InvalidNamespaceError: naming the label.
    """
    validate_op_namespace(op)
    if isinstance(op, GetOp | PutOp):
        check_labels(op.namespace)
    elif isinstance(op, SearchOp):
        check_labels(op.namespace_prefix, "namespace prefix")
    elif isinstance(op, ListNamespacesOp):
        for condition in op.match_conditions or ():
            check_labels(condition.path, "match condition")


# Namespace and key lead the tables' primary keys, beside the tenant id (up
# to 512 bytes) and a vector's field name, and a btree entry holds at most
# 2,704 bytes: longer ones are refused before anything is sent. In the
# text[] array each label also takes a 4-byte length and up to 3 bytes of
# alignment: a label counts its UTF-8 bytes plus LABEL_OVERHEAD, so that
# many short labels cannot pass where few long ones could not.
MAX_ADDRESS_BYTES = 1024
LABEL_OVERHEAD = 8


def check_address(namespace: Namespace, key: str) -> None:
    """Refuse an item whose namespace and key are too long to index.

    Raises:
        InvalidNamespaceError: the namespace alone is too long.
        ConfigurationError: namespace and key together are.
    """
    ns_bytes = sum(utf8_len(label) + LABEL_OVERHEAD for label in namespace)
    if ns_bytes > MAX_ADDRESS_BYTES:
        raise InvalidNamespaceError(
            f"namespace {namespace!r:.80} takes {ns_bytes} bytes (UTF-8, {LABEL_OVERHEAD} more "
            f"per label); namespace and key together may take at most {MAX_ADDRESS_BYTES}"
        )
    total = ns_bytes + utf8_len(key)
    if total > MAX_ADDRESS_BYTES:
        raise ConfigurationError(
            f"key {key!r:.80} in namespace {namespace!r:.80}: namespace and key take {total} "
            f"bytes (UTF-8, {LABEL_OVERHEAD} more per label); at most {MAX_ADDRESS_BYTES} are "
            "allowed"
        )


def row_context(tenant_id: str, namespace: Namespace, key: str) -> RowContext:
    return RowContext(tenant_id, ns_text(namespace), Kind.STORE_VALUE, key)


def encode_frame(
    codec: Codec, payload: bytes, tenant_id: str, namespace: Namespace, key: str
) -> bytes:
    """The stored frame of an item's value.

    Raises:
        ValueTooLargeError: The value is larger than the codec's
            ``max_decompressed_size``; named by namespace and key.
    """
    try:
        return codec.encode(payload, row_context(tenant_id, namespace, key))
    except ValueTooLargeError as exc:
        raise exc.about(f"the value of item {key!r:.80} in namespace {namespace!r:.80}") from None


_PASSTHROUGH = orjson.OPT_PASSTHROUGH_DATACLASS


def dump_json(value: Any) -> bytes:
    """JSON bytes of a JSON-native value (dict, list, tuple, str, int, float, bool, None).

    ``datetime``, ``date``, ``time`` and ``UUID`` values become ISO strings
    and UUID text (what a JSON store holds; they read back as strings).
    """
    return orjson.dumps(value, option=_PASSTHROUGH)


Finding = tuple[str, str]
"""Where in a value (``value['a'][0]``) and what is wrong there."""


def _first(
    value: Any, path: str, check: Callable[[Any, str, bool], Finding | None]
) -> Finding | None:
    """The first finding of ``check`` on the keys and leaves of ``value`` (depth first)."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            where = f"{path}[{k!r}]"
            found = check(k, where, True) or _first(v, where, check)
            if found:
                return found
        return None
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            found = _first(v, f"{path}[{i}]", check)
            if found:
                return found
        return None
    return check(value, path, False)


def _not_json(node: Any, where: str, is_key: bool) -> Finding | None:
    if is_key:
        if not isinstance(node, str):
            return where, f"a {type(node).__name__} key (keys must be str)"
        if has_lone_surrogate(node):
            return f"{where} (the key)", "a string with a lone surrogate (not UTF-8)"
        return None
    if isinstance(node, str):
        return (
            (where, "a string with a lone surrogate (not UTF-8)")
            if has_lone_surrogate(node)
            else None
        )
    if node is None or isinstance(node, bool):
        return None
    if isinstance(node, int):
        return None if -(2**63) <= node < 2**64 else (where, "an integer outside the 64-bit range")
    if isinstance(node, float):
        return None if math.isfinite(node) else (where, f"{node!r} (not a finite number)")
    try:
        dump_json(node)
    except TypeError:
        return where, f"a {type(node).__name__}"
    return None


def _nul(node: Any, where: str, is_key: bool) -> Finding | None:
    if isinstance(node, str) and "\x00" in node:
        return (f"{where} (the key)" if is_key else where), "a NUL character"
    return None


def _bad_path(value: Any, path: str) -> Finding | None:
    """The first place in ``value`` that JSON cannot hold, and why."""
    return _first(value, path, _not_json)


def nul_path(value: Any, path: str = "value") -> str | None:
    """Where ``value`` holds a NUL character (in a string or a key), which jsonb cannot hold."""
    found = _first(value, path, _nul)
    return found[0] if found else None


def check_document(doc: bytes, value: Any, namespace: Namespace, key: str) -> None:
    """Refuse a filter document PostgreSQL's jsonb cannot hold (a NUL character).

    Raises:
        SerializationError: naming the item and the place of the NUL.
    """
    # orjson writes NUL as \u0000; look for it only when those bytes are there.
    if b"\\u0000" not in doc:
        return
    where = nul_path(value)
    if where is not None:
        raise SerializationError(
            f"cannot store item {key!r} in namespace {namespace}: {where} contains a NUL "
            "character (\\u0000), which PostgreSQL's jsonb (the searchable copy of the value) "
            "cannot hold; remove it, or keep that field out of filter_fields"
        )


def encode_value(value: Mapping[str, Any], namespace: Namespace, key: str) -> bytes:
    """The JSON bytes of an item's value.

    Raises:
        SerializationError: naming the item and the path of what cannot be
            stored (a non-JSON object, a non-str key, NaN or infinity, a lone
            surrogate).
        ValueTooLargeError: The value nests more than ``MAX_DEPTH`` levels.
    """
    if not isinstance(value, Mapping):
        raise SerializationError(
            f"the value of item {key!r} in namespace {namespace} must be a dict, "
            f"got {type(value).__name__}"
        )
    try:
        data = dump_json(value)
    except TypeError:
        data = None
    # Only a document with more brackets than the limit can nest that deep (and
    # orjson itself stops at 254 levels): the walk below stays within it.
    if data is None or data.count(b"{") + data.count(b"[") > MAX_DEPTH:
        check_depth(value, f"the value of item {key!r:.80} in namespace {namespace!r:.80}")
    # orjson writes NaN and infinity as null: look for them only when a null is there.
    if data is None or b"null" in data:
        found = _bad_path(value, "value")
        if found:
            where, what = found
            raise SerializationError(
                f"cannot store item {key!r} in namespace {namespace}: {where} is {what}, "
                "not JSON-serialisable"
            )
        if data is None:  # pragma: no cover - orjson refused something _bad_path accepts
            raise SerializationError(f"cannot store item {key!r} in namespace {namespace} as JSON")
    return data


def decode_value(frame: bytes, codec: Codec, ctx: RowContext) -> dict[str, Any]:
    payload = codec.decode(frame, ctx)
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise CorruptDataError(f"{ctx.describe()} does not hold JSON: {exc}") from None
    if not isinstance(value, dict):
        raise CorruptDataError(f"{ctx.describe()} does not hold a JSON object")
    return value


def project(value: Mapping[str, Any], paths: Sequence[tuple[str, ...]]) -> dict[str, Any]:
    """The parts of ``value`` at dotted ``paths``, nested as in ``value``."""
    out: dict[str, Any] = {}
    for path in paths:
        node: Any = value
        for segment in path:
            if not isinstance(node, Mapping) or segment not in node:
                break
            node = node[segment]
        else:
            target = out
            for segment in path[:-1]:
                target = target.setdefault(segment, {})
            target[path[-1]] = node
    return out


# -- vectors ----------------------------------------------------------------------

_ARRAY_HEADER = struct.Struct("!iiiii")


class VectorEncoder:
    """pgvector's binary ``vector`` / ``halfvec`` representation, built without numpy."""

    def __init__(self, dims: int, vector_type: str) -> None:
        self.dims = dims
        self.type_name = vector_type
        self._struct = struct.Struct(f"!hh{dims}{'e' if vector_type == 'halfvec' else 'f'}")

    def check(self, vector: Sequence[float], what: str) -> None:
        if len(vector) != self.dims:
            raise ConfigurationError(
                f"the index is configured with dims={self.dims}, but the embedder returned a "
                f"{len(vector)}-dimensional vector for {what}; make index['dims'] match the "
                "embedding model"
            )

    def body(self, vector: Sequence[float]) -> bytes:
        """The value without a length prefix (the binary send format of one vector)."""
        return self.bodies([vector])[0]

    def bodies(self, vectors: Sequence[Sequence[float]]) -> list[bytes]:
        """Binary send format of each vector (dims, unused, then the floats, big-endian)."""
        # One precompiled struct per vector: about 7 us for 384 floats, against
        # 20-45 us through array.array and a byteswap.
        pack, dims = self._struct.pack, self.dims
        try:
            return [pack(dims, 0, *(v.tolist() if hasattr(v, "tolist") else v)) for v in vectors]
        except (OverflowError, struct.error) as exc:
            raise ConfigurationError(
                f"cannot store the vectors as {self.type_name}: {exc}"
            ) from None


def vector_array(bodies: Sequence[bytes], elem_oid: int) -> bytes:
    """A one-dimensional array of vector bodies, in PostgreSQL's binary array format."""
    if not bodies:
        return struct.pack("!iii", 0, 0, elem_oid)
    head = _ARRAY_HEADER.pack(1, 0, elem_oid, len(bodies), 1)
    length = struct.pack("!i", len(bodies[0]))
    return head + b"".join([length + body for body in bodies])


class PgvectorParam:
    """A binary parameter of a type whose OID is only known at run time (pgvector's).

    The OID of ``vector`` depends on the database (the extension creates it),
    so it is looked up once per store and carried by the value.
    """

    __slots__ = ("data", "oid")

    def __init__(self, data: bytes, oid: int) -> None:
        self.data = data
        self.oid = oid


class _PgvectorDumper(Dumper):
    format = pq.Format.BINARY

    def get_key(self, obj: Any, format: PyFormat) -> Any:
        return (PgvectorParam, obj.oid)

    def upgrade(self, obj: Any, format: PyFormat) -> Dumper:
        dumper = _PgvectorDumper(PgvectorParam)
        dumper.oid = obj.oid
        return dumper

    def dump(self, obj: Any) -> bytes:
        return obj.data  # type: ignore[no-any-return]


psycopg.adapters.register_dumper(PgvectorParam, _PgvectorDumper)
