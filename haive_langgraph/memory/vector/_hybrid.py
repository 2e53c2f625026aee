"""``search(mode="hybrid")``: the store's full-text and vector rankings fused by
reciprocal rank (``hybrid_search``, ``stores/_hybrid_ops.py``), for vector memory.

The memory must be created with ``index_options={"hybrid": True}`` (the store
then keeps a ``tsvector`` of each memory's text). The query is embedded once,
by the memory, and handed to the store. A result's ``score`` is the fused
score; its ``similarity`` is still the cosine similarity of its vector to the
query's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from langgraph.store.base import SearchItem

from haive_langgraph.errors import ConfigurationError
from haive_langgraph.memory.vector._steps import StoreTask

SEARCH_MODES = ("vector", "hybrid")


def check_mode(mode: object) -> bool:
    """Whether ``mode`` asks for hybrid search.

    Raises:
        ConfigurationError: Neither ``"vector"`` nor ``"hybrid"``.
    """
    if mode not in SEARCH_MODES:
        raise ConfigurationError(f"mode must be 'vector' or 'hybrid', got {mode!r}")
    return mode == "hybrid"


def _hybrid_store(store: Any) -> Any:
    spec = getattr(store, "_spec", None)
    if not callable(getattr(store, "hybrid_search", None)) or spec is None:
        raise ConfigurationError(
            'search(mode="hybrid") needs the PostgreSQL store; this memory runs on '
            f"{type(store).__name__}"
        )
    if spec.text is None:
        raise ConfigurationError(
            'search(mode="hybrid") needs a memory created with index_options={"hybrid": '
            "True} (a full-text index of the memories; on a schema set up without it, "
            "use a new schema)"
        )
    return store


@dataclass(slots=True)
class HybridSearch(StoreTask):
    """One hybrid search of a namespace (the result: the store's items, best first)."""

    namespace: tuple[str, ...]
    query: str
    vector: list[float]
    filter: dict[str, Any] | None
    limit: int

    def primed(self) -> dict[str, list[float]] | None:
        return {self.query: self.vector}

    def run(self, store: Any) -> list[SearchItem]:
        items: list[SearchItem] = _hybrid_store(store).hybrid_search(
            self.namespace, self.query, filter=self.filter, limit=self.limit, refresh_ttl=False
        )
        return items

    async def arun(self, store: Any) -> list[SearchItem]:
        items: list[SearchItem] = await _hybrid_store(store).ahybrid_search(
            self.namespace, self.query, filter=self.filter, limit=self.limit, refresh_ttl=False
        )
        return items
