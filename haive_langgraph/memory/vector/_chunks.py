"""Conversations as memories: transcripts cut into overlapping chunks linked to their messages (no I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from haive_langgraph.errors import ConfigurationError
from haive_langgraph.memory.conversations._types import StoredMessage
from haive_langgraph.memory.vector._values import NewMemory, check_positive_int


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


def lines_of(messages: Sequence[Any]) -> list[Line]:
    """The lines of a conversation's messages (``StoredMessage`` or LangChain messages)."""
    lines = []
    for n, m in enumerate(messages):
        if isinstance(m, StoredMessage):
            lines.append(Line(m.message_id, m.seq, message_text(m.message), m.created_at))
        else:
            mid = getattr(m, "id", None) or str(n)
            lines.append(Line(str(mid), n, message_text(m), None))
    return lines
