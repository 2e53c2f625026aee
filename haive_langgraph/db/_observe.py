"""Traces, metrics and logs of every database call, made in one place.

Every public operation of the package runs as :class:`~haive_langgraph.db._call.Call`
values on a connection source, whose ``_plan`` asks :func:`watched` whether
anyone looks; only then is the call run through :func:`observed_plan`, which
wraps the plain plan (:func:`~haive_langgraph.db._call_plan.call_plan`) and its
operation to time them and count their rows and bytes, and reports:

* an OpenTelemetry span per call, named ``<component>.<operation>``
  (``checkpointers.get_tuple``), when ``opentelemetry-api`` is imported and a
  tracer provider is set;
* metrics (a duration histogram, counters of calls, rows and bytes) when a
  meter provider is set;
* a record per statement and one per call on the component's logger
  (``haive_langgraph.checkpointers`` ...) at DEBUG, or at INFO with the SQL
  text for a source whose config has ``echo_sql=True``. Parameter values are
  never logged nor put in attributes: they hold user data. The tenant is
  reported as a hash of its id, never the id.

Nobody looking costs a call what :func:`watched` costs: two dictionary
lookups in ``sys.modules`` (OpenTelemetry is never imported by this package)
and the component logger's ``isEnabledFor``.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

from haive_langgraph.db._call import Call
from haive_langgraph.db._call_plan import Plan, call_plan
from haive_langgraph.db._driver import Op, OpFactory, Request, Step
from haive_langgraph.db._otel import Telemetry, current, error_type

if TYPE_CHECKING:
    from haive_langgraph.db._connections import SourceBase
    from haive_langgraph.db._replicas import ReplicaRouter, Route

T = TypeVar("T")

COMPONENTS: Final = ("checkpointers", "stores", "memory", "ops", "tenants", "supabase", "db")
"""The components whose logger is ``haive_langgraph.<component>``; calls of code
outside the package (operations a user runs on a source) count as ``db``."""

_BYTES = (bytes, bytearray, memoryview)
# Modules whose operations are the inside of another call (a replica read is
# reported by the call it serves).
_INTERNAL_MODULES = frozenset({"haive_langgraph.db._call_plan", "haive_langgraph.db._replica_ops"})
_OP_SUFFIXES = ("_op", "_call", "_calls")


@dataclass(frozen=True, slots=True)
class OpInfo:
    """What an operation is called, and where its records go.

    Attributes:
        component: ``checkpointers``, ``stores``, ``memory``, ``ops`` ...
        operation: The operation (``get_tuple``, ``put``, ``batch`` ...).
        name: ``<component>.<operation>``: the span's name.
        logger: The component's logger.
        internal: Part of another call (not reported on its own).
    """

    component: str
    operation: str
    name: str
    logger: logging.Logger
    internal: bool


_INFO: dict[Any, OpInfo] = {}
_LOGGER_BY_MODULE: dict[str, logging.Logger] = {}


def component_logger(component: str) -> logging.Logger:
    """The logger of ``component`` (``haive_langgraph.<component>``)."""
    return logging.getLogger(f"haive_langgraph.{component}")


def _function_of(op: Any) -> Any:
    for _ in range(8):  # partials of partials, bound methods
        if isinstance(op, functools.partial):
            op = op.func
        elif hasattr(op, "__func__"):
            op = op.__func__
        else:
            break
    return op


def _plain(name: str) -> str:
    name = name.lstrip("_")
    for suffix in _OP_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def _operation_name(fn: Any) -> str:
    """``put`` for ``lambda: ops.put_op(...)``, ``analytics`` for
    ``partial(analytics_op, ...)``, else the function that built the lambda."""
    name = getattr(fn, "__name__", type(fn).__name__)
    code = getattr(fn, "__code__", None)
    if name not in ("<lambda>", "op", "factory", "operation") or code is None:
        return _plain(name)
    for used in code.co_names:
        if used.endswith("_op") and used not in ("replica_op",):
            return _plain(used)
    outer = getattr(fn, "__qualname__", name).split(".<locals>.")[0].split(".")[-1]
    return _plain(outer) if outer not in ("<lambda>", "") else "call"


def describe(op: OpFactory[Any]) -> OpInfo:
    """The :class:`OpInfo` of an operation factory (worked out once per function)."""
    fn = _function_of(op)
    key = getattr(fn, "__code__", None) or type(fn)
    info = _INFO.get(key)
    if info is not None:
        return info
    module = getattr(fn, "__module__", None) or ""
    parts = module.split(".")
    component = "db"
    if parts[0] == "haive_langgraph" and len(parts) > 1 and parts[1] in COMPONENTS:
        component = parts[1]
    operation = _operation_name(fn)
    logger = component_logger(component)
    info = OpInfo(
        component, operation, f"{component}.{operation}", logger, module in _INTERNAL_MODULES
    )
    _INFO[key] = info
    if module and module == getattr(op, "__module__", None):
        _LOGGER_BY_MODULE[module] = logger
    return info


def _installed(package: str) -> bool:
    try:  # without importing it (a namespace package: nothing would run anyway)
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


OTEL_INSTALLED: Final = _installed("opentelemetry")
"""Whether ``opentelemetry`` can be imported at all; without it :func:`watched`
only asks the logger."""


def watched(op: OpFactory[Any]) -> bool:
    """Whether a call of ``op`` is looked at: a tracer or meter provider is set,
    or the component's logger is enabled for DEBUG.

    OpenTelemetry is only looked up in ``sys.modules``: an application that
    never imported it has set no provider, and pays no import for it here.
    """
    if OTEL_INSTALLED:
        modules = sys.modules
        trace_api = modules.get("opentelemetry.trace")
        if trace_api is not None and trace_api._TRACER_PROVIDER is not None:
            return True
        metrics_api = modules.get("opentelemetry.metrics._internal")
        if metrics_api is not None and metrics_api._METER_PROVIDER is not None:
            return True
    logger = _LOGGER_BY_MODULE.get(op.__module__) or describe(op).logger
    return logger.isEnabledFor(logging.DEBUG)


@functools.lru_cache(maxsize=4096)
def tenant_hash(tenant_id: str) -> str:
    """A stable pseudonym of a tenant id for telemetry: 16 hex digits of its SHA-256.

    It lets traces of one tenant be grouped without showing the id; it is no
    secret for an id that can be guessed (hash the guess and compare).
    """
    return hashlib.sha256(tenant_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _binary_size(values: Any) -> int:
    size = 0
    for value in values:
        kind = type(value)
        if kind is bytes or kind is bytearray:
            size += len(value)
        elif kind is memoryview:
            size += value.nbytes
        elif isinstance(value, (list, tuple)):  # arrays (our array types subclass list)
            size += sum(len(v) for v in value if isinstance(v, _BYTES))
    return size


def _params_size(params: Any) -> int:
    if params is None:
        return 0
    return _binary_size(params.values() if isinstance(params, Mapping) else params)


def _result_counts(step: Step, result: Any) -> tuple[int, int]:
    """Rows and bytes of one step's result."""
    if step.fetch == "all" and isinstance(result, list):
        return len(result), sum(_binary_size(row) for row in result if isinstance(row, tuple))
    if step.fetch == "one":
        return (0, 0) if result is None else (1, _binary_size(result))
    if step.fetch == "rowcount" and isinstance(result, int):
        return max(result, 0), 0
    return 0, 0


