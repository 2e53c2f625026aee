"""Tenant analytics: the figures equal what was written (conversations, messages,
tokens and cost by model, storage per component, requests), the time range is
respected, sync and async agree, tenant-bound sources and restricted roles are
refused, and the range is read through the index without touching bodies."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from haive_langgraph.db._connections import ConnectionSource
from haive_langgraph.db._render import render
from haive_langgraph.db._tenancy import TenantScope
from haive_langgraph.errors import ConfigurationError, PermissionDeniedError
from haive_langgraph.tenants import _analytics_sql as A
from haive_langgraph.tenants._analytics import (
    ModelUsage,
    atenant_analytics,
    resolve_range,
    tenant_analytics,
)

from .._roles import application_role
from ._data import (
    USAGE,
    add_conversation,
    add_session,
    age,
    migrate,
    put_item,
    put_thread,
    register,
)


@pytest.fixture(scope="module")
def data(dsn: str) -> Iterator[str]:
    """acme: 3 conversations + 1 session in range, 1 conversation 40 days back;
    globex: 1 conversation; initech (unregistered): store items only."""
    migrate(dsn)
    register(dsn, "acme")
    register(dsn, "globex")
    for i in range(3):
        add_conversation(dsn, "acme", f"c{i}", usage=USAGE)
    add_conversation(dsn, "acme", "old", usage=USAGE)
    age(dsn, "acme", 40, conversations=("old",))
    add_session(dsn, "acme", "s0")
    add_conversation(dsn, "globex", "g0", usage=USAGE[:1])
    put_thread(dsn, "acme", "t0")
    put_item(dsn, "acme", "k0")
    put_item(dsn, "initech", "k1")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO haive.tenant_requests VALUES "
            "('acme', date_trunc('minute', now()) - interval '1 minute', 7), "
            "('acme', date_trunc('minute', now()) - interval '2 minutes', 5), "
            "('acme', now() - interval '40 days', 1000), "
            "('globex', date_trunc('minute', now()) - interval '3 minutes', 2) "
            "ON CONFLICT DO NOTHING"
        )
    yield dsn


def by_tenant(usages: list[Any]) -> dict[str, Any]:
    return {u.tenant_id: u for u in usages}


def test_figures_equal_what_was_written(data: str) -> None:
    got = by_tenant(tenant_analytics(data, since=dt.timedelta(days=30)))
    assert sorted(got) == ["acme", "globex", "initech"]
    acme, globex, initech = got["acme"], got["globex"], got["initech"]
    assert acme.display_name == "Acme" and initech.display_name == ""
    # 3 conversations and the session; the old conversation is out of range.
    assert (acme.conversations, acme.sessions) == (3, 1)
    assert acme.messages == 3 * 3 + 1  # a human message and two replies each; the session's
    assert acme.by_model == {
        "gpt-a": ModelUsage(3, 300, 150, 450, Decimal("0.03")),
        "gpt-b": ModelUsage(3, 600, 240, 840, Decimal("0.06")),
    }
    assert (acme.input_tokens, acme.output_tokens, acme.total_tokens) == (900, 390, 1290)
    assert acme.cost == Decimal("0.09")
    assert globex.by_model == {"gpt-a": ModelUsage(1, 100, 50, 150, Decimal("0.01"))}
    assert (globex.conversations, globex.messages) == (1, 2)
    assert all(acme.storage[c] > 0 for c in ("checkpoints", "conversations", "store"))
    assert globex.storage["checkpoints"] == globex.storage["store"] == 0
    assert globex.storage["conversations"] > 0
    assert initech.storage["store"] > 0 and initech.messages == 0
    assert (acme.requests, globex.requests, initech.requests) == (12, 2, 0)
    assert [d.total_tokens for d in acme.daily] == [1290]
    assert json.loads(json.dumps(acme.as_dict()))["cost"] == "0.09"


def test_time_range_is_respected(data: str) -> None:
    wide = by_tenant(tenant_analytics(data, since=dt.timedelta(days=60)))["acme"]
    assert (wide.conversations, wide.sessions, wide.messages) == (4, 1, 13)
    assert wide.by_model["gpt-a"].messages == 4 and wide.requests == 1012
    assert len(wide.daily) == 2 and wide.daily[0].total_tokens == 430
    now = dt.datetime.now(dt.UTC)
    old_only = by_tenant(
        tenant_analytics(data, since=now - dt.timedelta(days=50), until=now - dt.timedelta(days=35))
    )["acme"]
    assert (old_only.conversations, old_only.sessions) == (1, 0)
    assert (old_only.messages, old_only.total_tokens) == (1 + 2, 430)
    assert old_only.requests == 1000
    assert old_only.storage["store"] > 0  # storage is now, whatever the range
    with pytest.raises(ConfigurationError, match="range is empty"):
        tenant_analytics(data, since=now, until=now - dt.timedelta(days=1))


def test_sync_and_async_agree(data: str) -> None:
    until = dt.datetime.now(dt.UTC)
    sync = tenant_analytics(data, since=dt.timedelta(days=30), until=until)
    asyn = asyncio.run(atenant_analytics(data, since=dt.timedelta(days=30), until=until))
    assert [u.as_dict() for u in sync] == [u.as_dict() for u in asyn]


def test_tenant_bound_sources_and_restricted_roles_are_refused(data: str) -> None:
    source = ConnectionSource(data, scope=TenantScope("haive.conversations", "acme"))
    try:
        with pytest.raises(PermissionDeniedError, match="bound to tenant 'acme'"):
            tenant_analytics(source, since=dt.timedelta(days=30))
    finally:
        source.close()
    with (
        application_role(data) as app,
        pytest.raises(PermissionDeniedError, match="row-level security"),
    ):
        tenant_analytics(app, since=dt.timedelta(days=30))


def expressions(node: dict[str, Any]) -> Iterator[str]:
    """Every expression of a JSON plan, but the rows a relation scan hands up as
    they are stored (its physical target list, which reads no column)."""
    for key, value in node.items():
        if key == "Plans":
            for child in value:
                yield from expressions(child)
        elif key == "Output" and "Relation Name" in node:
            continue
        else:
            yield json.dumps(value)


def test_the_range_is_read_through_the_index_and_never_reads_bodies(data: str) -> None:
    since, until = resolve_range(dt.timedelta(days=1), None)
    with psycopg.connect(data) as conn:
        conn.execute("SET LOCAL enable_seqscan = off")
        for template, index in (
            (A.USAGE_BY_DAY, "conversation_messages_created_brin"),
            (A.CONVERSATIONS_CREATED, "conversations_created_idx"),
        ):
            (plan,) = conn.execute(
                "EXPLAIN (VERBOSE, FORMAT JSON) " + render(template, "haive"),
                {"since": since, "until": until},
            ).fetchone()
            text = " ".join(expressions(plan[0]["Plan"]))
            assert index in text
            assert "body" not in text and "message_ids" not in text
