"""SQL templates made statements for one schema: the one renderer, and its cache.

Every feature writes its statements as templates in its ``_sql.py``, naming
its schema ``{schema}`` (and any other identifier by a placeholder). A
template may also hold *fragments*: ``{name}`` places filled with fixed SQL
text the feature chose among its own constants (a conflict clause, a list of
columns, WHERE conditions), never with values. :func:`render` fills both:
fragments first, as text (so a fragment may itself name ``{schema}`` or
another fragment), then identifiers, quoted through ``psycopg.sql.Identifier``.

The result is plain SQL text, cached: the same template, schema and
fragments give the same ``str`` object, so a statement is built once per
process and psycopg's prepared-statement cache, keyed on the text, sees
the same statement each time.
"""

from __future__ import annotations

from functools import lru_cache

from psycopg import sql

from haive_langgraph.db._identifiers import validate_identifier

# Distinct statements of all features for a handful of schemas, with room
# for the fragment combinations of dynamic queries (history filters).
CACHE_SIZE = 8192


@lru_cache(maxsize=CACHE_SIZE)
def _render(template: str, schema: str, fragments: tuple[tuple[str, str], ...]) -> str:
    for name, text in fragments:
        template = template.replace("{" + name + "}", text)
    identifier = sql.Identifier(validate_identifier(schema))
    return sql.SQL(template).format(schema=identifier).as_string(None)


def render(template: str, schema: str, **fragments: str) -> str:
    """``template`` as SQL text for ``schema``, with its fragments filled (cached).

    Args:
        template: A statement with ``{schema}`` and ``{name}`` placeholders
            (literal braces doubled, as for ``psycopg.sql.SQL.format``).
        schema: The schema: a plain identifier (checked), quoted.
        fragments: Fixed SQL text for each ``{name}``, filled in the order
            given, before the schema.

    Raises:
        InvalidIdentifierError: ``schema`` is not a plain identifier.
    """
    return _render(template, schema, tuple(fragments.items()))


def render_sql(template: str, schema: str, **fragments: str) -> sql.SQL:
    """:func:`render` as a ``psycopg.sql.SQL``, to compose it further."""
    return sql.SQL(render(template, schema, **fragments))
