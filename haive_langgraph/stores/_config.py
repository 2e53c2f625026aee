"""Store configuration: the vector index, quotas, TTL and filterable fields."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict, cast

from langchain_core.embeddings import Embeddings
from langgraph.store.base import IndexConfig, TTLConfig, ensure_embeddings, tokenize_path

from haive_langgraph.db._limits import check_count, shown
from haive_langgraph.errors import ConfigurationError

Distance = Literal["cosine", "l2", "inner_product"]
VectorType = Literal["vector", "halfvec"]
IndexKind = Literal["hnsw", "ivfflat", "flat"]

DISTANCES: tuple[Distance, ...] = ("cosine", "l2", "inner_product")
VECTOR_TYPES: tuple[VectorType, ...] = ("vector", "halfvec")
INDEX_KINDS: tuple[IndexKind, ...] = ("hnsw", "ivfflat", "flat")

# pgvector's limits: an indexed `vector` holds at most 2,000 dimensions, an
# indexed `halfvec` 4,000; any vector at most 16,000.
MAX_INDEXED_VECTOR_DIMS = 2000
MAX_INDEXED_HALFVEC_DIMS = 4000
MAX_DIMS = 16000

# Scopes (tenant + namespace prefix) with fewer vectors than this are searched
# exactly: a sequential distance over a few thousand vectors takes 1-3 ms, and
# it is exact, where an index built for the whole table would have to scan
# past other tenants' and namespaces' neighbours to fill a page.
DEFAULT_EXACT_THRESHOLD = 2000

# hnsw.ef_search 40 (pgvector's default) gave recall@10 about 0.90 on 100,000
# clustered 384-dim vectors; 100 gave above 0.97 for a fraction of a ms more.
DEFAULT_EF_SEARCH = 100
DEFAULT_MAX_SCAN_TUPLES = 20000

# maintenance_work_mem of a bulk index build (index_pending's default, and
# the repair of an invalid index): the HNSW graph of 100,000 384-dim vectors
# (about 1.5 x their size) fits.
DEFAULT_BUILD_MEMORY = "512MB"
WRITE_MODES = ("background", "immediate", "deferred")

# Reciprocal-rank fusion: score = sum of 1 / (k + rank) over the rankings an
# item appears in. k = 60 is the constant of Cormack et al. (SIGIR 2009),
# also the default of Elasticsearch and OpenSearch.
DEFAULT_RRF_K = 60
DEFAULT_TEXT_CONFIG = "simple"
# A text-search configuration name, optionally schema-qualified. It only ever
# travels as a parameter cast to regconfig; the pattern refuses anything that
# could not be one before the database is asked.
_REGCONFIG = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?")


class HybridConfig(TypedDict, total=False):
    """The ``index["hybrid"]`` option.

    Keys:
        text_search_config: PostgreSQL text-search configuration used to
            build and query the ``tsvector`` (default ``"simple"``: words
            lower-cased, no stemming, no stop words; ``"english"`` stems).
            Must exist in the database (``SELECT cfgname FROM pg_ts_config``).
        rrf_k: The ``k`` of reciprocal-rank fusion (default 60): larger
            values flatten the difference between high and low ranks.
        allow_plaintext_terms: With an encrypting codec, hybrid search is
            refused unless this is ``True``: the ``tsvector`` holds the
            words of the indexed fields in plaintext.
    """

    text_search_config: str
    rrf_k: int
    allow_plaintext_terms: bool


class PostgresIndexConfig(IndexConfig, total=False):
    """The ``index=`` option: LangGraph's ``IndexConfig`` plus pgvector settings.

    Keys:
        dims: Dimensions of the embeddings (required).
        embed: LangChain ``Embeddings``, a sync or async function
            ``list[str] -> list[list[float]]``, or a provider string.
        fields: JSON paths whose text is embedded (default ``["$"]``, the
            whole value). A path matching several texts gives one vector each.
        distance_type: ``"cosine"`` (default), ``"l2"`` or ``"inner_product"``.
        ann_index_config: ``{"kind": "hnsw" | "ivfflat" | "flat",
            "vector_type": "vector" | "halfvec", "m", "ef_construction",
            "ef_search", "lists", "probes", "max_scan_tuples"}``.
        exact_search_threshold: Scopes with fewer vectors are searched exactly.
        write_mode: ``"background"`` (default, with a DSN or a pool): puts
            skip the ANN index (they run at the speed of the table) and a
            background indexer of the store adds their vectors to it moments
            later; until then they are searched exactly, so results never
            miss them. ``"immediate"`` (default with a lent connection, which
            background work must not share): every put maintains the index.
            ``"deferred"``: as ``"background"``, but nothing indexes them until
            ``index_pending()`` (or the TTL sweeper) does (in batches, or by
            one bulk rebuild after a large import).
        hybrid: ``True`` or a :class:`HybridConfig`: also keep a full-text
            index (``tsvector``) of the ``fields`` text, for
            ``hybrid_search()`` (full-text and vector rankings fused by
            reciprocal rank). ``search()`` is unchanged.
    """

    distance_type: Distance
    ann_index_config: dict[str, Any]
    exact_search_threshold: int
    write_mode: Literal["immediate", "deferred", "background"]
    hybrid: bool | HybridConfig


@dataclass(frozen=True, slots=True)
class TextSearchSpec:
    """The normalised hybrid (full-text) configuration."""

    config: str
    rrf_k: int
    allow_plaintext_terms: bool


@dataclass(frozen=True, slots=True)
class VectorIndexSpec:
    """The normalised vector index configuration."""

    dims: int
    fields: tuple[tuple[str, str | list[str]], ...]
    distance: Distance
    vector_type: VectorType
    kind: IndexKind
    m: int
    ef_construction: int
    lists: int
    ef_search: int
    probes: int
    max_scan_tuples: int
    exact_threshold: int
    # Puts skip the ANN index ("deferred" and "background"), and an indexer of
    # the store's own adds their vectors to it ("background").
    deferred: bool = False
    background: bool = False
    text: TextSearchSpec | None = None

    @property
    def vectors_per_item(self) -> int:
        """Candidate vectors to fetch per wanted item: one per field, twice that for
        paths that can match several texts (``[*]``, ``*``, ``{a,b}``)."""
        multi = any(
            tokens != "$" and any(t in ("*", "[*]") or t.startswith("{") for t in tokens)
            for _, tokens in self.fields
        )
        return max(1, len(self.fields)) * (2 if multi else 1)

    @property
    def opclass(self) -> str:
        suffix = {"cosine": "cosine_ops", "l2": "l2_ops", "inner_product": "ip_ops"}[self.distance]
        return f"{self.vector_type}_{suffix}"

    @property
    def operator(self) -> str:
        return {"cosine": "<=>", "l2": "<->", "inner_product": "<#>"}[self.distance]

    def ddl_params(self) -> dict[str, int]:
        if self.kind == "hnsw":
            return {"m": self.m, "ef_construction": self.ef_construction}
        if self.kind == "ivfflat":
            return {"lists": self.lists}
        return {}

    def describe(self) -> dict[str, Any]:
        """What is recorded in the database and compared at setup."""
        described: dict[str, Any] = {
            "dims": self.dims,
            "vector_type": self.vector_type,
            "distance": self.distance,
            "kind": self.kind,
            "params": self.ddl_params(),
        }
        if self.text is not None:
            # Items put by a store without it would have no (or a stale) tsvector.
            described["text_search"] = {"config": self.text.config}
        return described


def _positive_int(raw: Any, what: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or int(raw) != raw or raw <= 0:
        raise ConfigurationError(f"{what} must be a positive integer, got {raw!r}")
    return int(raw)


def tokenize_fields(
    fields: Any, what: str = "index fields"
) -> tuple[tuple[str, str | list[str]], ...]:
    """``(path, tokens)`` pairs for LangGraph's ``get_text_at_path``; ``"$"`` is the whole value."""
    if fields is None:
        fields = ["$"]
    if isinstance(fields, str):
        fields = [fields]
    if not isinstance(fields, Sequence) or not all(isinstance(f, str) and f for f in fields):
        raise ConfigurationError(f"{what} must be a list of non-empty JSON paths, got {fields!r}")
    return tuple((f, "$") if f == "$" else (f, tokenize_path(f)) for f in fields)


