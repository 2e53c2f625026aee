"""LangGraph checkpointers on PostgreSQL."""

from __future__ import annotations

from haive_langgraph.checkpointers._retention import RetentionPolicy, RetentionReport
from haive_langgraph.checkpointers._sweeper import AsyncRetentionSweeper, RetentionSweeper
from haive_langgraph.checkpointers._threads import DeleteReport, GcReport, ThreadInfo, ThreadPage
from haive_langgraph.checkpointers._timetravel import (
    BranchInfo,
    ChannelChange,
    CheckpointDiff,
    CheckpointSummary,
    MessageListDiff,
    is_internal_channel,
)
from haive_langgraph.checkpointers.aio import AsyncPostgresCheckpointer
from haive_langgraph.checkpointers.postgres import PostgresCheckpointer
from haive_langgraph.checkpointers.supabase import AsyncSupabaseCheckpointer, SupabaseCheckpointer

__all__ = [
    "AsyncPostgresCheckpointer",
    "AsyncRetentionSweeper",
    "AsyncSupabaseCheckpointer",
    "BranchInfo",
    "ChannelChange",
    "CheckpointDiff",
    "CheckpointSummary",
    "DeleteReport",
    "GcReport",
    "MessageListDiff",
    "PostgresCheckpointer",
    "RetentionPolicy",
    "RetentionReport",
    "RetentionSweeper",
    "SupabaseCheckpointer",
    "ThreadInfo",
    "ThreadPage",
    "is_internal_channel",
]
