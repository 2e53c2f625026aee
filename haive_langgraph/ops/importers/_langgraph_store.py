"""Items of LangGraph's ``PostgresStore`` (``store``, ``store_vectors``) into our store.

Items are read by pages in key order and written through the target store's
``batch`` (one statement per page). Their vectors are copied, not embedded
again, when the target index has the source's dimensions: the target store's
embedder is a :class:`CopiedVectors` answering with the source vector of each
text (a field is indexed on an item only when the source holds a vector for
every text of it, so the target holds the vectors the source held). With
``reembed=True`` (or dimensions that differ) the user's embedder computes
them instead. An item whose value the target already holds is skipped; an
expired one (``expires_at`` passed) is left out; ``ttl_minutes`` carries over
(the expiry then counts from the import).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from langgraph.store.base import GetOp, PutOp, ensure_embeddings, get_text_at_path, tokenize_path

from haive_langgraph.errors import ConfigurationError
from haive_langgraph.ops.importers import _sql as Q
from haive_langgraph.ops.importers import _target as T
from haive_langgraph.ops.importers._report import (
    ImportProgress,
    ImportReport,
    ProgressCallback,
    VerifyReport,
)
from haive_langgraph.ops.importers._source import columns, parse_vector, vector_type
from haive_langgraph.ops.importers._vectors import CopiedVectors, unique_texts
from haive_langgraph.stores import PostgresStore

_SUFFIX = re.compile(r"\.\d+$")


@dataclass(frozen=True, slots=True)
class StoreLayout:
    schema: str
    ttl: bool
    vectors: bool
    vector_type: str
    dims: int | None
    fields: tuple[str, ...]


def detect_store(conn: psycopg.Connection[Any], schema: str) -> StoreLayout | None:
    """The store tables of ``schema`` (``None`` without a ``store`` table)."""
    cols = columns(conn, schema, "store")
    if not {"prefix", "key", "value"} <= cols:
        return None
    vcols = columns(conn, schema, "store_vectors")
    vtype, dims = "vector", None
    fields: tuple[str, ...] = ()
    if vcols:
        vtype, dims = vector_type(conn, schema, "store_vectors")
        names = [str(r[0]) for r in conn.execute(Q.q(Q.LG_STORE_FIELDS, schema=schema))]
        fields = tuple(dict.fromkeys(_SUFFIX.sub("", n) for n in names))
        if dims is None:
            one = conn.execute(
                Q.q("SELECT embedding::text FROM {schema}.store_vectors LIMIT 1", schema=schema)
            ).fetchone()
            dims = len(parse_vector(str(one[0]), "store_vectors")) if one else None
    return StoreLayout(
        schema=schema,
        ttl={"expires_at", "ttl_minutes"} <= cols,
        vectors=bool(vcols),
        vector_type=vtype,
        dims=dims,
        fields=fields,
    )


@dataclass(slots=True)
class StorePlan:
    """The target store's ``index=`` and how vectors arrive in it."""

    index: dict[str, Any] | None
    copier: CopiedVectors | None  # set: vectors are copied from the source
    fields: tuple[str, ...]


def plan_store(
    layout: StoreLayout,
    store_index: Mapping[str, Any] | None,
    *,
    vectors: bool,
    reembed: bool,
) -> StorePlan:
    """Decide how the store's vectors come across.

    Raises:
        ConfigurationError: ``reembed`` without an embedder, or dimensions
            that differ from the source's without ``reembed``.
    """
    given = dict(store_index) if store_index is not None else None
    if not vectors:
        return StorePlan(None, None, ())
    user_embed = ensure_embeddings(given["embed"]) if given and given.get("embed") else None
    if reembed or not layout.vectors:
        if given is None:
            return StorePlan(None, None, ())
        if user_embed is None:
            raise ConfigurationError(
                "store_index needs an 'embed' to embed the store items again (reembed=True, "
                "or a source without vectors)"
            )
        return StorePlan(given, None, tuple(given.get("fields") or ("$",)))
    assert layout.dims is not None
    dims = int(given["dims"]) if given and "dims" in given else layout.dims
    if dims != layout.dims:
        raise ConfigurationError(
            f"the source's store vectors have {layout.dims} dimensions and store_index "
            f"{dims}: pass reembed=True with store_index['embed'] to embed them again, or "
            f"dims={layout.dims} to copy them"
        )
    fields = tuple(given.get("fields") or layout.fields) if given else layout.fields
    copier = CopiedVectors(dims, user_embed)
    index: dict[str, Any] = {**(given or {}), "dims": dims, "fields": list(fields), "embed": copier}
    if given is None and layout.vector_type == "halfvec":
        index["ann_index_config"] = {"vector_type": "halfvec"}
    return StorePlan(index, copier, fields)


