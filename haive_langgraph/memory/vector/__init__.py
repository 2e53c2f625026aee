"""Vector memory: long-term semantic and episodic memory, and a LangChain ``VectorStore``.

Both keep their items in the store's pgvector layer
(:class:`~haive_langgraph.stores.PostgresStore`): :class:`VectorMemory` /
:class:`AsyncVectorMemory` remember texts per user (search, episodic recall,
consolidation); :class:`PostgresVectorStore` holds LangChain documents per
collection. See ``docs/vector-memory.md``.
"""

from __future__ import annotations

from haive_langgraph.errors import InvalidMemoryError
from haive_langgraph.memory.vector._embeddings import HashingEmbeddings
from haive_langgraph.memory.vector._memory import AsyncVectorMemory, VectorMemory
from haive_langgraph.memory.vector._retriever import MemoryRetriever
from haive_langgraph.memory.vector._store import PostgresVectorStore
from haive_langgraph.memory.vector._types import (
    ConsolidationReport,
    CrossEncoder,
    Episode,
    Memory,
    MergeGroup,
    MergeRecord,
)

__all__ = [
    "AsyncVectorMemory",
    "ConsolidationReport",
    "CrossEncoder",
    "Episode",
    "HashingEmbeddings",
    "InvalidMemoryError",
    "Memory",
    "MemoryRetriever",
    "MergeGroup",
    "MergeRecord",
    "PostgresVectorStore",
    "VectorMemory",
]
