"""Search filters compiled to SQL over the item's JSON document, every value a parameter.

A filter maps a key to a value or to operators::

    {"type": "note"}                        # equality
    {"meta.source": "chat"}                 # nested key by dotted path
    {"meta": {"source": "chat"}}            # the same, as a nested dict
    {"score": {"$gte": 3, "$lt": 10}}       # comparisons
    {"tag": {"$in": ["a", "b"]}, "deleted": {"$exists": False}}

Semantics (those of LangGraph's ``InMemoryStore`` where it defines them):

* ``$eq``/plain value: JSON equality (``1 == 1.0``; lists compare whole);
  ``None`` matches a missing key or a null.
* ``$ne``: not equal; a missing key is not equal to anything but ``None``.
* ``$gt $gte $lt $lte``: numbers compare as numbers (``10 > 9``), strings as
  strings in code-point order (ISO dates compare chronologically; ``date``
  and ``datetime`` filter values are turned into ISO strings). A stored value
  of another JSON type never matches.
* ``$in``/``$nin``: equal (not equal) to one of a list.
* ``$exists``: the key is present (even with a null value), or absent.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from psycopg import sql

from haive_langgraph.db._arrays import TextArray
from haive_langgraph.db._limits import bad_json_text, check_depth
from haive_langgraph.stores._errors import InvalidFilterError
from haive_langgraph.stores._values import dump_json, nul_path

OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists")
_COMPARISONS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_NULL_MATCH = "({e} IS NULL OR {e} = 'null'::jsonb)"


def _is_index(segment: str) -> bool:
    # `#>` would index into an array with such a segment; containment would not.
    return segment.lstrip("-").isdigit()


class FilterCompiler:
    """Compiles one filter; parameters are named ``<prefix><n>``.

    Args:
        column: The jsonb column expression (a constant of ours).
        prefix: Parameter name prefix.
        allowed: Dotted paths the document holds (``None``: the whole value).
    """

    def __init__(
        self,
        column: str = "s.doc",
        prefix: str = "f",
        allowed: Sequence[tuple[str, ...]] | None = None,
    ) -> None:
        self.column = column
        self.prefix = prefix
        self.allowed = allowed
        self.params: dict[str, Any] = {}
        self._n = 0

    def _param(self, value: Any) -> sql.Placeholder:
        name = f"{self.prefix}{self._n}"
        self._n += 1
        self.params[name] = value
        return sql.Placeholder(name)

    def compile(self, filter: Mapping[str, Any] | None) -> list[sql.Composable]:
        """The conditions (to be AND-ed) of ``filter``.

        Raises:
            InvalidFilterError: an unsupported operator, an invalid key or a
                value the operator cannot compare.
        """
        if not filter:
            return []
        if not isinstance(filter, Mapping):
            raise InvalidFilterError(f"filter must be a dict, got {type(filter).__name__}")
        check_depth(filter, "filter", error=InvalidFilterError)
        out: list[sql.Composable] = []
        for key, value in filter.items():
            if not isinstance(key, str) or not key:
                raise InvalidFilterError(f"filter keys must be non-empty strings, got {key!r}")
            if key.startswith("$"):
                raise InvalidFilterError(
                    f"unsupported top-level filter operator {key!r}; filter on keys, e.g. "
                    '{"status": {"$ne": "done"}}'
                )
            segments = tuple(key.split("."))
            if not all(segments):
                raise InvalidFilterError(f"filter key {key!r} has an empty path segment")
            _check_nul(key, "key", key)
            out.extend(self._path(segments, value))
        return out

    def _check_allowed(self, path: tuple[str, ...]) -> None:
        if self.allowed is None:
            return
        if not any(path[: len(a)] == a for a in self.allowed):
            fields = ", ".join(".".join(a) for a in self.allowed) or "none"
            raise InvalidFilterError(
                f"cannot filter on {'.'.join(path)!r}: values are stored encrypted and only these "
                f"fields are kept searchable: {fields} (the filter_fields option)"
            )

    def _expr(self, path: tuple[str, ...]) -> sql.Composable:
        return sql.SQL("({} #> {})").format(sql.SQL(self.column), self._param(TextArray(path)))

    def _path(self, path: tuple[str, ...], value: Any) -> list[sql.Composable]:
        if isinstance(value, Mapping):
            keys = list(value)
            if any(isinstance(k, str) and k.startswith("$") for k in keys):
                out: list[sql.Composable] = []
                for op, operand in value.items():
                    out.append(self._operator(path, op, operand))
                return out
            # A nested dict matches when the stored value is an object whose
            # keys match, recursively (InMemoryStore's rule).
            self._check_allowed(path)
            nested: list[sql.Composable] = [
                sql.SQL("jsonb_typeof({}) = 'object'").format(self._expr(path))
            ]
            for k, v in value.items():
                if not isinstance(k, str) or not k:
                    raise InvalidFilterError(f"filter keys must be non-empty strings, got {k!r}")
                _check_nul(".".join((*path, k)), "key", k)
                nested.extend(self._path((*path, k), v))
            return nested
        return [self._operator(path, "$eq", value)]

    def _json(self, path: tuple[str, ...], op: str, value: Any) -> bytes:
        _check_nul(".".join(path), f"{op} value", value)
        try:
            return dump_json(value)
        except TypeError:
            raise InvalidFilterError(
                f"filter value for {'.'.join(path)!r} {op} is a {type(value).__name__}, "
                "not a JSON value"
            ) from None

    def _operator(self, path: tuple[str, ...], op: Any, operand: Any) -> sql.Composable:
        where = ".".join(path)
        if op not in OPERATORS:
            raise InvalidFilterError(
                f"unsupported filter operator {op!r} on {where!r}; supported: {', '.join(OPERATORS)}"
            )
        self._check_allowed(path)
        if op == "$exists":
            if not isinstance(operand, bool):
                raise InvalidFilterError(
                    f"$exists on {where!r} takes true or false, got {operand!r}"
                )
            return sql.SQL("{} IS NOT NULL" if operand else "{} IS NULL").format(self._expr(path))
        if op in ("$eq", "$ne"):
            return self._equality(path, op, operand)
        if op in ("$in", "$nin"):
            if isinstance(operand, str | bytes) or not isinstance(operand, Sequence):
                raise InvalidFilterError(f"{op} on {where!r} takes a list, got {operand!r}")
            items = [x for x in operand if x is not None]
            e = self._expr(path)
            arr = self._param(TextArray(self._json(path, op, x) for x in items))
            cond = sql.SQL("coalesce({e} = ANY({arr}::jsonb[]), false)").format(e=e, arr=arr)
            if len(items) != len(operand):
                cond = sql.SQL("({} OR {})").format(cond, sql.SQL(_NULL_MATCH).format(e=e))
            return sql.SQL("({})" if op == "$in" else "(NOT {})").format(cond)
        return self._comparison(path, op, operand)

    def _equality(self, path: tuple[str, ...], op: str, operand: Any) -> sql.Composable:
        if operand is None:
            e = self._expr(path)
            if op == "$eq":
                return sql.SQL(_NULL_MATCH).format(e=e)
            return sql.SQL("({e} IS NOT NULL AND {e} <> 'null'::jsonb)").format(e=e)
        data = self._json(path, op, operand)
        scalar = isinstance(operand, str | int | float | bool | dt.date | dt.time)
        if op == "$eq" and scalar and not any(_is_index(s) for s in path):
            # Containment of {"a": {"b": v}}: the same match for a scalar v,
            # and it can use the GIN index on the document.
            nested = data
            for segment in reversed(path):
                nested = b'{"' + _json_key(segment) + b'":' + nested + b"}"
            return sql.SQL("{} @> {}::jsonb").format(
                sql.SQL(self.column), self._param(nested.decode())
            )
        e = self._expr(path)
        value = self._param(data.decode())
        if op == "$eq":
            return sql.SQL("{} = {}::jsonb").format(e, value)
        return sql.SQL("{} IS DISTINCT FROM {}::jsonb").format(e, value)

    def _comparison(self, path: tuple[str, ...], op: str, operand: Any) -> sql.Composable:
        where = ".".join(path)
        symbol = sql.SQL(_COMPARISONS[op])
        e = self._expr(path)
        if isinstance(operand, dt.date | dt.time):
            operand = operand.isoformat()
        if isinstance(operand, bool) or operand is None:
            raise InvalidFilterError(
                f"{op} on {where!r} compares numbers or strings, got {operand!r}"
            )
        if isinstance(operand, int | float):
            if not math.isfinite(operand):
                raise InvalidFilterError(
                    f"{op} on {where!r} needs a finite number, got {operand!r}"
                )
            return sql.SQL(
                "(CASE WHEN jsonb_typeof({e}) = 'number' THEN ({e})::numeric {op} {v}::numeric "
                "ELSE false END)"
            ).format(
                e=e,
                op=symbol,
                v=self._param(repr(operand) if isinstance(operand, float) else str(operand)),
            )
        if isinstance(operand, str):
            _check_nul(where, f"{op} value", operand)
            return sql.SQL(
                "(CASE WHEN jsonb_typeof({e}) = 'string' THEN ({e} #>> '{{}}') COLLATE \"C\" {op} {v} "
                "ELSE false END)"
            ).format(e=e, op=symbol, v=self._param(operand))
        raise InvalidFilterError(
            f"{op} on {where!r} compares numbers or strings, got a {type(operand).__name__}"
        )


# Compiled filters, by the filter's exact content (types included) and where
# it goes. A batch of merged calls often repeats a filter, and composing SQL
# costs more than the statement it builds (0.1-0.2 ms a filter).
_COMPILED: dict[Hashable, tuple[str, Mapping[str, Any]]] = {}
_COMPILED_MAX = 2048


_UNKNOWN: Any = object()


def compiled(
    filter: Mapping[str, Any] | None,
    column: str = "s.doc",
    prefix: str = "f",
    allowed: tuple[tuple[str, ...], ...] | None = None,
    *,
    frozen_filter: Hashable | None = _UNKNOWN,
) -> tuple[str, Mapping[str, Any]]:
    """``filter`` compiled by :class:`FilterCompiler`: the conditions as SQL text
    (each preceded by `` AND ``) and their parameters (shared: do not change them).

    ``frozen_filter`` is :func:`frozen` of ``filter`` when the caller has it.

    Raises:
        InvalidFilterError: as :meth:`FilterCompiler.compile`.
    """
    if not filter:
        return "", {}
    key = frozen(filter) if frozen_filter is _UNKNOWN else frozen_filter
    if key is not None:
        key = (key, column, prefix, allowed)
        hit = _COMPILED.get(key)
        if hit is not None:
            return hit
    compiler = FilterCompiler(column, prefix=prefix, allowed=allowed)
    conditions = compiler.compile(filter)
    text = "".join(" AND " + c.as_string(None) for c in conditions)
    out = (text, compiler.params)
    if key is not None:
        if len(_COMPILED) >= _COMPILED_MAX:
            _COMPILED.clear()
        _COMPILED[key] = out
    return out


def frozen(value: Any, depth: int = 0) -> Hashable | None:
    """A hashable copy of a filter that tells apart whatever compiles differently
    (types, order), or ``None`` when there is none (then nothing is cached)."""
    if depth > 8:
        return None
    kind = type(value)
    if kind is dict:
        items = []
        for k, v in value.items():
            fv = frozen(v, depth + 1)
            if fv is None or type(k) is not str:
                return None
            items.append((k, fv))
        return (dict, tuple(items))
    if kind is list or kind is tuple:
        parts = []
        for v in value:
            fv = frozen(v, depth + 1)
            if fv is None:
                return None
            parts.append(fv)
        return (kind, tuple(parts))
    if kind in (str, int, bool, type(None)):
        return (kind, value)
    if kind is float and math.isfinite(value) and value != 0.0:  # -0.0 == 0.0, not in SQL
        return (kind, value)
    return None


def _check_nul(where: str, what: str, value: Any) -> None:
    # Stored documents hold no NUL (PostgreSQL cannot), so nothing could match one.
    if nul_path(value) is not None:
        raise InvalidFilterError(
            f"filter {what} on {where!r} contains a NUL character, which PostgreSQL cannot hold"
        )
    if bad_json_text(value) is not None:
        raise InvalidFilterError(
            f"filter {what} on {where!r:.80} contains a lone surrogate, which PostgreSQL "
            "cannot hold (it is not UTF-8)"
        )


def _json_key(segment: str) -> bytes:
    # dump_json of a str gives a quoted JSON string; strip the quotes.
    return dump_json(segment)[1:-1]
