"""``haive-lg``: the admin command line.

Every command takes ``--dsn`` (default: ``HAIVE_DATABASE_URL``,
``DATABASE_URL``, then the embedded server) and, where it prints data,
``--json``. Exit codes: 0 success, 1 an error we explain, 2 bad usage.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from haive_langgraph.errors import HaiveError

app = typer.Typer(
    name="haive-lg",
    help="haive-langgraph: PostgreSQL persistence for LangGraph.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)

T = TypeVar("T")


def _check_dsn(value: str | None) -> str | None:
    """``--dsn`` checked before any command runs; an error names the option, never the
    value (it may hold a password, which ``--dsn`` also shows to other local users:
    prefer ``HAIVE_DATABASE_URL`` or ``PGPASSWORD``/``~/.pgpass``)."""
    from haive_langgraph.db._dsn import normalize_dsn

    if value is None or not value.strip():
        return None
    try:
        return normalize_dsn(value, where="the DSN")
    except HaiveError as exc:
        raise typer.BadParameter(str(exc)) from None


DsnOption = Annotated[
    str | None,
    typer.Option(
        "--dsn",
        help="PostgreSQL DSN (default: HAIVE_DATABASE_URL, DATABASE_URL, embedded).",
        callback=_check_dsn,
    ),
]
SchemaOption = Annotated[
    str | None, typer.Option("--schema", help="Schema of the tables (default haive).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
TenantOption = Annotated[str | None, typer.Option("--tenant", help="Tenant id (default '').")]


def _fail(message: str, code: int = 1) -> None:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def handled(fn: Callable[..., T]) -> Callable[..., T]:
    """Turn our errors into a one-line message and exit code 1."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except HaiveError as exc:
            _fail(str(exc))
            raise AssertionError("unreachable") from exc

    return wrapper


def _require_schema(dsn: str | None, schema: str | None, *needs: str) -> None:
    """Exit 1 unless ``schema`` holds our tables (``needs`` migrated): commands other
    than ``migrate`` and ``demo`` create nothing, so that a mistyped ``--schema`` or
    ``--dsn`` is reported instead of getting a fresh set of empty tables."""
    from haive_langgraph.ops import check_schema

    check_schema(dsn, schema=schema, needs=needs)


@contextmanager
def _saver(
    dsn: str | None, schema: str | None, tenant: str | None, *, create: bool = False
) -> Iterator[Any]:
    """A checkpointer on the checkpoint tables; ``create`` sets them up (``demo`` only),
    else they must exist already (see :func:`_require_schema`)."""
    from haive_langgraph.checkpointers import PostgresCheckpointer

    if not create:
        _require_schema(dsn, schema, "checkpoints")
    with PostgresCheckpointer.from_conn_string(dsn, schema=schema, tenant_id=tenant) as saver:
        if create:
            saver.setup()
        yield saver


def _schema_bytes(saver: Any) -> dict[str, int]:
    """Total bytes (with indexes and TOAST) of each table in the saver's schema."""
    import psycopg

    assert saver._source.dsn is not None
    from haive_langgraph.db import connection_kwargs

    dsn = saver._source.dsn
    with psycopg.connect(dsn, **connection_kwargs(dsn, saver.config)) as conn:
        rows = conn.execute(
            """
            SELECT c.relname, pg_total_relation_size(c.oid)
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %s AND c.relkind = 'r'
            ORDER BY c.relname
            """,
            (saver.schema,),
        ).fetchall()
    return {str(name): int(size) for name, size in rows}


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