def normalize_index(index: Mapping[str, Any]) -> tuple[Embeddings, VectorIndexSpec]:
    """Validate ``index=`` and return the embedder and the normalised spec.

    Raises:
        ConfigurationError: naming the offending key.
    """
    if not isinstance(index, Mapping):
        raise ConfigurationError(
            f"index must be a dict (an IndexConfig), got {type(index).__name__}"
        )
    if "dims" not in index:
        raise ConfigurationError('index needs "dims", the dimensions of the embeddings')
    dims = _positive_int(index["dims"], 'index["dims"]')
    if dims > MAX_DIMS:
        raise ConfigurationError(f'index["dims"] is {dims}; pgvector stores at most {MAX_DIMS}')
    if index.get("embed") is None:
        raise ConfigurationError(
            'index needs "embed": LangChain Embeddings or an embedding function'
        )
    distance = index.get("distance_type", "cosine")
    if distance not in DISTANCES:
        raise ConfigurationError(
            f'index["distance_type"] must be one of {", ".join(DISTANCES)}, got {distance!r}'
        )
    ann = dict(index.get("ann_index_config") or {})
    kind = ann.pop("kind", "hnsw")
    if kind not in INDEX_KINDS:
        raise ConfigurationError(
            f'ann_index_config["kind"] must be one of {", ".join(INDEX_KINDS)}, got {kind!r}'
        )
    default_type: VectorType = "vector" if dims <= MAX_INDEXED_VECTOR_DIMS else "halfvec"
    vector_type = ann.pop("vector_type", default_type)
    if vector_type not in VECTOR_TYPES:
        raise ConfigurationError(
            f'ann_index_config["vector_type"] must be "vector" or "halfvec", got {vector_type!r}'
        )
    if kind != "flat":
        limit = MAX_INDEXED_VECTOR_DIMS if vector_type == "vector" else MAX_INDEXED_HALFVEC_DIMS
        if dims > limit:
            hint = (
                'use ann_index_config={"vector_type": "halfvec"} (up to 4,000 dims)'
                if vector_type == "vector" and dims <= MAX_INDEXED_HALFVEC_DIMS
                else 'use ann_index_config={"kind": "flat"} (exact search)'
            )
            raise ConfigurationError(
                f"a {kind} index on {vector_type} holds at most {limit} dimensions, "
                f"index dims is {dims}: {hint}"
            )
    known = {"m", "ef_construction", "ef_search", "lists", "nlist", "probes", "max_scan_tuples"}
    unknown = sorted(set(ann) - known)
    if unknown:
        raise ConfigurationError(
            f"unknown ann_index_config keys {unknown}; known: kind, vector_type, {', '.join(sorted(known))}"
        )
    lists = _positive_int(ann.get("lists", ann.get("nlist", 100)), 'ann_index_config["lists"]')
    write_mode = index.get("write_mode", "background")
    if write_mode not in WRITE_MODES:
        raise ConfigurationError(
            f'index["write_mode"] must be one of {", ".join(map(repr, WRITE_MODES))}, '
            f"got {write_mode!r}"
        )
    spec = VectorIndexSpec(
        dims=dims,
        fields=tokenize_fields(index.get("fields")),
        distance=cast(Distance, distance),
        vector_type=cast(VectorType, vector_type),
        kind=cast(IndexKind, kind),
        m=_positive_int(ann.get("m", 16), 'ann_index_config["m"]'),
        ef_construction=_positive_int(
            ann.get("ef_construction", 64), 'ann_index_config["ef_construction"]'
        ),
        lists=lists,
        ef_search=_positive_int(
            ann.get("ef_search", DEFAULT_EF_SEARCH), 'ann_index_config["ef_search"]'
        ),
        probes=_positive_int(
            ann.get("probes", max(1, round(math.sqrt(lists)))), 'ann_index_config["probes"]'
        ),
        max_scan_tuples=_positive_int(
            ann.get("max_scan_tuples", DEFAULT_MAX_SCAN_TUPLES),
            'ann_index_config["max_scan_tuples"]',
        ),
        exact_threshold=_positive_int(
            index.get("exact_search_threshold", DEFAULT_EXACT_THRESHOLD),
            'index["exact_search_threshold"]',
        ),
        deferred=write_mode != "immediate",
        background=write_mode == "background",
        text=normalize_hybrid(index.get("hybrid")),
    )
    return ensure_embeddings(index["embed"]), spec


