"""The lines of a backup part: split from a decompressed stream, parsed as rows of text values.

Both are bounded: a line is at most :data:`MAX_LINE_BYTES`, and a row's parse
takes memory of about the line's size (see :func:`parse_row`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from json.decoder import scanstring as _scanstring  # type: ignore[attr-defined]  # json's C scanner

from haive_langgraph.errors import ArchiveIntegrityError
from haive_langgraph.ops._manifest import MAX_LINE_BYTES

_SPACE = re.compile(r"[ \t\n\r]*")
# Rows up to this length are parsed by json.loads (C, about six times faster per row
# than value by value); nothing in one can take more than ~25 times its length.
_SHORT_LINE = 1 << 16


def check_line(length: int, name: str, offset: int) -> None:
    """Refuse a line longer than :data:`MAX_LINE_BYTES` (naming the part and where it starts)."""
    if length > MAX_LINE_BYTES:
        raise ArchiveIntegrityError(
            f"part {name} holds a line longer than {MAX_LINE_BYTES:,} bytes at offset "
            f"{offset:,} (decompressed): refusing it"
        )


def split_lines(chunks: Iterator[bytes], name: str) -> Iterator[bytes]:
    """Lines of a stream of chunks, in time linear in its size; a line is at most ``MAX_LINE_BYTES``."""
    pending = bytearray()
    offset = 0  # where the pending line starts
    for chunk in chunks:
        at = chunk.find(b"\n")
        if at < 0:
            pending += chunk
            check_line(len(pending), name, offset)
            continue
        pending += chunk[:at]
        check_line(len(pending), name, offset)
        yield bytes(pending)
        offset += len(pending) + 1
        lines = chunk[at + 1 :].split(b"\n")
        tail = lines.pop()
        for line in lines:
            yield line
            offset += len(line) + 1
        pending = bytearray(tail)
    if pending:
        raise ArchiveIntegrityError(f"part {name} ends in the middle of a line")


def parse_row(line: bytes, width: int, part: str) -> list[str | None]:
    """One archived row: a JSON array of ``width`` text values (or nulls).

    Memory stays about the line's size. ``json.loads`` builds whatever a line
    holds before its shape can be checked (a 60 MB line of ``[],`` took
    1.5 GB, from an archive of a few kilobytes), so it only reads short
    lines (at most 25 times :data:`_SHORT_LINE`); a longer line is parsed
    value by value and refused at its first value that is not a string or
    null, or as soon as it has more than ``width`` values.
    """
    if len(line) <= _SHORT_LINE:
        try:
            row = json.loads(line)
        except (ValueError, RecursionError, UnicodeDecodeError):
            raise ArchiveIntegrityError(f"part {part} holds a line that is not JSON") from None
        if type(row) is not list or len(row) != width:
            raise ArchiveIntegrityError(f"part {part} holds a row of the wrong width")
        for value in row:
            if value is not None and type(value) is not str:
                raise ArchiveIntegrityError(f"part {part} holds a value that is not text")
        return row
    return _parse_long_row(line, width, part)


def _parse_long_row(line: bytes, width: int, part: str) -> list[str | None]:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise ArchiveIntegrityError(f"part {part} holds a line that is not JSON") from None
    row: list[str | None] = []
    end = len(text)
    pos = _skip_space(text, 0)
    if not text.startswith("[", pos):
        raise ArchiveIntegrityError(f"part {part} holds a row of the wrong width")
    pos = _skip_space(text, pos + 1)
    closed = text.startswith("]", pos)
    if closed:
        pos += 1
    while not closed:
        if len(row) == width:
            raise ArchiveIntegrityError(f"part {part} holds a row of the wrong width")
        if text.startswith('"', pos):
            try:
                value, pos = _scanstring(text, pos + 1, True)
            except ValueError:
                raise ArchiveIntegrityError(f"part {part} holds a line that is not JSON") from None
            row.append(value)
        elif text.startswith("null", pos):
            row.append(None)
            pos += 4
        else:
            raise ArchiveIntegrityError(f"part {part} holds a value that is not text")
        pos = _skip_space(text, pos)
        if text.startswith(",", pos):
            pos = _skip_space(text, pos + 1)
        elif text.startswith("]", pos):
            pos += 1
            closed = True
        else:
            raise ArchiveIntegrityError(f"part {part} holds a line that is not JSON")
    if _skip_space(text, pos) != end:
        raise ArchiveIntegrityError(f"part {part} holds a line that is not JSON")
    if len(row) != width:
        raise ArchiveIntegrityError(f"part {part} holds a row of the wrong width")
    return row


def _skip_space(text: str, pos: int) -> int:
    """The position of the first character at or after ``pos`` that is not JSON whitespace."""
    return _SPACE.match(text, pos).end()  # type: ignore[union-attr]
