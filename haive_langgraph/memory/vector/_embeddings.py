"""Embedders for vector memory: an offline default, and the adapter every embedder goes through.

:class:`HashingEmbeddings` needs no network and no model: it hashes words,
word pairs and character trigrams of a text into a fixed number of
dimensions (signed feature hashing) and L2-normalises the result. Texts that
share words or word stems are close; it knows no synonyms. It is meant for
demos, tests and docs; use a real model (any LangChain ``Embeddings``, such
as ``OpenAIEmbeddings``) for semantic recall.
"""

from __future__ import annotations

import contextvars
import hashlib
import itertools
import math
import re
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from langchain_core.embeddings import Embeddings
from langgraph.store.base import ensure_embeddings

from haive_langgraph.errors import ConfigurationError

__all__ = ["HashingEmbeddings"]

_WORD = re.compile(r"\w+")
_STOPWORD_TEXT = """
a an and are as at be been but by did do does for from had has have he her his i if in into is
it its me my no not of on or our she so than that the their them then there these they this to
was we were what when where which who will with you your
"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_SUFFIXES = ("ing", "ed", "es", "s")


def _stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def _words(text: str) -> list[str]:
    folded = unicodedata.normalize("NFKD", text).casefold()
    folded = "".join(c for c in folded if not unicodedata.combining(c))
    return [_stem(w) for w in _WORD.findall(folded) if w not in _STOPWORDS]


class HashingEmbeddings(Embeddings):
    """Deterministic offline embeddings: hashed word and character n-gram features.

    Same text, same vector, in every process (``blake2b``, not Python's
    salted ``hash``). Lexical similarity only: ``"likes green tea"`` is close
    to ``"the user liked green tea"``, far from ``"prefers coffee"``.

    Args:
        dims: Dimensions of the vectors (default 384).
        word_weight: Weight of each (stemmed, non-stopword) word.
        pair_weight: Weight of each pair of neighbouring words.
        trigram_weight: Weight of each character trigram of a word.

    Example:
        >>> emb = HashingEmbeddings(dims=384)
        >>> memory = VectorMemory(dsn, embeddings=emb)   # dims taken from the embedder
    """

    def __init__(
        self,
        dims: int = 384,
        *,
        word_weight: float = 1.0,
        pair_weight: float = 0.5,
        trigram_weight: float = 0.25,
    ) -> None:
        if isinstance(dims, bool) or not isinstance(dims, int) or dims < 8:
            raise ConfigurationError(f"dims must be an integer of at least 8, got {dims!r}")
        self.dims = dims
        self.word_weight = float(word_weight)
        self.pair_weight = float(pair_weight)
        self.trigram_weight = float(trigram_weight)

    def _add(self, vec: list[float], feature: str, weight: float) -> None:
        h = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "little")
        vec[h % self.dims] += weight if (h >> 63) & 1 else -weight

    def embed_text(self, text: str) -> list[float]:
        """The vector of one text."""
        vec = [0.0] * self.dims
        words = _words(text)
        for w in words:
            self._add(vec, "w:" + w, self.word_weight)
            padded = f"#{w}#"
            for i in range(len(padded) - 2):
                self._add(vec, "c:" + padded[i : i + 3], self.trigram_weight)
        for a, b in itertools.pairwise(words):
            self._add(vec, f"p:{a} {b}", self.pair_weight)
        norm = math.sqrt(sum(x * x for x in vec))
        if norm == 0.0:
            # A text of stopwords or punctuation only: a fixed unit vector, so
            # that cosine distances stay defined.
            self._add(vec, "empty", 1.0)
            norm = 1.0
        return [x / norm for x in vec]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.embed_text(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_text(text)


# -- the adapter the memory gives the store ------------------------------------------------

_PRIMED: contextvars.ContextVar[Mapping[str, Sequence[float]] | None] = contextvars.ContextVar(
    "haive_memory_primed_vectors", default=None
)


@contextmanager
def primed(vectors: Mapping[str, Sequence[float]] | None) -> Iterator[None]:
    """Within the block, embedding one of these texts returns the vector given.

    The memory rewrites items whose text it already has a vector for (the
    vector is kept in the item): the store then re-embeds nothing. Context
    variables follow the call into the store's worker thread or task.
    """
    if not vectors:
        yield
        return
    token = _PRIMED.set(vectors)
    try:
        yield
    finally:
        _PRIMED.reset(token)


def embedder_dims(embeddings: Any) -> int | None:
    """Dimensions an embedder declares (``dims``, or OpenAI's ``dimensions``), if any."""
    for name in ("dims", "dimensions"):
        value = getattr(embeddings, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


class CheckedEmbeddings(Embeddings):
    """Wraps the user's embedder: primed vectors first, then dimension checks.

    Args:
        inner: LangChain ``Embeddings`` or a (sync or async) function
            ``list[str] -> list[list[float]]``.
        dims: The dimensions the memory was configured with.
    """

    def __init__(
        self,
        inner: Embeddings | Callable[[Sequence[str]], Any],
        dims: int,
    ) -> None:
        if not isinstance(inner, Embeddings) and not callable(inner):
            raise ConfigurationError(
                "embeddings must be LangChain Embeddings or a function texts -> vectors, "
                f"got {type(inner).__name__}"
            )
        self.inner: Embeddings = ensure_embeddings(inner)  # type: ignore[arg-type]
        self.dims = dims

    def _check(self, vector: Sequence[float], text: str) -> list[float]:
        if len(vector) != self.dims:
            raise ConfigurationError(
                f"the memory is configured with dims={self.dims}, but the embedder "
                f"{type(self.inner).__name__} returned a {len(vector)}-dimensional vector "
                f"for {text[:60]!r}; pass dims={len(vector)} or use a matching model"
            )
        out = [float(x) for x in vector]
        if not all(math.isfinite(x) for x in out):
            raise ConfigurationError(f"the embedder returned a non-finite value for {text[:60]!r}")
        return out

    def _split(self, texts: Sequence[str]) -> tuple[Mapping[str, Sequence[float]], list[str]]:
        known = _PRIMED.get() or {}
        missing = list(dict.fromkeys(t for t in texts if t not in known))
        return known, missing

    def _join(
        self,
        texts: Sequence[str],
        known: Mapping[str, Sequence[float]],
        missing: list[str],
        computed: Sequence[Sequence[float]],
    ) -> list[list[float]]:
        if len(computed) != len(missing):
            raise ConfigurationError(
                f"the embedder returned {len(computed)} vectors for {len(missing)} texts"
            )
        fresh = {t: self._check(v, t) for t, v in zip(missing, computed, strict=True)}
        return [fresh[t] if t in fresh else self._check(known[t], t) for t in texts]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        known, missing = self._split(texts)
        computed = self.inner.embed_documents(missing) if missing else []
        return self._join(texts, known, missing, computed)

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        known, missing = self._split(texts)
        computed = await self.inner.aembed_documents(missing) if missing else []
        return self._join(texts, known, missing, computed)

    def embed_query(self, text: str) -> list[float]:
        known = _PRIMED.get() or {}
        if text in known:
            return self._check(known[text], text)
        return self._check(self.inner.embed_query(text), text)

    async def aembed_query(self, text: str) -> list[float]:
        known = _PRIMED.get() or {}
        if text in known:
            return self._check(known[text], text)
        return self._check(await self.inner.aembed_query(text), text)
