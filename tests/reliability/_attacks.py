"""Scenario 8's tools, shared by every component: a digest of a tenant's rows, a run of
attacks through a public API, and raw SQL from a role under row-level security."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from psycopg import sql

from haive_langgraph.errors import HaiveError

RAW_STATEMENTS = (
    "SELECT count(*) FROM haive.{t} WHERE tenant_id = %s",
    "UPDATE haive.{t} SET tenant_id = tenant_id WHERE tenant_id = %s",
    "DELETE FROM haive.{t} WHERE tenant_id = %s",
)


def tenant_digest(dsn: str, tenant: str, tables: Sequence[str]) -> str:
    """A hash of every row of ``tenant`` in ``tables`` of schema ``haive`` (one round trip)."""
    parts = sql.SQL(" UNION ALL ").join(
        sql.SQL(
            "SELECT {name}, md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) "
            "FROM haive.{table} AS t WHERE tenant_id = %(t)s"
        ).format(name=sql.Literal(table), table=sql.Identifier(table))
        for table in tables
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(parts, {"t": tenant}).fetchall()
    return hashlib.sha256(repr(rows).encode()).hexdigest()


@dataclass
class AttackReport:
    """How the attacks ended: none may succeed."""

    planned: int = 0
    refused: int = 0
    nothing: int = 0
    own_rows: int = 0
    successes: list[str] = field(default_factory=list)


def run_attacks(
    planned: Sequence[tuple[str, Callable[[], Any]]], secret: str, victim_digest: Callable[[], str]
) -> AttackReport:
    """Run each attack; it succeeds if it returns ``secret`` or changes the victim's rows."""
    report = AttackReport(planned=len(planned))
    before = victim_digest()
    for name, attack in planned:
        try:
            result = attack()
        except HaiveError:
            report.refused += 1
        else:
            if secret in repr(result):
                report.successes.append(f"{name}: returned the victim's data")
            elif not result or not repr(result).strip("[]() "):
                report.nothing += 1
            else:
                report.own_rows += 1
        after = victim_digest()
        if after != before:
            report.successes.append(f"{name}: changed the victim's rows")
            before = after
    return report


def raw_sql_attacks(app_dsn: str, tables: Sequence[str], victim: str, attacker: str) -> int:
    """As a role under row-level security, bound to ``attacker`` or to no tenant: read,
    update and delete the victim's rows (0 rows reached) and insert rows for the victim
    (refused by the policy). Returns the number of statements tried."""
    statements = 0
    with psycopg.connect(app_dsn) as conn:
        for table in tables:
            for bind in (attacker, None):
                for text in RAW_STATEMENTS:
                    with conn.transaction(force_rollback=True):
                        if bind is not None:
                            conn.execute("SELECT set_config('haive.tenant_id', %s, true)", (bind,))
                        cur = conn.execute(sql.SQL(text).format(t=sql.Identifier(table)), (victim,))
                        row = cur.fetchone() if text.startswith("SELECT") else None
                        seen = row[0] if row is not None else cur.rowcount
                    statements += 1
                    assert seen == 0, f"{text} on {table} (bound to {bind}) reached {seen} rows"
            with conn.transaction(force_rollback=True):
                conn.execute("SELECT set_config('haive.tenant_id', %s, true)", (attacker,))
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(
                        sql.SQL("INSERT INTO haive.{t} (tenant_id) VALUES (%s)").format(
                            t=sql.Identifier(table)
                        ),
                        (victim,),
                    )
            statements += 1
    return statements
