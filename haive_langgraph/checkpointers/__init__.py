"""LangGraph checkpointers on PostgreSQL."""

from __future__ import annotations

from haive_langgraph.checkpointers._base import ThreadInfo, ThreadPage
from haive_langgraph.checkpointers._ops import DeleteReport, GcReport
from haive_langgraph.checkpointers.aio import AsyncPostgresCheckpointer
from haive_langgraph.checkpointers.postgres import PostgresCheckpointer

__all__ = [
    "AsyncPostgresCheckpointer",
    "DeleteReport",
    "GcReport",
    "PostgresCheckpointer",
    "ThreadInfo",
    "ThreadPage",
]
