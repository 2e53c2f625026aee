"""Vector memory logic, once for sync and async: pure functions and sans-I/O operations.

Every operation is a generator that yields steps (a store batch, texts to
embed, candidates to rescore, a conversation to load) and receives their
results; :mod:`haive_langgraph.memory.vector` runs them on a
``PostgresStore`` or an ``AsyncPostgresStore``. Nothing here does I/O.

Storage, in the store (tenant = the store's tenant):

* ``(root, user)``: one item per memory, key ``m_<hash>`` (``c_<hash>`` for
  a consolidated one), the text embedded, the float32 vector kept in the
  value (so reranking, consolidation and rewrites need no embedding call);
* ``(root + "-access", user)``: access counts, one item per memory, not
  embedded, kept apart so that a search never rewrites a memory;
* ``(root + "-audit", user)``: one record per applied merge.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import unicodedata
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import numpy as np
from langgraph.store.base import (
    GetOp,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    SearchItem,
    SearchOp,
)

from haive_langgraph.db._limits import MAX_COUNT, check_count, check_depth, check_text_id
from haive_langgraph.errors import ConfigurationError
from haive_langgraph.errors import InvalidMemoryError as InvalidMemoryError  # re-exported
from haive_langgraph.memory._vector_types import (
    ConsolidationReport,
    CrossEncoder,
    Episode,
    Memory,
    MemoryKind,
    MergeGroup,
    MergeRecord,
)
from haive_langgraph.stores import InvalidFilterError

# -- errors ---------------------------------------------------------------------------------


# -- steps ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Batch:
    """Run these store operations (one ``batch``); texts in ``primed`` embed to the given vectors."""

    ops: list[Op]
    primed: dict[str, list[float]] | None = None


@dataclass(slots=True)
class EmbedDocuments:
    texts: list[str]


@dataclass(slots=True)
class EmbedQuery:
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


Step = Batch | EmbedDocuments | EmbedQuery | Rescore | LoadConversation
Op_ = Generator[Step, Any, Any]

# -- time -------------------------------------------------------------------------------------

# Stored as the `valid_to` of a memory that still holds: an open interval
# becomes a string comparison the store's filters can do (`$gt as_of`).
OPEN_END = "9999-12-31T23:59:59.999999+00:00"


def iso(value: datetime) -> str:
    """Fixed-width UTC ISO text (the stored form: compares chronologically as a string)."""
    if value.tzinfo is None:
        raise InvalidMemoryError(f"datetimes must be timezone-aware, got {value!r}")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text)


def utcnow() -> datetime:
    return datetime.now(UTC)


# -- names ---------------------------------------------------------------------------------------


def user_label(user_id: object, what: str = "user_id") -> str:
    """A user id as a namespace label (labels cannot hold ``.``; ``%`` escapes)."""
    if not isinstance(user_id, str) or not user_id:
        raise ConfigurationError(f"{what} must be a non-empty string, got {user_id!r:.80}")
    check_text_id(user_id, what)
    return user_id.replace("%", "%25").replace(".", "%2E")


def user_from_label(label: str) -> str:
    return label.replace("%2E", ".").replace("%25", "%")


@dataclass(frozen=True, slots=True)
class Spaces:
    """The namespaces of one memory root."""

    root: str

    def memories(self, user: str) -> tuple[str, str]:
        return (self.root, user_label(user))

    def access(self, user: str) -> tuple[str, str]:
        return (f"{self.root}-access", user_label(user))

    def audit(self, user: str) -> tuple[str, str]:
        return (f"{self.root}-audit", user_label(user))


def check_root(root: object) -> str:
    if not isinstance(root, str) or not root or "." in root:
        raise ConfigurationError(
            f"namespace must be a non-empty string without '.', got {root!r:.80}"
        )
    check_text_id(root, "namespace")
    return root


# -- texts and hashes ----------------------------------------------------------------------------

_SPACES = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """What two texts must share to be the same memory: NFKC, case-folded, spaces collapsed."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def content_hash(text: str) -> str:
    return hashlib.sha256(normalize_text(text).encode()).hexdigest()[:32]


def check_text(text: object, what: str = "memory text") -> str:
    if not isinstance(text, str):
        raise InvalidMemoryError(f"{what} must be a string, got {type(text).__name__}")
    if not text.strip():
        raise InvalidMemoryError(f"{what} is empty; there is nothing to remember or search for")
    if "\x00" in text:
        raise InvalidMemoryError(f"{what} contains a NUL character")
    return text


# -- vectors ---------------------------------------------------------------------------------------


def pack_vector(vector: Sequence[float] | np.ndarray[Any, Any]) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()


def unpack_vector(text: str) -> np.ndarray[Any, np.dtype[np.float32]]:
    return np.frombuffer(base64.b64decode(text), dtype="<f4")


def as_list(vector: np.ndarray[Any, Any]) -> list[float]:
    return [float(x) for x in vector]


def _unit_rows(matrix: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.float32]]:
    m = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(m, axis=-1, keepdims=True)
    norms[norms == 0] = 1.0
    return m / norms  # type: ignore[no-any-return]


# -- arguments ---------------------------------------------------------------------------------------


def check_positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigurationError(f"{what} must be a positive integer, got {value!r}")
    return value