def _page(
    conn: psycopg.Connection[Any], layout: StoreLayout, after: tuple[str, str] | None, size: int
) -> list[tuple[Any, ...]]:
    names: dict[str, Any] = {
        "schema": layout.schema,
        "expiry": Q.fragment(Q.EXPIRED if layout.ttl else Q.NEVER_EXPIRED),
        "ttl": Q.fragment(Q.TTL if layout.ttl else Q.NO_TTL),
    }
    if after is None:
        return conn.execute(Q.q(Q.LG_STORE_FIRST_PAGE, **names), (size,)).fetchall()
    return conn.execute(Q.q(Q.LG_STORE_NEXT_PAGE, **names), (*after, size)).fetchall()


def _source_vectors(
    conn: psycopg.Connection[Any], layout: StoreLayout, rows: Sequence[tuple[Any, ...]]
) -> dict[tuple[str, str], dict[str, list[float]]]:
    out: dict[tuple[str, str], dict[str, list[float]]] = {}
    if not layout.vectors or not rows:
        return out
    found = conn.execute(
        Q.q(Q.LG_STORE_VECTORS, schema=layout.schema),
        ([str(r[0]) for r in rows], [str(r[1]) for r in rows]),
    ).fetchall()
    for prefix, key, field, text in found:
        where = f"source store_vectors ({prefix!r}, {key!r}, {field!r})"
        out.setdefault((str(prefix), str(key)), {})[str(field)] = parse_vector(str(text), where)
    return out


def _texts(value: Any, path: str) -> list[tuple[str, str]]:
    """``(vector name, text)`` of a field path, named as both stores name them."""
    texts = get_text_at_path(value, tokenize_path(path))
    return [(f"{path}.{i}" if len(texts) > 1 else path, t) for i, t in enumerate(texts)]


def _put(
    plan: StorePlan,
    ns: tuple[str, ...],
    key: str,
    value: dict[str, Any],
    ttl: Any,
    vecs: dict[str, list[float]],
    pairs: list[tuple[str, Sequence[float]]],
) -> PutOp:
    ttl_minutes = float(ttl) if ttl is not None else None
    if plan.copier is None:
        return PutOp(ns, key, value, ttl=ttl_minutes)
    paths = []
    for path in plan.fields:
        named = _texts(value, path)
        if named and all(name in vecs for name, _ in named):
            paths.append(path)
            pairs.extend((text, vecs[name]) for name, text in named)
    return PutOp(ns, key, value, index=paths or False, ttl=ttl_minutes)


Row = tuple[Any, ...]
Vectors = dict[tuple[str, str], dict[str, list[float]]]


def _pages(
    conn: psycopg.Connection[Any], layout: StoreLayout, plan: StorePlan, size: int
) -> Iterator[tuple[list[Row], list[Row], Vectors]]:
    """The source's items a page at a time, in key order, each page after the last key
    of the one before: its rows, the live ones and (when copied) their vectors, read
    in one snapshot."""
    after: tuple[str, str] | None = None
    while rows := _page(conn, layout, after, size):
        after = (str(rows[-1][0]), str(rows[-1][1]))
        live = [r for r in rows if not r[3]]
        vectors = _source_vectors(conn, layout, live) if plan.copier is not None else {}
        conn.commit()
        yield rows, live, vectors


def _gets(live: Sequence[Row]) -> list[GetOp]:
    """The target reads of a page's live items (their TTLs left as they are)."""
    return [GetOp(tuple(str(r[0]).split(".")), str(r[1]), refresh_ttl=False) for r in live]


