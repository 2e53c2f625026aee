"""What the server's checkpointer and store read from the environment (no server needed)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from haive_langgraph.checkpointers import RetentionPolicy
from haive_langgraph.errors import ConfigurationError, PermissionDeniedError
from haive_langgraph.server import _settings as settings
from haive_langgraph.server._identity import (
    load_object,
    resolve_tenant,
    tenant_mapping,
    tenant_of_org,
    tenant_of_user,
)


def test_thread_ttl_maps_to_retention() -> None:
    delete = settings.thread_ttl(
        {"LANGGRAPH_CHECKPOINTER": json.dumps({"path": "x", "ttl": {"default_ttl": 90}})}
    )
    assert delete is not None
    assert delete.policy == RetentionPolicy(thread_ttl=dt.timedelta(minutes=90))
    assert delete.interval == settings.DEFAULT_SWEEP_MINUTES * 60
    # LANGGRAPH_THREAD_TTL wins, as in the server; keep_latest keeps each thread's newest.
    keep = settings.thread_ttl(
        {
            "LANGGRAPH_CHECKPOINTER": json.dumps({"ttl": {"default_ttl": 90}}),
            "LANGGRAPH_THREAD_TTL": json.dumps(
                {"strategy": "keep_latest", "default_ttl": 2880, "sweep_interval_minutes": 10}
            ),
        }
    )
    assert keep is not None
    assert keep.policy == RetentionPolicy(retention_days=2.0)
    assert keep.interval == 600
    assert settings.thread_ttl({}) is None
    assert settings.thread_ttl({"LANGGRAPH_THREAD_TTL": '{"strategy": "delete"}'}) is None


@pytest.mark.parametrize(
    ("ttl", "message"),
    [
        ({"default_ttl": 0}, "positive number of minutes"),
        ({"default_ttl": True}, "positive number of minutes"),
        ({"default_ttl": 5, "strategy": "archive"}, "'delete' or 'keep_latest'"),
    ],
)
def test_bad_thread_ttl_is_refused(ttl: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        settings.thread_ttl({"LANGGRAPH_THREAD_TTL": json.dumps(ttl)})


def test_store_index_is_langgraph_json_with_ours_over_it() -> None:
    env = {
        "LANGGRAPH_STORE": json.dumps(
            {
                "path": "haive_langgraph.server.store",
                "index": {"dims": 8, "embed": "openai:text-embedding-3-small", "fields": ["t"]},
                "ttl": {"default_ttl": 60, "sweep_interval_minutes": 5},
            }
        ),
        "HAIVE_STORE_INDEX": json.dumps({"distance_type": "l2", "dims": 16}),
    }
    index, ttl = settings.store_section(env)
    assert index == {
        "dims": 16,
        "embed": "openai:text-embedding-3-small",
        "fields": ["t"],
        "distance_type": "l2",
    }
    assert ttl == {"default_ttl": 60, "sweep_interval_minutes": 5}
    assert settings.store_section({}) == (None, None)
    with pytest.raises(ConfigurationError, match="HAIVE_STORE_INDEX is not valid JSON"):
        settings.store_section({"HAIVE_STORE_INDEX": "{dims: 8"})
    with pytest.raises(ConfigurationError, match="must be a JSON object"):
        settings.store_section({"HAIVE_STORE_INDEX": "[1]"})


def test_switches_and_sizes() -> None:
    assert settings.run_setup({}) is True
    assert settings.run_setup({"HAIVE_SERVER_SETUP": "off"}) is False
    with pytest.raises(ConfigurationError, match="HAIVE_SERVER_SETUP"):
        settings.run_setup({"HAIVE_SERVER_SETUP": "later"})
    assert settings.tenant_cache_size({}) == settings.DEFAULT_TENANT_CACHE
    assert settings.tenant_cache_size({"HAIVE_SERVER_TENANT_CACHE": "3"}) == 3
    with pytest.raises(ConfigurationError, match="at least 1"):
        settings.tenant_cache_size({"HAIVE_SERVER_TENANT_CACHE": "0"})
    assert settings.tenant_from({"HAIVE_SERVER_TENANT_FROM": " org "}) == "org"
    assert settings.tenant_from({}) is None


def by_team(user: Any) -> str:
    return f"team-{user['identity']}"


def test_identity_mappings(tmp_path: Path) -> None:
    user = {"identity": "alice", "org_id": "acme"}
    assert tenant_mapping("user") is tenant_of_user
    assert tenant_of_user(user) == "alice"
    assert tenant_of_org(user) == "acme"
    assert tenant_of_org({"identity": "bob"}) is None
    assert tenant_mapping(f"{__name__}:by_team")(user) == "team-alice"
    assert tenant_mapping(f"{__name__}.by_team")(user) == "team-alice"
    (tmp_path / "mapping.py").write_text("def tenant(user):\n    return user['org_id'] + '-x'\n")
    assert tenant_mapping(f"{tmp_path}/mapping.py:tenant")(user) == "acme-x"
    with pytest.raises(ConfigurationError, match="not a callable"):
        tenant_mapping(f"{__name__}:STATE_NOT_CALLABLE")
    with pytest.raises(ConfigurationError, match="cannot import"):
        load_object("no_such_module_h26:fn", "HAIVE_SERVER_TENANT_FROM")
    with pytest.raises(ConfigurationError, match="has no 'missing'"):
        load_object(f"{__name__}:missing", "HAIVE_SERVER_TENANT_FROM")


STATE_NOT_CALLABLE = 3


def test_a_call_without_an_identity_is_refused() -> None:
    config = {"configurable": {"langgraph_auth_user": {"identity": "alice", "org_id": "acme"}}}
    assert resolve_tenant(tenant_of_org, config) == "acme"  # type: ignore[arg-type]
    # Outside a request (no auth context) and no user in the config: nothing to bind.
    with pytest.raises(PermissionDeniedError, match="no authenticated user"):
        resolve_tenant(tenant_of_org, {"configurable": {"thread_id": "t"}})
    with pytest.raises(PermissionDeniedError, match="maps to no tenant"):
        resolve_tenant(tenant_of_org, {"configurable": {"langgraph_auth_user": {"identity": "b"}}})
    with pytest.raises(ConfigurationError, match="control character"):
        resolve_tenant(lambda user: "bad\x00id", config)  # type: ignore[arg-type]


def test_the_auth_context_and_the_run_config_must_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside a server both places name the user; a call whose two users map to
    different tenants is refused, whichever is right."""
    import sys
    from types import SimpleNamespace

    def served_by(user: object) -> None:
        ctx = SimpleNamespace(user=user)
        monkeypatch.setitem(
            sys.modules, "langgraph_api.utils", SimpleNamespace(get_auth_ctx=lambda: ctx)
        )

    acme = {"configurable": {"langgraph_auth_user": {"identity": "alice", "org_id": "acme"}}}
    served_by({"identity": "alice", "org_id": "acme"})
    assert resolve_tenant(tenant_of_org, acme) == "acme"  # type: ignore[arg-type]
    assert resolve_tenant(tenant_of_org) == "acme"  # no config: the auth context's
    served_by({"identity": "mallory", "org_id": "other"})
    with pytest.raises(PermissionDeniedError, match="different tenants"):
        resolve_tenant(tenant_of_org, acme)  # type: ignore[arg-type]
    served_by({"identity": "mallory"})  # maps to no tenant: refused even with a good config
    with pytest.raises(PermissionDeniedError, match="maps to no tenant"):
        resolve_tenant(tenant_of_org, acme)  # type: ignore[arg-type]
