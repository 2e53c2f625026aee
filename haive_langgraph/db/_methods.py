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
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar, overload

from haive_langgraph.db._call import Call

__all__ = ["async_method", "deprecated_asetup", "sync_method"]

T = TypeVar("T")
S = TypeVar("S")
P = ParamSpec("P")

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


class _RunsOps(Protocol):
    """An instance that drives operation generators itself (the vector classes)."""

    def _run(self, op: Any, /) -> Any: ...

    async def _arun(self, op: Any, /) -> Any: ...


# A method's class, for generator builders: bound, so that a class body that
# overrides a base class's method (LangChain's VectorStore) infers it from the builder.
R = TypeVar("R", bound=_RunsOps)


@overload
def sync_method(build: Callable[Concatenate[S, P], Call[T]]) -> Callable[Concatenate[S, P], T]: ...
@overload
def sync_method(
    build: Callable[Concatenate[R, P], Generator[Any, Any, T]],
) -> Callable[Concatenate[R, P], T]: ...
def sync_method(build: Callable[..., Any]) -> Callable[..., Any]:
    """The sync method (the builder's name without a leading ``_``) that runs what
    ``build`` returns with ``self._run``."""

    @functools.wraps(build)
    def method(self: Any, /, *args: Any, **kwargs: Any) -> Any:
        return self._run(build(self, *args, **kwargs))

    _publish(method, build, build.__name__.lstrip("_"))
    return method


@overload
def async_method(
    build: Callable[Concatenate[S, P], Call[T]],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, T]]: ...
@overload
def async_method(
    build: Callable[Concatenate[R, P], Generator[Any, Any, T]],
) -> Callable[Concatenate[R, P], Coroutine[Any, Any, T]]: ...
def async_method(build: Callable[..., Any]) -> Callable[..., Any]:
    """The async method (``a`` + the builder's name without a leading ``_``) that runs
    what ``build`` returns with ``await self._arun``."""

    @functools.wraps(build)
    async def method(self: Any, /, *args: Any, **kwargs: Any) -> Any:
        return await self._arun(build(self, *args, **kwargs))

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