def check_unit(value: object, what: str, *, low_open: bool = False) -> float:
    """A number in [0, 1] (or (0, 1] with ``low_open``)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        v = float(value)  # type: ignore[arg-type]
        ok = (v > 0.0 if low_open else v >= 0.0) and v <= 1.0
    if not ok:
        interval = "(0, 1]" if low_open else "[0, 1]"
        raise ConfigurationError(f"{what} must be a number in {interval}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def check_duration(value: object, what: str) -> timedelta | None:
    if value is None:
        return None
    if not isinstance(value, timedelta) or value <= timedelta(0):
        raise ConfigurationError(f"{what} must be a positive timedelta or None, got {value!r}")
    return value


def check_metadata(value: object, what: str = "metadata") -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and k for k in value):
        raise InvalidMemoryError(f"{what} must be a dict with non-empty string keys, got {value!r}")
    check_depth(value, what)
    return dict(value)


# -- filters -------------------------------------------------------------------------------------------

OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists")
# Top-level fields of a stored memory; any other filter key is a metadata key.
FIELDS = (
    "id",
    "user_id",
    "content_hash",
    "kind",
    "importance",
    "created_at",
    "valid_from",
    "valid_to",
    "superseded_by",
    "sources",
    "conversation_id",
    "episode_id",
    "message_ids",
    "message_range",
)
# What the store keeps in plaintext for filters (not the text, not the vector).
FILTER_FIELDS = (*FIELDS, "metadata")


def filter_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {k: filter_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [filter_value(v) for v in value]
    return value


def check_operators(value: Any, where: str) -> None:
    if not isinstance(value, Mapping):
        return
    for key, operand in value.items():
        if not isinstance(key, str) or not key:
            raise InvalidFilterError(f"filter keys must be non-empty strings, got {key!r}")
        if key.startswith("$"):
            if key not in OPERATORS:
                raise InvalidFilterError(
                    f"unsupported filter operator {key!r} on {where!r}; "
                    f"supported: {', '.join(OPERATORS)}"
                )
        else:
            check_operators(operand, f"{where}.{key}")


def translate_filters(filters: Mapping[str, Any] | None) -> dict[str, Any]:
    """User filters as store filters: metadata keys go under ``metadata.``.

    ``{"topic": "tea"}`` filters ``metadata.topic``; the memory's own fields
    (``importance``, ``created_at``, ``conversation_id`` ...) and
    ``metadata.<path>`` are used as they are. Datetimes become the stored
    ISO form.

    Raises:
        InvalidFilterError: an unknown operator or an invalid key.
    """
    if filters is None:
        return {}
    if not isinstance(filters, Mapping):
        raise InvalidFilterError(f"filters must be a dict, got {type(filters).__name__}")
    check_depth(filters, "filters", error=InvalidFilterError)
    out: dict[str, Any] = {}
    for key, value in filters.items():
        if not isinstance(key, str) or not key or key.startswith("$"):
            raise InvalidFilterError(
                f"filter keys must be field names or metadata keys, got {key!r}"
                + (
                    f"; {key!r} is an operator and goes inside a field: {{'field': {{{key!r}: ...}}}}"
                    if isinstance(key, str) and key.startswith("$")
                    else ""
                )
            )
        head = key.split(".", 1)[0]
        path = key if head in FIELDS or head == "metadata" else f"metadata.{key}"
        check_operators(value, path)
        out[path] = filter_value(value)
    return out


def validity_filter(as_of: datetime | None, include_superseded: bool) -> dict[str, Any]:
    if as_of is not None:
        t = iso(as_of)
        return {"valid_from": {"$lte": t}, "valid_to": {"$gt": t}}
    if include_superseded:
        return {}
    return {"valid_to": OPEN_END}


def search_filter(
    filters: Mapping[str, Any] | None, as_of: datetime | None, include_superseded: bool
) -> dict[str, Any]:
    out = translate_filters(filters)
    validity = validity_filter(as_of, include_superseded)
    clash = sorted(set(out) & set(validity))
    if clash:
        raise InvalidFilterError(
            f"filters on {', '.join(clash)} conflict with the validity filter; "
            "use as_of= or include_superseded=True instead"
        )
    out.update(validity)
    return out


# -- values --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class NewMemory:
    """A memory to write (validated)."""

    text: str
    metadata: dict[str, Any]
    importance: float
    created_at: datetime
    kind: MemoryKind = "memory"
    conversation_id: str | None = None
    episode_id: str | None = None
    message_ids: tuple[str, ...] = ()
    message_range: tuple[int, int] | None = None


def build_value(
    user: str,
    key: str,
    new: NewMemory,
    vector: Sequence[float],
    valid_from: datetime,
    *,
    sources: Sequence[str] = (),
) -> dict[str, Any]:
    return {
        "id": key,
        "user_id": user,
        "text": new.text,
        "content_hash": content_hash(new.text),
        "kind": new.kind,
        "metadata": new.metadata,
        "importance": new.importance,
        "created_at": iso(new.created_at),
        "valid_from": iso(valid_from),
        "valid_to": OPEN_END,
        "superseded_by": None,
        "sources": list(sources),
        "conversation_id": new.conversation_id,
        "episode_id": new.episode_id,
        "message_ids": list(new.message_ids),
        "message_range": list(new.message_range) if new.message_range else None,
        "embedding": pack_vector(vector),
    }


def decode_memory(
    value: Mapping[str, Any],
    access: Mapping[str, Any] | None = None,
    *,
    score: float | None = None,
    similarity: float | None = None,
) -> Memory:
    valid_to = value.get("valid_to")
    rng = value.get("message_range")
    last = (access or {}).get("last_accessed_at")
    return Memory(
        id=value["id"],
        user_id=value["user_id"],
        text=value["text"],
        metadata=dict(value.get("metadata") or {}),
        importance=float(value.get("importance", 0.5)),
        created_at=parse_iso(value["created_at"]),
        valid_from=parse_iso(value["valid_from"]),
        valid_to=None if valid_to in (None, OPEN_END) else parse_iso(valid_to),
        superseded_by=value.get("superseded_by"),
        kind=value.get("kind", "memory"),
        sources=tuple(value.get("sources") or ()),
        conversation_id=value.get("conversation_id"),
        episode_id=value.get("episode_id"),
        message_ids=tuple(value.get("message_ids") or ()),
        message_range=(int(rng[0]), int(rng[1])) if rng else None,
        access_count=int((access or {}).get("access_count", 0)),
        last_accessed_at=parse_iso(last) if last else None,
        score=score,
        similarity=similarity,
    )


def memory_key(text: str) -> str:
    return f"m_{content_hash(text)}"


def consolidated_key(text: str) -> str:
    return f"c_{content_hash(text)}"


# -- scoring ---------------------------------------------------------------------------------------------


def recency(created_at: datetime, now: datetime, half_life: timedelta) -> float:
    """``0.5 ** (age / half_life)``: 1 for a memory of now, 0.5 after one half-life."""
    age = max((now - created_at).total_seconds(), 0.0)
    return float(0.5 ** (age / half_life.total_seconds()))


def decay_factor(memory: Memory, now: datetime, half_life: timedelta) -> float:
    """Decay of a memory's search score: ``0.5 ** (idle / (half_life * (1 + importance)))``.

    ``idle`` runs from the later of its creation and its last access, so
    memories that keep being recalled stay fresh and important ones fade slower.
    """
    since = max(memory.created_at, memory.last_accessed_at or memory.created_at)
    idle = max((now - since).total_seconds(), 0.0)
    return float(0.5 ** (idle / (half_life.total_seconds() * (1.0 + memory.importance))))


def mmr(
    query: np.ndarray[Any, Any],
    candidates: np.ndarray[Any, Any],
    relevance: Sequence[float],
    k: int,
    lambda_mult: float,
) -> list[int]:
    """Maximal marginal relevance: indices picked one by one, trading relevance for novelty.

    Each pick maximises ``lambda * relevance - (1 - lambda) * max similarity
    to the picks so far`` (``lambda`` 1: plain ranking, 0: most diverse).
    """
    n = len(candidates)
    if n == 0 or k <= 0:
        return []
    vecs = _unit_rows(candidates)
    rel = np.asarray(relevance, dtype=np.float64)
    sims = (vecs @ vecs.T).astype(np.float64)
    picked = [int(np.argmax(rel))]
    closest = sims[:, picked[0]].copy()
    while len(picked) < min(k, n):
        objective = lambda_mult * rel - (1.0 - lambda_mult) * closest
        objective[picked] = -np.inf
        best = int(np.argmax(objective))
        picked.append(best)
        closest = np.maximum(closest, sims[:, best])
    return picked


# -- store reads ---------------------------------------------------------------------------------------

PAGE = 1000


def read_all(namespace: tuple[str, ...], filter: dict[str, Any] | None = None) -> Op_:
    """Every item of a namespace (pages of :data:`PAGE`)."""
    out: list[Item] = []
    offset = 0
    while True:
        (page,) = yield Batch(
            [SearchOp(namespace, filter or None, PAGE, offset, None, refresh_ttl=False)]
        )
        out.extend(page)
        if len(page) < PAGE:
            return out
        offset += PAGE


def load_access(spaces: Spaces, user: str, ids: Sequence[str]) -> Op_:
    if not ids:
        return {}
    ns = spaces.access(user)
    results = yield Batch([GetOp(ns, i, refresh_ttl=False) for i in ids])
    return {i: item.value for i, item in zip(ids, results, strict=True) if item is not None}


def write_access(
    spaces: Spaces, user: str, memories: Sequence[Memory], now: datetime
) -> tuple[list[Op], list[Memory]]:
    ns = spaces.access(user)
    ops: list[Op] = []
    out: list[Memory] = []
    for m in memories:
        count = m.access_count + 1
        ops.append(
            PutOp(ns, m.id, {"access_count": count, "last_accessed_at": iso(now)}, index=False)
        )
        out.append(replace(m, access_count=count, last_accessed_at=now))
    return ops, out


# -- context -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settings:
    """Per-instance settings the operations read."""

    spaces: Spaces
    clock: Callable[[], datetime]
    cross_encoder: CrossEncoder | None
    decay_half_life: timedelta | None
    track_access: bool

    def now(self) -> datetime:
        now = self.clock()
        if now.tzinfo is None:
            raise ConfigurationError("the memory's clock must return timezone-aware datetimes")
        return now


# -- add ------------------------------------------------------------------------------------------------------


def add_op(settings: Settings, user: str, news: Sequence[NewMemory]) -> Op_:
    """Write memories not stored yet; returns the id of each (existing id for a duplicate)."""
    spaces = settings.spaces
    ns = spaces.memories(user)
    by_hash: dict[str, NewMemory] = {}
    hashes: list[str] = []
    for new in news:
        h = content_hash(new.text)
        hashes.append(h)
        by_hash.setdefault(h, new)
    unique = list(by_hash)
    found = yield Batch(
        [GetOp(ns, f"{p}_{h}", refresh_ttl=False) for h in unique for p in ("m", "c")]
    )
    ids: dict[str, str] = {}
    fresh: list[str] = []
    for n, h in enumerate(unique):
        m_item, c_item = found[2 * n], found[2 * n + 1]
        if m_item is not None:
            ids[h] = m_item.key
        elif c_item is not None:
            ids[h] = c_item.key
        else:
            ids[h] = f"m_{h}"
            fresh.append(h)
    if fresh:
        texts = [by_hash[h].text for h in fresh]
        vectors = yield EmbedDocuments(texts)
        now = settings.now()
        puts: list[Op] = []
        primed: dict[str, list[float]] = {}
        for h, vec in zip(fresh, vectors, strict=True):
            new = by_hash[h]
            value = build_value(user, ids[h], new, vec, min(now, new.created_at))
            puts.append(PutOp(ns, ids[h], value))
            primed[new.text] = vec
        yield Batch(puts, primed)
    return [ids[h] for h in hashes]


# -- search -----------------------------------------------------------------------------------------------------

Rerank = bool | Literal["mmr"] | CrossEncoder


@dataclass(slots=True)
class _Candidate:
    memory: Memory
    vector: np.ndarray[Any, Any]


def _candidates(items: Sequence[SearchItem]) -> list[_Candidate]:
    out = []
    for item in items:
        if item.score is None or "embedding" not in item.value:
            continue  # not a memory with a vector (an unscored filler of the page)
        out.append(
            _Candidate(
                decode_memory(item.value, similarity=float(item.score)),
                unpack_vector(item.value["embedding"]),
            )
        )
    return out


def _fetch(
    settings: Settings,
    user: str,
    query: str,
    qvec: list[float],
    filter: dict[str, Any],
    limit: int,
    with_access: bool,
) -> Op_:
    ns = settings.spaces.memories(user)
    (items,) = yield Batch(
        [SearchOp(ns, filter or None, limit, 0, query, refresh_ttl=False)], {query: qvec}
    )
    cands = _candidates(items)
    if not with_access:
        return cands
    access = yield from load_access(settings.spaces, user, [c.memory.id for c in cands])
    for c in cands:
        a = access.get(c.memory.id)
        if a:
            c.memory = replace(
                c.memory,
                access_count=int(a.get("access_count", 0)),
                last_accessed_at=parse_iso(a["last_accessed_at"])
                if a.get("last_accessed_at")
                else None,
            )
    return cands


def search_op(
    settings: Settings,
    user: str,
    query: str,
    top_k: int,
    filters: Mapping[str, Any] | None,
    rerank: Rerank,
    as_of: datetime | None,
    include_superseded: bool,
    mmr_lambda: float,
    fetch_k: int | None,
    decay_half_life: timedelta | None,
) -> Op_:
    check_text(query, "query")
    # Counts: 0 gives nothing (as LangChain's InMemoryVectorStore answers k=0), up to
    # a store search's limit (db._limits.check_count), checked before anything is embedded.
    top_k = check_count("top_k", top_k)
    mmr_lambda = check_unit(mmr_lambda, "mmr_lambda")
    decay = check_duration(decay_half_life, "decay_half_life") or settings.decay_half_life
    encoder: CrossEncoder | None = None
    use_mmr = False
    if rerank is True:
        encoder = settings.cross_encoder
        use_mmr = encoder is None
    elif rerank == "mmr":
        use_mmr = True
    elif rerank is not False:
        if not callable(getattr(rerank, "score", None)):
            raise ConfigurationError(
                f"rerank must be False, True, 'mmr' or a CrossEncoder (an object with "
                f"score(query, texts)), got {rerank!r}"
            )
        encoder = rerank  # type: ignore[assignment]
    widen = use_mmr or encoder is not None or decay is not None
    # A fetch_k below top_k (0 included) fetches top_k, as it always has.
    fetch = check_count("fetch_k", fetch_k) if fetch_k is not None else None
    widened = min(max(4 * top_k, 20), MAX_COUNT)
    limit = max(top_k, fetch if fetch is not None else (widened if widen else top_k))
    filter = search_filter(filters, as_of, include_superseded)
    if top_k == 0:
        return []
    qvec = yield EmbedQuery(query)
    # Access records are read when they are updated or decay needs them:
    # otherwise a search is one round trip.
    with_access = settings.track_access or decay is not None
    cands = yield from _fetch(settings, user, query, qvec, filter, limit, with_access)
    now = settings.now()
    for c in cands:
        sim = c.memory.similarity or 0.0
        score = sim * decay_factor(c.memory, now, decay) if decay is not None else sim
        c.memory = replace(c.memory, score=score)
    cands.sort(key=lambda c: -(c.memory.score or 0.0))
    if encoder is not None and cands:
        scores = yield Rescore(encoder, query, [c.memory.text for c in cands])
        if len(scores) != len(cands):
            raise ConfigurationError(
                f"the cross-encoder returned {len(scores)} scores for {len(cands)} texts"
            )
        for c, s in zip(cands, scores, strict=True):
            c.memory = replace(c.memory, score=float(s))
        cands.sort(key=lambda c: -(c.memory.score or 0.0))
        picked = cands[:top_k]
    elif use_mmr and cands:
        order = mmr(
            np.asarray(qvec, dtype=np.float32),
            np.stack([c.vector for c in cands]),
            [c.memory.score or 0.0 for c in cands],
            top_k,
            mmr_lambda,
        )
        picked = [cands[i] for i in order]
    else:
        picked = cands[:top_k]
    found = [c.memory for c in picked]
    if settings.track_access and found:
        ops, found = write_access(settings.spaces, user, found, now)
        yield Batch(ops)
    return found


# -- episodes -----------------------------------------------------------------------------------------------------


def episodic_op(
    settings: Settings,
    user: str,
    context_query: str,
    temporal_weight: float,
    max_episodes: int,
    half_life: timedelta,
    per_episode: int,
    candidates: int,
    filters: Mapping[str, Any] | None,
) -> Op_:
    check_text(context_query, "context_query")
    w = check_unit(temporal_weight, "temporal_weight")
    max_episodes = check_count("max_episodes", max_episodes)
    per_episode = check_count("per_episode", per_episode)
    candidates = check_count("candidates", candidates)
    half = check_duration(half_life, "half_life")
    assert half is not None
    filter = search_filter(filters, None, False)
    if not (max_episodes and per_episode and candidates):
        return []
    qvec = yield EmbedQuery(context_query)
    cands = yield from _fetch(
        settings, user, context_query, qvec, filter, candidates, settings.track_access
    )
    now = settings.now()
    groups: dict[str, list[Memory]] = {}
    for c in cands:
        m = c.memory
        score = (1.0 - w) * (m.similarity or 0.0) + w * recency(m.created_at, now, half)
        m = replace(m, score=score)
        groups.setdefault(m.episode_id or m.conversation_id or m.id, []).append(m)
    ranked = sorted(groups.items(), key=lambda g: -max(m.score or 0.0 for m in g[1]))
    episodes: list[Episode] = []
    for episode_id, members in ranked[:max_episodes]:
        best = sorted(members, key=lambda m: -(m.score or 0.0))[:per_episode]
        best.sort(key=lambda m: (m.created_at, m.message_range or (0, 0), m.id))
        convs = {m.conversation_id for m in best}
        episodes.append(
            Episode(
                episode_id=episode_id,
                conversation_id=convs.pop() if len(convs) == 1 else None,
                memories=best,
                score=max(m.score or 0.0 for m in best),
                started_at=best[0].created_at,
                ended_at=best[-1].created_at,
            )
        )
    if settings.track_access and episodes:
        recalled = [m for e in episodes for m in e.memories]
        ops, updated = write_access(settings.spaces, user, recalled, now)
        yield Batch(ops)
        it = iter(updated)
        episodes = [replace(e, memories=[next(it) for _ in e.memories]) for e in episodes]
    return episodes


# -- reads and erasure ---------------------------------------------------------------------------------------------


def get_op(settings: Settings, user: str, memory_ids: Sequence[str]) -> Op_:
    ns = settings.spaces.memories(user)
    items = yield Batch([GetOp(ns, i, refresh_ttl=False) for i in memory_ids])
    access = yield from load_access(
        settings.spaces, user, [i for i, it in zip(memory_ids, items, strict=True) if it]
    )
    return [None if it is None else decode_memory(it.value, access.get(it.key)) for it in items]


def list_op(settings: Settings, user: str, include_superseded: bool) -> Op_:
    items = yield from read_all(
        settings.spaces.memories(user), validity_filter(None, include_superseded)
    )
    access = yield from load_access(settings.spaces, user, [it.key for it in items])
    out = [decode_memory(it.value, access.get(it.key)) for it in items]
    out.sort(key=lambda m: (m.created_at, m.id))
    return out


def forget_op(settings: Settings, user: str, memory_ids: Sequence[str]) -> Op_:
    """Erase memories (and, for consolidated ones, what they were merged from)."""
    spaces = settings.spaces
    ns, ans = spaces.memories(user), spaces.access(user)
    wanted = list(dict.fromkeys(memory_ids))
    seen: set[str] = set()
    found: list[str] = []
    while wanted:
        items = yield Batch([GetOp(ns, i, refresh_ttl=False) for i in wanted])
        seen.update(wanted)
        nxt: list[str] = []
        for item in items:
            if item is None:
                continue
            found.append(item.key)
            nxt.extend(s for s in item.value.get("sources") or () if s not in seen)
        wanted = list(dict.fromkeys(nxt))
    if not found:
        return {"memories": 0, "access_records": 0}
    access = yield from load_access(spaces, user, found)
    ops: list[Op] = [PutOp(ns, i, None) for i in found]
    ops.extend(PutOp(ans, i, None) for i in access)
    yield Batch(ops)
    return {"memories": len(found), "access_records": len(access)}


def forget_user_op(settings: Settings, user: str) -> Op_:
    spaces = settings.spaces
    counts: dict[str, int] = {}
    for name, ns in (
        ("memories", spaces.memories(user)),
        ("access_records", spaces.access(user)),
        ("audit_records", spaces.audit(user)),
    ):
        total = 0
        while True:
            (page,) = yield Batch([SearchOp(ns, None, PAGE, 0, None, refresh_ttl=False)])
            if not page:
                break
            yield Batch([PutOp(ns, it.key, None) for it in page])
            total += len(page)
        counts[name] = total
    return counts


def users_op(settings: Settings) -> Op_:
    """Every user with memories (in this tenant)."""
    users: list[str] = []
    offset = 0
    prefix = MatchCondition("prefix", (settings.spaces.root,))
    while True:
        (page,) = yield Batch(
            [ListNamespacesOp(match_conditions=(prefix,), max_depth=2, limit=PAGE, offset=offset)]
        )
        users.extend(user_from_label(ns[1]) for ns in page if len(ns) == 2)
        if len(page) < PAGE:
            return sorted(set(users))
        offset += PAGE


# -- consolidation ---------------------------------------------------------------------------------------------------

Strategy = Literal["merge", "latest", "longest"] | Callable[[Sequence[Memory]], str]
STRATEGIES = ("merge", "latest", "longest")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def merged_text(strategy: Strategy, members: Sequence[Memory]) -> str:
    """The consolidated text of a group (leader first, then the others oldest first)."""
    if strategy == "latest":
        return max(members, key=lambda m: (m.created_at, m.id)).text
    if strategy == "longest":
        return max(members, key=lambda m: (len(m.text), m.created_at)).text
    if strategy == "merge":
        seen: set[str] = set()
        parts: list[str] = []
        for m in members:
            for sentence in _SENTENCE.split(m.text.strip()):
                key = normalize_text(sentence).rstrip(".!? ")
                if key and key not in seen:
                    seen.add(key)
                    parts.append(sentence.strip())
        return " ".join(parts)
    text = strategy(members)  # type: ignore[operator]
    return check_text(text, "the text returned by the consolidation strategy")


def strategy_name(strategy: object) -> str:
    if isinstance(strategy, str):
        if strategy not in STRATEGIES:
            raise ConfigurationError(
                f"strategy must be one of {', '.join(STRATEGIES)} or a function "
                f"memories -> text, got {strategy!r}"
            )
        return strategy
    if not callable(strategy):
        raise ConfigurationError(
            f"strategy must be one of {', '.join(STRATEGIES)} or a function, got {strategy!r}"
        )
    return getattr(strategy, "__name__", type(strategy).__name__)


def near_duplicate_groups(
    vectors: np.ndarray[Any, Any],
    priority: Sequence[int],
    threshold: float,
    *,
    block: int = 1024,
) -> list[tuple[int, list[tuple[int, float]]]]:
    """Leader clustering: each unassigned memory, in ``priority`` order, takes every
    unassigned memory within ``threshold`` cosine similarity of itself.

    Members are compared with their leader, not chained through each other,
    so a group never drifts: A~B and B~C with A and C apart do not make one
    group. Returns ``(leader, [(member, similarity), ...])``.
    """
    n = len(vectors)
    if n < 2:
        return []
    unit = _unit_rows(vectors)
    # float32 rounding: identical vectors score 0.99999994, not 1.
    cut = np.float32(threshold - 1e-6)
    neighbours: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    for start in range(0, n, block):
        sims = unit[start : start + block] @ unit.T
        rows, cols = np.nonzero(sims >= cut)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            i = start + r
            if i != c:
                neighbours[i].append((c, float(sims[r, c])))
    assigned = np.zeros(n, dtype=bool)
    groups = []
    for i in priority:
        if assigned[i] or not neighbours[i]:
            continue
        members = [(j, s) for j, s in neighbours[i] if not assigned[j]]
        if not members:
            continue
        assigned[i] = True
        for j, _ in members:
            assigned[j] = True
        groups.append((i, members))
    return groups


@dataclass(slots=True)
class _Planned:
    group: MergeGroup
    members: list[_Candidate]
    survivor: _Candidate | None  # an existing consolidated memory kept as the result
    vector: list[float] | None = None


@dataclass(slots=True)
class _UserPlan:
    user: str
    candidates: int
    preserved: int
    planned: list[_Planned] = field(default_factory=list)


def _plan_user(
    user: str,
    items: Sequence[Item],
    threshold: float,
    strategy: Strategy,
    preserve: float | None,
) -> _UserPlan:
    cands = [
        _Candidate(decode_memory(it.value), unpack_vector(it.value["embedding"]))
        for it in items
        if "embedding" in it.value
    ]
    kept = [c for c in cands if preserve is None or c.memory.importance < preserve]
    plan = _UserPlan(user, len(cands), len(cands) - len(kept))
    if len(kept) < 2:
        return plan
    order = sorted(
        range(len(kept)),
        key=lambda i: (
            -kept[i].memory.importance,
            -kept[i].memory.created_at.timestamp(),
            kept[i].memory.id,
        ),
    )
    groups = near_duplicate_groups(np.stack([c.vector for c in kept]), order, threshold)
    for leader, members in groups:
        others = sorted(
            members, key=lambda js: (kept[js[0]].memory.created_at, kept[js[0]].memory.id)
        )
        group = [kept[leader], *(kept[j] for j, _ in others)]
        text = merged_text(strategy, [c.memory for c in group])
        sims = {kept[leader].memory.id: 1.0, **{kept[j].memory.id: round(s, 6) for j, s in others}}
        plan.planned.append(
            _Planned(
                MergeGroup(
                    user_id=user,
                    consolidated_id=consolidated_key(text),
                    text=text,
                    source_ids=tuple(c.memory.id for c in group),
                    leader_id=kept[leader].memory.id,
                    similarities=sims,
                ),
                group,
                None,
            )
        )
    return plan


def _merged_new(planned: _Planned) -> NewMemory:
    members = [c.memory for c in planned.members]
    metadata: dict[str, Any] = {}
    for m in sorted(members, key=lambda m: (m.created_at, m.id)):
        metadata.update(m.metadata)  # newer values win
    convs = {m.conversation_id for m in members}
    episodes = {m.episode_id for m in members}
    conversation = convs.pop() if len(convs) == 1 else None
    message_ids: tuple[str, ...] = ()
    if conversation is not None:
        message_ids = tuple(dict.fromkeys(i for m in members for i in m.message_ids))
    return NewMemory(
        text=planned.group.text,
        metadata=metadata,
        importance=max(m.importance for m in members),
        created_at=max(m.created_at for m in members),
        kind="consolidated",
        conversation_id=conversation,
        episode_id=episodes.pop() if len(episodes) == 1 else None,
        message_ids=message_ids,
    )


def consolidate_op(
    settings: Settings,
    users: Sequence[str] | None,
    time_window: timedelta | None,
    similarity_threshold: float,
    strategy: Strategy,
    preserve_important: bool | float | None,
    dry_run: bool,
    max_ops_per_batch: int = 2000,
) -> Op_:
    threshold = check_unit(similarity_threshold, "similarity_threshold", low_open=True)
    name = strategy_name(strategy)
    window = check_duration(time_window, "time_window")
    if preserve_important is True:
        preserve: float | None = 0.8
    elif preserve_important is False or preserve_important is None:
        preserve = None
    else:
        preserve = check_unit(preserve_important, "preserve_important")
    if users is None:
        users = yield from users_op(settings)
    spaces = settings.spaces
    now = settings.now()
    filter: dict[str, Any] = {"valid_to": OPEN_END}
    if window is not None:
        filter["created_at"] = {"$gte": iso(now - window)}
    report_groups: list[MergeGroup] = []
    total = preserved = superseded = created = 0
    for user in users:
        # Never across users: each user's memories are read and merged on their own.
        items = yield from read_all(spaces.memories(user), filter)
        plan = _plan_user(user, items, threshold, strategy, preserve)
        total += plan.candidates
        preserved += plan.preserved
        if not plan.planned:
            continue
        ns = spaces.memories(user)
        existing = yield Batch(
            [GetOp(ns, p.group.consolidated_id, refresh_ttl=False) for p in plan.planned]
        )
        for p, item in zip(plan.planned, existing, strict=True):
            if item is None:
                continue
            same = next((c for c in p.members if c.memory.id == item.key), None)
            if same is not None:
                # The group's text is that of one of its consolidated memories: it stays.
                p.survivor = same
                p.members.remove(same)
                p.members.insert(0, same)
            else:
                salt = hashlib.sha256(",".join(sorted(p.group.source_ids)).encode()).hexdigest()
                p.group = replace(p.group, consolidated_id=f"{p.group.consolidated_id}_{salt[:12]}")
            if p.survivor is not None:
                p.group = replace(
                    p.group,
                    consolidated_id=item.key,
                    source_ids=tuple(c.memory.id for c in p.members[1:]),
                )
        report_groups.extend(p.group for p in plan.planned)
        if dry_run:
            continue
        # Vectors: a text equal to a member's reuses its vector; others are embedded.
        by_text = {c.memory.text: c.vector for p in plan.planned for c in p.members}
        need = list(
            dict.fromkeys(
                p.group.text
                for p in plan.planned
                if p.survivor is None and p.group.text not in by_text
            )
        )
        if need:
            vectors = yield EmbedDocuments(need)
            by_text.update(
                zip(need, (np.asarray(v, dtype=np.float32) for v in vectors), strict=True)
            )
        ops: list[Op] = []
        primed: dict[str, list[float]] = {}
        for p in plan.planned:
            ops.extend(_merge_ops(spaces, user, p, by_text, now, name, threshold, primed))
            if p.survivor is None:
                created += 1
            superseded += len(p.group.source_ids)
            if len(ops) >= max_ops_per_batch:
                yield Batch(ops, primed)
                ops, primed = [], {}
        if ops:
            yield Batch(ops, primed)
    return ConsolidationReport(
        dry_run=dry_run,
        strategy=name,
        similarity_threshold=threshold,
        users=tuple(users),
        candidates=total,
        preserved=preserved,
        groups=report_groups,
        superseded=superseded,
        created=created,
    )


def _merge_ops(
    spaces: Spaces,
    user: str,
    p: _Planned,
    by_text: Mapping[str, np.ndarray[Any, Any]],
    now: datetime,
    strategy: str,
    threshold: float,
    primed: dict[str, list[float]],
) -> list[Op]:
    """One merge: the consolidated memory, its sources superseded, an audit record."""
    ns = spaces.memories(user)
    g = p.group
    ops: list[Op] = []
    if p.survivor is not None:
        value = _raw_value(p.survivor, user)
        value["sources"] = list(dict.fromkeys([*value.get("sources", []), *g.source_ids]))
        value["importance"] = max(c.memory.importance for c in p.members)
        primed[value["text"]] = as_list(p.survivor.vector)
        sources = p.members[1:]
    else:
        vec = as_list(by_text[g.text])
        new = _merged_new(p)
        value = build_value(user, g.consolidated_id, new, vec, now, sources=g.source_ids)
        primed[g.text] = vec
        sources = p.members
    ops.append(PutOp(ns, g.consolidated_id, value))
    for c in sources:
        old = _raw_value(c, user)
        old["valid_to"] = iso(now)
        old["superseded_by"] = g.consolidated_id
        primed[old["text"]] = as_list(c.vector)
        ops.append(PutOp(ns, c.memory.id, old))
    record_id = f"{now.strftime('%Y%m%dT%H%M%S%fZ')}-{g.consolidated_id}"
    ops.append(
        PutOp(
            spaces.audit(user),
            record_id,
            {
                "event": "merge",
                "record_id": record_id,
                "user_id": user,
                "at": iso(now),
                "consolidated_id": g.consolidated_id,
                "source_ids": list(g.source_ids),
                "leader_id": g.leader_id,
                "similarities": g.similarities,
                "strategy": strategy,
                "similarity_threshold": threshold,
            },
            index=False,
        )
    )
    return ops


def _raw_value(c: _Candidate, user: str) -> dict[str, Any]:
    m = c.memory
    return {
        "id": m.id,
        "user_id": user,
        "text": m.text,
        "content_hash": content_hash(m.text),
        "kind": m.kind,
        "metadata": m.metadata,
        "importance": m.importance,
        "created_at": iso(m.created_at),
        "valid_from": iso(m.valid_from),
        "valid_to": OPEN_END if m.valid_to is None else iso(m.valid_to),
        "superseded_by": m.superseded_by,
        "sources": list(m.sources),
        "conversation_id": m.conversation_id,
        "episode_id": m.episode_id,
        "message_ids": list(m.message_ids),
        "message_range": list(m.message_range) if m.message_range else None,
        "embedding": pack_vector(c.vector),
    }


def decode_record(value: Mapping[str, Any]) -> MergeRecord:
    return MergeRecord(
        record_id=value["record_id"],
        user_id=value["user_id"],
        at=parse_iso(value["at"]),
        consolidated_id=value["consolidated_id"],
        source_ids=tuple(value["source_ids"]),
        leader_id=value["leader_id"],
        similarities=dict(value["similarities"]),
        strategy=value["strategy"],
        similarity_threshold=float(value["similarity_threshold"]),
    )


def history_op(settings: Settings, user: str, memory_id: str | None) -> Op_:
    items = yield from read_all(settings.spaces.audit(user))
    records = [decode_record(it.value) for it in items]
    if memory_id is not None:
        records = [
            r for r in records if memory_id == r.consolidated_id or memory_id in r.source_ids
        ]
    records.sort(key=lambda r: (r.at, r.record_id))
    return records


# -- conversations ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Line:
    """One message of a conversation, as text."""

    message_id: str
    seq: int
    text: str
    created_at: datetime | None


def message_text(message: Any) -> str:
    text = getattr(message, "text", None)  # a str (subclass) in langchain-core 1.x
    if not isinstance(text, str):
        content = getattr(message, "content", "")
        text = content if isinstance(content, str) else str(content)
    role = getattr(message, "type", "message")
    return f"{role}: {str(text).strip()}"


def chunk_lines(
    lines: Sequence[Line], chunk_size: int, chunk_overlap: int
) -> list[tuple[str, list[Line]]]:
    """Cut a transcript into windows of at most ``chunk_size`` characters.

    A window ends at a message boundary when one falls in its second half,
    else at a space; the next starts ``chunk_overlap`` characters earlier.
    Each window lists the messages it covers.
    """
    spans: list[tuple[int, int, Line]] = []
    parts: list[str] = []
    pos = 0
    for line in lines:
        if not line.text.split(":", 1)[-1].strip():
            continue
        spans.append((pos, pos + len(line.text), line))
        parts.append(line.text)
        pos += len(line.text) + 1
    transcript = "\n".join(parts)
    total = len(transcript)
    starts = [s for s, _, _ in spans]
    chunks: list[tuple[str, list[Line]]] = []
    start = 0
    while start < total:
        end = min(start + chunk_size, total)
        if end < total:
            half = start + chunk_size // 2
            boundary = max((s for s in starts if half < s <= end), default=None)
            if boundary is not None:
                end = boundary
            else:
                space = transcript.rfind(" ", half, end)
                if space > start:
                    end = space + 1
        text = transcript[start:end].strip()
        covered = [line for s, e, line in spans if s < end and e > start]
        if text:
            chunks.append((text, covered))
        if end >= total:
            break
        nxt = end - chunk_overlap
        if chunk_overlap and nxt > start:
            space = transcript.find(" ", nxt, end)
            newline = transcript.find("\n", nxt, end)
            cut = min((x for x in (space, newline) if x != -1), default=-1)
            nxt = cut + 1 if cut != -1 else nxt
        start = nxt if nxt > start else end
    return chunks


def conversation_news(
    conversation_id: str | None,
    lines: Sequence[Line],
    metadata: dict[str, Any],
    chunk_size: int,
    chunk_overlap: int,
    importance: float,
    now: datetime,
) -> list[NewMemory]:
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    if (
        isinstance(chunk_overlap, bool)
        or not isinstance(chunk_overlap, int)
        or not 0 <= chunk_overlap < chunk_size
    ):
        raise ConfigurationError(
            f"chunk_overlap must be an integer in [0, chunk_size={chunk_size}), got {chunk_overlap!r}"
        )
    out = []
    for text, covered in chunk_lines(lines, chunk_size, chunk_overlap):
        times = [line.created_at for line in covered if line.created_at is not None]
        out.append(
            NewMemory(
                text=text,
                metadata=metadata,
                importance=importance,
                created_at=max(times) if times else now,
                kind="chunk",
                conversation_id=conversation_id,
                episode_id=conversation_id,
                message_ids=tuple(line.message_id for line in covered),
                message_range=(covered[0].seq, covered[-1].seq) if covered else None,
            )
        )
    return out
