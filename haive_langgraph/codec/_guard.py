"""A guard against stored values that construct dangerous objects when read.

LangGraph's msgpack serde rebuilds objects from (module, name, arguments)
records, and by default it accepts any module (with a warning). Anyone who can
write to the database could then store a record that calls, say,
``os.system`` when the checkpoint is read. Encrypted frames cannot be forged
(AES-GCM authenticates them); for plaintext frames, :func:`check_payload`
walks the record before LangGraph's serde sees it and refuses constructors
from modules that run commands, touch files or load code. The types LangGraph
itself registers as safe (sets, paths, datetimes, messages, ...) and user types
(your pydantic models, dataclasses, enums) are unaffected.

For an allow-list instead of a deny-list, set ``LANGGRAPH_STRICT_MSGPACK=true``
(LangGraph then derives the allowed types from the graph's state schema).
"""

from __future__ import annotations

from typing import Any

import ormsgpack
from langgraph.checkpoint.serde._msgpack import SAFE_MSGPACK_TYPES

from haive_langgraph.errors import CorruptDataError

__all__ = ["UnsafeValueError", "check_payload"]

# msgpack extension codes of LangGraph's serde that name a module and a name.
_CONSTRUCTOR_CODES = frozenset({0, 1, 2, 3, 4, 5})
_NESTED_CODES = frozenset({7})  # _DeltaSnapshot wraps another value

# Modules (and their submodules) no stored value may construct from.
DENIED_MODULES = frozenset(
    {
        "builtins",
        "os",
        "posix",
        "nt",
        "sys",
        "subprocess",
        "importlib",
        "runpy",
        "code",
        "codeop",
        "pty",
        "shutil",
        "tempfile",
        "io",
        "_io",
        "pathlib",
        "socket",
        "ssl",
        "ctypes",
        "multiprocessing",
        "threading",
        "_thread",
        "signal",
        "pickle",
        "_pickle",
        "marshal",
        "shelve",
        "dbm",
        "webbrowser",
        "urllib",
        "http",
        "ftplib",
        "smtplib",
        "xmlrpc",
        "asyncio",
        "pydoc",
        "inspect",
        "zipimport",
        "pkgutil",
        "mmap",
        "fcntl",
        "resource",
        "platform",
        "sqlite3",
        "operator",
        "functools",
        "types",
        "gc",
        "cffi",
        "psycopg",
    }
)


class UnsafeValueError(CorruptDataError):
    """A stored value would construct an object from a denied module."""


def _denied(module: str) -> bool:
    root = module.split(".", 1)[0]
    return root in DENIED_MODULES or module in DENIED_MODULES


def _check_record(code: int, data: bytes, refused: list[UnsafeValueError]) -> Any:
    if code in _CONSTRUCTOR_CODES or code in _NESTED_CODES:
        inner = ormsgpack.unpackb(
            data,
            ext_hook=lambda c, d: _check_record(c, d, refused),
            option=ormsgpack.OPT_NON_STR_KEYS,
        )
        if code in _CONSTRUCTOR_CODES:
            if not isinstance(inner, list | tuple) or len(inner) < 2:
                refused.append(UnsafeValueError("a stored object record is malformed"))
            elif not isinstance(inner[0], str) or not isinstance(inner[1], str):
                refused.append(UnsafeValueError("a stored object record names no module"))
            elif (inner[0], inner[1]) not in SAFE_MSGPACK_TYPES and _denied(inner[0]):
                refused.append(
                    UnsafeValueError(
                        f"refusing to construct {inner[0]}.{inner[1]} from stored data (a value "
                        "in the database names a module no checkpoint value may use; the row "
                        "may have been tampered with)"
                    )
                )
        if refused:
            raise refused[0]  # ormsgpack replaces it with "ext_hook failed"; re-raised below
    return None


def check_payload(type_tag: str, data: bytes) -> None:
    """Raise :class:`UnsafeValueError` if a msgpack payload constructs from a denied module."""
    if type_tag != "msgpack":
        return
    refused: list[UnsafeValueError] = []
    try:
        ormsgpack.unpackb(
            data,
            ext_hook=lambda c, d: _check_record(c, d, refused),
            option=ormsgpack.OPT_NON_STR_KEYS,
        )
    except Exception:
        if refused:
            raise refused[0] from None
        raise