def sql_text(query: Any) -> str:
    """A statement's text (identifiers quoted, parameters as placeholders)."""
    if isinstance(query, str):
        return query.strip()
    try:
        return str(query.as_string(None)).strip()
    except Exception:  # a composable psycopg cannot render without a connection
        return repr(query)


class Observation:
    """One call being observed: its counts, and where its records go."""

    __slots__ = ("bytes", "echo", "info", "log", "rows", "statements")

    def __init__(self, info: OpInfo, *, echo: bool) -> None:
        self.info = info
        self.echo = echo
        self.log = echo or info.logger.isEnabledFor(logging.DEBUG)
        self.rows = 0
        self.bytes = 0
        self.statements = 0

    def counted(self, factory: OpFactory[T]) -> OpFactory[T]:
        """``factory`` whose operations report their statements to this observation."""
        return lambda: self._count(factory())

    def _count(self, op: Op[T]) -> Op[T]:
        try:
            request: Request = next(op)
            while True:
                started = time.perf_counter_ns()
                try:
                    result = yield request
                except GeneratorExit:
                    op.close()
                    raise
                except BaseException as exc:
                    request = op.throw(exc)
                    continue
                self._statement(request, result, time.perf_counter_ns() - started)
                request = op.send(result)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    def _statement(self, request: Request, result: Any, elapsed_ns: int) -> None:
        steps = request if isinstance(request, list) else [request]
        results = result if isinstance(request, list) else [result]
        rows = size = 0
        for step, got in zip(steps, results, strict=False):
            size += _params_size(step.params)
            r, b = _result_counts(step, got)
            rows += r
            size += b
        self.statements += 1
        self.rows += rows
        self.bytes += size
        if not self.log:
            return
        label = f"{self.info.name}#{self.statements}"
        extra = {
            "haive_component": self.info.component,
            "haive_operation": self.info.operation,
            "haive_statement": label,
            "haive_duration_ms": elapsed_ns / 1e6,
            "haive_rows": rows,
        }
        if self.echo:
            text = ";\n".join(sql_text(s.query) for s in steps)
            emit(
                self.info.logger,
                logging.INFO,
                "%s: %.3f ms, rows=%d\n%s",
                (label, elapsed_ns / 1e6, rows, text),
                extra,
                force=True,
            )
        else:
            emit(
                self.info.logger,
                logging.DEBUG,
                "%s: %.3f ms, rows=%d",
                (label, elapsed_ns / 1e6, rows),
                extra,
            )


