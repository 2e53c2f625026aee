"""A ``langchain-postgres`` ``PostgresChatMessageHistory`` table into our chat histories.

Each source session becomes the conversation of the same id (what
``PostgresChatMessageHistory(session_id)`` reads), its messages appended in
the source's order (its ``id`` serial). Every imported message carries
``metadata["imported"] = {"from": "<schema>.<table>", "id": <source id>,
"created_at": <source time>}``; a session's watermark is the source id of
its last imported message, and a run appends only the source messages after
it. A batch of messages is one statement, so an interrupted run leaves whole
batches, and the next run continues after the last one: nothing doubles.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import psycopg
from langchain_core.messages import BaseMessage, message_to_dict, messages_from_dict

from haive_langgraph.codec import Codec
from haive_langgraph.errors import CorruptDataError, SourceSchemaError
from haive_langgraph.memory import (
    ConversationExistsError,
    ConversationNotFoundError,
    ConversationStore,
)
from haive_langgraph.ops.importers import _sql as Q
from haive_langgraph.ops.importers import _target as T
from haive_langgraph.ops.importers._report import (
    ImportProgress,
    ImportReport,
    ProgressCallback,
    VerifyReport,
)
from haive_langgraph.ops.importers._run import run_import, run_verify
from haive_langgraph.ops.importers._source import columns

PACKAGE = "langchain-postgres"
MARK = "imported"
COLUMNS = frozenset({"id", "session_id", "message", "created_at"})
# Newest messages read per page while looking for a session's watermark.
WATERMARK_PAGE = 50


def check_table(conn: psycopg.Connection[Any], schema: str, table: str) -> None:
    """Raises SourceSchemaError unless ``schema.table`` looks like a history table."""
    found = columns(conn, schema, table)
    if not found:
        raise SourceSchemaError(
            f"the source has no table {schema}.{table}: name the table PostgresChatMessageHistory "
            f"of {PACKAGE} writes (--table), and its schema (--source-schema) if not public"
        )
    if not {"id", "session_id", "message"} <= found:
        raise SourceSchemaError(
            f"{schema}.{table} lacks the columns {sorted(COLUMNS - found)} of a {PACKAGE} "
            "chat history table (id, session_id, message, created_at)"
        )


def _decode(message: Any, where: str) -> BaseMessage:
    """One stored message dict as a LangChain message (a fixed set of message types)."""
    try:
        return messages_from_dict([message])[0]
    except Exception as exc:
        raise CorruptDataError(
            f"{where}: not a LangChain message ({type(exc).__name__}: {exc}). The messages "
            "before it were imported; fix or delete the row and run the import again"
        ) from None


def _mark(meta: Any, source: str) -> int | None:
    mark = (meta or {}).get(MARK) if isinstance(meta, dict) else None
    if isinstance(mark, dict) and mark.get("from") == source and isinstance(mark.get("id"), int):
        return int(mark["id"])
    return None


def watermark(store: ConversationStore, conversation_id: str, source: str) -> int:
    """The source id of the last message imported into a conversation (0: none)."""
    cursor: str | None = None
    while True:
        try:
            page = store.get_messages(
                conversation_id, limit=WATERMARK_PAGE, cursor=cursor, newest_first=True
            )
        except ConversationNotFoundError:
            return 0
        for stored in page.messages:
            found = _mark(stored.metadata, source)
            if found is not None:
                return found
        if page.next_cursor is None:
            return 0
        cursor = page.next_cursor


def _sessions(
    conn: psycopg.Connection[Any], schema: str, table: str
) -> tuple[str, list[tuple[Any, int]], int]:
    """The table's name, its sessions with their message counts, and their total."""
    sessions = conn.execute(Q.q(Q.CHAT_SESSIONS, schema=schema, table=table)).fetchall()
    conn.commit()
    return f"{schema}.{table}", sessions, sum(int(n) for _, n in sessions)


def import_chat(
    conn: psycopg.Connection[Any],
    schema: str,
    table: str,
    store: ConversationStore,
    report: ImportReport,
    *,
    dry_run: bool,
    batch_size: int,
    progress: ProgressCallback,
) -> None:
    """Import every session of the table (see the module docstring)."""
    source, sessions, total = _sessions(conn, schema, table)
    scount, mcount = report.of("sessions"), report.of("messages")
    scount.source, mcount.source = len(sessions), total
    ready = not dry_run or T.table_exists(store._source, store.schema, "conversations")
    done = 0
    for session_id, n in sessions:
        cid = str(session_id)
        after = watermark(store, cid, source) if ready else 0
        imported = 0
        while True:
            rows = conn.execute(
                Q.q(Q.CHAT_MESSAGES, schema=schema, table=table),
                (session_id, after, batch_size),
            ).fetchall()
            conn.commit()
            if not rows:
                break
            messages = [_decode(m, f"source {source} row id {i}") for i, m, _ in rows]
            meta = [
                {MARK: {"from": source, "id": int(i), "created_at": _iso(at)}} for i, _, at in rows
            ]
            if not dry_run:
                if after == 0 and imported == 0:
                    _create(store, cid)
                store.add_messages(cid, messages, metadata=meta)
            after = int(rows[-1][0])
            imported += len(rows)
            done += len(rows)
            progress(ImportProgress("messages", done + mcount.skipped, total, cid))
            if len(rows) < batch_size:
                break  # the session's last rows (a row added meanwhile waits for the next run)
        mcount.imported += imported
        mcount.skipped += max(0, int(n) - imported)
        if imported:
            scount.imported += 1
        else:
            scount.skipped += 1
        progress(ImportProgress("messages", done + mcount.skipped, total, cid))


