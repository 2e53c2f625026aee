"""The stored form of a memory, and the checks every argument goes through (no I/O).

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from haive_langgraph.db._limits import check_depth, check_text_id
from haive_langgraph.errors import ConfigurationError, InvalidMemoryError
from haive_langgraph.memory.vector._types import Memory, MemoryKind, MergeRecord

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


def encode_memory(memory: Memory, vector: Sequence[float] | np.ndarray[Any, Any]) -> dict[str, Any]:
    """The stored value of a memory (with its vector): what :func:`decode_memory` reads."""
    m = memory
    return {
        "id": m.id,
        "user_id": m.user_id,
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
        "level": m.level,
        "parent_id": m.parent_id,
        "children": list(m.children),
        "embedding": pack_vector(vector),
    }


def build_value(
    user: str,
    key: str,
    new: NewMemory,
    vector: Sequence[float],
    valid_from: datetime,
    *,
    sources: Sequence[str] = (),
) -> dict[str, Any]:
    """The stored value of a new memory, valid from ``valid_from`` on."""
    memory = Memory(
        id=key,
        user_id=user,
        text=new.text,
        metadata=new.metadata,
        importance=new.importance,
        created_at=new.created_at,
        valid_from=valid_from,
        kind=new.kind,
        sources=tuple(sources),
        conversation_id=new.conversation_id,
        episode_id=new.episode_id,
        message_ids=new.message_ids,
        message_range=new.message_range,
    )
    return encode_memory(memory, vector)


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
        level=int(value.get("level") or 0),
        parent_id=value.get("parent_id"),
        children=tuple(value.get("children") or ()),
    )


def memory_key(text: str) -> str:
    return f"m_{content_hash(text)}"


def consolidated_key(text: str) -> str:
    return f"c_{content_hash(text)}"


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
        event=value.get("event", "merge"),
        level=int(value.get("level") or 0),
    )
