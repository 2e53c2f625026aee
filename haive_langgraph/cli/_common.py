"""What the ``haive-lg`` commands share: the consoles, the common options, the
checkpointer they open, how they fail and how they print.

A command is a function under :func:`command`: its parameters are Typer's options,
and one annotated with an option group (a dataclass of options such as
:class:`SaverOptions`) stands for all of the group's options at its place, so a
block of options common to several commands is written once.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from haive_langgraph.errors import HaiveError

T = TypeVar("T")
E = TypeVar("E")

console = Console()
err = Console(stderr=True)


def checked_dsn(value: str, where: str) -> str:
    """A DSN given on the command line, checked before any command runs; an error names
    ``where`` it was given, never the value (it may hold a password, which the command
    line also shows to other local users: prefer ``HAIVE_DATABASE_URL`` or
    ``PGPASSWORD``/``~/.pgpass``)."""
    from haive_langgraph.db._dsn import normalize_dsn

    try:
        return normalize_dsn(value, where=where)
    except HaiveError as exc:
        raise typer.BadParameter(str(exc)) from None


def check_dsn(value: str | None) -> str | None:
    """``--dsn`` checked (see :func:`checked_dsn`); empty means the default server."""
    if value is None or not value.strip():
        return None
    return checked_dsn(value, "the DSN")


DsnOption = Annotated[
    str | None,
    typer.Option(
        "--dsn",
        help="PostgreSQL DSN (default: HAIVE_DATABASE_URL, DATABASE_URL, embedded).",
        callback=check_dsn,
    ),
]
SchemaOption = Annotated[
    str | None, typer.Option("--schema", help="Schema of the tables (default haive).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
TenantOption = Annotated[str | None, typer.Option("--tenant", help="Tenant id (default '').")]


def repeatable(flag: str, help: str) -> Any:
    """A list option given once per value (``--flag a --flag b``): ``help`` says what
    one value is; the option's help adds "(repeatable)"."""
    return typer.Option(flag, help=f"{help} (repeatable).")


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code`` (1: an error we explain).

    ``message`` is plain text: its brackets are printed, not read as markup
    (``pip install 'haive-langgraph[notebooks]'``, ``text[]``), and is not
    wrapped: a command it names can be copied as it stands."""
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def usage(message: str) -> NoReturn:
    """Exit with code 2 (bad usage) and a one-line message."""
    fail(message, 2)


def _is_group(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def command(fn: Callable[..., T]) -> Callable[..., T]:
    """``fn`` as Typer is to run it: option groups expanded, our errors a one-line message.

    A parameter annotated with a dataclass (an option group) is replaced, at its
    place, by the dataclass's fields (each annotated as a Typer option); ``fn``
    receives the dataclass filled in. A :class:`HaiveError` exits with code 1.
    """
    hints = typing.get_type_hints(fn, include_extras=True)
    params: list[inspect.Parameter] = []
    groups: dict[str, tuple[Any, tuple[str, ...]]] = {}
    for param in inspect.signature(fn).parameters.values():
        hint = hints[param.name]
        if not _is_group(hint):
            params.append(param.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hint))
            continue
        fields = dataclasses.fields(hint)
        field_hints = typing.get_type_hints(hint, include_extras=True)
        groups[param.name] = (hint, tuple(f.name for f in fields))
        params += [
            inspect.Parameter(
                f.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=f.default,
                annotation=field_hints[f.name],
            )
            for f in fields
        ]

    @functools.wraps(fn)
    def run(**options: Any) -> T:
        for name, (group, fields) in groups.items():
            options[name] = group(**{field: options.pop(field) for field in fields})
        try:
            return fn(**options)
        except HaiveError as exc:
            fail(str(exc))

    run.__signature__ = inspect.Signature(params, return_annotation=hints.get("return"))  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in params}
    return run


def require_schema(dsn: str | None, schema: str | None, *needs: str) -> None:
    """Exit 1 unless ``schema`` holds our tables (``needs`` migrated): commands other
    than ``migrate`` and ``demo`` create nothing, so that a mistyped ``--schema`` or
    ``--dsn`` is reported instead of getting a fresh set of empty tables."""
    from haive_langgraph.ops import check_schema

    check_schema(dsn, schema=schema, needs=needs)


@dataclass(frozen=True, slots=True)
class DatabaseOptions:
    """``--dsn``, ``--schema`` and ``--json``: the tables a command reads or changes, and
    how it prints."""

    dsn: DsnOption = None
    schema: SchemaOption = None
    as_json: JsonOption = False


def working(as_json: bool, text: str) -> typing.ContextManager[Any]:
    """A spinner saying ``text`` while a command works (none with --json)."""
    return nullcontext() if as_json else console.status(text)


@contextmanager
def open_saver(
    dsn: str | None, schema: str | None, tenant: str | None, *, create: bool = False
) -> Iterator[Any]:
    """A checkpointer on the checkpoint tables; ``create`` sets them up (``demo`` only),
    else they must exist already (see :func:`require_schema`)."""
    from haive_langgraph.checkpointers import PostgresCheckpointer

    if not create:
        require_schema(dsn, schema, "checkpoints")
    with PostgresCheckpointer.from_conn_string(dsn, schema=schema, tenant_id=tenant) as saver:
        if create:
            saver.setup()
        yield saver


@dataclass(frozen=True, slots=True)
class SaverOptions:
    """``--dsn``, ``--schema``, ``--tenant`` and ``--json``: the checkpoints a command
    reads or changes, and how it prints."""

    dsn: DsnOption = None
    schema: SchemaOption = None
    tenant: TenantOption = None
    as_json: JsonOption = False

    def saver(self) -> typing.ContextManager[Any]:
        """The checkpointer on those tables (they must exist)."""
        return open_saver(self.dsn, self.schema, self.tenant)


def print_json(data: Any) -> None:
    """``data`` as indented JSON on stdout (non-ASCII as is; other values as ``str``)."""
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def human(n: float) -> str:
    """A byte count as ``512 B``, ``1.5 KiB`` ... ``2.0 TiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


@dataclass(frozen=True, slots=True)
class PhaseStep:
    """Where one phase of a long command is: ``done`` of ``total`` (``None``: unknown)."""

    phase: str
    done: int
    total: int | None
    detail: str


@contextmanager
def phase_progress(
    as_json: bool, counter: ProgressColumn, step: Callable[[E], PhaseStep]
) -> Iterator[Callable[[E], None]]:
    """A progress bar per phase on stderr (silent with --json), ``counter`` showing how
    far it is; yields the callback that takes a command's progress events (``step``
    reads one)."""
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        counter,
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, disable=as_json, transient=False) as bar:
        tasks: dict[str, Any] = {}

        def callback(event: E) -> None:
            at = step(event)
            task = tasks.get(at.phase)
            if task is None:
                task = tasks[at.phase] = bar.add_task(at.phase, total=at.total, detail="")
            bar.update(task, completed=at.done, total=at.total, detail=at.detail)

        yield callback
        for task in tasks.values():
            bar.update(task, total=bar.tasks[task].completed)
