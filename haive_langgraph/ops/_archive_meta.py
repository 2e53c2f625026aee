"""An archive's label and metadata, and include/exclude patterns naming components.

``label`` and ``metadata`` are free text the operator attaches to a backup
(``--label nightly``, ``metadata={"ticket": "OPS-12"}``): stored in the
manifest (so signed with it), shown by ``haive-lg backup list``, never
interpreted. Both are bounded, and a manifest holding anything else there
is refused.

Include and exclude patterns name tables (``fnmatch``: ``"check*"``) or,
written ``component:table-pattern``, the tables of components
(``"store:*"``, ``"checkpoints:blobs"``, ``"cache:*"``); a component pattern
is expanded to the tables it names before the selection is built.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from typing import Any

from haive_langgraph.errors import ArchiveIntegrityError, ConfigurationError

MAX_LABEL = 200
MAX_METADATA_KEYS = 64
MAX_METADATA_KEY = 100
MAX_METADATA_VALUE = 2000


def _problem(label: Any, metadata: Any) -> str | None:
    if label is not None and (not isinstance(label, str) or not 0 < len(label) <= MAX_LABEL):
        return f"label must be text of 1 to {MAX_LABEL} characters"
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping) or len(metadata) > MAX_METADATA_KEYS:
        return f"metadata must be a mapping of at most {MAX_METADATA_KEYS} entries"
    for k, v in metadata.items():
        if not isinstance(k, str) or not 0 < len(k) <= MAX_METADATA_KEY:
            return f"metadata keys must be text of 1 to {MAX_METADATA_KEY} characters"
        if not isinstance(v, str) or len(v) > MAX_METADATA_VALUE:
            return f"metadata values must be text of at most {MAX_METADATA_VALUE} characters"
    return None


def check_labels(label: str | None, metadata: Mapping[str, str] | None) -> dict[str, str]:
    """Validate what a backup is asked to carry; the metadata as a plain dict.

    Raises:
        ConfigurationError: A label or metadata entry that is not bounded text.
    """
    problem = _problem(label, metadata)
    if problem is not None:
        raise ConfigurationError(problem)
    return dict(metadata or {})


def check_manifest_labels(manifest: Mapping[str, Any], where: str) -> None:
    """Refuse a manifest whose label or metadata is not what a backup writes."""
    problem = _problem(manifest.get("label"), manifest.get("metadata"))
    if problem is not None:
        raise ArchiveIntegrityError(f"the manifest of {where} is not valid: {problem}")


def parse_metadata(items: Sequence[str]) -> dict[str, str]:
    """``KEY=VALUE`` items (the command line's ``--meta``) as a mapping.

    Raises:
        ConfigurationError: An item without ``=``.
    """
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigurationError(f"metadata must be KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def expand_components(patterns: Sequence[str] | None) -> list[str] | None:
    """Table patterns, with each ``component:table-pattern`` replaced by the tables it names.

    Raises:
        ConfigurationError: A component pattern matching no component.
    """
    if patterns is None:
        return None
    from haive_langgraph.ops._migrate import all_components

    out: list[str] = []
    for pattern in patterns:
        if not isinstance(pattern, str) or ":" not in pattern:
            out.append(pattern)
            continue
        comp_pattern, _, table_pattern = pattern.partition(":")
        components = [c for c in all_components() if fnmatch.fnmatchcase(c.name, comp_pattern)]
        if not components:
            names = ", ".join(c.name for c in all_components())
            raise ConfigurationError(
                f"{pattern!r} names no component (components: {names}; a pattern is "
                "'table-pattern' or 'component:table-pattern')"
            )
        tables = [
            t.name
            for c in components
            for t in c.tables
            if fnmatch.fnmatchcase(t.name, table_pattern or "*")
        ]
        # A component pattern that names no table must still exclude/include nothing
        # rather than everything: a name no table has.
        out.extend(tables or [f"{comp_pattern}:{table_pattern}"])
    return out
