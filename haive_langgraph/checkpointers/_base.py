"""What the sync and async checkpointers share: construction, configuration,
planning, and decoding with what the saver holds in memory (no I/O).

The calls both classes run are built in ``_calls`` (reading, writing),
``_threads``, ``_retention`` and ``_timetravel_ops``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any, Generic, TypeVar

import psycopg
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_serializable_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from haive_langgraph.checkpointers import _ops as ops
from haive_langgraph.checkpointers import _sql as S
from haive_langgraph.checkpointers._args import configurable, text_id
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
from haive_langgraph.checkpointers._values import (
    EMPTY_LINEAGE,
    LRU,
    PayloadMemo,
    PutPlan,
    StoredRefs,
    encrypts,
    plan_put,
    plan_writes,
)
from haive_langgraph.codec import Codec, KeyRing, codec_from_config
from haive_langgraph.codec._base import CONTENT_KEY_BYTES as KEY_BYTES
from haive_langgraph.db._config import PersistenceConfig
from haive_langgraph.db._driver import Op
from haive_langgraph.db._identifiers import validate_identifier
from haive_langgraph.db._limits import check_text_id
from haive_langgraph.db._render import render
from haive_langgraph.db._tenancy import TenantScope, validate_tenant_id
from haive_langgraph.errors import ConfigurationError

# Set to 1/true to serialise every list item at every put (see `strict_serialisation`).
# The variable PersistenceConfig.strict_serialisation is read from.
STRICT_SERIALISATION_ENV = "HAIVE_STRICT_SERIALISATION"

C = TypeVar("C")


class CheckpointerBase(BaseCheckpointSaver[int], Generic[C]):
    """Construction, configuration and pure logic shared by both checkpointer classes
    (``C``: the connections and pools the class accepts)."""

    config: PersistenceConfig
    schema: str
    tenant_id: str
    codec: Codec
    _statements: Statements

    def __init__(
        self,
        conn: str | C | None = None,
        *,
        serde: SerializerProtocol | None = None,
        codec: Codec | None = None,
        compression: bool | None = None,
        keyring: KeyRing | None = None,
        require_encryption: bool | None = None,
        encrypt_metadata: Sequence[str] = (),
        tenant_id: str | None = None,
        schema: str | None = None,
        config: PersistenceConfig | None = None,
        cache_size: int = 1024,
        replicas: Sequence[str] | None = None,
        strict_serialisation: bool | None = None,
    ) -> None:
        """The arguments are described on :class:`PostgresCheckpointer`."""
        super().__init__(serde=serde)
        self._init_base(
            config=config,
            schema=schema,
            tenant_id=tenant_id,
            codec=codec,
            cache_size=cache_size,
            compression=compression,
            keyring=keyring,
            require_encryption=require_encryption,
            encrypt_metadata=encrypt_metadata,
            strict_serialisation=strict_serialisation,
        )
        self._open_source(conn, replicas)

    def _open_source(self, conn: str | C | None, replicas: Sequence[str] | None) -> None:
        """Set up this instance's connection source on ``conn`` (each class its own kind)."""
        raise NotImplementedError

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
            strict_serialisation = self.config.strict_serialisation
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
        table = render(f"{{schema}}.{S.SCOPE_TABLE}", self.schema)
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
        self._handed_out(row.thread_id, row.checkpoint_ns, tup, refs, decoder.made)
        return tup

    def _handed_out(
        self,
        thread_id: str,
        ns: str,
        tup: CheckpointTuple,
        refs: StoredRefs,
        made: dict[int, tuple[list[Any], list[Entry | None]]],
    ) -> None:
        """The caller goes on with these list items (a graph puts them back in its
        next checkpoint): remember their keys, with the entries the copies were made
        with where known (``Decoder.made``, see ``_objects``)."""
        if self._written is None or not refs.lists:
            return
        values = tup.checkpoint["channel_values"]
        for channel, state in refs.lists.items():
            items = values[channel]
            known = made.get(id(items))
            entries = known[1] if known is not None and known[0] is items else None
            if entries is None or None in entries:
                keys = state.keys
                entries = [
                    entries[i]
                    if entries is not None and entries[i] is not None
                    else entry_of(item, keys[i * KEY_BYTES : (i + 1) * KEY_BYTES])
                    for i, item in enumerate(items)
                ]
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
                    self._handed_out(thread_id, ns, tup, head.refs, decoder.made)
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

    def _forget_threads(self, thread_ids: Sequence[str]) -> None:
        # Refs of deleted rows must not seed the next put; dropping all is simplest.
        self._refs.clear()
        for th in thread_ids:
            self._families.discard(th)


Saver = CheckpointerBase[Any]
"""Either checkpointer, as the functions that build its calls see it."""
