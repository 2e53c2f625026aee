"""Reading and writing checkpoints, written once as sans-I/O generators.

Each function yields :class:`~haive_langgraph.db.Step` values and returns a
result; ``_calls`` wraps them in the calls both checkpointers run.
:class:`Statements` holds every statement of the checkpointer, rendered once
per schema (threads, retention and time travel have their operations in
their own modules).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg.types.json import Jsonb

from haive_langgraph.checkpointers import _sql as S
from haive_langgraph.checkpointers._decoding import Row
from haive_langgraph.checkpointers._values import EMPTY_LINEAGE
from haive_langgraph.db._arrays import BigintArray, IntArray, TextArray
from haive_langgraph.db._driver import Op, Step
from haive_langgraph.db._render import render

R = TypeVar("R")

RawLineages = dict[tuple[str, int], tuple[list[bytes], list[bytes | None]]]


class Statements:
    """The checkpointer's statements, rendered once for one schema."""

    def __init__(self, schema: str) -> None:
        self.schema = schema

        def r(template: str, **fragments: str) -> str:
            return render(template, schema, **fragments)

        self._put_checkpoint: dict[tuple[frozenset[str], bool], str] = {}
        # Set once a write finds the checkpoints table partitioned.
        self.partitioned = False
        self.put_writes_keep = r(S.PUT_WRITES, conflict=S.WRITES_KEEP)
        self.put_writes_replace = r(S.PUT_WRITES, conflict=S.WRITES_UPSERT)
        self.thread_family = r(S.THREAD_FAMILY)
        self.get_checkpoint = r(S.GET_CHECKPOINT)
        self.get_latest_checkpoint = r(S.GET_LATEST_CHECKPOINT)
        self.probe_latest = r(S.PROBE_LATEST)
        self.list_template = S.LIST_CHECKPOINTS
        self.lineage_items = r(S.LINEAGE_ITEMS)
        self.lock_exclusive = r(S.LOCK_FAMILY_EXCLUSIVE)
        self.lock_shared = r(S.LOCK_FAMILY_SHARED)
        self.families_of_threads = r(S.FAMILIES_OF_THREADS)
        self.delete_thread_rows = r(S.DELETE_THREAD_ROWS)
        self.family_in_use = r(S.FAMILY_IN_USE)
        self.drop_family_content = r(S.DROP_FAMILY_CONTENT)
        self.gc_lineage_items = r(S.GC_LINEAGE_ITEMS)
        self.gc_blobs = r(S.GC_BLOBS)
        self.copy_thread_check = r(S.COPY_THREAD_CHECK)
        self.copy_thread = r(S.COPY_THREAD)
        self.run_checkpoints = r(S.RUN_CHECKPOINTS)
        self.delete_runs = r(S.DELETE_RUNS)
        self.recount_threads = r(S.RECOUNT_THREADS)
        self.prune_keep = r(S.PRUNE_KEEP)
        self.prune_calls = r(S.PRUNE_CALLS)
        self.prune_delete = r(S.PRUNE_DELETE)
        self.delta_history = r(S.DELTA_HISTORY)
        self.get_thread = r(S.GET_THREAD)
        self.tag = r(S.TAG)
        self.untag = r(S.UNTAG)
        self.branch_check = r(S.BRANCH_CHECK)
        self.create_branch = r(S.CREATE_BRANCH)
        self.list_branches = r(S.LIST_BRANCHES)
        self.restore = r(S.RESTORE)
        self.detach_branches = r(S.DETACH_BRANCHES)
        self.keep_closure = r(S.KEEP_CLOSURE)
        self.retention_rows = r(S.RETENTION_ROWS)
        self.retention_threads = r(S.RETENTION_THREADS)
        self.try_lock_family = r(S.TRY_LOCK_FAMILY)
        self.list_threads = r(S.LIST_THREADS)

    def put_checkpoint(self, parts: frozenset[str]) -> str:
        """The checkpoint write statement with the given parts (rendered once each)."""
        key = (parts, self.partitioned)
        query = self._put_checkpoint.get(key)
        if query is None:
            template = S.put_checkpoint_template(parts, partitioned=self.partitioned)
            query = render(template, self.schema)
            self._put_checkpoint[key] = query
        return query

    def learn_partitioned(self, exc: BaseException) -> bool:
        """Switch to the partitioned-table write if ``exc`` asks for it; whether it did.

        The layout is learned from the first write it fails (one failed
        statement per instance) rather than asked for on every start. The
        SQLSTATE decides, not the message, which the server may translate;
        the partitioned form is valid on any table of PostgreSQL 18.
        """
        if self.partitioned or not isinstance(exc, psycopg.errors.FeatureNotSupported):
            return False
        self.partitioned = True
        return True

    def list_checkpoints(self, where: Sequence[str], limit: bool, *, thread: bool) -> str:
        """The history query with the given WHERE fragments (fixed SQL, values as params).

        With ``thread``, the thread's branch ancestry is included (``CHAIN``).
        """
        return render(
            self.list_template,
            self.schema,
            source=S.CHAIN_SOURCE if thread else S.PLAIN_SOURCE,
            where=" AND ".join(where),
            limit="LIMIT %(limit)s" if limit else "",
            chain=S.CHAIN if thread else "",
        )


