"""A guard against stored values that name code to import or run when read.

LangGraph's msgpack serde rebuilds objects from (module, name, arguments)
records: it imports the module and calls the named attribute, and by default
it accepts any name (with a warning). Anyone who can write to the database
could then store a record whose mere import runs code (``antigravity`` opens
a browser, a module planted on ``sys.path`` runs whatever it holds) or whose
call does (``os.system``, ``timeit.timeit``). Encrypted frames cannot be
forged (AES-GCM authenticates them); for plaintext frames a
:class:`ValueGuard` walks every record before LangGraph's serde sees the
value, and admits a record only when, **by its names alone**, it is

* one of the types LangGraph registers as safe (``SAFE_MSGPACK_TYPES``:
  datetimes, UUIDs, decimals, sets, paths, messages, ``Send`` ...), or a
  method LangGraph registers as safe (``datetime.fromisoformat``);
* a type the serde's own allow-list names exactly
  (``JsonPlusSerializer(allowed_msgpack_modules=[...])``, or what
  ``compile()`` collects from the graph's state schema under
  ``LANGGRAPH_STRICT_MSGPACK``);
* in a module under one of the allowed prefixes: what LangChain and
  LangGraph themselves write (:data:`DEFAULT_ALLOWED_MODULES`) plus the
  prefixes the user declares for their own state types
  (``HaiveCodec(allowed_modules=("myapp.state",))`` or
  ``HAIVE_ALLOWED_MODULES``).

Nothing is imported before the names pass. Only then is the module imported
(it is one the user or LangGraph vouches for) and the named object checked:
it must be a class of a kind LangGraph's serde writes records for (a pydantic
model, a dataclass, an enum, a named tuple, a pydantic secret), never a
function. A refused record raises :class:`UnsafeValueError`, a
:class:`~haive_langgraph.errors.CorruptDataError`; a payload that is not
well-formed msgpack raises ``CorruptDataError``. Callers prefix the row.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import os
import sys
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import ormsgpack
from langgraph.checkpoint.serde._msgpack import SAFE_MSGPACK_METHODS, SAFE_MSGPACK_TYPES

from haive_langgraph.errors import ConfigurationError, CorruptDataError, UnsafeValueError

__all__ = [
    "ALLOWED_MODULES_ENV",
    "DEFAULT_ALLOWED_MODULES",
    "MAX_RECORD_DEPTH",
    "UnsafeValueError",
    "ValueGuard",
    "allowed_modules_from_env",
    "check_before_encrypting",
    "check_payload",
    "guard_for",
    "parse_allowed_modules",
]

ALLOWED_MODULES_ENV = "HAIVE_ALLOWED_MODULES"

# Module prefixes of the types LangChain and LangGraph themselves put in
# state, beyond the exact SAFE_MSGPACK_TYPES: every message and document
# class, generation outputs, LangGraph's own types, pydantic's secret types.
DEFAULT_ALLOWED_MODULES: tuple[str, ...] = (
    "langchain_core.documents",
    "langchain_core.messages",
    "langchain_core.outputs",
    "langgraph.store.base",
    "langgraph.types",
    "pydantic.types",
)

# msgpack extension codes of LangGraph's serde (jsonplus.EXT_*).
_CONSTRUCTOR_CODES = frozenset({0, 1, 2, 4, 5})  # one, positional, keyword args; pydantic v1, v2
_METHOD_CODE = 3
_NUMPY_CODE = 6
_DELTA_CODE = 7  # _DeltaSnapshot wraps another value
# Records nest (a message in a Send in a Command ...); state types rarely go
# ten deep. The bound keeps a forged chain of records from exhausting the stack.
MAX_RECORD_DEPTH = 100
_VERDICTS_MAX = 4096
_OPTION = ormsgpack.OPT_NON_STR_KEYS
_FORGED = " (the row may have been tampered with)"
_NUMPY_REFUSED = (
    "numpy is not loaded and not an allowed module; if your state holds numpy arrays, import "
    f"numpy first or declare it (allowed_modules=('numpy',) or {ALLOWED_MODULES_ENV}=numpy); "
    "otherwise the row was written by someone else"
)


def _is_dotted_name(text: str) -> bool:
    return bool(text) and all(part.isidentifier() for part in text.split("."))


def parse_allowed_modules(modules: str | Iterable[str] | None, *, source: str) -> tuple[str, ...]:
    """Module prefixes from ``"a.b, c"`` or an iterable of names, validated.

    Raises:
        ConfigurationError: A name is not a dotted Python module name.
    """
    if modules is None:
        return ()
    items = modules.split(",") if isinstance(modules, str) else list(modules)
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ConfigurationError(
                f"{source}: {item!r} is not a module name (give module prefixes as strings, "
                "e.g. 'myapp.state')"
            )
        name = item.strip()
        if not name and isinstance(modules, str):
            continue  # "a,,b" or a trailing comma
        if not _is_dotted_name(name):
            raise ConfigurationError(
                f"{source}: {name!r} is not a module name; give dotted module prefixes such "
                "as 'myapp.state' (wildcards are not supported)"
            )
        if name not in out:
            out.append(name)
    return tuple(out)


def allowed_modules_from_env(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The prefixes of ``HAIVE_ALLOWED_MODULES`` (comma-separated), validated."""
    env = os.environ if environ is None else environ
    return parse_allowed_modules(env.get(ALLOWED_MODULES_ENV, ""), source=ALLOWED_MODULES_ENV)


