"""The operations of vector memory as the public methods show them (no I/O).

Each function here is one method of :class:`VectorMemory`: its signature and
docstring, the checks of its arguments (raised when it is called, before
anything is read), and the operation it returns. ``VectorMemory`` runs it
with ``sync_method``, ``AsyncVectorMemory`` with ``async_method``
(:mod:`~haive_langgraph.memory.vector._drive`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.language_models import BaseChatModel

from haive_langgraph.db._limits import MAX_COUNT, check_count
from haive_langgraph.errors import ConfigurationError, InvalidMemoryError
from haive_langgraph.memory.conversations._types import Conversation, StoredMessage
from haive_langgraph.memory.vector._chunks import conversation_news, lines_of
from haive_langgraph.memory.vector._consolidation import (
    Strategy,
    consolidate_op,
    history_op,
    strategy_name,
)
from haive_langgraph.memory.vector._hierarchy import (
    HierarchyReport,
    check_levels,
    check_preserve,
    check_thresholds,
    hierarchy_op,
    parents_op,
)
from haive_langgraph.memory.vector._hierarchy_model import Summarizer, check_summarizer
from haive_langgraph.memory.vector._memories import (
    add_op,
    forget_op,
    forget_user_op,
    get_op,
    list_op,
)
from haive_langgraph.memory.vector._notes import check_notes, with_notes
from haive_langgraph.memory.vector._recall import Rerank, episodic_op, search_op
from haive_langgraph.memory.vector._steps import LoadConversation, Op
from haive_langgraph.memory.vector._types import ConsolidationReport, Episode, Memory, MergeRecord
from haive_langgraph.memory.vector._values import (
    NewMemory,
    check_duration,
    check_metadata,
    check_text,
    check_unit,
    iso,
)

if TYPE_CHECKING:
    from haive_langgraph.memory.vector._base import MemoryBase

    Self_ = MemoryBase[Any, Any]

ConversationLike = Conversation | str | Sequence[StoredMessage] | Sequence[Any]
"""A conversation to remember: stored (or its id), or a list of messages."""


def add_memories(
    memory: Self_,
    /,
    texts: Sequence[str] | str,
    metadata: Mapping[str, Any] | Sequence[Mapping[str, Any] | None] | None = None,
    *,
    user_id: str | None = None,
    importance: float = 0.5,
    created_at: datetime | None = None,
    conversation_id: str | None = None,
    episode_id: str | None = None,
) -> Op[list[str]]:
    """Remember texts (a text the user already has is not stored again).

    Args:
        texts: The texts (or one text).
        metadata: One dict for all texts, or one per text.
        user_id: Whose memories (default: the bound user).
        importance: 0..1 (slower decay; kept out of consolidation at 0.8+).
        created_at: When it happened (default: now).
        conversation_id: Link to a conversation.
        episode_id: Episode for recall grouping (default: the conversation).

    Returns:
        The id of each text, in order (the existing id for a duplicate).

    Raises:
        InvalidMemoryError: An empty text or bad metadata; nothing is written.
        ConfigurationError: The embedder's vectors do not have ``dims`` dimensions.
    """
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, Sequence) or not texts:
        raise InvalidMemoryError("texts must be a non-empty list of strings")
    texts = [check_text(t) for t in texts]
    if metadata is None or isinstance(metadata, Mapping):
        metas = [check_metadata(metadata)] * len(texts)
    else:
        if len(metadata) != len(texts):
            raise InvalidMemoryError(f"metadata has {len(metadata)} entries for {len(texts)} texts")
        metas = [check_metadata(m, f"metadata[{n}]") for n, m in enumerate(metadata)]
    imp = check_unit(importance, "importance")
    if created_at is not None:
        iso(created_at)
    user = memory._user(user_id)
    now = memory._settings.now()
    news = [
        NewMemory(
            text=t,
            metadata=m,
            importance=imp,
            created_at=created_at or now,
            conversation_id=conversation_id,
            episode_id=episode_id or conversation_id,
        )
        for t, m in zip(texts, metas, strict=True)
    ]
    return add_op(memory._settings, user, news)


def store_conversation(
    memory: Self_,
    /,
    conversation: ConversationLike,
    metadata: Mapping[str, Any] | None = None,
    chunk_size: int = 1000,
    chunk_overlap: int = 200,
    importance: float = 0.5,
    *,
    user_id: str | None = None,
    conversation_id: str | None = None,
    summarize: bool = False,
    keywords: bool | int = False,
    model: BaseChatModel | None = None,
    keywords_config: str = "english",
) -> Op[list[str]]:
    """Remember a conversation as overlapping chunks linked to its messages.

    Args:
        conversation: A :class:`Conversation` or a conversation id (its
            messages are read from the database at this call, never taken
            from the object, which may predate messages added since), or a
            list of messages (``StoredMessage`` or LangChain messages).
        metadata: Stored with every chunk.
        chunk_size: Most characters per chunk (``role: text`` lines).
        chunk_overlap: Characters shared by neighbouring chunks.
        importance: Importance of the chunks.
        user_id: Whose memories (default: the conversation's user, then the bound user).
        conversation_id: For a list of messages, the conversation to link.
        summarize: Also store a summary of the conversation written by
            ``model`` (``kind="conversation_summary"``, after the chunks).
        keywords: Store the conversation's most frequent words (``True``: 10,
            or that many) in each memory's metadata as ``"keywords"``:
            ``{word: occurrences}``, from PostgreSQL's full-text statistics
            (``ts_stat``; no model), filterable (``{"keywords.vacuum":
            {"$exists": True}}``).
        model: The LangChain chat model writing the summary.
        keywords_config: Text-search configuration whose stop words are not
            keywords (default ``"english"``).

    Returns:
        The chunks' memory ids, in order (then the summary's). Each chunk
        keeps the conversation id, the ids and positions of its messages; its
        ``created_at`` is its last message's.

    Raises:
        ConfigurationError: ``summarize`` without a chat model, a bad
            ``keywords`` count, or ``keywords`` on a memory outside PostgreSQL.
        InvalidMemoryError: The model wrote no summary; nothing is written.
    """
    meta = check_metadata(metadata)
    imp = check_unit(importance, "importance")
    keyword_count = check_notes(summarize, keywords, model, keywords_config, meta)
    settings = memory._settings

    def op() -> Op[list[str]]:
        conv: Any = conversation
        if isinstance(conv, str):
            conv = yield LoadConversation(conv)
        if isinstance(conv, Conversation):
            # Always the stored messages: the object is a snapshot (the one
            # create_conversation returned has none of those added since).
            conv = yield LoadConversation(conv.conversation_id)
            user = memory._user(user_id if user_id is not None else conv.user_id)
            cid: str | None = conv.conversation_id
            messages: Sequence[Any] = conv.messages or []
        elif isinstance(conv, Sequence) and not isinstance(conv, str | bytes):
            user = memory._user(user_id)
            cid = conversation_id
            messages = conv
        else:
            raise ConfigurationError(
                "conversation must be a Conversation, a conversation id or a list of "
                f"messages, got {type(conv).__name__}"
            )
        lines = lines_of(messages)
        news = conversation_news(cid, lines, meta, chunk_size, chunk_overlap, imp, settings.now())
        if not news:
            return []
        if keyword_count or summarize:
            notes = model if summarize else None
            news = yield from with_notes(
                news,
                lines,
                cid,
                model=notes,
                keywords=keyword_count,
                config=keywords_config,
                importance=imp,
            )
        return (yield from add_op(settings, user, news))

    return op()


def search(
    memory: Self_,
    /,
    query: str,
    top_k: int = 5,
    filters: Mapping[str, Any] | None = None,
    rerank: Rerank = False,
    *,
    user_id: str | None = None,
    as_of: datetime | None = None,
    include_superseded: bool = False,
    mmr_lambda: float = 0.5,
    fetch_k: int | None = None,
    decay_half_life: timedelta | None = None,
    parents: bool = False,
    mode: Literal["vector", "hybrid"] = "vector",
) -> Op[list[Memory]]:
    """Memories closest to ``query``, best first.

    Args:
        query: What to look for.
        top_k: How many memories.
        filters: Store filter operators on metadata keys (``{"topic": "tea"}``)
            and on the memory's fields (``{"importance": {"$gte": 0.5}}``).
        rerank: ``"mmr"`` (diversity), a :class:`CrossEncoder`, or ``True``
            (the memory's cross-encoder, else MMR).
        user_id: Whose memories.
        as_of: Show what was valid at that time (superseded memories included).
        include_superseded: Return superseded memories too.
        mmr_lambda: MMR trade-off: 1 relevance only, 0 diversity only.
        fetch_k: Candidates fetched for reranking or decay (default max(4 top_k, 20)).
        decay_half_life: Decay scores by idle time for this call.
        parents: Return each memory's highest summary (hierarchical
            consolidation) in its place, scored as its best child; a
            summary comes once. ``4 * top_k`` memories are searched for it.
        mode: ``"vector"`` (default), or ``"hybrid"``: the store's full-text
            and vector rankings fused by reciprocal rank (needs a memory
            created with ``index_options={"hybrid": True}``); ``score`` is then
            the fused score, ``similarity`` still the cosine one.

    Raises:
        InvalidMemoryError: An empty query.
        InvalidFilterError: An unknown operator or bad filter.
    """
    if as_of is not None:
        iso(as_of)
    settings, user, wanted = memory._settings, memory._user(user_id), top_k
    if parents:  # widened and untracked: parents_op counts what it returns
        top_k = min(4 * check_count("top_k", top_k), MAX_COUNT)
        settings = replace(settings, track_access=False)
    found = search_op(
        settings,
        user,
        query,
        top_k,
        filters,
        rerank,
        as_of,
        bool(include_superseded),
        mmr_lambda,
        fetch_k,
        decay_half_life,
        mode,
    )
    return parents_op(memory._settings, user, found, wanted, as_of) if parents else found


def get_episodic_memories(
    memory: Self_,
    /,
    user_id: str | None,
    context_query: str,
    temporal_weight: float = 0.3,
    max_episodes: int = 5,
    *,
    half_life: timedelta = timedelta(days=7),
    per_episode: int = 5,
    candidates: int = 50,
    filters: Mapping[str, Any] | None = None,
) -> Op[list[Episode]]:
    """Recall episodes: memories scored ``(1 - w) * similarity + w * recency``,
    grouped by episode (conversation), best episode first.

    ``recency = 0.5 ** (age / half_life)`` with ``age`` the time since the
    memory's ``created_at``.

    Args:
        user_id: Whose memories (None: the bound user).
        context_query: The situation to recall memories for.
        temporal_weight: ``w`` in [0, 1].
        max_episodes: Most episodes returned.
        half_life: Age at which recency is 0.5.
        per_episode: Most memories per episode.
        candidates: Memories fetched by similarity before scoring.
        filters: As for :meth:`search`.
    """
    return episodic_op(
        memory._settings,
        memory._user(user_id),
        context_query,
        temporal_weight,
        max_episodes,
        half_life,
        per_episode,
        candidates,
        filters,
    )


def consolidate_memories(
    memory: Self_,
    /,
    time_window: timedelta | None = None,
    similarity_threshold: float = 0.9,
    strategy: Strategy = "merge",
    preserve_important: bool | float = True,
    dry_run: bool = False,
    *,
    user_id: str | None = None,
) -> Op[ConsolidationReport]:
    """Merge near-duplicate memories of each user into consolidated memories.

    The originals are kept, marked superseded (``valid_to``,
    ``superseded_by``); each merge leaves an audit record
    (:meth:`consolidation_history`). Never across users or tenants.

    Args:
        time_window: Only memories created within this time of now (None: all).
        similarity_threshold: Cosine similarity to a group's leader, in (0, 1].
        strategy: ``"merge"`` (distinct sentences of all), ``"latest"``,
            ``"longest"``, or a function ``memories -> text``.
        preserve_important: Leave memories of importance >= 0.8 (``True``)
            or >= the number given alone; ``False`` merges all.
        dry_run: Plan only; nothing is written.
        user_id: One user (default: the bound user, else every user of the tenant).

    Raises:
        ConfigurationError: A threshold outside (0, 1] or an unknown strategy.
    """
    users = None
    if user_id is not None or memory.user_id is not None:
        users = [memory._user(user_id)]
    # Arguments are checked here, before anything is read.
    check_unit(similarity_threshold, "similarity_threshold", low_open=True)
    strategy_name(strategy)
    check_duration(time_window, "time_window")
    return consolidate_op(
        memory._settings,
        users,
        time_window,
        similarity_threshold,
        strategy,
        preserve_important,
        bool(dry_run),
    )


def consolidation_history(
    memory: Self_, /, user_id: str | None = None, *, memory_id: str | None = None
) -> Op[list[MergeRecord]]:
    """Audit records of applied merges, oldest first (those touching ``memory_id``)."""
    return history_op(memory._settings, memory._user(user_id), memory_id)


def consolidate_hierarchy(
    memory: Self_,
    /,
    summarizer: Summarizer,
    similarity_threshold: float | Sequence[float] = 0.8,
    levels: int = 2,
    min_cluster_size: int = 2,
    preserve_important: bool | float = True,
    time_window: timedelta | None = None,
    dry_run: bool = False,
    *,
    user_id: str | None = None,
) -> Op[HierarchyReport]:
    """Summarise clusters of related memories into parent memories, level by level.

    Level 1 clusters the user's current memories that have no parent; each
    cluster of at least ``min_cluster_size`` becomes a summary (a memory of
    ``kind="summary"``, ``level=1``, ``children``) written by ``summarizer``,
    and each child gets ``parent_id``. Level n clusters the level-(n - 1)
    summaries without a parent (those of earlier runs too). Children stay
    current: nothing is superseded or deleted. Each summary leaves an audit
    record (:meth:`consolidation_history`, ``event="summarize"``). Never
    across users or tenants.

    Args:
        summarizer: A LangChain chat model (``BaseChatModel``) or a function
            ``texts -> text``; called once per cluster.
        similarity_threshold: Cosine similarity to a cluster's leader, in
            (0, 1]; a list gives one per level (the last repeats).
        levels: How many levels to build in this run (1 to 8).
        min_cluster_size: Fewest memories a summary is made of (2 or more).
        preserve_important: Keep memories of importance >= 0.8 (``True``) or
            >= the number given out of every summary; ``False``: none.
        time_window: Only memories created within this time of now.
        dry_run: Ask the model and the embedder for the plan (its summaries)
            but write nothing.
        user_id: One user (default: the bound user, else every user of the tenant).

    Returns:
        A :class:`HierarchyReport`: the summaries of each level, their
        children, and what was written.

    Raises:
        ConfigurationError: A bad threshold, level count or cluster size, or a
            summarizer that is neither a chat model nor a function.
        InvalidMemoryError: The model returned no text (nothing is written).
    """
    users = None
    if user_id is not None or memory.user_id is not None:
        users = [memory._user(user_id)]
    n = check_levels(levels)
    if (
        isinstance(min_cluster_size, bool)
        or not isinstance(min_cluster_size, int)
        or min_cluster_size < 2
    ):
        raise ConfigurationError(
            f"min_cluster_size must be an integer >= 2, got {min_cluster_size!r}"
        )
    return hierarchy_op(
        memory._settings,
        users,
        check_summarizer(summarizer),
        check_thresholds(similarity_threshold, n),
        min_cluster_size,
        check_preserve(preserve_important),
        check_duration(time_window, "time_window"),
        bool(dry_run),
    )


def _ids(memory_ids: Sequence[str] | str) -> list[str]:
    if isinstance(memory_ids, str):
        memory_ids = [memory_ids]
    if not all(isinstance(i, str) and i for i in memory_ids):
        raise ConfigurationError(f"memory ids must be non-empty strings, got {memory_ids!r}")
    return list(memory_ids)


def get_memory(
    memory: Self_, /, memory_id: str, *, user_id: str | None = None
) -> Op[Memory | None]:
    """One memory by id (current or superseded), or ``None``."""
    read = get_op(memory._settings, memory._user(user_id), _ids(memory_id))

    def op() -> Op[Memory | None]:
        return (yield from read)[0]

    return op()


def list_memories(
    memory: Self_, /, *, user_id: str | None = None, include_superseded: bool = False
) -> Op[list[Memory]]:
    """Every memory of a user, oldest first."""
    return list_op(memory._settings, memory._user(user_id), include_superseded)


def forget(
    memory: Self_, /, memory_ids: Sequence[str] | str, *, user_id: str | None = None
) -> Op[dict[str, int]]:
    """Erase memories; a consolidated memory takes the memories merged into it along.

    Returns:
        ``{"memories": n, "access_records": n}`` actually deleted.
    """
    return forget_op(memory._settings, memory._user(user_id), _ids(memory_ids))


def forget_user(memory: Self_, /, user_id: str) -> Op[dict[str, int]]:
    """Erase everything of a user in this tenant: memories, access counts, audit records.

    Returns:
        Items deleted per kind.
    """
    return forget_user_op(memory._settings, memory._user(user_id))
