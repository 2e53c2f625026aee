"""A ``PGVector`` collection (``langchain_pg_collection`` / ``langchain_pg_embedding``) into
our :class:`~haive_langgraph.memory.PostgresVectorStore`.

Documents keep their ids, text and metadata; their vectors are copied when
the target has the source's dimensions (the store's embedder is a
:class:`CopiedVectors`), else embedded again by the embedder given
(``reembed``). Both layouts are read: ``langchain-postgres`` (``id`` is the
document id) and ``langchain-community``'s older one (``uuid`` plus an
optional ``custom_id``). A document the target holds with the same text and
metadata is skipped; writing one again replaces it (``add_texts`` upserts by
id), so a rerun never doubles.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import psycopg
from langchain_core.embeddings import Embeddings

from haive_langgraph.errors import ConfigurationError, SourceSchemaError
from haive_langgraph.memory import PostgresVectorStore
from haive_langgraph.memory.vector._documents import collection_namespace
from haive_langgraph.ops.importers import _sql as Q
from haive_langgraph.ops.importers import _target as T
from haive_langgraph.ops.importers._report import (
    ImportProgress,
    ImportReport,
    ProgressCallback,
    VerifyReport,
)
from haive_langgraph.ops.importers._run import run_import, run_verify
from haive_langgraph.ops.importers._source import columns, parse_vector, vector_type
from haive_langgraph.ops.importers._vectors import CopiedVectors, unique_texts
from haive_langgraph.stores import PostgresStore

PACKAGE = "langchain-postgres"


@dataclass(frozen=True, slots=True)
class Collection:
    """A source collection: where its documents are and how they are paged and named."""

    schema: str
    name: str
    uuid: Any
    order: str  # the column pages are ordered by
    id_expr: str  # the document id
    dims: int | None

    def page(self, conn: psycopg.Connection[Any], after: Any, size: int) -> list[tuple[Any, ...]]:
        """The next ``size`` documents after the row keyed ``after`` (``None``: the first)."""
        names: dict[str, Any] = {
            "schema": self.schema,
            "order": self.order,
            "id": Q.fragment(self.id_expr),
        }
        if after is None:
            return conn.execute(Q.q(Q.PG_DOCS_FIRST_PAGE, **names), (self.uuid, size)).fetchall()
        return conn.execute(Q.q(Q.PG_DOCS_NEXT_PAGE, **names), (self.uuid, after, size)).fetchall()


def detect_collection(conn: psycopg.Connection[Any], schema: str, name: str) -> Collection:
    """The collection ``name`` of the source.

    Raises:
        SourceSchemaError: No PGVector tables, or no such collection.
    """
    ecols = columns(conn, schema, "langchain_pg_embedding")
    if not ecols or not columns(conn, schema, "langchain_pg_collection"):
        raise SourceSchemaError(
            f"the source has no PGVector tables (langchain_pg_collection, langchain_pg_embedding) "
            f"in schema {schema!r}: they are {PACKAGE}'s (--source-schema picks another schema)"
        )
    row = conn.execute(Q.q(Q.PG_COLLECTION, schema=schema), (name,)).fetchone()
    if row is None:
        known = conn.execute(
            Q.q("SELECT name FROM {schema}.langchain_pg_collection ORDER BY name", schema=schema)
        ).fetchall()
        raise SourceSchemaError(
            f"the source has no PGVector collection named {name!r}; it has "
            f"{[str(r[0]) for r in known][:20]}"
        )
    if "id" in ecols:
        order, id_expr = "id", "id"
    elif "uuid" in ecols:
        order = "uuid"
        id_expr = "coalesce(custom_id, uuid::text)" if "custom_id" in ecols else "uuid::text"
    else:
        raise SourceSchemaError(
            f"{schema}.langchain_pg_embedding has neither an id nor a uuid column"
        )
    _, dims = vector_type(conn, schema, "langchain_pg_embedding")
    return Collection(schema, name, row[0], order, id_expr, dims)


def vector_store(
    target: Any,
    collection: Collection,
    first_dims: int | None,
    *,
    target_collection: str | None,
    embeddings: Embeddings | None,
    reembed: bool,
    dims: int | None,
    tenant_id: str | None,
    schema: str | None,
) -> tuple[PostgresVectorStore, CopiedVectors | None]:
    """The target store and, when vectors are copied, its copying embedder.

    Raises:
        ConfigurationError: ``reembed`` without ``embeddings``, or dimensions
            that differ from the source's without ``reembed``.
    """
    source_dims = collection.dims or first_dims
    name = target_collection or collection.name
    options: dict[str, Any] = {"collection_name": name, "tenant_id": tenant_id, "schema": schema}
    if reembed or source_dims is None:
        if embeddings is None:
            if source_dims is None:
                raise ConfigurationError("the collection is empty and no embeddings= was given")
            raise ConfigurationError("reembed=True needs embeddings= (the model to embed with)")
        return PostgresVectorStore(target, embeddings=embeddings, dims=dims, **options), None
    if dims is not None and dims != source_dims:
        raise ConfigurationError(
            f"the collection's vectors have {source_dims} dimensions, not dims={dims}: pass "
            "reembed=True with embeddings= to embed the documents again"
        )
    copier = CopiedVectors(source_dims, embeddings)
    return PostgresVectorStore(target, embeddings=copier, dims=source_dims, **options), copier


def first_dims(conn: psycopg.Connection[Any], collection: Collection) -> int | None:
    """The dimensions of the first stored vector (``None``: an empty collection)."""
    rows = collection.page(conn, None, 1)
    conn.commit()
    return len(parse_vector(str(rows[0][4]), "langchain_pg_embedding")) if rows else None


Document = tuple[str, str, dict[str, Any], list[float]]  # id, text, metadata, vector


def _doc(row: tuple[Any, ...]) -> Document:
    _, doc_id, text, meta, emb = row
    where = f"source document {doc_id!r}"
    return str(doc_id), text or "", dict(meta or {}), parse_vector(str(emb), where)


def _pages(
    conn: psycopg.Connection[Any], collection: Collection, size: int
) -> Iterator[list[Document]]:
    """The collection's documents a page at a time, in id order, each page after the
    last id of the one before and read in its own snapshot."""
    after: Any = None
    while rows := collection.page(conn, after, size):
        after = rows[-1][0]
        conn.commit()
        yield [_doc(r) for r in rows]


def import_documents(
    conn: psycopg.Connection[Any],
    collection: Collection,
    store: PostgresVectorStore,
    copier: CopiedVectors | None,
    report: ImportReport,
    *,
    dry_run: bool,
    page_size: int,
    progress: ProgressCallback,
) -> None:
    """Import every document of the collection (see the module docstring)."""
    row = conn.execute(Q.q(Q.PG_DOC_COUNT, schema=collection.schema), (collection.uuid,)).fetchone()
    conn.commit()
    counts = report.of("documents")
    counts.source = int(row[0]) if row else 0
    inner = store._sync_store()
    assert isinstance(inner, PostgresStore)
    ready = not dry_run or T.table_exists(inner._source, inner.schema, "store_items")
    done = 0
    for docs in _pages(conn, collection, page_size):
        current: dict[str, Any] = {}
        if ready:
            current = {str(d.id): d for d in store.get_by_ids([d[0] for d in docs])}
        todo = []
        for doc_id, text, meta, vec in docs:
            have = current.get(doc_id)
            if have is not None and have.page_content == text and have.metadata == meta:
                counts.skipped += 1
            else:
                todo.append((doc_id, text, meta, vec))
        counts.imported += len(todo)
        if not dry_run:
            _write(store, copier, todo)
        done += len(docs)
        progress(ImportProgress("documents", done, counts.source, collection.name))


def _write(
    store: PostgresVectorStore,
    copier: CopiedVectors | None,
    todo: list[tuple[str, str, dict[str, Any], list[float]]],
) -> None:
    """``add_texts`` in as few calls as equal texts with different vectors allow."""
    while todo:
        mapping, clash = unique_texts([(t, v) for _, t, _, v in todo])
        n = len(todo)
        if clash:
            seen: dict[str, list[float]] = {}
            n = next(i for i, (_, t, _, v) in enumerate(todo) if seen.setdefault(t, v) != v)
            mapping, _ = unique_texts([(t, v) for _, t, _, v in todo[:n]])
        part, todo = todo[:n], todo[n:]
        if copier is not None:
            copier.vectors = mapping
        store.add_texts(
            [t for _, t, _, _ in part], [m for _, _, m, _ in part], ids=[i for i, _, _, _ in part]
        )


def verify_documents(
    conn: psycopg.Connection[Any],
    collection: Collection,
    store: PostgresVectorStore,
    copied: bool,
    result: VerifyReport,
    *,
    page_size: int,
    progress: ProgressCallback,
) -> None:
    """Compare every source document: text, metadata and, when copied, the vector
    the target searches with."""
    done = 0
    inner = store._sync_store()
    assert isinstance(inner, PostgresStore)
    namespace = list(collection_namespace(store.collection_name))
    for docs in _pages(conn, collection, page_size):
        ids = [d[0] for d in docs]
        found = {str(d.id): d for d in store.get_by_ids(ids)}
        vectors: dict[str, list[float]] = {}
        if copied:
            for key, _, text in T.rows(
                inner._source,
                Q.q(Q.OUR_STORE_VECTORS, schema=inner.schema),
                (inner.tenant_id, namespace, ids),
                scope=inner._scope(),
            ):
                vectors[str(key)] = parse_vector(str(text), "target vector")
        for doc_id, text, meta, vec in docs:
            result.count("documents")
            have = found.get(doc_id)
            where = f"document {doc_id!r}"
            if have is None:
                result.mismatch(f"{where}: missing from the target")
                continue
            if have.page_content != text:
                result.mismatch(f"{where}: the text differs")
            if have.metadata != meta:
                result.mismatch(f"{where}: the metadata differs")
            if copied and not _close(vec, vectors.get(doc_id, [])):
                result.mismatch(f"{where}: the vector differs")
        done += len(docs)
        progress(ImportProgress("verify documents", done, None, collection.name))


def _close(a: Sequence[float], b: Sequence[float]) -> bool:
    return len(a) == len(b) and all(
        math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-7) for x, y in zip(a, b, strict=True)
    )


# -- the API ---------------------------------------------------------------------------------


class _PgVectorJob:
    """A collection's import into a vector store (a :class:`~._run.Job`)."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        target: str | None,
        *,
        collection: str,
        target_collection: str | None,
        source_schema: str,
        embeddings: Embeddings | None,
        reembed: bool,
        dims: int | None,
        tenant_id: str | None,
        schema: str | None,
    ) -> None:
        self.conn = conn
        self.collection = detect_collection(conn, source_schema, collection)
        self.store, self.copier = vector_store(
            target,
            self.collection,
            first_dims(conn, self.collection),
            target_collection=target_collection,
            embeddings=embeddings,
            reembed=reembed,
            dims=dims,
            tenant_id=tenant_id,
            schema=schema,
        )
        self.tenant_id = tenant_id or ""

    def import_into(
        self, report: ImportReport, *, dry_run: bool, batch_size: int, progress: ProgressCallback
    ) -> None:
        if not dry_run:
            self.store.setup()
        import_documents(
            self.conn,
            self.collection,
            self.store,
            self.copier,
            report,
            dry_run=dry_run,
            page_size=batch_size,
            progress=progress,
        )

    def verify(self, result: VerifyReport, *, batch_size: int, progress: ProgressCallback) -> None:
        copied = self.copier is not None
        verify_documents(
            self.conn,
            self.collection,
            self.store,
            copied,
            result,
            page_size=batch_size,
            progress=progress,
        )

    def close(self) -> None:
        self.store.close()


