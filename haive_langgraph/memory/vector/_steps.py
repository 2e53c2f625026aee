"""What the operations of vector memory and of the vector store ask their driver for.

Every operation is a generator that yields these steps (a store batch, texts
to embed, candidates to rescore, a conversation to load) and receives their
results; :mod:`haive_langgraph.memory.vector._drive` answers them on a
``PostgresStore`` or an ``AsyncPostgresStore``. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from langgraph.store.base import Op as StoreOp

from haive_langgraph.memory.vector._types import CrossEncoder

T = TypeVar("T")


@dataclass(slots=True)
class Batch:
    """Run these store operations (one ``batch``); texts in ``primed`` embed to the given vectors."""

    ops: list[StoreOp]
    primed: dict[str, list[float]] | None = None


@dataclass(slots=True)
class EmbedDocuments:
    """Embed these texts (the result: one vector per text)."""

    texts: list[str]


@dataclass(slots=True)
class EmbedQuery:
    """Embed a query (the result: its vector)."""

    text: str


@dataclass(slots=True)
class Rescore:
    """Score (query, text) pairs with a cross-encoder."""

    encoder: CrossEncoder
    query: str
    texts: list[str]


@dataclass(slots=True)
class LoadConversation:
    """Read a stored conversation (by id) through the conversation store."""

    conversation_id: str


@dataclass(slots=True)
class Summarize:
    """Ask a chat model (or a function) for the summary of related memories (the result: its text)."""

    summarizer: Any
    texts: list[str]
    level: int


class StoreTask:
    """A step that answers itself on the memory's store: ``run(store)`` for the sync
    driver, ``await arun(store)`` for the async one (conversation summaries, keyword
    statistics, hybrid search: ``_notes.py``, ``_hybrid.py``)."""

    def run(self, store: Any) -> Any:
        raise NotImplementedError

    async def arun(self, store: Any) -> Any:
        raise NotImplementedError

    def primed(self) -> dict[str, list[float]] | None:
        """Texts the store's embedder answers with these vectors while the step runs."""
        return None


Step = Batch | EmbedDocuments | EmbedQuery | Rescore | LoadConversation | Summarize | StoreTask
Op = Generator[Step, Any, T]
"""An operation: yields steps, receives their results, returns a ``T``."""
