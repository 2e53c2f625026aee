"""An embedder that answers with the vectors a source already holds.

The target stores embed texts through their ``embed`` function; during an
import that function is :class:`CopiedVectors`: for each batch the importer
sets the text -> vector map read from the source, so nothing is embedded
again. A text without a source vector goes to the fallback embedder (the
user's, when given) or is refused, naming it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from langchain_core.embeddings import Embeddings

from haive_langgraph.errors import ConfigurationError


class CopiedVectors(Embeddings):
    """Source vectors by text, then an optional fallback embedder.

    Args:
        dims: Dimensions of the vectors.
        fallback: Embeds texts the source holds no vector for.
    """

    def __init__(self, dims: int, fallback: Embeddings | None = None) -> None:
        self.dims = dims
        self.fallback = fallback
        self.vectors: Mapping[str, Sequence[float]] = {}

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        missing = [t for t in dict.fromkeys(texts) if t not in self.vectors]
        extra: dict[str, list[float]] = {}
        if missing:
            if self.fallback is None:
                raise ConfigurationError(
                    f"the source holds no vector for the text {missing[0][:60]!r}; pass "
                    "embeddings= (the model the source used) to embed such texts"
                )
            extra = dict(zip(missing, self.fallback.embed_documents(missing), strict=True))
        return [list(self.vectors[t]) if t in self.vectors else extra[t] for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


def unique_texts(
    entries: Sequence[tuple[str, Sequence[float]]],
) -> tuple[dict[str, Sequence[float]], bool]:
    """The text -> vector map of a batch, and whether two equal texts disagree.

    A store embeds a text once per batch: a batch whose equal texts carry
    different vectors (a source embedded with two models over time) must be
    split, or one of them would be stored for both.
    """
    out: dict[str, Sequence[float]] = {}
    for text, vector in entries:
        known = out.get(text)
        if known is not None and list(known) != list(vector):
            return out, True
        out[text] = vector
    return out, False
