"""The manifest of an archive, and what a reader accepts in it.

:func:`check_manifest` runs on every manifest read, before its signature is
checked and before any part is touched: each field verify and restore use
is checked for its type and range, so that a crafted manifest is refused
with :class:`ArchiveIntegrityError` naming the field, never with a
``KeyError``, a negative count, a part name outside ``parts/``, or SQL.

Format versions:

* 1: table entries carry ``ddl``, the statements that created the table
  in the source. Still read; the ``ddl`` is ignored (restore creates tables
  from our own migrations only).
* 2 (written now): no ``ddl``; a version-2 manifest holding one is refused.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from haive_langgraph.errors import (
    ArchiveContentError,
    ArchiveIntegrityError,
    BackupError,
)
from haive_langgraph.ops._archive_meta import check_manifest_labels

FORMAT = "haive-langgraph-backup"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)

# Part names are ours: one level under parts/, letters, digits, - and _,
# and the .jsonl.zst suffix. Nothing else (no "..", no "/", no absolute
# path) is looked up in the tar, which is never extracted to disk anyway.
PART_NAME = re.compile(r"parts/[A-Za-z0-9_-]{1,200}\.jsonl\.zst")
# The decompressed size of one part (a zstd bomb stops here) and the length
# of one row's line; backup refuses to write more, restore to read more.
MAX_PART_BYTES = 1 << 30
"""The most bytes one archive part may expand to (1 GiB); backup writes no larger part."""
MAX_LINE_BYTES = 256 << 20
"""The longest line (one row) an archive part may hold (256 MiB), written or read."""
# Bounds on counts a manifest may state (a part never holds more rows than bytes).
MAX_PART_SIZE = 1 << 40
_IDENT = re.compile(r"[a-z_][a-z0-9_$]{0,62}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
SCOPE_KINDS = ("all", "tenants", "entities", "values", "shared")

_TABLE_KEYS = frozenset(
    {"name", "columns", "data_columns", "primary_key", "scope", "rows", "parts"}
    | {"key_rows", "key_parts"}
)
_COLUMN_KEYS = frozenset(
    {"name", "type", "not_null", "default", "collation", "generated", "identity"}
)
_PART_KEYS = frozenset({"name", "rows", "size", "raw_bytes", "sha256"})


def _bad(where: str, what: str) -> ArchiveIntegrityError:
    return ArchiveIntegrityError(f"the manifest of {where} is not valid: {what}")


def _get(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in obj:
        raise _bad(where, f"{key!r} is missing")
    value = obj[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise _bad(
            where, f"{key!r} is {type(value).__name__}, not {getattr(kind, '__name__', kind)}"
        )
    return value


def _count(obj: Mapping[str, Any], key: str, where: str, limit: int) -> int:
    value = _get(obj, key, int, where)
    if not 0 <= value <= limit:
        raise _bad(where, f"{key!r} is {value}, outside 0..{limit}")
    return int(value)


def _strings(value: Any, what: str, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad(where, f"{what} is not a list of strings")
    return value


def _identifier(value: Any, what: str, where: str) -> str:
    if not isinstance(value, str) or not _IDENT.fullmatch(value) or value.startswith("pg_"):
        raise _bad(where, f"{what} {value!r} is not a plain identifier")
    return value


def check_part(data: Any, where: str) -> None:
    """One part entry: a name under ``parts/``, counts in range, a SHA-256."""
    if not isinstance(data, dict):
        raise _bad(where, "a part entry is not an object")
    unknown = sorted(set(data) - _PART_KEYS)
    if unknown:
        raise _bad(where, f"a part entry has unknown fields {unknown}")
    name = _get(data, "name", str, where)
    if not PART_NAME.fullmatch(name):
        raise _bad(
            where, f"part name {name[:200]!r} is not parts/<letters, digits, - or _>.jsonl.zst"
        )
    _count(data, "rows", where, MAX_PART_BYTES)
    _count(data, "size", where, MAX_PART_SIZE)
    if "raw_bytes" in data:
        _count(data, "raw_bytes", where, MAX_PART_BYTES)
    if not _SHA256.fullmatch(_get(data, "sha256", str, where)):
        raise _bad(where, f"part {name} has no valid SHA-256")


def _check_table(entry: Any, version: int, where: str) -> list[str]:
    if not isinstance(entry, dict):
        raise _bad(where, "a table entry is not an object")
    name = _identifier(entry.get("name"), "table name", where)
    allowed = _TABLE_KEYS | ({"ddl"} if version == 1 else set())
    unknown = sorted(set(entry) - allowed)
    if unknown:
        # "ddl" in a version-2 manifest: SQL where only data may be.
        raise ArchiveContentError(
            f"the manifest of {where} gives table {name} the fields {unknown}, which archive "
            f"format {version} does not have: refusing it (restore runs no SQL from an archive)"
        )
    columns = _get(entry, "columns", list, where)
    names: list[str] = []
    for col in columns:
        if not isinstance(col, dict) or set(col) - _COLUMN_KEYS:
            raise _bad(where, f"a column of table {name} is not a column entry")
        names.append(_get(col, "name", str, where))
        _get(col, "type", str, where)
        if col.get("identity") not in (None, "a", "d"):
            raise _bad(where, f"a column of table {name} has an unknown identity kind")
    if len(set(names)) != len(names):
        raise _bad(where, f"table {name} names a column twice")
    data_columns = _strings(entry.get("data_columns"), f"data_columns of {name}", where)
    key = _strings(entry.get("primary_key"), f"primary_key of {name}", where)
    if len(set(data_columns)) != len(data_columns) or not set(data_columns) <= set(names):
        raise _bad(where, f"the data_columns of table {name} are not distinct columns of it")
    if not set(key) <= set(data_columns):
        raise _bad(where, f"the primary key of table {name} is not among its data columns")
    if _get(entry, "scope", str, where) not in SCOPE_KINDS:
        raise _bad(where, f"table {name} has an unknown scope kind")
    parts = _get(entry, "parts", list, where)
    if not parts:
        raise _bad(where, f"table {name} lists no part")
    part_names = []
    for part in parts:
        check_part(part, where)
        part_names.append(part["name"])
    rows = _count(entry, "rows", where, MAX_PART_SIZE)
    if rows != sum(int(p["rows"]) for p in parts):
        raise _bad(where, f"the row count of table {name} is not the sum of its parts'")
    if ("key_parts" in entry) != ("key_rows" in entry):
        raise _bad(where, f"table {name} has key_parts without key_rows, or the reverse")
    if "key_parts" in entry:
        key_parts = _get(entry, "key_parts", list, where)
        for part in key_parts:
            check_part(part, where)
            part_names.append(part["name"])
        if _count(entry, "key_rows", where, MAX_PART_SIZE) != sum(
            int(p["rows"]) for p in key_parts
        ):
            raise _bad(where, f"the key row count of table {name} is not the sum of its parts'")
    return part_names


def check_manifest(manifest: Any, where: str) -> None:
    """Refuse a manifest that is not one we write (see the module docstring).

    Raises:
        ArchiveIntegrityError: Naming the field (``ArchiveContentError`` for
            SQL in a version-2 manifest).
        BackupError: The archive is of a newer format.
    """
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArchiveIntegrityError(f"{where} is not a haive-langgraph backup")
    version = _get(manifest, "format_version", int, where)
    if version > FORMAT_VERSION:
        raise BackupError(
            f"{where} was written by a newer haive-langgraph (archive format {version}); "
            "upgrade haive-langgraph to read it"
        )
    if version not in READABLE_VERSIONS:
        raise _bad(where, f"format_version {version} does not exist")
    try:
        uuid.UUID(_get(manifest, "archive_id", str, where))
        dt.datetime.fromisoformat(_get(manifest, "created_at", str, where))
    except ValueError:
        raise _bad(where, "archive_id or created_at is malformed") from None
    kind = _get(manifest, "kind", str, where)
    base = manifest.get("base")
    if kind == "full":
        if base is not None:
            raise _bad(where, "a full backup names a base")
    elif kind == "incremental":
        if not isinstance(base, dict):
            raise _bad(where, "an incremental backup names no base")
        _get(base, "archive_id", str, where)
        _get(base, "snapshot_xmin", int, where)
    else:
        raise _bad(where, f"kind {kind!r} is neither full nor incremental")
    source = _get(manifest, "source", dict, where)
    _identifier(source.get("schema"), "source schema", where)
    snapshot = _get(manifest, "snapshot", dict, where)
    _get(snapshot, "xmin", int, where)
    _get(snapshot, "xmax", int, where)
    components = _get(manifest, "components", dict, where)
    for value in components.values():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise _bad(where, "a component version is not a count")
    if "extensions" in manifest:  # format 1 (informational; restore creates none)
        _get(manifest, "extensions", list, where)
    _check_selection(_get(manifest, "selection", dict, where), where)
    check_manifest_labels(manifest, where)
    if not _SHA256.fullmatch(_get(manifest, "selection_digest", str, where)):
        raise _bad(where, "selection_digest is not a SHA-256")
    encryption = manifest.get("encryption")
    if encryption is not None and not (
        isinstance(encryption, dict) and isinstance(encryption.get("key_fingerprint"), str)
    ):
        raise _bad(where, "encryption is not a description of the backup key")
    check_part(_get(manifest, "scope_part", dict, where), where)
    names = [manifest["scope_part"]["name"]]
    tables = _get(manifest, "tables", list, where)
    seen: set[str] = set()
    for entry in tables:
        names += _check_table(entry, version, where)
        if entry["name"] in seen:
            raise _bad(where, f"table {entry['name']} is listed twice")
        seen.add(entry["name"])
    if len(set(names)) != len(names):
        raise _bad(where, "two entries name the same part")


def _check_selection(selection: dict[str, Any], where: str) -> None:
    _strings(selection.get("include"), "selection include", where)
    _strings(selection.get("exclude"), "selection exclude", where)
    tenants = selection.get("tenants")
    if tenants is not None and (not isinstance(tenants, int) or isinstance(tenants, bool)):
        raise _bad(where, "selection tenants is not a count")
    chosen = _get(selection, "where", dict, where)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in chosen.values()):
        raise _bad(where, "selection where is not a count per column")
    _get(selection, "global_tables", bool, where)


def part_entries(manifest: Mapping[str, Any]) -> Sequence[tuple[dict[str, Any], str]]:
    """Every part entry of a checked manifest with its table (``scope`` for the scope part)."""
    out: list[tuple[dict[str, Any], str]] = [(manifest["scope_part"], "scope")]
    for t in manifest["tables"]:
        out += [(p, t["name"]) for p in t["parts"]]
        out += [(p, t["name"]) for p in t.get("key_parts", [])]
    return out