def _iso(at: Any) -> str | None:
    return at.isoformat() if hasattr(at, "isoformat") else None


def _create(store: ConversationStore, conversation_id: str) -> None:
    try:
        store.create_conversation(conversation_id=conversation_id)
    except ConversationExistsError:
        pass  # a history written to before the import: the messages follow its own


def verify_chat(
    conn: psycopg.Connection[Any],
    schema: str,
    table: str,
    store: ConversationStore,
    result: VerifyReport,
    *,
    batch_size: int,
    progress: ProgressCallback,
) -> None:
    """Compare each source session with the messages imported into its conversation."""
    source, sessions, total = _sessions(conn, schema, table)
    done = 0
    for session_id, _ in sessions:
        cid = str(session_id)
        want: list[tuple[int, Any]] = []
        after = 0
        while rows := conn.execute(
            Q.q(Q.CHAT_MESSAGES, schema=schema, table=table), (session_id, after, batch_size)
        ).fetchall():
            want += [(int(i), m) for i, m, _ in rows]
            after = int(rows[-1][0])
            if len(rows) < batch_size:
                break
        conn.commit()
        result.count("sessions")
        result.count("messages", len(want))
        try:
            stored = store.get_conversation(cid).messages or []
        except ConversationNotFoundError:
            result.mismatch(f"session {cid}: missing from the target")
            continue
        have = [(_mark(s.metadata, source), s.message) for s in stored]
        have = [(i, m) for i, m in have if i is not None]
        if [i for i, _ in have] != [i for i, _ in want]:
            result.mismatch(
                f"session {cid}: {len(have)} imported message(s) in the target, "
                f"{len(want)} in the source (or in another order)"
            )
        else:
            for (i, message), (_, got) in zip(want, have, strict=True):
                if message_to_dict(got) != message_to_dict(
                    _decode(message, f"source {source} row id {i}")
                ):
                    result.mismatch(f"session {cid}: message of source row id {i} differs")
        done += len(want)
        progress(ImportProgress("verify messages", done, total, cid))


# -- the API ---------------------------------------------------------------------------------


class _ChatJob:
    """A history table's import into our conversations (a :class:`~._run.Job`)."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        target: str | None,
        *,
        table: str,
        source_schema: str,
        tenant_id: str | None,
        schema: str | None,
        codec: Codec | None,
    ) -> None:
        check_table(conn, source_schema, table)
        conn.commit()
        self.conn, self.source_schema, self.table = conn, source_schema, table
        self.store = ConversationStore(target, tenant_id=tenant_id, schema=schema, codec=codec)
        self.tenant_id = self.store.tenant_id

    def import_into(
        self, report: ImportReport, *, dry_run: bool, batch_size: int, progress: ProgressCallback
    ) -> None:
        if not dry_run:
            self.store.setup()
        import_chat(
            self.conn,
            self.source_schema,
            self.table,
            self.store,
            report,
            dry_run=dry_run,
            batch_size=batch_size,
            progress=progress,
        )

    def verify(self, result: VerifyReport, *, batch_size: int, progress: ProgressCallback) -> None:
        verify_chat(
            self.conn,
            self.source_schema,
            self.table,
            self.store,
            result,
            batch_size=batch_size,
            progress=progress,
        )

    def close(self) -> None:
        self.store.close()


def import_chat_history(
    source_dsn: str,
    target: str | None = None,
    *,
    table: str,
    source_schema: str = "public",
    tenant_id: str | None = None,
    schema: str | None = None,
    codec: Codec | None = None,
    dry_run: bool = False,
    verify: bool = True,
    batch_size: int = 500,
    progress: ProgressCallback | None = None,
) -> ImportReport:
    """Import a ``langchain-postgres`` ``PostgresChatMessageHistory`` table.

    Each ``session_id`` becomes the history of that id
    (``PostgresChatMessageHistory(session_id, ...)`` reads it), messages in
    their order; each keeps its source row id and time in
    ``metadata["imported"]`` (see :meth:`ConversationStore.get_messages`), which is
    how a later run knows where to continue.

    Args:
        source_dsn: The source database (read only).
        target: Our database (``None``: the default server).
        table: The source table (``table_name`` given to ``langchain-postgres``).
        source_schema: Its schema (default ``public``).
        tenant_id, schema, codec: Of our tables.
        dry_run: Read and decode everything, count, write nothing.
        verify: Compare the source with the target afterwards.
        batch_size: Messages per statement.
        progress: Called with an :class:`ImportProgress` as messages are handled.

    Raises:
        SourceSchemaError: No such table, or not a history table.
        CorruptDataError: A source row is not a LangChain message (the rows
            before it are imported; a run after the fix continues).
    """
    job = partial(
        _ChatJob,
        table=table,
        source_schema=source_schema,
        tenant_id=tenant_id,
        schema=schema,
        codec=codec,
    )
    return run_import(
        "chat-history", source_dsn, target, job, dry_run, verify, batch_size, progress
    )


def verify_chat_history(
    source_dsn: str,
    target: str | None = None,
    *,
    table: str,
    source_schema: str = "public",
    tenant_id: str | None = None,
    schema: str | None = None,
    codec: Codec | None = None,
    batch_size: int = 500,
    progress: ProgressCallback | None = None,
) -> VerifyReport:
    """Compare a chat history table with the histories imported from it (writes nothing)."""
    job = partial(
        _ChatJob,
        table=table,
        source_schema=source_schema,
        tenant_id=tenant_id,
        schema=schema,
        codec=codec,
    )
    return run_verify(source_dsn, target, job, batch_size, progress)