def import_pgvector(
    source_dsn: str,
    target: str | None = None,
    *,
    collection: str,
    target_collection: str | None = None,
    source_schema: str = "public",
    embeddings: Embeddings | None = None,
    reembed: bool = False,
    dims: int | None = None,
    tenant_id: str | None = None,
    schema: str | None = None,
    dry_run: bool = False,
    verify: bool = True,
    batch_size: int = 500,
    progress: ProgressCallback | None = None,
) -> ImportReport:
    """Import a ``PGVector`` collection into :class:`~haive_langgraph.memory.PostgresVectorStore`.

    Documents keep their ids, text and metadata; vectors are copied (the
    target gets the source's dimensions) unless ``reembed``.

    Args:
        source_dsn: The source database (read only; a SQLAlchemy URL such as
            ``postgresql+psycopg://`` is accepted).
        target: Our database (``None``: the default server).
        collection: The PGVector collection name.
        target_collection: Our collection (default: the same name).
        source_schema: Schema of the PGVector tables (default ``public``).
        embeddings: The model of the collection: used to embed documents the
            source holds no vector for, and by ``reembed``.
        reembed: Embed every document again with ``embeddings``.
        dims: Dimensions of the target (default: the source's).
        tenant_id, schema: Of our tables.
        dry_run: Read everything, count, write nothing.
        verify: Compare the source with the target afterwards.
        batch_size: Documents per page.
        progress: Called with an :class:`ImportProgress` as documents are handled.

    Raises:
        SourceSchemaError: No PGVector tables, or no such collection.
        ConfigurationError: Dimensions that differ without ``reembed``.
    """
    job = partial(
        _PgVectorJob,
        collection=collection,
        target_collection=target_collection,
        source_schema=source_schema,
        embeddings=embeddings,
        reembed=reembed,
        dims=dims,
        tenant_id=tenant_id,
        schema=schema,
    )
    return run_import("pgvector", source_dsn, target, job, dry_run, verify, batch_size, progress)


def verify_pgvector(
    source_dsn: str,
    target: str | None = None,
    *,
    collection: str,
    target_collection: str | None = None,
    source_schema: str = "public",
    embeddings: Embeddings | None = None,
    reembed: bool = False,
    dims: int | None = None,
    tenant_id: str | None = None,
    schema: str | None = None,
    batch_size: int = 500,
    progress: ProgressCallback | None = None,
) -> VerifyReport:
    """Compare a PGVector collection with the documents imported from it (writes nothing)."""
    job = partial(
        _PgVectorJob,
        collection=collection,
        target_collection=target_collection,
        source_schema=source_schema,
        embeddings=embeddings,
        reembed=reembed,
        dims=dims,
        tenant_id=tenant_id,
        schema=schema,
    )
    return run_verify(source_dsn, target, job, batch_size, progress)
