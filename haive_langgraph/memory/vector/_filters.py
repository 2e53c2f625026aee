"""Search filters of vector memory: the caller's keys as the store's filter (no I/O).

Metadata keys go under ``metadata.``; the memory's own fields and the
validity interval (``valid_from``, ``valid_to``) are filtered as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from haive_langgraph.db._limits import check_depth
from haive_langgraph.errors import InvalidFilterError
from haive_langgraph.memory.vector._values import OPEN_END, iso

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
    "level",
    "parent_id",
    "children",
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
