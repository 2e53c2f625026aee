"""Reading a ``langgraph-checkpoint-postgres`` database as ``PostgresSaver.list()`` would.

Every layout its migrations have produced is read, told apart by what
``information_schema`` shows (the version in ``checkpoint_migrations`` is
reported, not trusted): ``checkpoint_blobs`` and ``checkpoint_writes``
present or not (a database set up part-way), ``task_path`` present or not
(before migration 9), and the layout of the deprecated ``ShallowPostgresSaver``
(one checkpoint per namespace, blobs keyed by channel only). Values are
decoded as ``PostgresSaver`` decodes them: inline primitives from the
checkpoint body, the others from ``checkpoint_blobs`` by channel version
(``"empty"`` meaning no value), pending writes in LangGraph's order, and the
pending sends of a checkpoint of format v1-v3 moved from its parent's writes
into the ``__pregel_tasks`` channel.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from langgraph.checkpoint.base import WRITES_IDX_MAP, writes_sort_key

from haive_langgraph.codec._guard import ValueGuard
from haive_langgraph.errors import SourceSchemaError
from haive_langgraph.ops.importers import _sql as Q
from haive_langgraph.ops.importers._msgpack import array_of, split_array
from haive_langgraph.ops.importers._source import columns, decode_value

PACKAGE = "langgraph-checkpoint-postgres"
# Migrations of PostgresSaver (langgraph/checkpoint/postgres/base.py MIGRATIONS):
# version 9 added checkpoint_writes.task_path, the last change to the tables.
LATEST_VERSION = 9
# Decoded channel values kept per namespace, so that a value many checkpoints
# share (a version that did not move) is read and decoded once.
VALUE_CACHE = 4096


@dataclass(frozen=True, slots=True)
class Layout:
    """What a source database holds, and in which shape."""

    schema: str
    version: int | None
    shallow: bool
    blobs: bool
    writes: bool
    task_path: bool

    def describe(self) -> str:
        version = "no migrations table" if self.version is None else f"version {self.version}"
        kind = "ShallowPostgresSaver" if self.shallow else "PostgresSaver"
        missing = [
            name
            for name, present in (
                ("checkpoint_blobs", self.blobs),
                ("checkpoint_writes", self.writes),
                ("checkpoint_writes.task_path", self.task_path or not self.writes),
            )
            if not present
        ]
        gone = f"; without {', '.join(missing)}" if missing else ""
        return f"{PACKAGE} tables in schema {self.schema!r} ({kind}, {version}{gone})"


def detect_layout(conn: psycopg.Connection[Any], schema: str) -> Layout | None:
    """The checkpoint tables of ``schema``, or ``None`` when there are none.

    Raises:
        SourceSchemaError: A table exists without the columns every version has.
    """
    cp = columns(conn, schema, "checkpoints")
    if not cp:
        return None
    needed = {"thread_id", "checkpoint_ns", "checkpoint", "metadata"}
    if not needed <= cp:
        raise SourceSchemaError(
            f"{schema}.checkpoints lacks the columns {sorted(needed - cp)} that every version "
            f"of {PACKAGE} creates: is it that package's table? (--source-schema picks another)"
        )
    shallow = "checkpoint_id" not in cp
    blob_cols = columns(conn, schema, "checkpoint_blobs")
    if blob_cols and not shallow and "version" not in blob_cols:
        raise SourceSchemaError(
            f"{schema}.checkpoint_blobs has no version column while {schema}.checkpoints has "
            "checkpoint ids: a mix of PostgresSaver and ShallowPostgresSaver tables cannot be read"
        )
    write_cols = columns(conn, schema, "checkpoint_writes")
    version = None
    if columns(conn, schema, "checkpoint_migrations"):
        row = conn.execute(Q.q(Q.LG_MIGRATION_VERSION, schema=schema)).fetchone()
        version = None if row is None or row[0] is None else int(row[0])
    return Layout(
        schema=schema,
        version=version,
        shallow=shallow,
        blobs=bool(blob_cols),
        writes=bool(write_cols),
        task_path="task_path" in write_cols,
    )


@dataclass(frozen=True, slots=True)
class RawWrite:
    task_id: str
    task_path: str
    idx: int
    channel: str
    type: str | None
    blob: bytes


@dataclass(slots=True)
class SourceCheckpoint:
    """One source checkpoint; ``values`` and ``writes`` once :meth:`ThreadReader.load` ran."""

    ns: str
    cid: str
    parent: str | None
    body: dict[str, Any]
    metadata: dict[str, Any]
    values: dict[str, Any] = field(default_factory=dict)
    writes: list[RawWrite] = field(default_factory=list)

    def checkpoint(self) -> dict[str, Any]:
        """The checkpoint as ``PostgresSaver`` returns it."""
        return {**self.body, "channel_values": self.values}

    def ts(self) -> str | None:
        ts = self.body.get("ts")
        return ts if isinstance(ts, str) else None


def _version_text(version: Any) -> str:
    """A channel version as ``jsonb_each_text`` shows it (the key of its blob)."""
    if isinstance(version, str):
        return version
    if isinstance(version, bool):
        return "true" if version else "false"
    return str(version)


class ThreadReader:
    """Reads one thread at a time from a source, decoding with the target's guard and serde."""

    def __init__(
        self, conn: psycopg.Connection[Any], layout: Layout, serde: Any, guard: ValueGuard
    ) -> None:
        self.conn = conn
        self.layout = layout
        self.serde = serde
        self.guard = guard
        self._values: dict[tuple[str, str, str], tuple[str | None, bytes | None]] = {}
        self._decoded: dict[tuple[str, str, str], Any] = {}
        self._lists: dict[tuple[str, str], tuple[list[bytes], list[Any]]] = {}

    def _q(self, template: str, **fragments: str) -> Any:
        task_path = Q.TASK_PATH if self.layout.task_path else Q.NO_TASK_PATH
        parts = {k: Q.fragment(v) for k, v in fragments.items()}
        return Q.q(template, schema=self.layout.schema, task_path=Q.fragment(task_path), **parts)

    def threads(self) -> list[tuple[str, int]]:
        """``(thread_id, checkpoints)`` of every thread, by thread id."""
        rows = self.conn.execute(self._q(Q.LG_THREADS)).fetchall()
        return [(str(r[0]), int(r[1])) for r in rows]

    def write_counts(self) -> tuple[int, int]:
        """Pending writes in all, and those whose checkpoint does not exist."""
        if not self.layout.writes:
            return 0, 0
        cid = "(c.checkpoint ->> 'id')" if self.layout.shallow else "c.checkpoint_id"
        row = self.conn.execute(self._q(Q.LG_WRITE_COUNTS, checkpoint_id=cid)).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    def checkpoints(self, thread_id: str) -> list[SourceCheckpoint]:
        """A thread's checkpoints (bodies only), by namespace then id (oldest first)."""
        template = Q.LG_CHECKPOINTS_SHALLOW if self.layout.shallow else Q.LG_CHECKPOINTS
        rows = self.conn.execute(self._q(template), (thread_id,)).fetchall()
        return [
            SourceCheckpoint(
                ns=str(ns),
                cid=str(cid),
                parent=None if parent is None else str(parent),
                body=dict(body),
                metadata=dict(meta or {}),
            )
            for ns, cid, parent, body, meta in rows
        ]

    def reset(self) -> None:
        """Forget the values of the previous namespace."""
        self._values.clear()
        self._decoded.clear()
        self._lists.clear()

    def load(self, thread_id: str, chunk: Sequence[SourceCheckpoint]) -> None:
        """Read the values and pending writes of checkpoints of one namespace."""
        self.load_values(thread_id, chunk)
        self.load_writes(thread_id, chunk)

    def load_values(self, thread_id: str, chunk: Sequence[SourceCheckpoint]) -> None:
        """Read and decode the channel values of checkpoints of one namespace."""
        if not chunk:
            return
        ns = chunk[0].ns
        self._fetch_blobs(thread_id, ns, chunk)
        sends = self._fetch_sends(thread_id, chunk)
        for cp in chunk:
            where = f"source thread {thread_id!r}, namespace {ns!r}, checkpoint {cp.cid}"
            inline = cp.body.get("channel_values") or {}
            values: dict[str, Any] = dict(inline) if isinstance(inline, Mapping) else {}
            versions = cp.body.get("channel_versions") or {}
            for channel, version in versions.items():
                key = (ns, channel, "" if self.layout.shallow else _version_text(version))
                found = self._value(key, f"{where}, channel {channel!r}")
                if found is not _ABSENT and found is not _EMPTY:
                    values[channel] = found  # a blob wins over an inline marker
            if cp.parent is not None and int(cp.body.get("v", 4)) < 4 and cp.parent in sends:
                self._migrate_sends(cp, values, sends[cp.parent], where)
            cp.values = values

    def load_writes(self, thread_id: str, chunk: Sequence[SourceCheckpoint]) -> None:
        """Read (not decode) the pending writes of checkpoints of one namespace."""
        if not chunk:
            return
        writes = self._fetch_writes(thread_id, chunk[0].ns, [c.cid for c in chunk])
        for cp in chunk:
            cp.writes = sorted(
                writes.get(cp.cid, []), key=lambda w: writes_sort_key(w.task_path, w.task_id, w.idx)
            )

    # -- values ---------------------------------------------------------------------------

    def _fetch_blobs(self, thread_id: str, ns: str, chunk: Sequence[SourceCheckpoint]) -> None:
        if len(self._values) > VALUE_CACHE:
            self.reset()
        wanted: dict[tuple[str, str, str], None] = {}
        for cp in chunk:
            for channel, version in (cp.body.get("channel_versions") or {}).items():
                key = (ns, channel, "" if self.layout.shallow else _version_text(version))
                if key not in self._values:
                    wanted[key] = None
        if not wanted:
            return
        for key in wanted:
            self._values[key] = (None, None)  # no blob row: the value is inline or absent
        if not self.layout.blobs:
            return
        if self.layout.shallow:
            names = sorted({k[1] for k in wanted})
            rows = self.conn.execute(self._q(Q.LG_BLOBS_SHALLOW), (thread_id, ns, names)).fetchall()
        else:
            keys = list(wanted)
            rows = self.conn.execute(
                self._q(Q.LG_BLOBS),
                ([k[1] for k in keys], [k[2] for k in keys], thread_id, ns),
            ).fetchall()
        for channel, version, type_tag, blob in rows:
            self._values[(ns, str(channel), str(version))] = (
                str(type_tag),
                b"" if blob is None else bytes(blob),
            )

    def _value(self, key: tuple[str, str, str], where: str) -> Any:
        if key in self._decoded:
            return self._decoded[key]
        type_tag, blob = self._values.get(key, (None, None))
        if type_tag is None:
            value: Any = _ABSENT
        elif type_tag == "empty":
            value = _EMPTY
        else:
            assert blob is not None
            value = self._decode(key, type_tag, blob, where)
        self._decoded[key] = value
        return value

    def _decode(self, key: tuple[str, str, str], type_tag: str, blob: bytes, where: str) -> Any:
        """A channel value; a list decoded only past the items it shares (byte for byte)
        with the channel's previous list, whose objects it reuses.

        Each version of a list channel is the whole list in the source (a
        conversation's messages grow by one per step): decoding each in full
        is quadratic, and fresh objects make the checkpointer serialise every
        item again. 3 threads x 200 checkpoints of a chat: 9.6 s -> 4.0 s.
        """
        items = split_array(blob) if type_tag == "msgpack" else None
        if items is None:
            return decode_value(self.serde, self.guard, type_tag, blob, where)
        channel = key[:2]
        seen, values = self._lists.get(channel, ([], []))
        n = 0
        for old, new in zip(seen, items, strict=False):
            if old != new:
                break
            n += 1
        tail = items[n:]
        decoded = (
            decode_value(self.serde, self.guard, type_tag, array_of(tail), where) if tail else []
        )
        value = values[:n] + list(decoded)
        self._lists[channel] = (items, value)
        return value

    def _migrate_sends(
        self,
        cp: SourceCheckpoint,
        values: dict[str, Any],
        sends: list[tuple[str, bytes]],
        where: str,
    ) -> None:
        values[Q.TASKS] = [
            decode_value(self.serde, self.guard, t, b, f"{where}, pending send {n}")
            for n, (t, b) in enumerate(sends)
        ]
        versions = dict(cp.body.get("channel_versions") or {})
        try:
            top = max(versions.values()) if versions else f"{1:032}.{0.0:016}"
        except TypeError:
            top = max(_version_text(v) for v in versions.values())
        versions[Q.TASKS] = top
        cp.body = {**cp.body, "channel_versions": versions}

    # -- writes -----------------------------------------------------------------------------

    def _fetch_writes(self, thread_id: str, ns: str, cids: list[str]) -> dict[str, list[RawWrite]]:
        out: dict[str, list[RawWrite]] = defaultdict(list)
        if not self.layout.writes:
            return out
        rows = self.conn.execute(self._q(Q.LG_WRITES), (thread_id, ns, cids)).fetchall()
        for cid, task_id, task_path, idx, channel, type_tag, blob in rows:
            out[str(cid)].append(
                RawWrite(
                    str(task_id),
                    str(task_path or ""),
                    int(idx),
                    str(channel),
                    None if type_tag is None else str(type_tag),
                    bytes(blob),
                )
            )
        return out

    def _fetch_sends(
        self, thread_id: str, chunk: Sequence[SourceCheckpoint]
    ) -> dict[str, list[tuple[str, bytes]]]:
        parents = sorted(
            {cp.parent for cp in chunk if cp.parent is not None and int(cp.body.get("v", 4)) < 4}
        )
        out: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
        if not parents or not self.layout.writes:
            return out
        rows = self.conn.execute(self._q(Q.LG_SENDS), (thread_id, parents, Q.TASKS)).fetchall()
        for cid, type_tag, blob in rows:
            out[str(cid)].append((str(type_tag), bytes(blob)))
        return out

    def decode_writes(
        self, thread_id: str, cp: SourceCheckpoint, writes: Sequence[RawWrite]
    ) -> list[tuple[str, Any]]:
        """``(channel, value)`` of some of a checkpoint's writes, decoded."""
        where = f"source thread {thread_id!r}, namespace {cp.ns!r}, checkpoint {cp.cid}"
        return [
            (
                w.channel,
                decode_value(
                    self.serde,
                    self.guard,
                    w.type or "null",
                    w.blob,
                    f"{where}, write {w.task_id}/{w.idx}",
                ),
            )
            for w in writes
        ]

    def pending_writes(self, thread_id: str, cp: SourceCheckpoint) -> list[tuple[str, str, Any]]:
        """The checkpoint's pending writes as ``PostgresSaver`` lists them."""
        decoded = self.decode_writes(thread_id, cp, cp.writes)
        return [(w.task_id, ch, v) for w, (ch, v) in zip(cp.writes, decoded, strict=True)]


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_ABSENT = _Marker("<no blob>")
_EMPTY = _Marker("<empty>")


def write_groups(writes: Sequence[RawWrite]) -> Iterator[tuple[str, str, list[RawWrite], bool]]:
    """A checkpoint's writes as the ``put_writes`` calls that store them again.

    Yields ``(task_id, task_path, writes, special)``: per task its regular
    writes in their order (one call: stored at indexes 0, 1 ...), then its
    writes to LangGraph's special channels (error, interrupt, resume,
    scheduled; one call: stored at their fixed negative indexes).
    """
    tasks: dict[tuple[str, str], list[RawWrite]] = {}
    for w in writes:
        tasks.setdefault((w.task_id, w.task_path), []).append(w)
    for (task_id, task_path), ws in tasks.items():
        regular = sorted((w for w in ws if w.channel not in WRITES_IDX_MAP), key=lambda w: w.idx)
        special = sorted((w for w in ws if w.channel in WRITES_IDX_MAP), key=lambda w: w.idx)
        if regular:
            yield task_id, task_path, regular, False
        if special:
            yield task_id, task_path, special, True
