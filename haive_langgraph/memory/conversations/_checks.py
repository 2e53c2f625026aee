"""Checks of the arguments conversation memory takes, and its cursors (no I/O)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from haive_langgraph.db._limits import (
    MAX_JSON_BYTES,
    bad_json_text,
    check_count,
    check_depth,
    check_text_id,
)
from haive_langgraph.errors import ConfigurationError, SerializationError, ValueTooLargeError
from haive_langgraph.memory.conversations._types import PERMISSIONS, Permission

MAX_SEQ = 2**62
"""Past every position a conversation can hold (positions are ``bigint``)."""


def new_id() -> str:
    """A new conversation or session id (a random UUID)."""
    return str(uuid.uuid4())


def check_id(value: object, what: str) -> str:
    """An id we store as text: a non-empty string of the shared id rule (``db._limits``).

    At most 512 bytes of UTF-8, no NUL character, no lone surrogate.
    """
    if isinstance(value, str) and not value:
        raise ConfigurationError(f"{what} must not be empty")
    return check_text_id(value, what)


def check_optional_id(value: object, what: str) -> str | None:
    """``None``, or an id as :func:`check_id` checks it."""
    return None if value is None else check_id(value, what)


def check_positive(value: object, what: str) -> int:
    """A size or a quota: an integer from 1 to ``bigint``'s largest (``db._limits``)."""
    return check_count(what, value, minimum=1)


def check_time(value: object, what: str) -> datetime | None:
    """``None`` or a ``datetime``."""
    if value is None or isinstance(value, datetime):
        return value
    raise ConfigurationError(f"{what} must be a datetime, got {type(value).__name__}")


def check_permission(value: object) -> Permission:
    """One of ``"read"``, ``"write"``, ``"moderate"``."""
    if value not in PERMISSIONS:
        raise ConfigurationError(
            f"permission {value!r} is not one of {', '.join(repr(p) for p in PERMISSIONS)}"
        )
    return value  # type: ignore[return-value]


def check_page(limit: int | None, cursor: str | None) -> None:
    """A page's ``limit`` (``None``: everything) and ``cursor`` (which needs a limit)."""
    if limit is not None:
        check_count("limit", limit)
    elif cursor is not None:
        raise ConfigurationError("a cursor needs a limit")


def check_json(value: Mapping[str, Any], what: str) -> dict[str, Any]:
    """``value`` if PostgreSQL's jsonb can hold it, within the limits of ``db._limits``.

    Raises:
        ValueTooLargeError: Nested deeper than ``MAX_DEPTH`` or larger than
            ``MAX_JSON_BYTES`` as JSON.
        SerializationError: Not JSON, NaN or infinity, or a string with a
            NUL character or a lone surrogate.
    """
    check_depth(value, what)
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"{what} must be JSON-serialisable: {exc}") from None
    if ("\\u0000" in text or "\\ud" in text) and (bad := bad_json_text(value)) is not None:
        raise SerializationError(
            f"{what} holds {bad[:40]!r}, with a character PostgreSQL's jsonb cannot store "
            "(NUL or a lone surrogate)"
        )
    if len(text) > MAX_JSON_BYTES:
        raise ValueTooLargeError(what, len(text), MAX_JSON_BYTES, setting="for JSON metadata")
    return dict(value)


def parse_message_cursor(cursor: object) -> int | None:
    """The position a message page's ``next_cursor`` names (``None``: the start)."""
    if cursor is None:
        return None
    # ASCII digits only ("²".isdigit() is true, int("²") fails), at most MAX_SEQ.
    if isinstance(cursor, str) and cursor.isascii() and cursor.isdigit() and len(cursor) < 20:
        position = int(cursor)
        if position < MAX_SEQ:
            return position
    raise ConfigurationError(f"invalid message cursor {cursor!r:.80}; pass a page's next_cursor")


def encode_conversation_cursor(value: datetime, conversation_id: str) -> str:
    """The ``next_cursor`` of a page of conversations ending at this one."""
    return f"{value.isoformat()}|{conversation_id}"


def decode_conversation_cursor(cursor: object) -> tuple[datetime, str] | None:
    """What :func:`encode_conversation_cursor` encoded (``None`` for no cursor)."""
    if cursor is None:
        return None
    if isinstance(cursor, str) and "|" in cursor:
        stamp, _, conversation_id = cursor.partition("|")
        try:
            return datetime.fromisoformat(stamp), conversation_id
        except ValueError:
            pass
    raise ConfigurationError(f"invalid conversation cursor {cursor!r}; pass a page's next_cursor")