@app.command()
@handled
def demo(
    dsn: DsnOption = None,
    turns: Annotated[int, typer.Option(help="Conversation turns to run.")] = 6,
    schema: SchemaOption = None,
) -> None:
    """Run a chat graph on PostgreSQL, show its history, fork it, print storage used."""
    from langchain_core.messages import HumanMessage
    from langchain_core.runnables import RunnableConfig

    from haive_langgraph._demo import chat_graph
    from haive_langgraph.db import describe_dsn

    if turns < 3:
        _fail("--turns must be at least 3 (the demo forks from turn 2)", 2)
    with console.status("starting PostgreSQL and creating the tables ..."):
        ctx = _saver(dsn, schema, None, create=True)
        saver = ctx.__enter__()
    try:
        console.print(
            f"[bold]haive-langgraph demo[/] on {describe_dsn(saver._source.dsn)}, "
            f"schema [cyan]{saver.schema}[/]"
        )
        graph = chat_graph().compile(checkpointer=saver)
        thread_id = f"demo-{uuid.uuid4().hex[:8]}"
        config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
        questions = [
            "Where do my agent's checkpoints live?",
            "How big does a long conversation get?",
            "Can I go back in time?",
            "What happens if the process crashes?",
            "Can threads be copied?",
            "How do I list my threads?",
        ]
        for i in range(turns):
            text = questions[i % len(questions)]
            graph.invoke({"messages": [HumanMessage(content=text)]}, config)
        state = graph.get_state(config)
        console.print(
            f"\nRan {turns} turns on thread [cyan]{thread_id}[/]: "
            f"{len(state.values['messages'])} messages."
        )

        history = list(graph.get_state_history(config))
        table = Table(title=f"History of {thread_id} (newest first)")
        for col in ("step", "source", "checkpoint", "messages", "last message"):
            table.add_column(col)
        for snap in history:
            msgs = snap.values.get("messages", [])
            last = f"{msgs[-1].type}: {str(msgs[-1].content)[:48]}" if msgs else ""
            table.add_row(
                str(snap.metadata.get("step")) if snap.metadata else "",
                str(snap.metadata.get("source")) if snap.metadata else "",
                snap.config["configurable"]["checkpoint_id"][-12:],
                str(len(msgs)),
                last,
            )
        console.print(table)

        # Fork: go back to the state after turn 2 and continue differently.
        after_turn_2 = next(
            s for s in reversed(history) if len(s.values.get("messages", [])) == 4 and not s.next
        )
        forked = graph.invoke(
            {"messages": [HumanMessage(content="Let's take another path from here.")]},
            after_turn_2.config,
        )
        console.print(
            f"\nForked from checkpoint …{after_turn_2.config['configurable']['checkpoint_id'][-12:]}"
            f" (after turn 2): the fork has {len(forked['messages'])} messages, the main line "
            f"{len(state.values['messages'])}; both stay in the thread's history."
        )
        for m in forked["messages"][-2:]:
            console.print(f"  [dim]{m.type}:[/] {str(m.content)[:90]}")

        sizes = _schema_bytes(saver)
        info = saver.get_thread(thread_id)
        table = Table(title="Storage used (tables with indexes)")
        table.add_column("table")
        table.add_column("bytes", justify="right")
        for name, size in sizes.items():
            table.add_row(name, _human(size))
        table.add_row("[bold]total[/]", f"[bold]{_human(sum(sizes.values()))}[/]")
        console.print(table)
        if info is not None:
            console.print(
                f"Thread registry: {info.checkpoint_count} checkpoints, created "
                f"{info.created_at:%Y-%m-%d %H:%M:%S}, updated {info.updated_at:%H:%M:%S}."
            )
    finally:
        ctx.__exit__(None, None, None)


@app.command()
@handled
def migrate(
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    sql: Annotated[
        bool, typer.Option("--sql", help="Print the SQL instead of applying it.")
    ] = False,
    partitions: Annotated[
        int | None,
        typer.Option(
            "--partitions",
            help="Create the checkpoint, write and message tables hash-partitioned "
            "into N partitions (fresh schema only).",
        ),
    ] = None,
) -> None:
    """Create or upgrade the tables (or print the migration SQL)."""
    from haive_langgraph.db import PersistenceConfig, migration_script, validate_identifier
    from haive_langgraph.ops import all_components

    target = validate_identifier(schema or PersistenceConfig().schema_name, what="schema name")
    if sql:
        sys.stdout.write(migration_script(all_components(), target, partitions=partitions))
        return
    from haive_langgraph.ops import migrate_all

    applied = migrate_all(dsn, schema=target, partitions=partitions)
    if partitions:
        console.print(f"partitioned tables: {partitions} hash partitions each")
    for component, versions in applied.items():
        if versions:
            console.print(f"{component}: applied {', '.join(map(str, versions))}")
        else:
            console.print(f"{component}: up to date")


