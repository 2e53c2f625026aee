"""Limits on what the application may write and ask for: id lengths, nesting depth, counts.

Every component checks its ids and JSON values against these before any
statement runs, so that a write either works (and its read returns the same
thing) or raises one of our errors, never a server limit surfacing as a
psycopg error or a ``RecursionError``. Value sizes are the codec's limit
(``max_decompressed_size``, see :class:`~haive_langgraph.errors.ValueTooLargeError`).

* Ids (thread ids, checkpoint namespaces and ids, task ids, tags, branch
  names, store keys, session, user, conversation, message and tenant ids)
  take at most :data:`MAX_ID_BYTES` bytes of UTF-8, hold no NUL character
  and no lone surrogate (PostgreSQL text is UTF-8 without NUL). The widest
  btree entry of ours holds five ids (a pending write: tenant, thread,
  namespace, checkpoint and task), 5 x 512 bytes plus headers, under
  PostgreSQL's 2,704-byte limit even when nothing compresses.
* JSON values (metadata, filters, store values) and the containers of
  other values nest at most :data:`MAX_DEPTH` levels: orjson and ormsgpack
  stop at 254 and Python's ``json`` at the interpreter's recursion limit, and
  our wrappers (a store value around memory metadata, a message around its
  metadata) add a few levels of their own.
* JSON metadata the codec does not frame (jsonb columns) takes at most
  :data:`MAX_JSON_BYTES`.
* Counts (limits, offsets, numbers of results, depths) are integers from 0
  to the largest value of the SQL type the statement gives them:
  :data:`MAX_COUNT` (``bigint``, what ``LIMIT`` and ``OFFSET`` take) or
  :data:`MAX_INT4` (``integer``: a namespace depth slices an array), checked
  by :func:`check_count`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from haive_langgraph.errors import ConfigurationError, HaiveError, ValueTooLargeError

__all__ = [
    "MAX_COUNT",
    "MAX_DEPTH",
    "MAX_ID_BYTES",
    "MAX_INT4",
    "MAX_JSON_BYTES",
    "bad_json_text",
    "check_count",
    "check_depth",
    "check_text_id",
    "exceeds_depth",
    "has_lone_surrogate",
    "id_problem",
    "shown",
    "utf8_len",
]

MAX_ID_BYTES = 512
"""Longest id, in UTF-8 bytes."""

MAX_DEPTH = 128
"""Deepest nesting of containers (dicts, lists, tuples) in a JSON value or metadata."""

MAX_JSON_BYTES = 64 * 1024 * 1024
"""Largest JSON metadata document (jsonb columns the codec does not frame), in bytes.

The same as the codec's default ``max_decompressed_size``, and well under
PostgreSQL's own jsonb limit (256 MB), whose error would otherwise surface.
"""

MAX_COUNT = 2**63 - 1
"""Largest count (a limit, an offset, a number of results): PostgreSQL's ``bigint``."""

MAX_INT4 = 2**31 - 1
"""Largest count a statement uses as an ``integer`` (an array subscript: a namespace depth)."""


_SURROGATE = re.compile("[\ud800-\udfff]")


def has_lone_surrogate(text: str) -> bool:
    """Whether ``text`` holds a lone surrogate, which UTF-8 (PostgreSQL's text) cannot store.

    ``isascii()`` (one C pass) spares the usual ASCII text the search.
    """
    return not text.isascii() and _SURROGATE.search(text) is not None


