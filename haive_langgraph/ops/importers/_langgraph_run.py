"""``import_langgraph`` and ``verify_langgraph``: a ``langgraph-checkpoint-postgres``
database (and LangGraph ``PostgresStore`` items) into our checkpointer and store."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from langgraph.checkpoint.serde.base import SerializerProtocol

from haive_langgraph.codec import Codec
from haive_langgraph.codec._guard import guard_for
from haive_langgraph.errors import SourceSchemaError
from haive_langgraph.ops.importers import _langgraph, _langgraph_read, _langgraph_store
from haive_langgraph.ops.importers._report import (
    ImportReport,
    ProgressCallback,
    VerifyReport,
    no_progress,
)
from haive_langgraph.ops.importers._source import check_batch, open_source, source_name
from haive_langgraph.ops.importers._target import import_dsn

DEFAULT_BATCH = 200


class _LangGraphRun:
    """The source, target instances and plans of one ``langgraph`` import or verification."""

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

    def verify(self, conn: Any, batch_size: int, progress: ProgressCallback) -> VerifyReport:
        result = VerifyReport()
        started = time.perf_counter()
        if self.reader is not None and self.saver is not None:
            _langgraph.verify_checkpoints(
                self.reader, self.saver, result, chunk_size=batch_size, progress=progress
            )
        if self.store_layout is not None and self.store is not None and self.plan is not None:
            _langgraph_store.verify_store(
                conn,
                self.store_layout,
                self.store,
                self.plan,
                result,
                page_size=batch_size,
                progress=progress,
            )
        result.seconds = time.perf_counter() - started
        return result


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
    batch = check_batch(batch_size)
    progress = progress or no_progress
    target = import_dsn(target)
    report = ImportReport("langgraph", source_name(source_dsn), tenant_id or "", dry_run=dry_run)
    started = time.perf_counter()
    with open_source(source_dsn) as conn:
        run = _LangGraphRun(
            conn,
            target,
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
        try:
            report.tenant_id = (run.saver or run.store).tenant_id  # type: ignore[union-attr]
            if run.layout is not None and run.reader is not None and run.saver is not None:
                report.notes.append(run.layout.describe())
                if not dry_run:
                    run.saver.setup()
                _langgraph.import_checkpoints(
                    run.reader,
                    run.saver,
                    report,
                    dry_run=dry_run,
                    chunk_size=batch,
                    progress=progress,
                )
            if run.store_layout is not None and run.store is not None and run.plan is not None:
                if not dry_run:
                    run.store.setup()
                _langgraph_store.import_store(
                    conn,
                    run.store_layout,
                    run.store,
                    run.plan,
                    report,
                    dry_run=dry_run,
                    page_size=batch,
                    progress=progress,
                )
            report.seconds = time.perf_counter() - started
            if verify and not dry_run:
                report.verification = run.verify(conn, batch, progress)
        finally:
            run.close()
    return report


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
    batch = check_batch(batch_size)
    with open_source(source_dsn) as conn:
        run = _LangGraphRun(
            conn,
            target,
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
        try:
            return run.verify(conn, batch, progress or no_progress)
        finally:
            run.close()
