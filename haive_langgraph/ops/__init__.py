"""Operations: migrations of every feature, and (later) backup, cache, advisor."""

from __future__ import annotations

from haive_langgraph.ops._migrate import all_components, migrate_all

__all__ = ["all_components", "migrate_all"]
