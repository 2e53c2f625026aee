"""Import throughput: a langgraph-checkpoint-postgres database and a langchain-postgres
chat history table, imported and verified.

The source is written by the real packages: THREADS threads x CHECKPOINTS
checkpoints through ``PostgresSaver.put`` / ``put_writes`` (a chat-shaped state:
a ``messages`` list growing by one message per checkpoint, an inline counter,
one pending write per checkpoint), and SESSIONS sessions x MESSAGES messages
through ``PostgresChatMessageHistory.add_messages``. Printed: checkpoints/s and
messages/s of the import (verification excluded), and the time of the
verification (every checkpoint, write and message compared with the source).

    python benchmarks/import_.py                      # 50 x 200 checkpoints, 500 x 100 messages
    python benchmarks/import_.py --threads 10 --checkpoints 100 --sessions 50
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg
from _common import (
    database_bytes,
    fresh_database,
    human_bytes,
    print_table,
    server,
    server_settings,
)
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.base import empty_checkpoint

from haive_langgraph.ops.importers import (
    import_chat_history,
    import_langgraph,
    verify_chat_history,
    verify_langgraph,
)

TABLE = "chat_history"


def fill_checkpoints(dsn: str, threads: int, checkpoints: int) -> None:
    from langgraph.checkpoint.postgres import PostgresSaver

    with PostgresSaver.from_conn_string(dsn) as saver:
        saver.setup()
        for t in range(threads):
            config: Any = {"configurable": {"thread_id": f"t-{t:03d}", "checkpoint_ns": ""}}
            messages: list[Any] = []
            for n in range(checkpoints):
                cls = HumanMessage if n % 2 == 0 else AIMessage
                messages = [
                    *messages,
                    cls(f"thread {t} message {n} " + "lorem ipsum " * 8, id=f"m-{t}-{n}"),
                ]
                checkpoint = empty_checkpoint()
                versions = {"messages": f"{n + 1:032}.{n:016}", "step": f"{n + 1:032}.{n:016}"}
                checkpoint.update(
                    channel_values={"messages": messages, "step": n},
                    channel_versions=versions,
                    versions_seen={"node": {"messages": versions["messages"]}},
                )
                config = saver.put(config, checkpoint, {"source": "loop", "step": n}, versions)
                saver.put_writes(config, [("messages", [cls(f"next {n}")])], f"task-{n}")


def fill_chat(dsn: str, sessions: int, messages: int) -> None:
    from langchain_postgres import PostgresChatMessageHistory

    with psycopg.connect(dsn, autocommit=True) as conn:
        PostgresChatMessageHistory.create_tables(conn, TABLE)
        for s in range(sessions):
            history = PostgresChatMessageHistory(TABLE, str(uuid.uuid4()), sync_connection=conn)
            history.add_messages(
                [
                    (HumanMessage if n % 2 == 0 else AIMessage)(
                        f"session {s} message {n} " + "lorem ipsum " * 8
                    )
                    for n in range(messages)
                ]
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=50)
    parser.add_argument("--checkpoints", type=int, default=200)
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument("--messages", type=int, default=100)
    args = parser.parse_args()
    n_checkpoints = args.threads * args.checkpoints
    n_messages = args.sessions * args.messages
    with server() as srv:
        print("server:", server_settings(srv))
        with fresh_database(srv, "import_src") as src, fresh_database(srv, "import_dst") as dst:
            t0 = time.perf_counter()
            fill_checkpoints(src, args.threads, args.checkpoints)
            t1 = time.perf_counter()
            fill_chat(src, args.sessions, args.messages)
            t2 = time.perf_counter()
            print(
                f"source written: {n_checkpoints:,} checkpoints in {t1 - t0:.1f}s, "
                f"{n_messages:,} messages in {t2 - t1:.1f}s, {human_bytes(database_bytes(src))}"
            )

            lg = import_langgraph(src, dst, verify=False)
            t3 = time.perf_counter()
            lg_verify = verify_langgraph(src, dst)
            t4 = time.perf_counter()
            chat = import_chat_history(src, dst, table=TABLE, verify=False)
            t5 = time.perf_counter()
            chat_verify = verify_chat_history(src, dst, table=TABLE)
            t6 = time.perf_counter()
            again = import_langgraph(src, dst, verify=False)
            t7 = time.perf_counter()
            assert lg_verify.ok and chat_verify.ok, (lg_verify.mismatches, chat_verify.mismatches)
            assert lg.counts["checkpoints"].imported == n_checkpoints
            assert chat.counts["messages"].imported == n_messages
            assert again.counts["checkpoints"].imported == 0
            rows = [
                (
                    "checkpoints (+ writes)",
                    f"{n_checkpoints:,}",
                    f"{lg.seconds:.1f}",
                    f"{n_checkpoints / lg.seconds:,.0f}/s",
                    f"{t4 - t3:.1f}",
                ),
                (
                    "chat messages",
                    f"{n_messages:,}",
                    f"{chat.seconds:.1f}",
                    f"{n_messages / chat.seconds:,.0f}/s",
                    f"{t6 - t5:.1f}",
                ),
                (
                    "checkpoints, run again",
                    f"{n_checkpoints:,}",
                    f"{t7 - t6:.1f}",
                    f"{n_checkpoints / (t7 - t6):,.0f}/s (skipped)",
                    "",
                ),
            ]
            print_table("Import", ("what", "rows", "import s", "rate", "verify s"), rows)
            print(
                f"\nsource {human_bytes(database_bytes(src))}, "
                f"target {human_bytes(database_bytes(dst))}"
            )


if __name__ == "__main__":
    main()
