"""``haive-lg demo``: a chat graph on PostgreSQL, its history, a fork, the storage used."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import typer
from rich.table import Table

from haive_langgraph.cli._common import (
    DsnOption,
    SchemaOption,
    command,
    console,
    human,
    open_saver,
    usage,
)

commands = typer.Typer()


def schema_bytes(saver: Any) -> dict[str, int]:
    """Total bytes (with indexes and TOAST) of each table in the saver's schema."""
    import psycopg

    assert saver._source.dsn is not None
    from haive_langgraph.db._connections import connection_kwargs

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


@commands.command()
@command
def demo(
    dsn: DsnOption = None,
    turns: Annotated[int, typer.Option(help="Conversation turns to run.")] = 6,
    schema: SchemaOption = None,
) -> None:
    """Run a chat graph on PostgreSQL, show its history, fork it, print storage used."""
    from langchain_core.messages import HumanMessage
    from langchain_core.runnables import RunnableConfig

    from haive_langgraph._demo import chat_graph
    from haive_langgraph.db._dsn import describe_dsn

    if turns < 3:
        usage("--turns must be at least 3 (the demo forks from turn 2)")
    with console.status("starting PostgreSQL and creating the tables ..."):
        ctx = open_saver(dsn, schema, None, create=True)
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

        sizes = schema_bytes(saver)
        info = saver.get_thread(thread_id)
        table = Table(title="Storage used (tables with indexes)")
        table.add_column("table")
        table.add_column("bytes", justify="right")
        for name, size in sizes.items():
            table.add_row(name, human(size))
        table.add_row("[bold]total[/]", f"[bold]{human(sum(sizes.values()))}[/]")
        console.print(table)
        if info is not None:
            console.print(
                f"Thread registry: {info.checkpoint_count} checkpoints, created "
                f"{info.created_at:%Y-%m-%d %H:%M:%S}, updated {info.updated_at:%H:%M:%S}."
            )
    finally:
        ctx.__exit__(None, None, None)
