"""Vector memory: long-term semantic and episodic memory, and a LangChain ``VectorStore``.

Both keep their items in the store's pgvector layer
(:class:`~haive_langgraph.stores.PostgresStore`): :class:`VectorMemory` /
:class:`AsyncVectorMemory` remember texts per user (search, episodic recall,
consolidation); :class:`PostgresVectorStore` holds LangChain documents per
collection. See ``docs/vector-memory.md``.

The public classes and types are exported by :mod:`haive_langgraph.memory`
(import them from there); this package holds their modules.
"""
