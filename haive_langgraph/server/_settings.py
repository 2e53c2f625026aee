"""What the server's checkpointer and store read from the environment.

Connections, schema, pools and codec come from the variables every class
already reads (:class:`~haive_langgraph.db.PersistenceConfig`,
``codec_from_config``). This module adds what only a LangGraph server has:

* ``HAIVE_SERVER_TENANT_FROM``: how the authenticated identity maps to our tenant;
* the store's index and TTL: ``langgraph.json``'s ``"store"`` section (the
  server passes it as ``LANGGRAPH_STORE``), with ``HAIVE_STORE_INDEX`` (JSON,
  our pgvector keys) laid over its ``"index"``;
* the thread TTL: ``LANGGRAPH_THREAD_TTL``, else ``langgraph.json``'s
  ``"checkpointer": {"ttl": ...}`` (passed as ``LANGGRAPH_CHECKPOINTER``), as
  the server itself resolves it, mapped to a :class:`RetentionPolicy`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from haive_langgraph.checkpointers import RetentionPolicy
from haive_langgraph.errors import ConfigurationError

TENANT_FROM_ENV = "HAIVE_SERVER_TENANT_FROM"
TENANT_CACHE_ENV = "HAIVE_SERVER_TENANT_CACHE"
SETUP_ENV = "HAIVE_SERVER_SETUP"
STORE_INDEX_ENV = "HAIVE_STORE_INDEX"
# Set by `langgraph dev` / the deployment from langgraph.json.
LANGGRAPH_STORE_ENV = "LANGGRAPH_STORE"
LANGGRAPH_CHECKPOINTER_ENV = "LANGGRAPH_CHECKPOINTER"
LANGGRAPH_THREAD_TTL_ENV = "LANGGRAPH_THREAD_TTL"

# Minutes between thread TTL sweeps when the TTL config names none (the
# server's own default for its built-in checkpointer).
DEFAULT_SWEEP_MINUTES = 5.0
DEFAULT_TENANT_CACHE = 256


def _json_object(env: Mapping[str, str], name: str) -> dict[str, Any] | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{name} is not valid JSON: {exc}") from None
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigurationError(f"{name} must be a JSON object, got {type(value).__name__}")
    return value


@dataclass(frozen=True, slots=True)
class ThreadTTL:
    """The server's thread TTL as our retention: the policy and how often it runs.

    Attributes:
        policy: ``"delete"`` gives ``thread_ttl`` (threads not written for
            ``default_ttl`` minutes are deleted); ``"keep_latest"`` gives
            ``retention_days`` (checkpoints older than the TTL go, the newest
            of each thread stays).
        interval: Seconds between sweeps (``sweep_interval_minutes``).
    """

    policy: RetentionPolicy
    interval: float


def thread_ttl(env: Mapping[str, str]) -> ThreadTTL | None:
    """The thread TTL the server was given, or ``None`` (no TTL, or no ``default_ttl``).

    Raises:
        ConfigurationError: an unknown strategy or a TTL that is not positive.
    """
    ttl = _json_object(env, LANGGRAPH_THREAD_TTL_ENV)
    if ttl is None:
        section = _json_object(env, LANGGRAPH_CHECKPOINTER_ENV) or {}
        ttl = section.get("ttl")
    if not ttl or ttl.get("default_ttl") is None:
        return None
    minutes = ttl["default_ttl"]
    if isinstance(minutes, bool) or not isinstance(minutes, int | float) or minutes <= 0:
        raise ConfigurationError(
            f"the thread TTL's default_ttl must be a positive number of minutes, got {minutes!r}"
        )
    strategy = ttl.get("strategy", "delete")
    if strategy == "delete":
        policy = RetentionPolicy(thread_ttl=dt.timedelta(minutes=minutes))
    elif strategy == "keep_latest":
        policy = RetentionPolicy(retention_days=minutes / 1440)
    else:
        raise ConfigurationError(
            f"the thread TTL's strategy must be 'delete' or 'keep_latest', got {strategy!r}"
        )
    every = ttl.get("sweep_interval_minutes") or DEFAULT_SWEEP_MINUTES
    return ThreadTTL(policy=policy, interval=float(every) * 60)


def store_section(env: Mapping[str, str]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``(index, ttl)`` of the store: langgraph.json's ``"store"`` section, with
    ``HAIVE_STORE_INDEX`` laid over its index (our keys: ``distance_type``,
    ``ann_index_config``, ``exact_search_threshold``, ``write_mode``, ``hybrid``).

    Raises:
        ConfigurationError: a variable that is not a JSON object.
    """
    section = _json_object(env, LANGGRAPH_STORE_ENV) or {}
    index = section.get("index")
    extra = _json_object(env, STORE_INDEX_ENV)
    if extra is not None:
        index = {**(index or {}), **extra}
    ttl = section.get("ttl")
    return (dict(index) if index else None), (dict(ttl) if ttl else None)


def tenant_from(env: Mapping[str, str]) -> str | None:
    """``HAIVE_SERVER_TENANT_FROM``: ``"user"``, ``"org"``, a callable's path, or ``None``."""
    value = env.get(TENANT_FROM_ENV, "").strip()
    return value or None


def tenant_cache_size(env: Mapping[str, str]) -> int:
    """``HAIVE_SERVER_TENANT_CACHE``: tenant-bound savers kept open (default 256)."""
    raw = env.get(TENANT_CACHE_ENV, "").strip()
    if not raw:
        return DEFAULT_TENANT_CACHE
    try:
        size = int(raw)
    except ValueError:
        raise ConfigurationError(f"{TENANT_CACHE_ENV}={raw!r} is not an integer") from None
    if size < 1:
        raise ConfigurationError(f"{TENANT_CACHE_ENV} must be at least 1, got {size}")
    return size


def run_setup(env: Mapping[str, str]) -> bool:
    """``HAIVE_SERVER_SETUP``: create or upgrade the tables at start (default on).

    Off for a role that only uses the tables (under row-level security): their
    owner migrates them (``haive-lg migrate``).
    """
    raw = env.get(SETUP_ENV, "").strip().lower()
    if raw in ("", "1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{SETUP_ENV}={raw!r} is not a switch; use on/off, true/false, 1/0")


def environ() -> Mapping[str, str]:
    """The process environment (a function, so tests can read a copy)."""
    return os.environ