def _is_model(obj: type) -> bool:
    for base in obj.__mro__:
        if base.__module__.startswith("pydantic") and base.__name__ == "BaseModel":
            return True
    return False


def _kind_refusal(module: str, name: str) -> tuple[str | None, bool]:
    """Why the allowed name ``module.name`` may still not be built (None: it may), and
    whether it is an enum.

    Imports ``module``: call only for names that passed the allow-list.
    """
    try:
        obj = getattr(importlib.import_module(module), name)
    except Exception:
        # LangGraph's serde cannot build it either and keeps the raw arguments.
        return None, False
    if not isinstance(obj, type):
        return (
            "it is not a class (stored values construct classes, never call functions)" + _FORGED,
            False,
        )
    if issubclass(obj, enum.Enum):
        return None, True
    if (
        dataclasses.is_dataclass(obj)
        or _is_model(obj)
        or (issubclass(obj, tuple) and hasattr(obj, "_fields"))
        or callable(getattr(obj, "get_secret_value", None))
    ):
        return None, False
    return "it is not a pydantic model, dataclass, enum or named tuple" + _FORGED, False


class ValueGuard:
    """Decides which object records a plaintext stored value may hold.

    Args:
        modules: Module prefixes whose classes may be rebuilt, on top of
            :data:`DEFAULT_ALLOWED_MODULES`: ``"myapp.state"`` admits
            ``myapp.state`` and ``myapp.state.*``, not ``myapp.statements``.
        types: Exact ``(module, name)`` pairs that may be rebuilt (the serde's
            allow-list).

    Verdicts are cached per name, so a type costs its import and check once.
    Instances are safe to share between threads.
    """

    __slots__ = ("_enums", "_lock", "_prefixes", "_types", "_verdicts", "modules")

    def __init__(self, modules: Iterable[str] = (), types: Iterable[tuple[str, str]] = ()) -> None:
        self.modules = parse_allowed_modules(modules, source="allowed_modules")
        self._prefixes = frozenset(DEFAULT_ALLOWED_MODULES + self.modules)
        self._types = frozenset(types)
        self._verdicts: dict[tuple[str, str], str | None] = {}
        self._enums: set[tuple[str, str]] = set()  # admitted enums: built from one value only
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ValueGuard(modules={self.modules!r}, types={sorted(self._types)!r})"

    def allows_module(self, module: str) -> bool:
        """Whether ``module`` is one of the allowed prefixes or under one."""
        prefixes = self._prefixes
        if module in prefixes:
            return True
        dot = module.find(".")
        while dot > 0:
            if module[:dot] in prefixes:
                return True
            dot = module.find(".", dot + 1)
        return False

    def _name_refusal(self, module: str, name: str) -> str | None:
        """Why ``module.name`` is refused by its names alone (None: allowed). No import."""
        if not _is_dotted_name(module) or not name.isidentifier():
            return "it does not name a module and a class" + _FORGED
        if name.startswith("__") and name.endswith("__"):
            return "it names a special attribute, not a class" + _FORGED
        if (module, name) in self._types or self.allows_module(module):
            return None
        return (
            f"{module!r} is not an allowed module, and it was not imported. If {name} is one "
            f"of your own state types, declare its module (HaiveCodec(allowed_modules="
            f"({module!r},)), {ALLOWED_MODULES_ENV}={module}, or the serde's "
            "allowed_msgpack_modules); otherwise the row was written by someone else"
        )

    def verdict(self, module: str, name: str) -> str | None:
        """Why a record may not construct ``module.name`` (None: it may).

        The names are checked first; the module is imported only if they pass.
        """
        key = (module, name)
        try:
            return self._verdicts[key]
        except KeyError:
            pass
        if key in SAFE_MSGPACK_TYPES:
            reason = None  # vetted by LangGraph (re.compile among them)
        else:
            reason = self._name_refusal(module, name)
            if reason is None:
                reason, is_enum = _kind_refusal(module, name)
                if is_enum:
                    self._enums.add(key)
        with self._lock:
            if len(self._verdicts) < _VERDICTS_MAX:
                self._verdicts[key] = reason
        return reason

    def _record_refusal(self, code: int, inner: Any) -> tuple[str, str | None]:
        """(what the record names, why it is refused or None)."""
        if code == _DELTA_CODE:
            return "a delta snapshot", None
        if code == _NUMPY_CODE:
            # LangGraph's serde imports numpy for it: admitted when numpy is
            # already loaded or allowed, so a record never brings it in.
            ok = "numpy" in sys.modules or self.allows_module("numpy")
            return "a numpy array", None if ok else _NUMPY_REFUSED
        if code not in _CONSTRUCTOR_CODES and code != _METHOD_CODE:
            return f"msgpack extension {code}", "LangGraph's serde writes no such record" + _FORGED
        if (
            not isinstance(inner, list | tuple)
            or len(inner) < 3
            or not isinstance(inner[0], str)
            or not isinstance(inner[1], str)
        ):
            return "an object", "the object record is malformed" + _FORGED
        module, name = inner[0], inner[1]
        if code == _METHOD_CODE:
            method = inner[3] if len(inner) > 3 else None
            what = f"{module}.{name}.{method}"
            if isinstance(method, str) and (module, name, method) in SAFE_MSGPACK_METHODS:
                return what, None
            return what, "only LangGraph's safe methods may be called" + _FORGED
        reason = self.verdict(module, name)
        if reason is None and code != 0 and (module, name) in self._enums:
            # An enum member is written from its value alone; given more
            # arguments an enum class builds a new enum class.
            reason = "an enum is rebuilt from one value only" + _FORGED
        return f"{module}.{name}", reason

    def check(self, type_tag: str, data: bytes) -> None:
        """Raise unless every object record in a serialised value is admitted.

        Args:
            type_tag: The serde's type tag (``"msgpack"``, ``"null"`` ...).
            data: The serialised value.

        Raises:
            UnsafeValueError: A record names what may not be imported or
                called, or the value is pickled.
            CorruptDataError: The msgpack is not well-formed.
        """
        if type_tag != "msgpack":
            if "pickle" in type_tag:
                raise UnsafeValueError(
                    "refusing a pickled stored value: unpickling runs code, and this saver "
                    "never writes pickles in plaintext (the row may have been tampered with)"
                )
            return  # null, bytes, JSON: no records LangGraph's serde imports from
        refused: list[CorruptDataError] = []
        depth = 0

        def hook(code: int, payload: bytes) -> None:
            nonlocal depth
            depth += 1
            try:
                if depth > MAX_RECORD_DEPTH:
                    refused.append(
                        UnsafeValueError(
                            "refusing a stored value whose object records nest more than "
                            f"{MAX_RECORD_DEPTH} deep{_FORGED}"
                        )
                    )
                else:
                    inner = ormsgpack.unpackb(payload, ext_hook=hook, option=_OPTION)
                    what, reason = self._record_refusal(code, inner)
                    if reason is not None:
                        refused.append(
                            UnsafeValueError(
                                f"refusing to construct {what} from stored data: {reason}"
                            )
                        )
                if refused:
                    raise refused[0]  # ormsgpack turns it into "ext_hook failed"
            finally:
                depth -= 1

        try:
            ormsgpack.unpackb(data, ext_hook=hook, option=_OPTION)
        except Exception as exc:
            if refused:
                raise refused[0] from None
            raise CorruptDataError(
                f"the stored value is not well-formed msgpack ({exc}); the row may have been "
                "tampered with"
            ) from None