def utf8_len(text: str) -> int:
    """Length of ``text`` in UTF-8 bytes (a lone surrogate counts 3)."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def id_problem(text: str, limit: int = MAX_ID_BYTES) -> str | None:
    """What makes ``text`` unusable as a stored id, or ``None`` if it is usable."""
    if "\x00" in text:
        return "contains a NUL character"
    # A character takes at most 4 bytes: only a longer text can be too long.
    if len(text) * 4 > limit and (n := utf8_len(text)) > limit:
        return f"is {n:,} bytes long (UTF-8); at most {limit} bytes are allowed"
    if has_lone_surrogate(text):
        return "contains a lone surrogate (not UTF-8)"
    return None


def check_text_id(
    value: object,
    what: str,
    *,
    error: type[HaiveError] = ConfigurationError,
    limit: int = MAX_ID_BYTES,
) -> str:
    """Return ``value`` if it is a ``str`` usable as a stored id, else raise ``error``.

    Args:
        value: The id.
        what: Its name in the message (``"session_id"``).
        error: The error class to raise (a :class:`ConfigurationError` by default).
        limit: Longest id in UTF-8 bytes.

    Raises:
        ConfigurationError: (or ``error``) naming the argument and what is wrong.
    """
    if not isinstance(value, str):
        raise error(f"{what} must be a string, got {type(value).__name__}")
    problem = id_problem(value, limit)
    if problem is not None:
        raise error(f"{what} {value[:60]!r}{'...' if len(value) > 60 else ''} {problem}")
    return value


def check_count(name: str, value: object, *, maximum: int = MAX_COUNT, minimum: int = 0) -> int:
    """Return ``value`` if it is an ``int`` (not a ``bool``) from ``minimum`` to ``maximum``.

    The one rule for the counts an API takes (limits, offsets, numbers of
    results, depths, quotas): 0 asks for nothing and gets nothing, as
    LangGraph's savers and stores answer ``limit=0``; a negative number, a
    bool, a float, a string or a number past the SQL type the statement
    gives it is refused before anything is sent.

    Args:
        name: The argument's name in the message (``"limit"``, ``"search offset"``).
        value: The count.
        maximum: Largest value allowed: :data:`MAX_COUNT` (``bigint``) unless
            the statement uses the count as an ``integer`` (:data:`MAX_INT4`).
        minimum: Smallest value allowed (1 for a depth).

    Raises:
        ConfigurationError: naming the argument, the range and the value.
    """
    if isinstance(value, int) and not isinstance(value, bool) and minimum <= value <= maximum:
        return value
    kind = {0: "non-negative", 1: "positive"}.get(minimum, f">= {minimum}")
    raise ConfigurationError(
        f"{name} must be a {kind} integer of at most {maximum:,}, got {shown(value)}"
    )


def shown(value: object) -> str:
    """``value`` for a message: its repr, cut at 80 characters.

    An integer of more than 128 bits is described instead (``repr`` raises
    ``ValueError`` past 4,300 digits, and its digits say nothing useful).
    """
    if isinstance(value, int) and value.bit_length() > 128:
        return f"an integer of {value.bit_length()} bits"
    return f"{value!r:.80}"


def _children(node: Any) -> Any:
    if isinstance(node, Mapping):
        return node.values()
    if isinstance(node, list | tuple):
        return node
    return None


def exceeds_depth(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` nests dicts, lists and tuples more than ``limit`` levels deep.

    ``{"a": 1}`` is one level deep, ``{"a": [1]}`` two. Iterative, so a value
    nested deeper than Python's recursion limit is measured too, and it stops
    at the first path past the limit (a cyclic value is reported as too deep).
    """
    stack = [(value, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        node, depth = pop()
        children = _children(node)
        if children is None:
            continue
        if depth > limit:
            return True
        for child in children:
            if isinstance(child, Mapping | list | tuple):
                push((child, depth + 1))
    return False


def check_depth(
    value: Any,
    what: str,
    *,
    limit: int = MAX_DEPTH,
    error: type[HaiveError] | None = None,
) -> None:
    """Raise if ``value`` nests more than ``limit`` levels deep.

    Args:
        value: A JSON-like value.
        what: Its name in the message (``"checkpoint metadata"``).
        limit: Deepest nesting allowed.
        error: Raise this class with a message (for arguments such as
            filters); by default a :class:`ValueTooLargeError` (for values).

    Raises:
        ValueTooLargeError: (or ``error``) naming the value and the limit.
    """
    if not exceeds_depth(value, limit):
        return
    if error is None:
        raise ValueTooLargeError(what, limit + 1, limit, "levels")
    raise error(
        f"{what} is nested more than {limit} levels deep, the limit for JSON values and "
        "filters; flatten it"
    )


def bad_json_text(value: Any) -> str | None:
    """The first string (key or value) in ``value`` that PostgreSQL's jsonb cannot hold.

    That is a string with a NUL character or a lone surrogate. Iterative; call
    it on a value already known not to nest too deep.
    """
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if "\x00" in node or has_lone_surrogate(node):
                return node
        elif isinstance(node, Mapping):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list | tuple):
            stack.extend(node)
    return None
