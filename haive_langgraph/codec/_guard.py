"""A guard against stored values that construct dangerous objects when read.

LangGraph's msgpack serde rebuilds objects from (module, name, arguments)
records, and by default it accepts any module (with a warning): it imports
the module and calls the named attribute. Anyone who can write to the
database could then store a record that calls, say, ``os.system`` or
``timeit.timeit`` when the checkpoint is read. Encrypted frames cannot be
forged (AES-GCM authenticates them); for plaintext frames,
:func:`check_payload` walks the record before LangGraph's serde sees it and
admits a constructor only if it is

* one of the types LangGraph registers as safe (sets, paths, datetimes,
  UUIDs, messages, ``Send`` ...), or
* a *class* that LangGraph's serde itself writes records for: a pydantic
  model, a dataclass, an enum or a named tuple (your state types),
  from a module outside a deny-list of modules that run commands, open
  files or load code.

A function (``os.system``, ``timeit.timeit``, ``cProfile.run`` ...) is never
called, and a method record only for LangGraph's safe methods. A refused
record raises :class:`UnsafeValueError`, a :class:`CorruptDataError`.
Resolving a class imports its module, as LangGraph's serde would.

For a strict allow-list instead, set ``LANGGRAPH_STRICT_MSGPACK=true``
(LangGraph then admits only its safe types and the ones you register).
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import threading
from typing import Any

import ormsgpack
from langgraph.checkpoint.serde._msgpack import SAFE_MSGPACK_METHODS, SAFE_MSGPACK_TYPES

from haive_langgraph.errors import CorruptDataError

__all__ = ["UnsafeValueError", "check_payload"]

# msgpack extension codes of LangGraph's serde that name a module and a name:
# constructors with one, positional or keyword arguments, a method call, and
# pydantic v1 / v2 models.
_CONSTRUCTOR_CODES = frozenset({0, 1, 2, 4, 5})
_METHOD_CODE = 3
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


_verdicts: dict[tuple[str, str], str | None] = {}
_verdicts_lock = threading.Lock()


def _is_model(obj: type) -> bool:
    for base in obj.__mro__:
        if base.__module__.startswith("pydantic") and base.__name__ == "BaseModel":
            return True
    return False


def _refusal(module: str, name: str) -> str | None:
    """Why the record may not construct ``module.name`` (None: it may)."""
    if (module, name) in SAFE_MSGPACK_TYPES:
        return None
    if _denied(module):
        return "its module is one no checkpoint value may use"
    try:
        obj = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
    except Exception:
        return None  # LangGraph cannot build it either and keeps the raw arguments
    if not isinstance(obj, type):
        return "it is not a class (stored values construct classes, never call functions)"
    if (
        issubclass(obj, enum.Enum)
        or dataclasses.is_dataclass(obj)
        or _is_model(obj)
        or (issubclass(obj, tuple) and hasattr(obj, "_fields"))
    ):
        return None
    return "it is not a pydantic model, dataclass, enum or named tuple"


def _verdict(module: str, name: str) -> str | None:
    key = (module, name)
    try:
        return _verdicts[key]
    except KeyError:
        pass
    verdict = _refusal(module, name)
    with _verdicts_lock:
        if len(_verdicts) < 4096:
            _verdicts[key] = verdict
    return verdict


def _check_record(code: int, data: bytes, refused: list[UnsafeValueError]) -> Any:
    if code in _CONSTRUCTOR_CODES or code in _NESTED_CODES or code == _METHOD_CODE:
        inner = ormsgpack.unpackb(
            data,
            ext_hook=lambda c, d: _check_record(c, d, refused),
            option=ormsgpack.OPT_NON_STR_KEYS,
        )
        if code not in _NESTED_CODES:
            reason: str | None
            if not isinstance(inner, list | tuple) or len(inner) < 2:
                reason = "the object record is malformed"
                what = "an object"
            elif not isinstance(inner[0], str) or not isinstance(inner[1], str):
                reason = "the object record names no module"
                what = "an object"
            elif code == _METHOD_CODE:
                method = inner[3] if len(inner) > 3 else None
                what = f"{inner[0]}.{inner[1]}.{method}"
                reason = (
                    None
                    if (inner[0], inner[1], method) in SAFE_MSGPACK_METHODS
                    else "only LangGraph's safe methods may be called"
                )
            else:
                what = f"{inner[0]}.{inner[1]}"
                reason = _verdict(inner[0], inner[1])
            if reason is not None:
                refused.append(
                    UnsafeValueError(
                        f"refusing to construct {what} from stored data: {reason} "
                        "(the row may have been tampered with)"
                    )
                )
        if refused:
            raise refused[0]  # ormsgpack replaces it with "ext_hook failed"; re-raised below
    return None


def check_payload(type_tag: str, data: bytes) -> None:
    """Raise :class:`UnsafeValueError` if a msgpack payload constructs what it may not."""
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