def _serde_types(serde: object) -> frozenset[tuple[str, str]]:
    """The exact ``(module, name)`` pairs a LangGraph serde's allow-list names."""
    allowed = getattr(serde, "_allowed_msgpack_modules", None)
    if allowed is None:  # EncryptedSerializer wraps the JsonPlusSerializer
        allowed = getattr(getattr(serde, "serde", None), "_allowed_msgpack_modules", None)
    if not isinstance(allowed, set | frozenset):
        return frozenset()  # None: strict, safe types only; True: "anything" is no declaration
    return frozenset(
        (t[0], t[1])
        for t in allowed
        if isinstance(t, tuple) and len(t) == 2 and isinstance(t[0], str) and isinstance(t[1], str)
    )


_guards: dict[tuple[tuple[str, ...], frozenset[tuple[str, str]]], ValueGuard] = {}
_guards_lock = threading.Lock()


def guard_for(serde: object, codec: object) -> ValueGuard:
    """The guard of a reader: the codec's ``allowed_modules`` and the serde's allow-list.

    Guards are shared between readers with the same declarations, so their
    verdict caches are too.
    """
    modules = getattr(codec, "allowed_modules", None)
    key = (tuple(modules) if modules else (), _serde_types(serde))
    guard = _guards.get(key)
    if guard is None:
        guard = ValueGuard(*key)
        with _guards_lock:
            if len(_guards) >= 64:
                _guards.clear()
            guard = _guards.setdefault(key, guard)
    return guard


