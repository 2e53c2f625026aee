"""Index candidates read from statements' plans (pure functions over ``EXPLAIN`` JSON).

Two shapes of plan node call for an index, on a table of at least
``large_rows`` rows (the planner's estimate, ``pg_class.reltuples``):

* a **sequential scan with a filter**: an index on the filter's equality
  columns (``tenant_id`` first, our tables' leading key), then one range
  column; a JSON containment (``doc @> $1``) or key test (``doc ? 'k'``)
  asks for a GIN index instead;
* an index scan or bitmap scan whose **filter reads JSON keys** (``doc ->>
  'status' = $1`` applied to every row the index returned): an index on the
  index condition's equality columns followed by that expression.

A filter with ``OR`` at its top, or comparing to another table's column (a
join), gives no candidate. Each candidate is a ``CREATE INDEX CONCURRENTLY
IF NOT EXISTS`` to run; one whose columns an existing index already leads
with is left out (the planner chose not to use it: statistics, not a missing
index).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_JSON_OPS = ("->>", "->", "#>>", "#>")
_COMPARISONS = (" = ANY ", " >= ", " <= ", " = ", " > ", " < ", " @> ", " ?| ", " ?& ", " ? ")
_COLUMN = re.compile(r"[a-z_][a-z0-9_]*")
# "((doc ->> $2))": a JSON key (or path) given as a parameter.
_PARAMETER_KEY = re.compile(r"^\(\(([a-z_][a-z0-9_]*) (->>|->|#>>|#>) \$(\d+)\)\)$")


@dataclass(frozen=True, slots=True)
class Candidate:
    """An index that would serve one plan node.

    Attributes:
        table: The table (in the schema).
        elements: Its index elements (columns, or expressions in parentheses).
        method: ``"btree"`` or ``"gin"``.
        reason: What in the plan asks for it.
        bound: The statement's parameter that held a JSON key, and the literal
            of the representative key put in its place (:meth:`with_key`).
    """

    table: str
    elements: tuple[str, ...]
    method: str
    reason: str
    bound: tuple[int, str] | None = None

    @property
    def keyed_column(self) -> str | None:
        """The JSON column whose key (or path) the statement passes as a parameter."""
        for element in self.elements:
            if match := _PARAMETER_KEY.match(element):
                return match.group(1)
        return None

    def with_key(self, key: str) -> Candidate:
        """This candidate with a representative key in place of the key parameter."""
        quoted = key.replace("'", "''")
        match = next(m for e in self.elements if (m := _PARAMETER_KEY.match(e)))
        path = match.group(2).startswith("#")
        value = f"'{{{quoted}}}'::text[]" if path else f"'{quoted}'::text"

        def fill(found: re.Match[str]) -> str:
            return f"(({found.group(1)} {found.group(2)} {value}))"

        elements = tuple(_PARAMETER_KEY.sub(fill, e) for e in self.elements)
        bound = (int(match.group(3)), value)
        return Candidate(self.table, elements, self.method, self.reason, bound)

    def ddl(self, schema: str, *, concurrently: bool = True) -> str:
        """The ``CREATE INDEX`` (``CONCURRENTLY IF NOT EXISTS``, named) to run."""
        words = re.findall(
            r"[a-z0-9]+", " ".join(self.elements).replace("::text[]", " ").replace("::text", " ")
        )
        name = "_".join([self.table, *[w for w in words if w not in {"jsonb", "path", "ops"}]])
        name = f"{name[:58].rstrip('_')}_idx"
        using = "" if self.method == "btree" else f" USING {self.method}"
        target = f'"{schema}"."{self.table}"'
        if not concurrently:
            return f"CREATE INDEX ON {target}{using} ({', '.join(self.elements)})"
        return (
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {target}{using} "
            f"({', '.join(self.elements)})"
        )


def bind_key(query: str, bound: tuple[int, str]) -> str:
    """``query`` with parameter ``$n`` replaced by the bound literal, later ones
    renumbered (a generic plan refuses a gap in the parameters' numbers)."""
    number, literal = bound

    def swap(match: re.Match[str]) -> str:
        m = int(match.group(1))
        if m == number:
            return literal
        return f"${m - 1}" if m > number else match.group(0)

    return re.sub(r"\$(\d+)\b", swap, query)


def nodes(plan: Any) -> Iterator[dict[str, Any]]:
    """Every node of an ``EXPLAIN (FORMAT JSON)`` result, depth first."""
    if isinstance(plan, list):
        for item in plan:
            yield from nodes(item)
    elif isinstance(plan, dict):
        node = plan.get("Plan", plan)
        yield node
        for child in node.get("Plans", ()):
            yield from nodes(child)


def root_cost(plan: Any) -> float:
    """The plan's total cost (its root node's)."""
    first = next(nodes(plan), {})
    return float(first.get("Total Cost", 0.0))


def _strip(text: str) -> str:
    """``text`` without the parentheses enclosing all of it."""
    text = text.strip()
    while text.startswith("(") and _closing(text, 0) == len(text) - 1:
        text = text[1:-1].strip()
    return text


def _closing(text: str, start: int) -> int:
    depth, quote = 0, False
    for i in range(start, len(text)):
        char = text[i]
        if char == "'":
            quote = not quote
        elif not quote and char == "(":
            depth += 1
        elif not quote and char == ")":
            depth -= 1
            if depth == 0:
                return i
    return -1


def _top_level(text: str, separator: str) -> list[str]:
    """``text`` split at ``separator`` where it stands outside parentheses and quotes."""
    parts, depth, quote, start, i = [], 0, False, 0, 0
    while i < len(text):
        char = text[i]
        if char == "'":
            quote = not quote
        elif not quote and char == "(":
            depth += 1
        elif not quote and char == ")":
            depth -= 1
        elif not quote and depth == 0 and text.startswith(separator, i):
            parts.append(text[start:i])
            start = i = i + len(separator)
            continue
        i += 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def _value(text: str) -> bool:
    """A parameter or a constant (not another column: no join condition)."""
    text = _strip(text)
    return bool(re.match(r"(ANY \()?\(?(\$\d+|'|-?\d|NULL|true|false)", text, re.I))


def conditions(expression: str) -> list[tuple[str, str]] | None:
    """``(left side, operator)`` of each ``AND``-ed comparison; ``None`` if any is not one."""
    body = _strip(expression)
    if _top_level(body, " OR ") != [body]:
        return None
    found = []
    for part in _top_level(body, " AND "):
        part = _strip(part)
        for op in _COMPARISONS:
            pieces = _top_level(part, op)
            if len(pieces) == 2:
                left, right = _strip(pieces[0]), pieces[1]
                if not _value(right):
                    return None
                found.append((left, op.strip()))
                break
        else:
            found.append(("", "?"))  # something else: ignored, but not a reason to give up
    return found


def _element(left: str) -> str | None:
    """An index element for a comparison's left side (a column, or a JSON key expression)."""
    if _COLUMN.fullmatch(left):
        return left
    if any(op in left for op in _JSON_OPS) and re.match(r"[a-z_][a-z0-9_]* ", left):
        return f"(({left}))"  # as pg_get_indexdef writes an expression element
    return None


def _candidate(
    table: str, found: Sequence[tuple[str, str]], reason: str, leading: Sequence[str] = ()
) -> Candidate | None:
    gin = [left for left, op in found if op in ("@>", "?", "?|", "?&") and _COLUMN.fullmatch(left)]
    if gin and not leading:
        ops = " jsonb_path_ops" if all(op == "@>" for _, op in found if op != "=") else ""
        return Candidate(table, (f"{gin[0]}{ops}",), "gin", reason)
    equal = [e for left, op in found if op in ("=", "= ANY") and (e := _element(left))]
    ranges = [e for left, op in found if op in (">", "<", ">=", "<=") and (e := _element(left))]
    elements = list(dict.fromkeys([*leading, *sorted(equal, key=lambda e: e != "tenant_id")]))
    if ranges and ranges[0] not in elements:
        elements.append(ranges[0])
    if not elements or list(leading) == elements:
        return None
    return Candidate(table, tuple(elements), "btree", reason)


def _unqualified(text: str, alias: str | None) -> str:
    return re.sub(rf"\b{re.escape(alias)}\.", "", text) if alias else text


def candidates(
    plan: Any, schema: str, sizes: Mapping[str, int], large_rows: int
) -> list[Candidate]:
    """The index candidates of one plan (see the module)."""
    found = []
    for node in nodes(plan):
        table = str(node.get("Relation Name"))
        if node.get("Schema") != schema or table not in sizes or sizes[table] < large_rows:
            continue
        alias = node.get("Alias")
        where = _unqualified(node.get("Filter", ""), alias)
        kind = node.get("Node Type", "")
        if not where:
            continue
        rows = f"~{sizes[table]:,} rows"
        conds = conditions(where)
        if conds is None:
            continue
        if kind == "Seq Scan":
            reason = f"Seq Scan on {table} ({rows}) filtering on {where}"
            if (c := _candidate(table, conds, reason)) is not None:
                found.append(c)
        elif kind in ("Index Scan", "Index Only Scan", "Bitmap Heap Scan") and any(
            op in where for op in _JSON_OPS
        ):
            index = _unqualified(node.get("Index Cond", node.get("Recheck Cond", "")), alias)
            lead = conditions(index) or []
            leading = [e for left, op in lead if op == "=" and (e := _element(left))]
            json_only = [(left, op) for left, op in conds if any(j in left for j in _JSON_OPS)]
            reason = f"{kind} on {table} ({rows}) then a filter on JSON keys: {where}"
            if (c := _candidate(table, json_only, reason, leading)) is not None:
                found.append(c)
    return found


def covered(candidate: Candidate, definitions: Sequence[str]) -> bool:
    """Whether an existing index (its ``pg_indexes.indexdef``) leads with the candidate's
    elements."""
    wanted = ", ".join(candidate.elements)
    return any(f"({wanted}" in d for d in definitions)
