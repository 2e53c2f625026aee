"""Scenarios 4 and 8 for the store: concurrent upserts, and tenant isolation under attack.

Concurrency: 50 async tasks on one async store and 4 writer processes put
values under the *same* keys (and batches of overlapping keys in opposite
orders, the classic deadlock shape) at the same time. Afterwards every key
holds exactly one row, whose value is one of those written to it; no writer
saw an error or a deadlock.

Isolation: tenant ``globex`` (the victim) holds items carrying a secret;
tenant ``acme`` calls every public method of the store with the victim's
namespaces, keys and field values: get, search (with filters on the secret),
list_namespaces (prefix, suffix, depth), put, delete, batch, usage, quota,
TTL sweep and delete_tenant. Then raw SQL from a role under row-level
security, bound to ``acme`` or to no tenant, reads, updates and deletes the
victim's rows directly. Expected: 0 successes; the victim's rows
byte-identical after every attack.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from langgraph.store.base import GetOp, ListNamespacesOp, PutOp, SearchOp

from haive_langgraph.db import PersistenceConfig
from haive_langgraph.stores import AsyncPostgresStore, PostgresStore, ResourceQuota
from haive_langgraph.stores._sql import COMPONENT as STORE
from tests._roles import application_role

from ._attacks import raw_sql_attacks, run_attacks, tenant_digest
from .conftest import Budget, Figures

VICTIM, ATTACKER = "globex", "acme"
SECRET = "globex-secret-5521"
SHARED_KEYS = [f"k{i}" for i in range(5)]
NS = ("shared", "contested")

WRITER = textwrap.dedent(
    """
    import json, sys
    from haive_langgraph.stores import PostgresStore
    dsn, writer, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    keys = json.loads(sys.argv[4])
    written = []
    with PostgresStore.from_conn_string(dsn) as store:
        for r in range(rounds):
            for key in (keys if r % 2 else list(reversed(keys))):
                value = {"writer": writer, "round": r}
                store.put(("shared", "contested"), key, value)
                written.append([key, value])
            # A batch touching every key, in this writer's order: deadlock bait.
            order = keys if int(writer[-1]) % 2 else list(reversed(keys))
            from langgraph.store.base import PutOp
            batch = [PutOp(("shared", "contested"), k, {"writer": writer, "round": r, "batch": True})
                     for k in order]
            store.batch(batch)
            written += [[op.key, op.value] for op in batch]
    print(json.dumps(written))
    """
)


def tables_present(dsn: str) -> tuple[str, ...]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return tuple(
            t
            for t in STORE.tenant_tables
            if conn.execute("SELECT to_regclass(%s)", (f"haive.{t}",)).fetchone()[0]  # type: ignore[index]
        )


def digest(dsn: str, tenant: str) -> str:
    return tenant_digest(dsn, tenant, tables_present(dsn))


def test_concurrent_upserts_end_with_one_written_value(
    dsn: str, budget: Budget, figures: Figures
) -> None:
    rounds = budget.pick(6, 60)
    with PostgresStore.from_conn_string(dsn) as admin:
        admin.setup()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, dsn, f"proc{i}", str(rounds), json.dumps(SHARED_KEYS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    written: dict[str, list[Any]] = {k: [] for k in SHARED_KEYS}
    errors: list[BaseException] = []

    async def tasks() -> None:
        config = PersistenceConfig(pool_max_size=10)
        async with AsyncPostgresStore.from_conn_string(dsn, config=config) as store:

            async def one(i: int) -> None:
                for r in range(rounds):
                    keys = SHARED_KEYS if (i + r) % 2 else SHARED_KEYS[::-1]
                    try:
                        if r % 3 == 2:
                            ops = [
                                PutOp(NS, k, {"task": i, "round": r, "batch": True}) for k in keys
                            ]
                            await store.abatch(ops)
                            for op in ops:
                                written[op.key].append(op.value)
                        else:
                            for k in keys:
                                value = {"task": i, "round": r}
                                await store.aput(NS, k, value)
                                written[k].append(value)
                    except Exception as exc:
                        errors.append(exc)

            await asyncio.gather(*(one(i) for i in range(50)))

    start = time.monotonic()
    asyncio.run(tasks())
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
        for key, value in json.loads(out):
            written[key].append(value)
    elapsed = time.monotonic() - start
    assert not errors, f"{len(errors)} writes failed, e.g. {errors[0]!r}"

    with psycopg.connect(dsn, autocommit=True) as conn:
        deadlocks = conn.execute(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()[0]  # type: ignore[index]
    with PostgresStore.from_conn_string(dsn) as store:
        for key in SHARED_KEYS:
            item = store.get(NS, key)
            assert item is not None, f"{key} vanished"
            assert item.value in written[key], f"{key} ends with a value nobody wrote: {item.value}"
        rows = len(store.search(NS, limit=100))
    assert rows == len(SHARED_KEYS)
    assert deadlocks == 0
    total = sum(len(v) for v in written.values())
    figures.record(
        "4 concurrency (store)",
        f"50 async tasks + 4 processes, {total} acknowledged upserts of {len(SHARED_KEYS)} shared "
        f"keys (single puts and batches in opposite key orders) in {elapsed:.1f}s: 0 errors, "
        f"0 deadlocks; each key one row holding one of the values written to it",
    )


# -- isolation ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def victim(dsn: str) -> None:
    with PostgresStore.from_conn_string(dsn) as admin:
        admin.setup()
        store = admin.for_tenant(VICTIM)
        for ns in (("docs",), ("users", "alice"), ("users", "alice", "prefs")):
            for key in ("a", "shared", "'"):
                store.put(ns, key, {"text": SECRET, "owner": "alice", "n": 10})
        admin.for_tenant(ATTACKER).put(("docs",), "own", {"text": "acme's own", "n": 1})


@pytest.fixture(scope="module")
def app_dsn(dsn: str, victim: None) -> Iterator[str]:
    with application_role(dsn) as app:
        yield app


def attacks(store: PostgresStore) -> list[tuple[str, Callable[[], Any]]]:
    out: list[tuple[str, Callable[[], Any]]] = []
    for ns in (("docs",), ("users", "alice"), ("users", "alice", "prefs")):
        for key in ("a", "shared", "'"):
            out.append((f"get {ns}/{key}", lambda ns=ns, key=key: store.get(ns, key)))
        out += [
            (f"search {ns}", lambda ns=ns: store.search(ns, limit=100)),
            (
                f"search {ns} filter",
                lambda ns=ns: store.search(ns, filter={"text": SECRET}, limit=100),
            ),
            (f"delete {ns}/a", lambda ns=ns: store.delete(ns, "a")),
            (f"put {ns}/shared", lambda ns=ns: store.put(ns, "shared", {"text": "overwrite"})),
        ]
    out += [
        ("search all", lambda: store.search((), limit=1000)),
        ("search owner filter", lambda: store.search((), filter={"owner": "alice"}, limit=1000)),
        ("search $ne", lambda: store.search((), filter={"text": {"$ne": "x"}}, limit=1000)),
        ("search $exists", lambda: store.search((), filter={"owner": {"$exists": True}})),
        ("search $gt", lambda: store.search((), filter={"n": {"$gt": 5}}, limit=1000)),
        ("list_namespaces", lambda: store.list_namespaces(limit=1000)),
        ("list prefix", lambda: store.list_namespaces(prefix=("users",), limit=1000)),
        ("list suffix", lambda: store.list_namespaces(suffix=("prefs",), limit=1000)),
        ("list depth", lambda: store.list_namespaces(max_depth=1, limit=1000)),
        (
            "batch",
            lambda: store.batch(
                [
                    GetOp(("docs",), "a"),
                    SearchOp(("users",), filter={"text": SECRET}),
                    ListNamespacesOp(),
                    PutOp(("docs",), "a", None),
                ]
            ),
        ),
        ("usage", lambda: store.get_usage()),
        ("usage of victim", lambda: store.get_usage(tenant_id=VICTIM)),
        ("quota for victim", lambda: store.set_quota(ResourceQuota(max_items=0), tenant_id=VICTIM)),
        ("sweep", lambda: store.sweep_ttl()),
        ("delete_tenant victim", lambda: store.delete_tenant(VICTIM)),
        ("rebind to victim", lambda: store.for_tenant(VICTIM).search((), limit=1000)),
    ]
    return out


def test_store_attacker_reaches_nothing_of_the_victim(
    dsn: str, victim: None, figures: Figures
) -> None:
    with PostgresStore.from_conn_string(dsn, tenant_id=ATTACKER) as store:
        report = run_attacks(attacks(store), SECRET, lambda: digest(dsn, VICTIM))
    assert not report.successes, report.successes
    figures.record(
        "8 tenant isolation (store)",
        f"{report.planned} attacks through the store's public API on the victim's namespaces, "
        f"keys and values: 0 successes ({report.refused} refused with a HaiveError, "
        f"{report.nothing} returned nothing, {report.own_rows} acted on the "
        "attacker's own rows only); victim rows byte-identical",
    )


def test_store_raw_sql_bound_to_the_attacker_reaches_nothing(
    dsn: str, app_dsn: str, figures: Figures
) -> None:
    before = digest(dsn, VICTIM)
    tables = tables_present(dsn)
    statements = raw_sql_attacks(app_dsn, tables, VICTIM, ATTACKER)
    assert digest(dsn, VICTIM) == before
    figures.record(
        "8 tenant isolation (raw SQL, store)",
        f"{statements} SELECT/UPDATE/DELETE/INSERT statements on the victim's rows in "
        f"{len(tables)} store tables from a role under row-level security, bound to the "
        "attacker or to no tenant: 0 rows reached, inserts refused by the policy",
    )
