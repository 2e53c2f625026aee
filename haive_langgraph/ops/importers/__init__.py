"""Imports from other PostgreSQL persistence packages (``haive-lg import``).

* :func:`import_langgraph`: a ``langgraph-checkpoint-postgres`` database
  (threads, checkpoints, pending writes, channel values; every schema
  version) and LangGraph ``PostgresStore`` items with their vectors;
* :func:`import_chat_history`: a ``langchain-postgres``
  ``PostgresChatMessageHistory`` table;
* :func:`import_pgvector`: a ``langchain-postgres`` ``PGVector`` collection.

Every import is resumable and idempotent (run it again: what is there is
skipped, what is missing is added), reads its source in read-only
transactions, can be a dry run, and ends with a verification that compares
the source with the target (``verify=False`` skips it; ``verify_*`` runs it
alone). See ``docs/migrating.md``.
"""

from __future__ import annotations

from haive_langgraph.ops.importers._chat import import_chat_history, verify_chat_history
from haive_langgraph.ops.importers._langgraph_run import import_langgraph, verify_langgraph
from haive_langgraph.ops.importers._pgvector import import_pgvector, verify_pgvector
from haive_langgraph.ops.importers._report import (
    Counts,
    ImportProgress,
    ImportReport,
    ProgressCallback,
    VerifyReport,
)

__all__ = [
    "Counts",
    "ImportProgress",
    "ImportReport",
    "ProgressCallback",
    "VerifyReport",
    "import_chat_history",
    "import_langgraph",
    "import_pgvector",
    "verify_chat_history",
    "verify_langgraph",
    "verify_pgvector",
]