@app.command()
@handled
def threads(
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    tenant: TenantOption = None,
    limit: Annotated[int, typer.Option(help="Threads to show.")] = 50,
    filter: Annotated[
        str | None,
        typer.Option("--filter", help='Metadata filter as JSON, e.g. {"user_id": "u1"}.'),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """List threads, most recently updated first."""
    try:
        parsed = json.loads(filter) if filter else None
    except json.JSONDecodeError as exc:
        _fail(f"--filter is not valid JSON: {exc}", 2)
    with _saver(dsn, schema, tenant) as saver:
        page = saver.list_threads(parsed, limit=limit)
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "thread_id": t.thread_id,
                        "created_at": t.created_at.isoformat(),
                        "updated_at": t.updated_at.isoformat(),
                        "checkpoint_count": t.checkpoint_count,
                        "metadata": t.metadata,
                    }
                    for t in page
                ],
                indent=2,
            )
        )
        return
    table = Table(title="Threads")
    for col in ("thread", "checkpoints", "updated", "created", "metadata"):
        table.add_column(col)
    for t in page:
        table.add_row(
            t.thread_id,
            str(t.checkpoint_count),
            f"{t.updated_at:%Y-%m-%d %H:%M:%S}",
            f"{t.created_at:%Y-%m-%d %H:%M:%S}",
            json.dumps(t.metadata)[:60],
        )
    console.print(table)


