"""What the sync and async checkpointers share: configuration, planning, decoding."""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import psycopg
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
    PendingWrite,
    get_serializable_checkpoint_metadata,
)
from langgraph.checkpoint.base.id import uuid6

from haive_langgraph.checkpointers import _ops as ops
from haive_langgraph.checkpointers import _sql as S
from haive_langgraph.checkpointers._decoding import Decoder, MissingValueError, Row, decode_row
from haive_langgraph.checkpointers._heads import Head, probe_row, probe_row_of, tuple_of
from haive_langgraph.checkpointers._objects import (
    DecodedObjects,
    Entry,
    WrittenObjects,
    entry_of,
    fresh_copy,
)
from haive_langgraph.checkpointers._ops import RawLineages, Statements
from haive_langgraph.checkpointers._timetravel import (
    BranchInfo,
    CheckpointSummary,
    TimeBound,
    time_bound,
)
from haive_langgraph.checkpointers._values import (
    EMPTY_LINEAGE,
    LRU,
    PayloadMemo,
    PutPlan,
    StoredRefs,
    encode_body,
    encrypts,
    is_inline,
    metadata_json,
    payload_of,
    plan_put,
    plan_writes,
    seal_metadata,
)
from haive_langgraph.codec import Codec, KeyRing, codec_from_config
from haive_langgraph.codec._base import CONTENT_KEY_BYTES as KEY_BYTES
from haive_langgraph.db import Op, PersistenceConfig, validate_identifier
from haive_langgraph.db._limits import check_count, check_depth, check_text_id
from haive_langgraph.db._tenancy import TenantScope, has_lone_surrogate, validate_tenant_id
from haive_langgraph.errors import (
    ConfigurationError,
    CorruptDataError,
    HaiveError,
    NotFoundError,
    SerializationError,
)

PRUNE_STRATEGIES = ("keep_latest", "delete")
# Set to 1/true to serialise every list item at every put (see `strict_serialisation`).
STRICT_SERIALISATION_ENV = "HAIVE_STRICT_SERIALISATION"

# A checkpoint id the time-travel API reads as "the thread's latest checkpoint"
# (as a config without checkpoint_id; LangGraph's ids are uuid6, never this).
LATEST = "latest"


@dataclass(frozen=True, slots=True)
class ThreadInfo:
    """A thread in the registry.

    Attributes:
        thread_id: The thread.
        created_at: When its first checkpoint (or copy) was written.
        updated_at: When it was last written.
        checkpoint_count: Checkpoints it holds, across namespaces.
        metadata: Merged metadata of its root checkpoints (keys such as
            ``user_id`` given in ``config["metadata"]`` or ``configurable``),
            without per-checkpoint keys (``step``, ``source``, ``parents`` ...).
        family_id: The thread whose stored values it shares (itself, unless
            it was copied from another thread).
    """

    thread_id: str
    created_at: datetime
    updated_at: datetime
    checkpoint_count: int
    metadata: dict[str, Any]
    family_id: str


@dataclass(frozen=True, slots=True)
class ThreadPage:
    """One page of :meth:`list_threads`; pass ``next_cursor`` to get the next."""

    threads: list[ThreadInfo]
    next_cursor: str | None

    def __iter__(self) -> Iterator[ThreadInfo]:
        return iter(self.threads)

    def __len__(self) -> int:
        return len(self.threads)


def thread_info(row: Sequence[Any]) -> ThreadInfo:
    thread_id, family_id, created_at, updated_at, count, metadata = row
    return ThreadInfo(
        thread_id=str(thread_id),
        created_at=created_at,
        updated_at=updated_at,
        checkpoint_count=int(count),
        metadata=dict(metadata or {}),
        family_id=str(family_id),
    )


def thread_page(rows: Sequence[Sequence[Any]], limit: int | None) -> ThreadPage:
    """A :meth:`list_threads` page: a full page has a cursor to the next one."""
    threads = [thread_info(r) for r in rows]
    full = bool(threads) and len(threads) == limit
    return ThreadPage(threads, encode_cursor(threads[-1]) if full else None)


def encode_cursor(info: ThreadInfo) -> str:
    return f"{info.updated_at.isoformat()}|{info.thread_id}"


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        ts, _, thread_id = cursor.partition("|")
        return datetime.fromisoformat(ts), thread_id
    except ValueError as exc:
        raise ConfigurationError(f"invalid list_threads cursor {cursor!r}") from exc


