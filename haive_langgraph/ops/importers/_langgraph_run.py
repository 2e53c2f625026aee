"""``import_langgraph`` and ``verify_langgraph``: a ``langgraph-checkpoint-postgres``
database (and LangGraph ``PostgresStore`` items) into our checkpointer and store."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from langgraph.checkpoint.serde.base import SerializerProtocol

from haive_langgraph.codec import Codec
from haive_langgraph.codec._guard import guard_for
from haive_langgraph.errors import SourceSchemaError
from haive_langgraph.ops.importers import _langgraph, _langgraph_read, _langgraph_store
from haive_langgraph.ops.importers._report import ImportReport, ProgressCallback, VerifyReport
from haive_langgraph.ops.importers._run import run_import, run_verify

DEFAULT_BATCH = 200


class _LangGraphJob:
    """The source, target instances and plans of one ``langgraph`` import or verification
    (a :class:`~._run.Job`)."""

    def __init__(
        self,
        conn: Any,
        target: str | None,
        *,
        source_schema: str,
        tenant_id: str | None,
        schema: str | None,
        codec: Codec | None,
        serde: SerializerProtocol | None,
        checkpoints: bool,
        store: bool,
        vectors: bool,
        store_index: Mapping[str, Any] | None,
        reembed: bool,
    ) -> None:
        from haive_langgraph.checkpointers import PostgresCheckpointer
        from haive_langgraph.stores import PostgresStore

        self.conn = conn
        self.layout = _langgraph_read.detect_layout(conn, source_schema) if checkpoints else None
        self.store_layout = _langgraph_store.detect_store(conn, source_schema) if store else None
        conn.commit()
        if self.layout is None and self.store_layout is None:
            raise SourceSchemaError(
                f"the source has no {_langgraph_read.PACKAGE} tables (checkpoints) nor LangGraph "
                f"PostgresStore tables (store) in schema {source_schema!r} "
                "(--source-schema picks another)"
            )
        self.saver = None
        self.reader = None
        if self.layout is not None:
            self.saver = PostgresCheckpointer(
                target, tenant_id=tenant_id, schema=schema, codec=codec, serde=serde
            )
            guard = guard_for(self.saver.serde, self.saver.codec)
            self.reader = _langgraph_read.ThreadReader(conn, self.layout, self.saver.serde, guard)
        self.store = None
        self.plan = None
        if self.store_layout is not None:
            self.plan = _langgraph_store.plan_store(
                self.store_layout, store_index, vectors=vectors, reembed=reembed
            )
            self.store = PostgresStore(
                target, index=self.plan.index, tenant_id=tenant_id, schema=schema, codec=codec
            )

    def close(self) -> None:
        for instance in (self.saver, self.store):
            if instance is not None:
                instance.close()

    @property
    def tenant_id(self) -> str:
        return (self.saver or self.store).tenant_id  # type: ignore[union-attr]

    def import_into(
        self, report: ImportReport, *, dry_run: bool, batch_size: int, progress: ProgressCallback
    ) -> None:
        if self.layout is not None and self.reader is not None and self.saver is not None:
            report.notes.append(self.layout.describe())
            if not dry_run:
                self.saver.setup()
            _langgraph.import_checkpoints(
                self.reader,
                self.saver,
                report,
                dry_run=dry_run,
                chunk_size=batch_size,
                progress=progress,
            )
        if self.store_layout is not None and self.store is not None and self.plan is not None:
            if not dry_run:
                self.store.setup()
            _langgraph_store.import_store(
                self.conn,
                self.store_layout,
                self.store,
                self.plan,
                report,
                dry_run=dry_run,
                page_size=batch_size,
                progress=progress,
            )

    def verify(self, result: VerifyReport, *, batch_size: int, progress: ProgressCallback) -> None:
        if self.reader is not None and self.saver is not None:
            _langgraph.verify_checkpoints(
                self.reader, self.saver, result, chunk_size=batch_size, progress=progress
            )
        if self.store_layout is not None and self.store is not None and self.plan is not None:
            _langgraph_store.verify_store(
                self.conn,
                self.store_layout,
                self.store,
                self.plan,
                result,
                page_size=batch_size,
                progress=progress,
            )


def import_langgraph(
    source_dsn: str,
    target: str | None = None,
    *,
    tenant_id: str | None = None,
    schema: str | None = None,
    source_schema: str = "public",
    checkpoints: bool = True,
    store: bool = True,
    vectors: bool = True,
    store_index: Mapping[str, Any] | None = None,
    reembed: bool = False,
    codec: Codec | None = None,
    serde: SerializerProtocol | None = None,
    dry_run: bool = False,
    verify: bool = True,
    batch_size: int = DEFAULT_BATCH,
    progress: ProgressCallback | None = None,
) -> ImportReport:
    """Import a ``langgraph-checkpoint-postgres`` database (and LangGraph store items).

    Checkpoints keep their ids, parents, metadata, values and pending writes
    (``get_state_history`` on the target lists exactly what it listed on the
    source); store items keep their namespaces, keys, values and TTLs, and
    their vectors are copied when the target index has the source's dimensions.

    Args:
        source_dsn: The source database (read only; nothing of it changes).
        target: Our database (``None``: ``HAIVE_DATABASE_URL``, ``DATABASE_URL``,
            then the embedded server).
        tenant_id: Tenant the rows go to (default ``""``).
        schema: Schema of our tables (default ``haive``).
        source_schema: Schema of the source tables (default ``public``).
        checkpoints: Import checkpoints.
        store: Import store items.
        vectors: Copy (or, with ``reembed``, compute) store vectors.
        store_index: The ``index=`` our store will be used with (``dims``,
            ``fields``, ``embed`` ...). Default: the source's dimensions and
            fields, vectors copied.
        reembed: Embed the store items again with ``store_index["embed"]``.
        codec: Codec of our tables (default: from ``HAIVE_*`` settings).
        serde: Serializer of checkpoint values (default LangGraph's).
        dry_run: Read and decode everything, count, write nothing.
        verify: Compare the source with the target afterwards.
        batch_size: Checkpoints (store items) read per query.
        progress: Called with an :class:`ImportProgress` as rows are handled.

    Returns:
        An :class:`ImportReport`; ``report.ok`` is false when the verification
        found a difference (listed in ``report.verification``).

    Raises:
        SourceSchemaError: The source holds no such tables.
        CorruptDataError: A source value is refused or cannot be decoded;
            everything before it was imported, and a run after the fix continues.
        ConfigurationError: Bad options (dimensions that differ without ``reembed``).
    """
    job = partial(
        _LangGraphJob,
        source_schema=source_schema,
        tenant_id=tenant_id,
        schema=schema,
        codec=codec,
        serde=serde,
        checkpoints=checkpoints,
        store=store,
        vectors=vectors,
        store_index=store_index,
        reembed=reembed,
    )
    return run_import("langgraph", source_dsn, target, job, dry_run, verify, batch_size, progress)


def verify_langgraph(
    source_dsn: str,
    target: str | None = None,
    *,
    tenant_id: str | None = None,
    schema: str | None = None,
    source_schema: str = "public",
    checkpoints: bool = True,
    store: bool = True,
    vectors: bool = True,
    store_index: Mapping[str, Any] | None = None,
    reembed: bool = False,
    codec: Codec | None = None,
    serde: SerializerProtocol | None = None,
    batch_size: int = DEFAULT_BATCH,
    progress: ProgressCallback | None = None,
) -> VerifyReport:
    """Compare a ``langgraph-checkpoint-postgres`` source with the target, writing nothing.

    Every checkpoint is compared as ``list()`` returns it on both sides (id,
    parent, checkpoint, metadata, pending writes), every live store item by
    value, and copied vectors by value. Options as :func:`import_langgraph`.
    """
    job = partial(
        _LangGraphJob,
        source_schema=source_schema,
        tenant_id=tenant_id,
        schema=schema,
        codec=codec,
        serde=serde,
        checkpoints=checkpoints,
        store=store,
        vectors=vectors,
        store_index=store_index,
        reembed=reembed,
    )
    return run_verify(source_dsn, target, job, batch_size, progress)