# -- reads -------------------------------------------------------------------


def get_op(
    st: Statements,
    t: str,
    th: str,
    ns: str,
    cid: str | None,
    known: tuple[str, Sequence[tuple[int, int]]] | None = None,
) -> Op[Row | None]:
    """One checkpoint (or the latest), with values, list items and pending writes.

    ``known`` is (family, [(lineage, length) ...]): list items the caller holds
    the payloads of, which are then returned without data.
    """
    params = {
        "t": t,
        "th": th,
        "ns": ns,
        "cid": cid,
        "known_f": known[0] if known else None,
        "known_l": BigintArray(k[0] for k in known[1]) if known else BigintArray(),
        "known_n": IntArray(k[1] for k in known[1]) if known else IntArray(),
    }
    row = yield Step(
        st.get_checkpoint if cid else st.get_latest_checkpoint, params, fetch="one", prepare=True
    )
    return Row.from_tuple(row) if row is not None else None


def probe_op(st: Statements, t: str, th: str, ns: str, row: dict[str, Any]) -> Op[bool | None]:
    """Whether the thread's latest checkpoint is the one ``row`` describes (the
    columns of ``PROBE_LATEST``), without pending writes; None if the thread has
    no checkpoint."""
    found = yield Step(
        st.probe_latest, {**row, "t": t, "th": th, "ns": ns}, fetch="one", prepare=True
    )
    return None if found is None else bool(found[0])


def family_op(st: Statements, t: str, th: str) -> Op[str | None]:
    """The family a thread belongs to, or ``None`` if it has no row."""
    row = yield Step(st.thread_family, (t, th), fetch="one")
    return str(row[0]) if row is not None else None


def list_op(
    st: Statements,
    t: str,
    *,
    thread_id: str | None,
    checkpoint_ns: str | None,
    checkpoint_id: str | None,
    filter: dict[str, Any] | None,
    before_id: str | None,
    limit: int | None,
) -> Op[tuple[list[Row], RawLineages]]:
    where = ["c.tenant_id = %(t)s"]
    params: dict[str, Any] = {"t": t, "th": thread_id}
    if checkpoint_ns is not None:
        where.append("c.checkpoint_ns = %(ns)s")
        params["ns"] = checkpoint_ns
    if checkpoint_id:
        where.append("c.checkpoint_id = %(cid)s")
        params["cid"] = checkpoint_id
    if filter:
        where.append("c.metadata @> %(filter)s")
        params["filter"] = Jsonb(filter)
    if before_id:
        where.append("c.checkpoint_id < %(before)s")
        params["before"] = before_id
    if limit is not None:
        params["limit"] = limit
    query = st.list_checkpoints(where, limit is not None, thread=thread_id is not None)
    return (
        yield from _rows_with_items(
            st,
            t,
            Step(query, params),
            Row.from_tuple,
            lambda row: (
                ((row.family_id, lineage), length)
                for lineage, length in zip(row.list_lineages, row.list_lengths, strict=True)
            ),
        )
    )