def text_id(value: Any, what: str) -> str:
    """A thread id, namespace, tag or task id as text; what PostgreSQL cannot store is refused."""
    text = value if isinstance(value, str) else str(value)
    return check_text_id(text, what)  # the shared rule (db._limits)


def conf_of(config: object) -> Mapping[str, Any] | None:
    """``config["configurable"]``, or ``None`` if ``config`` has none."""
    conf = config.get("configurable") if isinstance(config, Mapping) else None
    return conf if isinstance(conf, Mapping) else None


def configurable(config: object) -> Mapping[str, Any]:
    """``config["configurable"]`` naming a thread, or an error saying so.

    LangGraph's ``InMemorySaver`` answers a config without them with a
    ``KeyError`` (``'configurable'``, ``'thread_id'``); ours names what is needed.
    """
    conf = conf_of(config)
    if conf is None or conf.get("thread_id") is None:
        missing = '"configurable"' if conf is None else 'configurable "thread_id"'
        raise ConfigurationError(
            'the config must name a thread, {"configurable": {"thread_id": ...}}; '
            f"it has no {missing}"
        )
    return conf


def checkpoint_id_in(conf: Mapping[str, Any]) -> str | None:
    """The checkpoint id a ``configurable`` names, checked as an id (``None`` if none).

    As LangGraph's ``get_checkpoint_id``: ``checkpoint_id``, else the legacy ``thread_ts``.
    """
    cid = conf.get("checkpoint_id", conf.get("thread_ts"))
    return None if cid is None else text_id(cid, "checkpoint_id")