def check_before_encrypting(kind: str, payload: bytes, guard: ValueGuard) -> None:
    """Refuse to encrypt a plaintext payload holding a record ``guard`` refuses.

    Readers scan plaintext rows only: encrypting a planted plaintext row (key
    rotation turning encryption on) would vouch for it. Checkpoint values and
    writes (``Kind.BLOB``) and chat-history batches and details
    (``Kind.MESSAGE``, ``Kind.METADATA``) are scanned; a payload that is not
    msgpack (JSON metadata, store values) holds no record and passes.

    Raises:
        UnsafeValueError: A record names what a reader would refuse.
    """
    if kind in ("blob", "write"):
        sep = payload.find(b"\x00")
        if sep <= 0:
            return
        tag, data = payload[:sep].decode("ascii", "replace"), payload[sep + 1 :]
    elif kind in ("message", "metadata"):
        tag, data = "msgpack", payload
    else:
        return
    try:
        guard.check(tag, data)
    except UnsafeValueError:
        raise
    except CorruptDataError:
        return  # not msgpack: no record to vouch for (a reader refuses it anyway)


_DEFAULT = ValueGuard()


def check_payload(type_tag: str, data: bytes, guard: ValueGuard | None = None) -> None:
    """Raise :class:`UnsafeValueError` if a payload holds a record ``guard`` refuses.

    ``guard`` defaults to one admitting only LangGraph's safe types and
    :data:`DEFAULT_ALLOWED_MODULES`.
    """
    (guard or _DEFAULT).check(type_tag, data)