keys_app = typer.Typer(
    help="Encryption keys: rotation, status, crypto-shredding.", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")


@contextmanager
def _env_codec(
    dsn: str, schema: str | None, *, required: bool = True, create: bool = True
) -> Iterator[Any]:
    """The codec of the ``HAIVE_*`` settings (``None`` without keys when not ``required``),
    its key ring reading tenants' own keys from ``{schema}.tenant_keys`` (created unless
    not ``create``: then they must exist)."""
    from haive_langgraph.codec import codec_from_config
    from haive_langgraph.ops import check_schema
    from haive_langgraph.ops.keys import PostgresTenantKeyStore

    # Without ``create``, a schema whose keys tables were never set up holds no
    # tenant keys: the key ring then reads the global keys only.
    with_tenant_keys = create or check_schema(dsn, schema=schema).versions["keys"][0] > 0
    store = PostgresTenantKeyStore(dsn, schema=schema) if with_tenant_keys else None
    try:
        codec = codec_from_config(tenant_store=store)
        if codec.keyring is None:
            if required:
                _fail("no encryption keys: set HAIVE_ENCRYPTION_KEYS (new primary key first)")
            yield None
            return
        if store is not None and create:
            store.setup()
        elif store is not None:
            _require_schema(dsn, schema, "keys")
        yield codec
    finally:
        if store is not None:
            store.close()


@keys_app.command("rotate")
@handled
def keys_rotate(
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    batch_size: Annotated[int, typer.Option(help="Rows per transaction.")] = 500,
    as_json: JsonOption = False,
) -> None:
    """Put every stored value under the current primary key (resumable).

    Also encrypts plaintext values (turning encryption on) and re-wraps tenant
    keys. Rows of crypto-shredded tenants are skipped and counted. Exits 1 when
    rows could not be read or values are left under other keys.
    """
    from rich.progress import Progress, SpinnerColumn, TextColumn

    from haive_langgraph.db import resolve_dsn
    from haive_langgraph.ops.keys import rotate_keys

    target = resolve_dsn(dsn)
    with (
        _env_codec(target, schema) as codec,
        Progress(
            SpinnerColumn(), TextColumn("{task.description}"), console=err, disable=as_json
        ) as bar,
    ):
        task = bar.add_task("rotating", total=None)

        def progress(table: str, scanned: int, rewritten: int) -> None:
            bar.update(task, description=f"{table}: {scanned} rows scanned, {rewritten} rewritten")

        report = rotate_keys(target, codec, schema=schema, batch_size=batch_size, progress=progress)
        primary = codec.keyring.primary_key_id()
    unreadable = sum(report.unreadable.values())
    if as_json:
        print(
            json.dumps(
                {
                    "primary": primary,
                    "scanned": report.scanned,
                    "rewritten": report.rewritten,
                    "resumed": report.resumed,
                    "restarted": report.restarted,
                    "shredded": report.shredded,
                    "unreadable": report.unreadable,
                    "errors": report.errors,
                    "left": report.left,
                    "tenant_keys_rewrapped": report.tenant_keys_rewrapped,
                    "passes": report.passes,
                },
                indent=2,
            )
        )
    else:
        table = Table(title=f"Key rotation to {primary}")
        for col in ("table", "rows scanned", "rewritten", "shredded", "unreadable", "left"):
            table.add_column(col)
        table.add_column("resumed")
        for name, scanned in report.scanned.items():
            table.add_row(
                name,
                str(scanned),
                str(report.rewritten[name]),
                str(sum(report.shredded.get(name, {}).values())),
                str(report.unreadable.get(name, 0)),
                str(report.left.get(name, 0)),
                "restarted"
                if report.restarted.get(name)
                else "yes"
                if report.resumed.get(name)
                else "",
            )
        console.print(table)
        console.print(f"tenant keys re-wrapped: {report.tenant_keys_rewrapped}")
        for tenant, n in sorted(report.shredded_tenants.items()):
            console.print(f"skipped {n} row(s) of crypto-shredded tenant {tenant!r}")
        for message in report.errors:
            err.print(f"unreadable: {message}")
    if unreadable or report.total_left:
        _fail(
            f"{unreadable} row(s) could not be read and {report.total_left} value(s) are left "
            "under other keys; fix or add the keys named above and run it again, before "
            "removing any old key"
        )


@keys_app.command("status")
@handled
def keys_status(
    dsn: DsnOption = None, schema: SchemaOption = None, as_json: JsonOption = False
) -> None:
    """How many stored values each key id protects, per table; plaintext and left to rotate.

    "left" (with HAIVE_ENCRYPTION_KEYS set) counts values not under their tenant's
    current primary key, plaintext ones included: what ``keys rotate`` has to do.
    """
    from haive_langgraph.db import resolve_dsn
    from haive_langgraph.ops.keys import key_status

    target = resolve_dsn(dsn)
    _require_schema(target, schema)
    with _env_codec(target, schema, required=False, create=False) as codec:
        status = key_status(
            target, keyring=codec.keyring if codec is not None else None, schema=schema
        )
    if as_json:
        print(
            json.dumps(
                {
                    "by_key": status.by_key,
                    "plaintext": status.plaintext,
                    "left": status.left,
                    "shredded": status.shredded,
                    "total_plaintext": status.total_plaintext,
                    "total_left": status.total_left,
                },
                indent=2,
            )
        )
        return
    table = Table(title="Stored values by key id")
    for col in ("table", "key id", "values"):
        table.add_column(col)
    for name, by_key in status.by_key.items():
        for key_id, n in by_key.items():
            table.add_row(name, key_id, str(n))
    console.print(table)
    console.print(f"plaintext values: {status.total_plaintext}")
    if status.total_left is not None:
        console.print(f"left to rotate: {status.total_left}")


@keys_app.command("forget-tenant")
@handled
def keys_forget_tenant(
    tenant: Annotated[str, typer.Argument(help="Tenant whose keys are destroyed.")],
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: this cannot be undone.")] = False,
) -> None:
    """Crypto-shred a tenant: destroy its keys so none of its rows can be read again."""
    from haive_langgraph.codec import KeyRing
    from haive_langgraph.db import resolve_dsn
    from haive_langgraph.ops.keys import PostgresTenantKeyStore, forget_tenant_key

    if not yes:
        _fail(f"this destroys tenant {tenant!r}'s keys for good; add --yes to confirm", 2)
    store = PostgresTenantKeyStore(resolve_dsn(dsn), schema=schema)
    try:
        store.setup()
        keyring = KeyRing.from_env(tenant_store=store)
        if keyring is None:
            _fail("no encryption keys: set HAIVE_ENCRYPTION_KEYS")
        assert keyring is not None
        destroyed = forget_tenant_key(keyring, tenant)
    finally:
        store.close()
    console.print(
        f"tenant {tenant!r}: {destroyed} key(s) destroyed; its rows can no longer be read"
    )


# The time-travel commands (history, show, diff, tag, find, branch, restore, prune).
from haive_langgraph import _cli_import as _cli_import  # noqa: E402  (haive-lg import ...)
from haive_langgraph import _cli_ops as _cli_ops  # noqa: E402
from haive_langgraph import _cli_timetravel as _cli_timetravel  # noqa: E402


def main() -> None:
    """Entry point of the ``haive-lg`` script."""
    app()


if __name__ == "__main__":
    main()
