"""Values of vector memory: memories, episodes, consolidation plans and the rerank protocol."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = [
    "ConsolidationReport",
    "CrossEncoder",
    "Episode",
    "Memory",
    "MemoryKind",
    "MergeGroup",
    "MergeRecord",
]

MemoryKind = Literal["memory", "chunk", "consolidated", "summary", "conversation_summary"]


@dataclass(frozen=True, slots=True)
class Memory:
    """A stored memory, as read back (with its score when it comes from a search).

    Attributes:
        id: Its key: ``m_<hash of the normalised text>`` (so a text is stored
            once per user), ``c_...`` for a consolidated memory.
        user_id: Whose memory it is.
        text: The text (what was embedded).
        metadata: Caller's metadata.
        importance: 0..1; important memories decay slower and can be kept out
            of consolidation.
        created_at: When the remembered thing happened (for a conversation
            chunk, its last message; for a consolidated memory, its newest source).
        valid_from: Since when the memory holds.
        valid_to: When it was superseded (``None`` while it holds).
        superseded_by: The consolidated memory that replaced it.
        kind: ``"memory"``, ``"chunk"`` (of a conversation), ``"consolidated"``
            or ``"summary"`` (hierarchical consolidation).
        sources: For a consolidated memory, the memories merged into it.
        conversation_id: The conversation it comes from.
        episode_id: The episode it belongs to (default: its conversation).
        message_ids: For a chunk, the messages it covers, in order.
        message_range: For a chunk, the positions (``seq``) of its first and last message.
        access_count: How often a search or recall returned it.
        last_accessed_at: When it was last returned.
        score: The ranking score of the call that returned it.
        similarity: Cosine similarity to the query (``None`` outside searches).
        level: 0 for a memory, ``n`` for a summary of level-``n - 1`` memories
            (hierarchical consolidation).
        parent_id: The summary this memory was summarised into, if any.
        children: For a summary, the memories it summarises.
    """

    id: str
    user_id: str
    text: str
    metadata: dict[str, Any]
    importance: float
    created_at: datetime
    valid_from: datetime
    valid_to: datetime | None = None
    superseded_by: str | None = None
    kind: MemoryKind = "memory"
    sources: tuple[str, ...] = ()
    conversation_id: str | None = None
    episode_id: str | None = None
    message_ids: tuple[str, ...] = ()
    message_range: tuple[int, int] | None = None
    access_count: int = 0
    last_accessed_at: datetime | None = None
    score: float | None = None
    similarity: float | None = None
    level: int = 0
    parent_id: str | None = None
    children: tuple[str, ...] = ()

    @property
    def is_current(self) -> bool:
        """True while the memory is not superseded."""
        return self.valid_to is None


@dataclass(frozen=True, slots=True)
class Episode:
    """Memories of one episode (conversation), as recalled by ``get_episodic_memories``.

    Attributes:
        episode_id: The episode (its conversation id unless one was given;
            the memory id for a memory outside any conversation).
        conversation_id: The conversation, when the memories share one.
        memories: Its recalled memories, in the order they happened.
        score: The best score of its memories.
        started_at: ``created_at`` of its earliest recalled memory.
        ended_at: ``created_at`` of its latest recalled memory.
    """

    episode_id: str
    conversation_id: str | None
    memories: list[Memory]
    score: float
    started_at: datetime
    ended_at: datetime


@dataclass(frozen=True, slots=True)
class MergeGroup:
    """One planned (or applied) merge of near-duplicates.

    Attributes:
        user_id: Whose memories.
        consolidated_id: The memory that replaces the sources (new, or an
            existing consolidated memory of the group with the same text).
        text: Its text.
        source_ids: The memories it supersedes (leader first).
        leader_id: The memory the others were compared with.
        similarities: Cosine similarity of each source to the leader.
    """

    user_id: str
    consolidated_id: str
    text: str
    source_ids: tuple[str, ...]
    leader_id: str
    similarities: dict[str, float]


@dataclass(frozen=True, slots=True)
class ConsolidationReport:
    """What ``consolidate_memories`` found and did (or, with ``dry_run``, would do).

    Attributes:
        dry_run: Nothing was written.
        strategy: The strategy's name.
        similarity_threshold: The threshold used.
        users: The users considered.
        candidates: Current memories considered.
        preserved: Candidates left alone for their importance.
        groups: The merges.
        superseded: Memories marked superseded (0 for a dry run).
        created: Consolidated memories written (0 for a dry run).
    """

    dry_run: bool
    strategy: str
    similarity_threshold: float
    users: tuple[str, ...]
    candidates: int
    preserved: int
    groups: list[MergeGroup] = field(default_factory=list)
    superseded: int = 0
    created: int = 0


@dataclass(frozen=True, slots=True)
class MergeRecord:
    """An audit record of one applied merge (kept after the merge, never rewritten).

    Attributes:
        record_id: Key of the record.
        user_id: Whose memories.
        at: When the merge was applied.
        consolidated_id: The memory the sources were merged into.
        source_ids: The superseded memories (still stored, recoverable).
        leader_id: The memory the others were compared with.
        similarities: Cosine similarity of each source to the leader.
        strategy: The strategy's name (for a summary, the model's).
        similarity_threshold: The threshold used.
        event: ``"merge"``, or ``"summarize"`` for a summary of hierarchical
            consolidation (``consolidated_id`` the summary, ``source_ids``
            its children, which stay current).
        level: The summary's level (0 for a merge).
    """

    record_id: str
    user_id: str
    at: datetime
    consolidated_id: str
    source_ids: tuple[str, ...]
    leader_id: str
    similarities: dict[str, float]
    strategy: str
    similarity_threshold: float
    event: str = "merge"
    level: int = 0


@runtime_checkable
class CrossEncoder(Protocol):
    """Reranks search candidates by scoring (query, text) pairs; higher is better.

    Any object with ``score`` works; an ``ascore`` coroutine method, when
    present, is used by the async memory.

    Example:
        >>> class MyEncoder:
        ...     def score(self, query: str, texts: Sequence[str]) -> list[float]:
        ...         return model.predict([(query, t) for t in texts]).tolist()
    """

    def score(self, query: str, texts: Sequence[str]) -> Sequence[float]: ...