# Reads of checkpoints and then of their list items are two statements, each
# with its own snapshot: a thread deleted (or pruned) in between leaves rows
# whose items are gone. Such a read is run again (the deleted rows are then
# gone too); items missing on the last attempt are reported as corruption.
CONSISTENT_READ_ATTEMPTS = 3


def _rows_with_items(
    st: Statements,
    t: str,
    step: Step,
    decode: Callable[[Any], R],
    lists_of: Callable[[R], Iterable[tuple[tuple[str, int], int]]],
) -> Op[tuple[list[R], RawLineages]]:
    """Rows of ``step`` and the items of the lists they use (``lists_of`` a row:
    ((family, lineage), length) pairs), read again while items are missing."""
    for attempt in range(CONSISTENT_READ_ATTEMPTS):
        rows = [decode(r) for r in (yield step)]
        longest: dict[tuple[str, int], int] = {}
        for row in rows:
            for key, length in lists_of(row):
                if length > longest.get(key, 0):
                    longest[key] = length
        lineages = yield from lineage_items_op(st, t, longest)
        if _complete(longest, lineages) or attempt == CONSISTENT_READ_ATTEMPTS - 1:
            break
    return rows, lineages


def _complete(longest: dict[tuple[str, int], int], lineages: RawLineages) -> bool:
    """Whether every lineage read has at least the items the checkpoints use."""
    return all(
        len(lineages.get(key, ((), ()))[0]) >= n
        for key, n in longest.items()
        if key[1] != EMPTY_LINEAGE and n > 0
    )


def lineage_items_op(
    st: Statements, t: str, longest: dict[tuple[str, int], int]
) -> Op[RawLineages]:
    """Items of the given lineages, each read once, up to the longest length used."""
    lineages: RawLineages = {}
    longest = {k: n for k, n in longest.items() if k[1] != EMPTY_LINEAGE and n > 0}
    if not longest:
        return lineages
    items = yield Step(
        st.lineage_items,
        {
            "t": t,
            "families": TextArray(k[0] for k in longest),
            "lineages": BigintArray(k[1] for k in longest),
            "lengths": IntArray(longest.values()),
        },
    )
    for family, lineage, seq, key, data in items:
        keys, datas = lineages.setdefault((family, lineage), ([], []))
        if seq == len(keys):  # a gap stops the list; the length check then reports it
            keys.append(bytes(key))
            datas.append(data)
    return lineages


def delta_history_op(
    st: Statements, t: str, th: str, ns: str, cid: str | None, channels: Sequence[str]
) -> Op[tuple[list[tuple[Any, ...]], RawLineages]]:
    """The parent chain rows (oldest first) and the items of list seeds."""
    params = {"t": t, "th": th, "ns": ns, "cid": cid, "channels": TextArray(channels)}
    return (
        yield from _rows_with_items(
            st,
            t,
            Step(st.delta_history, params, prepare=False),
            tuple,
            lambda row: (
                ((str(row[2]), int(lineage)), int(length))
                for lineage, length in zip(row[8] or [], row[9] or [], strict=True)
            ),
        )
    )


# -- writes ------------------------------------------------------------------


def put_op(st: Statements, params: dict[str, Any]) -> Op[None]:
    """Write a checkpoint in one statement (only the parts its plan uses)."""
    parts = frozenset(
        part
        for part, param in (
            ("blobs", "blob_keys"),
            ("check", "check_keys"),
            ("upd", "upd_l"),
            ("new", "new_l"),
            ("items", "item_l"),
            ("tags", "tags"),
        )
        if params[param]
    )
    yield Step(st.put_checkpoint(parts), params, fetch="none", prepare=True)


def put_writes_op(st: Statements, params: dict[str, Any], replace: bool) -> Op[None]:
    """Write a task's pending writes (``replace``: overwrite the task's earlier ones)."""
    yield Step(
        st.put_writes_replace if replace else st.put_writes_keep,
        params,
        fetch="none",
        prepare=True,
    )
