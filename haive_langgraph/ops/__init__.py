"""Operations: migrations of every feature, and (later) backup, cache, advisor."""

from __future__ import annotations

from haive_langgraph.ops._migrate import (
    SchemaState,
    all_components,
    check_schema,
    migrate_all,
)

__all__ = ["SchemaState", "all_components", "check_schema", "migrate_all"]