def json_filter(value: Any, what: str) -> dict[str, Any] | None:
    """A metadata filter that PostgreSQL JSON can hold, or an error naming the bad part."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigurationError(f"{what} must be a dict, got {type(value).__name__}")
    check_depth(value, what, error=ConfigurationError)

    def walk(item: Any, path: str) -> None:
        if isinstance(item, str):
            if "\x00" in item or has_lone_surrogate(item):
                raise ConfigurationError(
                    f"{what} {path} holds {item[:40]!r}, with a character PostgreSQL JSON "
                    "cannot store (NUL or a lone surrogate)"
                )
        elif isinstance(item, float):
            if item != item or item in (float("inf"), float("-inf")):
                raise ConfigurationError(f"{what} {path} is {item!r}: JSON has no such number")
        elif isinstance(item, dict):
            for k, v in item.items():
                if not isinstance(k, str):
                    raise ConfigurationError(f"{what} {path} has a non-string key {k!r}")
                walk(k, f"{path} key {k[:40]!r}")
                walk(v, f"{path}[{k[:40]!r}]")
        elif isinstance(item, list | tuple):
            for i, v in enumerate(item):
                walk(v, f"{path}[{i}]")
        elif item is not None and not isinstance(item, bool | int):
            raise ConfigurationError(
                f"{what} {path} holds a {type(item).__name__}; filters compare JSON values"
            )

    walk(value, "")
    return value


class CheckpointerBase(BaseCheckpointSaver[int]):
    """Configuration and pure logic shared by both checkpointer classes."""

    config: PersistenceConfig
    schema: str
    tenant_id: str
    codec: Codec
    _statements: Statements

    def _init_base(
        self,
        *,
        config: PersistenceConfig | None,
        schema: str | None,
        tenant_id: str | None,
        codec: Codec | None,
        cache_size: int,
        compression: bool | None = None,
        keyring: KeyRing | None = None,
        require_encryption: bool | None = None,
        encrypt_metadata: Sequence[str] = (),
        cache_bytes: int = 32 * 1024 * 1024,
        strict_serialisation: bool | None = None,
    ) -> None:
        self.config = config or PersistenceConfig()
        self.schema = validate_identifier(
            self.config.schema_name if schema is None else schema, what="schema name"
        )
        self.tenant_id = validate_tenant_id(
            self.config.tenant_id if tenant_id is None else tenant_id, allow_default=True
        )
        if codec is not None and (
            compression is not None or keyring is not None or require_encryption is not None
        ):
            raise ConfigurationError(
                "pass either codec= or the compression=/keyring=/require_encryption= options, "
                "not both"
            )
        self.codec = codec or codec_from_config(
            compression=compression, keyring=keyring, require_encryption=require_encryption
        )
        self.encrypt_metadata = frozenset(encrypt_metadata)
        if self.encrypt_metadata and not encrypts(self.codec):
            raise ConfigurationError(
                "encrypt_metadata needs an encrypting codec: pass keyring= or set "
                "HAIVE_ENCRYPTION_KEYS"
            )
        self._statements = Statements(self.schema)
        # What we stored or read last, so that the next checkpoint of a thread
        # writes only what changed; and which family each thread belongs to.
        self._refs: LRU[tuple[str, str, str], StoredRefs] = LRU(cache_size)
        self._families: LRU[str, str] = LRU(cache_size * 4)
        self._memo = PayloadMemo(cache_bytes)
        # Longest length seen of each lineage: appending to a shorter prefix
        # of it (a fork) must start a new lineage.
        self._tips: LRU[tuple[str, int], int] = LRU(cache_size * 4)
        # The last checkpoint stored or read per (thread, namespace): the next
        # read of that thread skips the data of list items we already hold,
        # or, if it is still the latest, reads nothing but a probe (`_heads`).
        self._last: LRU[tuple[str, str], StoredRefs] = LRU(cache_size)
        self._heads: LRU[tuple[str, str], Head] = LRU(cache_size)
        # List items already serialised (or handed out), by identity, so that
        # a put serialises only what is new or edited; and decoded values, so
        # that a read copies instead of decoding (see `_objects`).
        if strict_serialisation is None:
            strict_serialisation = os.environ.get(STRICT_SERIALISATION_ENV, "").lower() in (
                "1",
                "true",
                "yes",
                "on",
            )
        self.strict_serialisation = strict_serialisation
        self._written = None if strict_serialisation else WrittenObjects(cache_size * 16)
        self._objects = DecodedObjects(cache_size * 16)
        self._frames: LRU[tuple[str, bytes], bytes] = LRU(cache_size * 2)
        keyring = getattr(self.codec, "keyring", None)
        self._keyring = keyring if isinstance(keyring, KeyRing) else None
        if self._keyring is not None:
            self._keyring.add_forget_listener(self._forget_tenant)

    def _drop_if_shredded(self) -> None:
        """Drop what memory holds of this saver's tenant once its keyring knows the
        tenant was crypto-shredded, also when another keyring did it (no listener
        was told): the values held are then read, and refused, as the rows are."""
        if self._keyring is not None and self._keyring.is_tenant_destroyed(self.tenant_id):
            self._forget_tenant(self.tenant_id)

    def _forget_tenant(self, tenant_id: str) -> None:
        """Drop every value held in memory once this saver's tenant is crypto-shredded."""
        if tenant_id == self.tenant_id:
            self._heads.clear()
            self._frames.clear()
            self._memo.clear()
            self._objects.clear()
            if self._written is not None:
                self._written.clear()

    # -- versions --------------------------------------------------------------

    def get_next_version(self, current: Any, channel: None) -> Any:
        """Integer versions: stored values are keyed by content, not by version.

        A thread that already has string versions (from another saver) keeps
        that format.
        """
        if current is None:
            return 1
        if isinstance(current, int):
            return current + 1
        if isinstance(current, float):
            return int(current) + 1
        head = str(current).split(".")[0]
        return f"{int(head) + 1:032}.{random.random():016}"

    # -- planning ---------------------------------------------------------------

    def _scope(self) -> TenantScope:
        """This saver's tenant, bound for row-level security where it applies."""
        table = S.q(f"{{schema}}.{S.SCOPE_TABLE}", self.schema).as_string(None)
        return TenantScope(table, self.tenant_id)

    def _family_of(self, thread_id: str) -> str:
        return self._families.get(thread_id) or thread_id

    def _parent_refs(self, config: RunnableConfig) -> StoredRefs | None:
        conf = config["configurable"]
        parent = conf.get("checkpoint_id")
        if not parent:
            return None
        key = (str(conf["thread_id"]), str(conf.get("checkpoint_ns", "")), str(parent))
        return self._refs.get(key)

    @staticmethod
    def _needs_parent(
        config: RunnableConfig, checkpoint: Checkpoint, new_versions: ChannelVersions
    ) -> bool:
        """Whether a channel can only be resolved from the parent's stored value."""
        if not config["configurable"].get("checkpoint_id"):
            return False
        values = checkpoint["channel_values"]
        return any(
            ch not in new_versions and ch not in values for ch in checkpoint["channel_versions"]
        )

    def _plan_put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
        parent: StoredRefs | None,
        family: str,
        *,
        fresh_lists: bool = False,
    ) -> PutPlan:
        text_id(checkpoint["id"], "checkpoint id")
        self._drop_if_shredded()
        return plan_put(
            serde=self.serde,
            codec=self.codec,
            tenant=self.tenant_id,
            family=family,
            lock_class=S.LOCK_CLASS_FAMILY,
            config=config,
            checkpoint=checkpoint,
            metadata=get_serializable_checkpoint_metadata(config, metadata),
            new_versions=new_versions,
            parent=parent,
            memo=self._memo,
            tips=self._tips,
            fresh_lists=fresh_lists,
            encrypt_metadata=self.encrypt_metadata,
            written=self._written,
            frames=self._frames,
        )

    @staticmethod
    def _put_thread(config: RunnableConfig, metadata: CheckpointMetadata) -> str:
        """The thread a ``put`` writes to; its config and metadata checked before anything else.

        LangGraph's ``get_checkpoint_metadata`` strips NUL characters from the
        metadata's strings (which jsonb cannot store); they are refused instead,
        as a NUL anywhere else in metadata is, so that what a put accepts a read
        returns. (Values LangGraph copies from ``config["metadata"]`` and
        ``configurable`` are still stripped, as by its own savers.)
        """
        conf = configurable(config)
        thread_id = text_id(conf["thread_id"], "thread_id")
        text_id(conf.get("checkpoint_ns", ""), "checkpoint_ns")
        checkpoint_id_in(conf)
        if not isinstance(metadata, Mapping):
            raise SerializationError(
                "checkpoint metadata must be a dict (LangGraph's CheckpointMetadata), "
                f"got {type(metadata).__name__}"
            )
        for value in metadata.values():
            if isinstance(value, str) and "\x00" in value:
                metadata_json(metadata)  # raises the documented error, naming the key
        return thread_id

    def _plan_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str,
    ) -> tuple[dict[str, Any], bool]:
        conf = configurable(config)
        thread_id = text_id(conf["thread_id"], "thread_id")
        text_id(conf.get("checkpoint_ns", ""), "checkpoint_ns")
        if conf.get("checkpoint_id") is None:
            raise ConfigurationError(
                "put_writes needs the config of a stored checkpoint (the one put returned): "
                'it has no configurable "checkpoint_id"'
            )
        text_id(conf["checkpoint_id"], "checkpoint_id")
        task_id = text_id(task_id, "task_id")
        task_path = text_id(task_path, "task_path")
        for channel, _ in writes:
            check_text_id(channel, "write channel")  # a str: it is sent as it is
        self._drop_if_shredded()
        return plan_writes(
            serde=self.serde,
            codec=self.codec,
            tenant=self.tenant_id,
            family=self._family_of(thread_id),
            lock_class=S.LOCK_CLASS_FAMILY,
            config=config,
            writes=writes,
            task_id=task_id,
            task_path=task_path,
            memo=self._memo,
            written=self._written,
            frames=self._frames,
        )

    def _stored(
        self, config: RunnableConfig, checkpoint: Checkpoint, plan: PutPlan
    ) -> RunnableConfig:
        conf = config["configurable"]
        thread_id = str(conf["thread_id"])
        ns = str(conf.get("checkpoint_ns", ""))
        self._remember(thread_id, ns, checkpoint["id"], plan.refs)
        parent = conf.get("checkpoint_id")
        self._heads.put(
            (thread_id, ns),
            Head(
                thread_id=thread_id,
                ns=ns,
                checkpoint_id=checkpoint["id"],
                parent_id=str(parent) if parent else None,
                metadata=plan.metadata,
                refs=plan.refs,
                row=probe_row(plan.params),
            ),
        )
        return {
            "configurable": {
                "thread_id": conf["thread_id"],
                "checkpoint_ns": ns,
                "checkpoint_id": checkpoint["id"],
            }
        }

    @staticmethod
    def _is_conflict(exc: psycopg.Error) -> bool:
        """Rows the plan relied on changed (or a lineage id collided): replan."""
        if exc.sqlstate == S.CONCURRENT_UPDATE_SQLSTATE:
            return True
        return isinstance(exc, psycopg.errors.UniqueViolation) and (
            exc.diag.table_name in ("lineages", "lineage_items")
        )

    # -- decoding ----------------------------------------------------------------

    def _decoder(self, *, share: bool) -> Decoder:
        return Decoder(
            self.serde,
            self.codec,
            self.tenant_id,
            share=share,
            memo=self._memo,
            sealed=self.encrypt_metadata,
            objects=self._objects,
        )

    def _remember(self, thread_id: str, ns: str, checkpoint_id: str, refs: StoredRefs) -> None:
        self._refs.put((thread_id, ns, checkpoint_id), refs)
        self._last.put((thread_id, ns), refs)
        self._families.put(thread_id, refs.family)
        for state in refs.lists.values():
            key = (refs.family, state.lineage)
            if state.length > (self._tips.get(key) or 0):
                self._tips.put(key, state.length)

    def _known(self, thread_id: str, ns: str) -> tuple[str, list[tuple[int, int]]] | None:
        """List items of this thread whose payloads we hold (see ``get_op``)."""
        last = self._last.get((thread_id, ns))
        if last is None or not last.lists:
            return None
        return last.family, [
            (s.lineage, s.length) for s in last.lists.values() if s.lineage != EMPTY_LINEAGE
        ]

    def _load_row(self, row: Row, *, hand_out: bool = True) -> CheckpointTuple:
        """Decode a row; raises ``MissingValueError`` if a known item left the memo.

        ``hand_out=False``: the tuple is only read for its references (a put's
        parent), not returned to a caller who goes on with it.
        """
        decoder = self._decoder(share=False)
        tup, refs = decode_row(row, decoder)
        self._remember(row.thread_id, row.checkpoint_ns, row.checkpoint_id, refs)
        if not hand_out:
            return tup
        self._heads.put(
            (row.thread_id, row.checkpoint_ns),
            Head(
                thread_id=row.thread_id,
                ns=row.checkpoint_ns,
                checkpoint_id=row.checkpoint_id,
                parent_id=row.parent_checkpoint_id,
                metadata=fresh_copy(tup.metadata),
                refs=refs,
                row=probe_row_of(row),
            ),
        )
        self._handed_out(row.thread_id, row.checkpoint_ns, tup, refs, decoder.shapes)
        return tup

    def _handed_out(
        self,
        thread_id: str,
        ns: str,
        tup: CheckpointTuple,
        refs: StoredRefs,
        shapes: dict[int, tuple[list[Any], tuple[int, ...] | None]],
    ) -> None:
        """The caller goes on with these list items (a graph puts them back in its
        next checkpoint): remember their keys, with the shapes the copies were made
        with where known (see ``_objects``)."""
        if self._written is None or not refs.lists:
            return
        values = tup.checkpoint["channel_values"]
        for channel, state in refs.lists.items():
            keys = state.keys
            entries: list[Entry | None] = []
            for i, item in enumerate(values[channel]):
                key = keys[i * KEY_BYTES : (i + 1) * KEY_BYTES]
                made = shapes.get(id(item))
                entries.append((made[0], key, made[1]) if made else entry_of(item, key))
            self._written.replace((thread_id, ns, channel), entries)

    def _get_tuple_op(self, thread_id: str, ns: str, cid: str | None) -> Op[CheckpointTuple | None]:
        """``get_tuple``, once for both drivers: the latest checkpoint from memory when
        the probe finds it unchanged, else the row (without the data of list items
        already held)."""
        self._drop_if_shredded()
        head = self._heads.get((thread_id, ns)) if cid is None else None
        if head is not None:
            fresh = yield from ops.probe_op(
                self._statements, self.tenant_id, thread_id, ns, head.row
            )
            if fresh is None:
                return None
            if fresh:
                decoder = self._decoder(share=False)
                try:
                    tup = tuple_of(head, decoder)
                except MissingValueError:
                    pass  # a payload left the memo meanwhile: read the row
                else:
                    self._handed_out(thread_id, ns, tup, head.refs, decoder.shapes)
                    return tup
        known = self._known(thread_id, ns)
        while True:
            row = yield from ops.get_op(self._statements, self.tenant_id, thread_id, ns, cid, known)
            if row is None:
                return None
            try:
                return self._load_row(row)
            except MissingValueError:
                if known is None:
                    raise
                known = None  # a payload left the memo meanwhile: read it all

    def _load_rows(self, rows: list[Row], raw: RawLineages) -> Iterator[CheckpointTuple]:
        decoder = self._decoder(share=True)
        lineages: dict[tuple[str, int], tuple[list[bytes], list[Any]]] = {}
        for (family, lineage), (keys, datas) in raw.items():
            where = f"list items of lineage {lineage} (thread family {family!r})"
            items = [
                decoder.value(family, k, d, f"{where}, item {j}")
                for j, (k, d) in enumerate(zip(keys, datas, strict=True))
            ]
            lineages[(family, lineage)] = (keys, items)
        for row in rows:
            tup, refs = decode_row(row, decoder, lineages)
            for state in refs.lists.values():
                key = (refs.family, state.lineage)
                if state.length > (self._tips.get(key) or 0):
                    self._tips.put(key, state.length)
            yield tup

    # -- arguments ---------------------------------------------------------------

    @staticmethod
    def _target(config: RunnableConfig) -> tuple[str, str, str | None]:
        conf = configurable(config)
        return (
            text_id(conf["thread_id"], "thread_id"),
            text_id(conf.get("checkpoint_ns", ""), "checkpoint_ns"),
            checkpoint_id_in(conf),
        )

    @staticmethod
    def _list_args(
        config: RunnableConfig | None,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> dict[str, Any]:
        conf = conf_of(config) or {}
        thread_id = conf.get("thread_id")
        ns = conf.get("checkpoint_ns")
        cid = conf.get("checkpoint_id")
        before_id = None
        if before:
            before_conf = conf_of(before)
            if before_conf is None:
                raise ConfigurationError(
                    'before must be a checkpoint\'s config, {"configurable": {"checkpoint_id": '
                    '...}}; it has no "configurable"'
                )
            before_id = checkpoint_id_in(before_conf)
        return {
            "thread_id": text_id(thread_id, "thread_id") if thread_id is not None else None,
            "checkpoint_ns": text_id(ns, "checkpoint_ns") if ns is not None else None,
            "checkpoint_id": text_id(cid, "checkpoint_id") if cid is not None else None,
            "filter": json_filter(filter, "filter"),
            "before_id": before_id,
            "limit": None if limit is None else check_count("limit", limit),
        }

    @staticmethod
    def _prune_args(thread_ids: Sequence[str], strategy: str) -> list[str]:
        if isinstance(thread_ids, str):
            raise TypeError("thread_ids must be a sequence of thread IDs, not a str")
        if strategy not in PRUNE_STRATEGIES:
            raise ValueError(
                f"unknown prune strategy {strategy!r}; use one of {', '.join(PRUNE_STRATEGIES)}"
            )
        return [text_id(t, "thread_id") for t in thread_ids]

    def _forget_threads(self, thread_ids: Sequence[str]) -> None:
        # Refs of deleted rows must not seed the next put; dropping all is simplest.
        self._refs.clear()
        for th in thread_ids:
            self._families.discard(th)

    # -- delta history -------------------------------------------------------------

    def _delta_history(
        self, rows: list[tuple[Any, ...]], channels: Sequence[str], raw: RawLineages | None
    ) -> dict[str, DeltaChannelHistory]:
        """Assemble ``get_delta_channel_history`` from the chain rows (oldest first)."""
        decoder = self._decoder(share=True)
        writes: dict[str, list[PendingWrite]] = {ch: [] for ch in channels}
        seeds: dict[str, Any] = {}
        for (
            _depth,
            need,
            family,
            inline,
            v_channels,
            v_keys,
            v_data,
            l_channels,
            l_lineages,
            l_lengths,
            w_task_ids,
            w_channels,
            w_is_lists,
            w_counts,
            w_keys,
            w_data,
        ) in rows:
            need_set = set(need or ())
            where = f"delta history of channel(s) {sorted(need_set)}"
            # Seeds: the nearest stored value wins, and rows come oldest first.
            for ch, val in (inline or {}).items():
                if ch in need_set:
                    seeds[ch] = val
            for ch, key, data in zip(v_channels or [], v_keys or [], v_data or [], strict=True):
                seeds[ch] = decoder.value(family, bytes(key), data, f"{where}: seed of {ch!r}")
            for ch, lineage, length in zip(
                l_channels or [], l_lineages or [], l_lengths or [], strict=True
            ):
                if lineage == EMPTY_LINEAGE:
                    seeds[ch] = []
                    continue
                assert raw is not None
                keys, datas = raw.get((family, lineage), ([], []))
                if len(keys) < length:
                    raise CorruptDataError(f"{where}: list seed of {ch!r} is missing items")
                seeds[ch] = [
                    decoder.value(family, k, d, f"{where}: seed of {ch!r}")
                    for k, d in zip(keys[:length], datas[:length], strict=True)
                ]
            pos = 0
            keys_w = w_keys or []
            data_w = w_data or []
            for task_id, ch, is_list, count in zip(
                w_task_ids or [], w_channels or [], w_is_lists or [], w_counts or [], strict=True
            ):
                vals = [
                    decoder.value(family, bytes(k), d, f"{where}: write of task {task_id}")
                    for k, d in zip(
                        keys_w[pos : pos + count], data_w[pos : pos + count], strict=True
                    )
                ]
                pos += count
                writes[ch].append((task_id, ch, vals if is_list else vals[0]))
        result: dict[str, DeltaChannelHistory] = {}
        for ch in channels:
            entry: DeltaChannelHistory = {"writes": writes[ch]}
            if ch in seeds:
                entry["seed"] = seeds[ch]
            result[ch] = entry
        return result


__all__ = [
    "CheckpointerBase",
    "Mapping",
    "ThreadInfo",
    "ThreadPage",
]


class TimeTravelMixin(CheckpointerBase):
    """Argument checks and result building for the time-travel API (no I/O)."""

    @staticmethod
    def _checkpoint_of(config: RunnableConfig, what: str) -> tuple[str, str, str]:
        conf = config.get("configurable", {})
        cid = conf.get("checkpoint_id")
        if "thread_id" not in conf or not cid:
            raise ConfigurationError(
                f"{what} needs a config naming a checkpoint: "
                '{"configurable": {"thread_id": ..., "checkpoint_id": ...}}'
            )
        return (
            text_id(conf["thread_id"], "thread_id"),
            text_id(conf.get("checkpoint_ns", ""), "checkpoint_ns"),
            text_id(cid, "checkpoint_id"),
        )

    @staticmethod
    def _checkpoint_or_latest(
        config: RunnableConfig, what: str
    ) -> tuple[RunnableConfig, str, str | None]:
        """The config ``get_tuple`` reads for ``config``: the checkpoint it names, or
        the thread's latest when it names none (no ``checkpoint_id``, or ``"latest"``).

        Returns:
            That config, the thread id and the checkpoint id (``None`` for the latest).
        """
        conf = config.get("configurable", {}) if isinstance(config, Mapping) else {}
        if "thread_id" not in conf:
            raise ConfigurationError(
                f"{what} needs a config naming a thread: "
                '{"configurable": {"thread_id": ...}} for its latest checkpoint, with '
                '"checkpoint_id": ... for another one'
            )
        th = text_id(conf["thread_id"], "thread_id")
        ns = text_id(conf.get("checkpoint_ns", ""), "checkpoint_ns")
        raw = conf.get("checkpoint_id")
        cid = None if raw in (None, "", LATEST) else text_id(raw, "checkpoint_id")
        target: dict[str, Any] = {"thread_id": th, "checkpoint_ns": ns}
        if cid is not None:
            target["checkpoint_id"] = cid
        return {"configurable": target}, th, cid

    @staticmethod
    def _not_found(thread_id: str, checkpoint_id: str | None) -> NotFoundError:
        if checkpoint_id is None:
            return NotFoundError(f"thread {thread_id!r} has no checkpoints")
        return NotFoundError(f"checkpoint {checkpoint_id} not found in thread {thread_id!r}")

    @staticmethod
    def _tags(tags: Sequence[str]) -> list[str]:
        if not tags or not all(isinstance(t, str) and t.strip() for t in tags):
            raise ConfigurationError("tags must be one or more non-empty strings")
        return sorted({text_id(t.strip(), "tag") for t in tags})

    def _state_filters(
        self, state_matching: Mapping[str, Any] | None
    ) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
        """Split ``state_matching`` into inline-JSON and content-key conditions."""
        inline: dict[str, Any] = {}
        keyed: list[tuple[str, bytes]] = []
        for channel, value in (state_matching or {}).items():
            if isinstance(value, list):
                raise ConfigurationError(
                    f"state_matching compares single values; channel {channel!r} is given a "
                    "list (match lists by their messages with diff or get_tuple instead)"
                )
            if not encrypts(self.codec) and is_inline(value):
                inline[channel] = value
            else:
                type_tag, data = self.serde.dumps_typed(value)
                keyed.append(
                    (channel, self.codec.content_key(payload_of(type_tag, data), self.tenant_id))
                )
        return inline, keyed

    def _find_args(
        self,
        tags: Sequence[str] | None,
        metadata: dict[str, Any] | None,
        before: TimeBound,
        after: TimeBound,
        state_matching: Mapping[str, Any] | None,
        limit: int | None,
    ) -> dict[str, Any]:
        """Keyword arguments of ``find_op`` from ``find_checkpoints``'s."""
        inline, keyed = self._state_filters(state_matching)
        return {
            "tags": self._tags(tags) if tags else [],
            "metadata": json_filter(metadata, "metadata filter"),
            "inline": inline,
            "keyed": keyed,
            "before": time_bound(before, "before"),
            "after": time_bound(after, "after"),
            "limit": None if limit is None else check_count("limit", limit),
        }

    @staticmethod
    def _summaries(thread_id: str, rows: list[tuple[Any, ...]]) -> list[CheckpointSummary]:
        out = []
        for cid, ns, parent, created_at, metadata, tags in rows:
            conf = {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": cid}
            parent_config: RunnableConfig | None = (
                {"configurable": {**conf, "checkpoint_id": parent}} if parent else None
            )
            out.append(
                CheckpointSummary(
                    config={"configurable": conf},
                    created_at=created_at,
                    metadata=dict(metadata or {}),
                    tags=list(tags or []),
                    parent_config=parent_config,
                )
            )
        return out

    @staticmethod
    def _branch_args(
        config: RunnableConfig, name: str, thread_id: str | None
    ) -> tuple[str, str | None, str]:
        if not isinstance(name, str) or not name.strip():
            raise ConfigurationError("a branch needs a non-empty name")
        text_id(name, "branch name")
        conf = config.get("configurable", {})
        if "thread_id" not in conf:
            raise ConfigurationError("create_branch needs a config with a thread_id")
        if conf.get("checkpoint_ns"):
            raise ConfigurationError(
                "branches start from a root-graph checkpoint, not from a subgraph's "
                f"(checkpoint_ns {conf['checkpoint_ns']!r})"
            )
        dst = text_id(thread_id, "thread_id") if thread_id else f"branch-{uuid.uuid4()}"
        point = conf.get("checkpoint_id")
        return (
            text_id(conf["thread_id"], "thread_id"),
            None if point in (None, "", LATEST) else text_id(point, "checkpoint_id"),
            dst,
        )

    @staticmethod
    def _branch_error(reason: str, thread_id: str, cid: str, name: str, dst: str) -> HaiveError:
        if reason == "missing":
            return NotFoundError(f"checkpoint {cid} not found in thread {thread_id!r}")
        if reason == "name":
            return ConfigurationError(
                f"branch name {name!r} is already used in thread {thread_id!r}"
            )
        return ConfigurationError(f"thread {dst!r} already exists; pick another thread_id")

    @staticmethod
    def _branches(thread_id: str, rows: list[tuple[Any, ...]]) -> list[BranchInfo]:
        return [
            BranchInfo(
                name=str(name),
                thread_id=str(tid),
                branch_point={
                    "configurable": {
                        "thread_id": thread_id,
                        "checkpoint_ns": "",
                        "checkpoint_id": point,
                    }
                },
                created_at=created,
                updated_at=updated,
                checkpoint_count=int(count),
                metadata=dict(meta or {}),
            )
            for tid, name, point, created, updated, count, meta in rows
        ]

    def _restore_args(self, source: CheckpointTuple) -> tuple[str, bytes, dict[str, Any]]:
        conf = source.config["configurable"]
        th, ns, cid = (
            str(conf["thread_id"]),
            str(conf.get("checkpoint_ns", "")),
            conf["checkpoint_id"],
        )
        # The new checkpoint takes the source row's family (get_tuple just cached it).
        refs = self._refs.get((th, ns, cid))
        family = refs.family if refs is not None else self._family_of(th)
        new_id = str(uuid6(clock_seq=-2))
        checkpoint = dict(source.checkpoint)
        checkpoint["id"] = new_id
        checkpoint["ts"] = datetime.now(UTC).isoformat()
        # The new row takes the source row's references, so its body takes
        # their digest.
        body = encode_body(
            self.serde, self.codec, self.tenant_id, family, ns, cast(Checkpoint, checkpoint), refs
        )
        meta = {k: v for k, v in source.metadata.items() if k not in ("run_id", "writes")}
        meta.update(source="fork", restored_from=cid)
        meta = metadata_json(meta)
        if self.encrypt_metadata:
            meta = seal_metadata(
                meta, self.encrypt_metadata, self.codec, self.tenant_id, family, ns, new_id
            )
        return new_id, body, meta
