"""Crafting hostile backup archives: read one we wrote, change it, write it back.

An attacker without the backup key can recompute everything an unkeyed
archive's integrity rests on (each part's SHA-256, the manifest's SHA-256):
:func:`write_archive` does so when ``resign`` is set, so the tests reach the
checks behind the checksums. A keyed archive cannot be re-signed without the
key; a "re-signed" keyed archive is an unkeyed one.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zstandard


@dataclass
class Archive:
    """An archive taken apart: its manifest, its signature and its members' bytes."""

    manifest: dict[str, Any]
    signature: dict[str, Any]
    members: dict[str, bytes] = field(default_factory=dict)

    def copy(self) -> Archive:
        return Archive(copy.deepcopy(self.manifest), dict(self.signature), dict(self.members))

    def table(self, name: str) -> dict[str, Any]:
        return next(t for t in self.manifest["tables"] if t["name"] == name)

    def part_names(self) -> list[str]:
        names = [self.manifest["scope_part"]["name"]]
        for t in self.manifest["tables"]:
            names += [p["name"] for p in t["parts"]] + [p["name"] for p in t.get("key_parts", [])]
        return names


def read_archive(path: Path) -> Archive:
    with tarfile.open(path) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    manifest = json.loads(members.pop("manifest.json"))
    signature = json.loads(members.pop("manifest.sig"))
    return Archive(manifest, signature, members)


def compress(raw: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=3).compress(raw)


def decompress(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()


def rows_of(data: bytes) -> list[list[Any]]:
    return [json.loads(line) for line in decompress(data).splitlines()]


def lines(rows: list[list[Any]]) -> bytes:
    return b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in rows)


def map_rows(archive: Archive, table: str, change: Callable[[list[Any]], list[Any]]) -> None:
    """Change every row of a table's data parts (an unkeyed archive: parts are plain zstd)."""
    for part in archive.table(table)["parts"]:
        raw = lines([change(r) for r in rows_of(archive.members[part["name"]])])
        archive.members[part["name"]] = compress(raw)
        part["raw_bytes"] = len(raw)


def set_part(archive: Archive, name: str, raw: bytes, rows: int | None = None) -> None:
    """Replace a part's content (and its declared sizes, as the attacker would)."""
    archive.members[name] = compress(raw)
    for entry in _part_entries(archive.manifest):
        if entry["name"] == name:
            entry["raw_bytes"] = len(raw)
            if rows is not None:
                entry["rows"] = rows


def _part_entries(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    out = [manifest["scope_part"]]
    for t in manifest["tables"]:
        out += t["parts"] + t.get("key_parts", [])
    return out


def write_archive(path: Path, archive: Archive, *, resign: bool = True) -> Path:
    """Write ``archive``; with ``resign``, recompute part sizes, SHA-256s, row totals and
    the manifest's SHA-256 (what anyone can do to an archive without a key)."""
    manifest = archive.manifest
    if resign:
        for entry in _part_entries(manifest):
            data = archive.members.get(entry["name"])
            if data is not None:
                entry["size"] = len(data)
                entry["sha256"] = hashlib.sha256(data).hexdigest()
        for t in manifest["tables"]:
            if isinstance(t.get("parts"), list) and all(
                isinstance(p, dict) and isinstance(p.get("rows"), int) for p in t["parts"]
            ):
                t["rows"] = sum(p["rows"] for p in t["parts"])
        manifest["encryption"] = None
    body = json.dumps(manifest, indent=1, sort_keys=True).encode()
    signature = (
        {"algorithm": "SHA-256", "value": hashlib.sha256(body).hexdigest()}
        if resign
        else archive.signature
    )
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [
            *archive.members.items(),
            ("manifest.json", body),
            ("manifest.sig", json.dumps(signature).encode()),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path