def emit(
    logger: logging.Logger,
    level: int,
    msg: str,
    args: tuple[Any, ...],
    extra: dict[str, Any],
    *,
    force: bool = False,
) -> None:
    """Log a record; with ``force`` (``echo_sql``) whatever the logger's level, and to
    stderr if no handler is configured anywhere."""
    if not force:
        if logger.isEnabledFor(level):
            logger.log(level, msg, *args, extra=extra)
        return
    if logger.disabled:
        return
    record = logger.makeRecord(
        logger.name, level, "(haive_langgraph)", 0, msg, args, None, extra=extra
    )
    if logger.hasHandlers():
        logger.handle(record)
    elif logging.lastResort is not None:
        logging.lastResort.handle(record)


def observed_plan(
    source: SourceBase[Any],
    call: Call[T],
    *,
    route: Route,
    router: ReplicaRouter | None,
    pooled: bool,
) -> Plan[T]:
    """:func:`call_plan` of ``call`` on ``source``, traced, measured and logged."""
    info = describe(call.op)
    if info.internal:
        return (
            yield from call_plan(
                call,
                route=route,
                scope=source.scope,
                router=router,
                pooled=pooled,
                tally=source.tally,
            )
        )
    seen = Observation(info, echo=source._echo)
    scope = call.scope or source.scope
    tenant = scope.tenant_id if scope is not None else ""
    telemetry = current()
    span, token = _start_span(telemetry, info, tenant)
    started = time.perf_counter_ns()
    error: BaseException | None = None
    try:
        return (
            yield from call_plan(
                # (not dataclasses.replace: 2 us more per call)
                Call(
                    seen.counted(call.op),
                    call.transaction,
                    call.read,
                    call.rollback,
                    call.route,
                    call.scope,
                    call.errors,
                ),
                route=route,
                scope=source.scope,
                router=router,
                pooled=pooled,
                tally=source.tally,
            )
        )
    except BaseException as exc:
        error = exc
        raise
    finally:
        elapsed = time.perf_counter_ns() - started
        try:
            if token is not None:
                assert telemetry is not None
                telemetry.detach(token)
            _report(seen, telemetry, span, elapsed, error)
        except Exception as exc:  # telemetry never fails a call
            _telemetry_failed(exc)


def _start_span(telemetry: Telemetry | None, info: OpInfo, tenant: str) -> tuple[Any, Any]:
    """The call's span, started and made current (its context token), or ``(None, None)``."""
    if telemetry is None or telemetry.tracer is None:
        return None, None
    attributes: dict[str, Any] = {
        "db.system.name": "postgresql",
        "haive.component": info.component,
        "haive.operation": info.operation,
    }
    if tenant:
        attributes["haive.tenant_hash"] = tenant_hash(tenant)
    try:
        span = telemetry.tracer.start_span(info.name, kind=telemetry.client, attributes=attributes)
        return span, telemetry.attach(telemetry.in_context(span))
    except Exception as exc:  # telemetry never fails a call
        _telemetry_failed(exc)
        return None, None


_warned = False


def _telemetry_failed(exc: Exception) -> None:
    """Say once that a tracer or meter failed (the call itself goes on)."""
    global _warned
    if not _warned:
        _warned = True
        component_logger("db").warning(
            "OpenTelemetry failed while reporting a call (reported once; calls go on): %r", exc
        )


def _report(
    seen: Observation,
    telemetry: Telemetry | None,
    span: Any,
    elapsed_ns: int,
    error: BaseException | None,
) -> None:
    info = seen.info
    ms = elapsed_ns / 1e6
    outcome = "ok" if error is None else "error"
    if span is not None:
        assert telemetry is not None
        span.set_attributes(
            {
                "haive.rows": seen.rows,
                "haive.bytes": seen.bytes,
                "haive.statements": seen.statements,
                "haive.duration_ms": round(ms, 3),
            }
        )
        if error is not None:
            span.set_attribute("error.type", error_type(error))
            span.record_exception(error)
            span.set_status(telemetry.error_status(error))
        span.end()
    if telemetry is not None and telemetry.instruments is not None:
        labels: dict[str, str] = {
            "haive.component": info.component,
            "haive.operation": info.operation,
            "haive.outcome": outcome,
        }
        if error is not None:
            labels["error.type"] = error_type(error)
        telemetry.instruments.record(labels, elapsed_ns / 1e9, seen.rows, seen.bytes)
    if seen.log:
        extra = {
            "haive_component": info.component,
            "haive_operation": info.operation,
            "haive_duration_ms": ms,
            "haive_rows": seen.rows,
            "haive_bytes": seen.bytes,
            "haive_outcome": outcome,
        }
        msg = "%s: %.3f ms, statements=%d rows=%d bytes=%d %s"
        args: tuple[Any, ...] = (info.name, ms, seen.statements, seen.rows, seen.bytes, outcome)
        if error is not None:
            msg += " (%s)"
            args += (error_type(error),)
        level = logging.INFO if seen.echo else logging.DEBUG
        emit(info.logger, level, msg, args, extra, force=seen.echo)
