"""Validation of SQL identifiers we accept from users (schema names, prefixes)."""

from __future__ import annotations

import re

from haive_langgraph.errors import InvalidIdentifierError

# A plain identifier: what PostgreSQL accepts unquoted, lower case only, so
# the name means the same quoted and unquoted. 63 bytes is NAMEDATALEN - 1.
_PLAIN = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def validate_identifier(name: object, *, what: str = "identifier") -> str:
    """Return ``name`` if it is a plain lower-case SQL identifier, else raise.

    Raises:
        InvalidIdentifierError: naming the offending value.
    """
    if not isinstance(name, str) or not _PLAIN.fullmatch(name):
        raise InvalidIdentifierError(
            f"{what} {name!r} is not a plain identifier: use 1-63 characters "
            "from a-z, 0-9 and _, not starting with a digit"
        )
    if name.startswith("pg_"):
        raise InvalidIdentifierError(f"{what} {name!r} is reserved (names starting with pg_)")
    return name