def normalize_hybrid(raw: Any) -> TextSearchSpec | None:
    """Validate ``index["hybrid"]``: ``None``/``False`` (off), ``True`` or a :class:`HybridConfig`.

    Raises:
        ConfigurationError: naming the offending key.
    """
    if raw is None or raw is False:
        return None
    if raw is True:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigurationError(
            f'index["hybrid"] must be True, False or a dict (a HybridConfig), got {raw!r}'
        )
    known = {"text_search_config", "rrf_k", "allow_plaintext_terms"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigurationError(
            f'unknown index["hybrid"] keys {unknown}; known: {", ".join(sorted(known))}'
        )
    config = raw.get("text_search_config", DEFAULT_TEXT_CONFIG)
    if not isinstance(config, str) or not _REGCONFIG.fullmatch(config):
        raise ConfigurationError(
            'index["hybrid"]["text_search_config"] must name a PostgreSQL text-search '
            f"configuration such as 'simple' or 'english' (optionally schema.name), got {config!r}"
        )
    allow = raw.get("allow_plaintext_terms", False)
    if not isinstance(allow, bool):
        raise ConfigurationError(
            f'index["hybrid"]["allow_plaintext_terms"] must be a bool, got {allow!r}'
        )
    return TextSearchSpec(
        # Unquoted, as regconfig reads it: case-folded.
        config=config.lower(),
        rrf_k=_positive_int(raw.get("rrf_k", DEFAULT_RRF_K), 'index["hybrid"]["rrf_k"]'),
        allow_plaintext_terms=allow,
    )


def normalize_ttl(ttl: TTLConfig | None) -> TTLConfig | None:
    """Validate ``ttl=`` (LangGraph's ``TTLConfig``)."""
    if ttl is None:
        return None
    if not isinstance(ttl, Mapping):
        raise ConfigurationError(f"ttl must be a dict (a TTLConfig), got {type(ttl).__name__}")
    unknown = sorted(
        set(ttl) - {"refresh_on_read", "default_ttl", "sweep_interval_minutes", "omit_expired"}
    )
    if unknown:
        raise ConfigurationError(
            f"unknown ttl keys {unknown}; known: refresh_on_read, default_ttl, "
            "sweep_interval_minutes, omit_expired"
        )
    default = ttl.get("default_ttl")
    if default is not None:
        check_ttl(default)
    interval = ttl.get("sweep_interval_minutes")
    if interval is not None and (
        isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0
    ):
        raise ConfigurationError(
            f'ttl["sweep_interval_minutes"] must be positive, got {interval!r}'
        )
    return TTLConfig(**ttl)  # type: ignore[typeddict-item]


MAX_TTL_MINUTES = 1_000_000_000
"""Longest TTL, in minutes (about 1,900 years): its expiry, ``now() + ttl * interval
'1 minute'``, then fits PostgreSQL's ``interval`` and ``timestamptz``."""


def check_ttl(ttl: Any) -> float | None:
    """A TTL in minutes: a positive number up to :data:`MAX_TTL_MINUTES`, or None for no expiry.

    LangGraph's ``InMemoryStore`` has no TTL (it refuses any); NaN, infinities,
    0, negative numbers and numbers past the bound are refused here, before
    anything is sent.
    """
    if ttl is None:
        return None
    # The comparisons are false for NaN; no float() first: a huge int overflows it.
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= MAX_TTL_MINUTES:
        raise ConfigurationError(
            f"ttl must be a positive number of minutes, at most {MAX_TTL_MINUTES:,} "
            f"(about 1,900 years), or None; got {shown(ttl)}"
        )
    return float(ttl)


@dataclass(frozen=True, slots=True)
class ResourceQuota:
    """Limits of one tenant, enforced by the database on every write.

    Attributes:
        max_items: Most items the tenant may hold.
        max_bytes: Most bytes of stored values (after the codec) it may hold.
        max_writes_per_minute: Most items it may put per one-minute window
            (a fixed window starting at the first write after the last one
            ended). Deletes are not counted.

    ``None`` means no limit. A write that would exceed a limit fails with
    :class:`QuotaExceededError` and writes nothing; deletes and writes that
    shrink usage always pass, so a tenant over a lowered quota can clean up.
    """

    max_items: int | None = None
    max_bytes: int | None = None
    max_writes_per_minute: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_items", "max_bytes", "max_writes_per_minute"):
            value = getattr(self, name)
            if value is not None:
                check_count(f"ResourceQuota.{name}", value)  # a bigint column


@dataclass(frozen=True, slots=True)
class TenantUsage:
    """What a tenant holds, and its quota.

    Attributes:
        tenant_id: The tenant.
        items: Items it holds (expired ones until swept included).
        bytes: Bytes of its stored values.
        writes_this_minute: Items put in the current rate window.
        quota: Its limits, or ``None`` when it has none (then ``items`` and
            ``bytes`` are counted on demand).
    """

    tenant_id: str
    items: int
    bytes: int
    writes_this_minute: int
    quota: ResourceQuota | None
