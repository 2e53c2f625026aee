"""Public sync and async methods made from one builder.

A feature writes a public method once, as a builder: a function that checks
its arguments and returns what to run (a :class:`~haive_langgraph.db.Call`,
or a vector memory operation), with the public signature and docstring.
:func:`sync_method` makes the sync method and :func:`async_method` the
``a``-prefixed async one; they hand the value to the instance's ``_run`` or
``await _arun``. So a sync class and its async twin share every signature,
docstring and check, and differ only in how a value runs::

    get_session = sync_method(_get_session)      # in the sync class
    aget_session = async_method(_get_session)    # in the async class
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable, Coroutine, Generator
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar, cast

from haive_langgraph.db._call import Call

__all__ = ["async_method", "deprecated_asetup", "sync_method"]

T = TypeVar("T")
S = TypeVar("S")
P = ParamSpec("P")

Runnable = Call[T] | Generator[Any, Any, T]
"""What a builder returns: a call, or an operation generator the instance drives."""

# The wrappers of a returned value, shown as the value itself in a method's signature.
_WRAPPERS = ("Call[", "Op[")


def _signature(build: Callable[..., Any]) -> inspect.Signature:
    """The method's signature: ``self``, the builder's arguments, the result it runs to."""
    sig = inspect.signature(build)
    params = list(sig.parameters.values())
    result = sig.return_annotation
    if isinstance(result, str) and result.endswith("]"):
        for wrapper in _WRAPPERS:
            if result.startswith(wrapper):
                result = result[len(wrapper) : -1]
    only = inspect.Parameter.POSITIONAL_ONLY
    kind = only if len(params) > 1 and params[1].kind is only else params[0].POSITIONAL_OR_KEYWORD
    this = params[0].replace(name="self", kind=kind, annotation=inspect.Parameter.empty)
    return sig.replace(parameters=[this, *params[1:]], return_annotation=result)


def _publish(method: Any, build: Callable[..., Any], name: str) -> None:
    method.__name__ = method.__qualname__ = name
    method.__signature__ = _signature(build)


def sync_method(
    build: Callable[Concatenate[S, P], Runnable[T]],
) -> Callable[Concatenate[S, P], T]:
    """The sync method (the builder's name without a leading ``_``) that runs what
    ``build`` returns with ``self._run``."""

    @functools.wraps(build)
    def method(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return cast(Any, self)._run(build(self, *args, **kwargs))  # type: ignore[no-any-return]

    _publish(method, build, build.__name__.lstrip("_"))
    return method


def async_method(
    build: Callable[Concatenate[S, P], Runnable[T]],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, T]]:
    """The async method (``a`` + the builder's name without a leading ``_``) that runs
    what ``build`` returns with ``await self._arun``."""

    @functools.wraps(build)
    async def method(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await cast(Any, self)._arun(build(self, *args, **kwargs))  # type: ignore[no-any-return]

    _publish(method, build, "a" + build.__name__.lstrip("_"))
    return method


class _AsyncSetup(Protocol):
    async def setup(self) -> None: ...


async def deprecated_asetup(self: _AsyncSetup) -> None:
    """Deprecated alias of ``await setup()`` (LangGraph's convention for async classes)."""
    warnings.warn(
        f"{type(self).__name__}.asetup() is deprecated: use `await obj.setup()` (as for "
        "LangGraph's async savers and stores)",
        DeprecationWarning,
        stacklevel=2,
    )
    await self.setup()