def import_store(
    conn: psycopg.Connection[Any],
    layout: StoreLayout,
    store: PostgresStore,
    plan: StorePlan,
    report: ImportReport,
    *,
    dry_run: bool,
    page_size: int,
    progress: ProgressCallback,
) -> None:
    """Import every store item (see the module docstring)."""
    total, expired = conn.execute(
        Q.q(
            Q.LG_STORE_COUNTS,
            schema=layout.schema,
            expiry=Q.fragment(Q.EXPIRED if layout.ttl else Q.NEVER_EXPIRED),
        )
    ).fetchone() or (0, 0)
    items, vcounts = report.of("store_items"), report.of("store_vectors")
    items.source = int(total) - int(expired)
    items.dropped = int(expired)
    if expired:
        report.notes.append(f"{expired} store item(s) had expired: not imported")
    if layout.vectors:
        row = conn.execute(
            Q.q(
                Q.LG_STORE_VECTOR_COUNT,
                schema=layout.schema,
                expiry=Q.fragment(
                    Q.EXPIRED.replace("expires_at", "s.expires_at")
                    if layout.ttl
                    else Q.NEVER_EXPIRED
                ),
            )
        ).fetchone()
        vcounts.source = int(row[0]) if row else 0
    conn.commit()
    ready = not dry_run or T.table_exists(store._source, store.schema, "store_items")
    done = 0
    for rows, live, vectors in _pages(conn, layout, plan, page_size):
        current = store.batch(_gets(live)) if ready and live else [None] * len(live)
        batch: list[tuple[PutOp, list[tuple[str, Sequence[float]]]]] = []
        for (prefix, key, value, _, ttl), item in zip(live, current, strict=True):
            vecs = vectors.get((str(prefix), str(key)), {})
            if item is not None and getattr(item, "value", None) == value:
                items.skipped += 1
                vcounts.skipped += len(vecs)
                continue
            pairs: list[tuple[str, Sequence[float]]] = []
            op = _put(plan, tuple(str(prefix).split(".")), str(key), dict(value), ttl, vecs, pairs)
            batch.append((op, pairs))
            items.imported += 1
            vcounts.imported += len(pairs)
            vcounts.dropped += len(vecs) - len(pairs)  # a field the target does not index
        if not dry_run:
            _write(store, plan, batch)
        done += len(rows)
        progress(ImportProgress("store", done, int(total), str(rows[-1][0])))
    if layout.vectors and plan.copier is None:
        report.notes.append(
            "store vectors were not copied: "
            + ("embedded again by store_index['embed']" if plan.index else "no vectors asked")
        )


def _write(
    store: PostgresStore,
    plan: StorePlan,
    batch: list[tuple[PutOp, list[tuple[str, Sequence[float]]]]],
) -> None:
    """Write puts in as few batches as equal texts with different vectors allow."""
    pending = batch
    while pending:
        chosen: list[PutOp] = []
        entries: list[tuple[str, Sequence[float]]] = []
        rest = []
        for op, pairs in pending:
            _, clash = unique_texts(entries + pairs)
            if clash and chosen:
                rest.append((op, pairs))
                continue
            chosen.append(op)
            entries += pairs
        if plan.copier is not None:
            plan.copier.vectors, _ = unique_texts(entries)
        store.batch(chosen)
        pending = rest


def verify_store(
    conn: psycopg.Connection[Any],
    layout: StoreLayout,
    store: PostgresStore,
    plan: StorePlan,
    result: VerifyReport,
    *,
    page_size: int,
    progress: ProgressCallback,
) -> None:
    """Compare every live source item (and its copied vectors) with the target."""
    done = 0
    for rows, live, vectors in _pages(conn, layout, plan, page_size):
        found = store.batch(_gets(live))
        for (prefix, key, value, _, _), item in zip(live, found, strict=True):
            result.count("store_items")
            where = f"store item ({prefix!r}, {key!r})"
            if item is None:
                result.mismatch(f"{where}: missing from the target")
            elif getattr(item, "value", None) != value:
                result.mismatch(f"{where}: the value differs")
        if plan.copier is not None:
            _verify_vectors(store, live, vectors, result)
        done += len(rows)
        progress(ImportProgress("verify store", done, None, str(rows[-1][0])))


def _verify_vectors(
    store: PostgresStore,
    live: Sequence[tuple[Any, ...]],
    vectors: dict[tuple[str, str], dict[str, list[float]]],
    result: VerifyReport,
) -> None:
    by_ns: dict[str, list[str]] = {}
    for prefix, key, *_ in live:
        by_ns.setdefault(str(prefix), []).append(str(key))
    for prefix, keys in by_ns.items():
        ns = prefix.split(".")
        got: dict[str, dict[str, list[float]]] = {}
        for key, field, text in T.rows(
            store._source,
            Q.q(Q.OUR_STORE_VECTORS, schema=store.schema),
            (store.tenant_id, ns, keys),
            scope=store._scope(),
        ):
            got.setdefault(str(key), {})[str(field)] = parse_vector(str(text), "target vector")
        for key in keys:
            want = vectors.get((prefix, key), {})
            have = got.get(key, {})
            result.count("store_vectors", len(want))
            where = f"store item ({prefix!r}, {key!r})"
            if set(want) != set(have):
                result.mismatch(
                    f"{where}: vectors for fields {sorted(want)} in the source, "
                    f"{sorted(have)} in the target"
                )
                continue
            for field, vec in want.items():
                if not _close(vec, have[field]):
                    result.mismatch(f"{where}: the vector of field {field!r} differs")


def _close(a: Sequence[float], b: Sequence[float]) -> bool:
    """Equal as float32 vectors (a halfvec target: to half precision)."""
    return len(a) == len(b) and all(
        math.isclose(x, y, rel_tol=1e-3, abs_tol=1e-6) for x, y in zip(a, b, strict=True)
    )
