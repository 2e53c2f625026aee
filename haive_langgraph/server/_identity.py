"""From the server's authenticated identity to our tenant, per call.

LangGraph's server authenticates each request with the custom auth handler of
``langgraph.json`` (``"auth": {"path": ...}``) and makes the user it returned
available in two places: in the run's config
(``config["configurable"]["langgraph_auth_user"]``, set when a run is
created) and in the request's (or the run worker's) auth context. A call
reads both where it has both (calls that carry a config: ``aget_tuple``,
``alist``, ``aput``, ``aput_writes``) and refuses when they disagree; calls
that carry none (``adelete_thread``, ``acopy_thread``, ``adelete_for_runs``,
``aprune`` and every store call) read the auth context.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig

from haive_langgraph.db._tenancy import validate_tenant_id
from haive_langgraph.errors import ConfigurationError, PermissionDeniedError

TenantOf = Callable[[Any], "str | None"]
"""Maps the server's user object (``BaseUser``: ``identity`` and the fields the
auth handler returned) to a tenant id, or ``None`` when it has none."""

ORG_FIELDS = ("org_id", "org", "tenant_id")


def _field(user: Any, name: str) -> Any:
    if isinstance(user, Mapping):
        return user.get(name)
    getter = getattr(user, "get", None)
    if callable(getter):
        try:
            return getter(name)
        except (KeyError, TypeError):
            pass
    return getattr(user, name, None)


def tenant_of_user(user: Any) -> str | None:
    """The user's ``identity``."""
    identity = _field(user, "identity")
    return identity if isinstance(identity, str) and identity else None


def tenant_of_org(user: Any) -> str | None:
    """The user's organisation: its ``org_id`` (else ``org``, else ``tenant_id``) field."""
    for name in ORG_FIELDS:
        value = _field(user, name)
        if isinstance(value, str) and value:
            return value
    return None


def load_object(path: str, what: str) -> Any:
    """The object named by ``./file.py:name``, ``package.module:name`` or ``package.module.name``.

    Raises:
        ConfigurationError: the module or the name cannot be found.
    """
    if ":" in path:
        module_path, name = path.rsplit(":", 1)
    else:
        module_path, _, name = path.rpartition(".")
    if not module_path or not name:
        raise ConfigurationError(
            f"{what} {path!r} is not a path: use ./file.py:name or package.module:name"
        )
    try:
        if module_path.endswith(".py") or "/" in module_path:
            file = Path(module_path).resolve()
            modname = f"_haive_server_{abs(hash(str(file)))}"
            module = sys.modules.get(modname)
            if module is None:
                spec = importlib.util.spec_from_file_location(modname, file)
                if spec is None or spec.loader is None:
                    raise ImportError(f"no such file: {file}")
                module = importlib.util.module_from_spec(spec)
                sys.modules[modname] = module
                spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_path)
    except (ImportError, OSError) as exc:
        raise ConfigurationError(f"{what} {path!r}: cannot import {module_path}: {exc}") from None
    try:
        return getattr(module, name)
    except AttributeError:
        raise ConfigurationError(f"{what} {path!r}: {module_path} has no {name!r}") from None


def tenant_mapping(spec: str) -> TenantOf:
    """The mapping ``HAIVE_SERVER_TENANT_FROM`` names: ``"user"``, ``"org"`` or a callable's path.

    Raises:
        ConfigurationError: the path does not name a callable.
    """
    if spec == "user":
        return tenant_of_user
    if spec == "org":
        return tenant_of_org
    found = load_object(spec, "HAIVE_SERVER_TENANT_FROM")
    if not callable(found):
        raise ConfigurationError(
            f"HAIVE_SERVER_TENANT_FROM={spec!r} names a {type(found).__name__}, not a callable "
            "(user) -> tenant id"
        )
    return found  # type: ignore[no-any-return]


def config_user(config: RunnableConfig | None) -> Any:
    """The user the server put into the run's config, if any."""
    if config is None:
        return None
    return (config.get("configurable") or {}).get("langgraph_auth_user")


def context_user() -> Any:
    """The user of the server's auth context (set for each request and each run), if any."""
    # Read only where the server already loaded it: the package does not depend
    # on langgraph-api, and importing it elsewhere reads the server's settings.
    utils = sys.modules.get("langgraph_api.utils")
    if utils is None:  # not inside a LangGraph server
        return None
    ctx = utils.get_auth_ctx()
    return None if ctx is None else ctx.user


def resolve_tenant(mapping: TenantOf, config: RunnableConfig | None = None) -> str:
    """The tenant of this call.

    Both places the server puts the authenticated user are read: the
    request's (or run's) auth context and the run's config. The server strips
    ``langgraph_auth_user`` from what clients send, so both are its own; still,
    when both are there they must map to the same tenant, or nothing is done.

    Raises:
        PermissionDeniedError: no authenticated user, the mapping found no
            tenant for it, or the two users map to different tenants
            (nothing is read or written for a call we cannot place).
        ConfigurationError: the mapping returned something that is not a
            valid tenant id.
    """
    users = [u for u in (context_user(), config_user(config)) if u is not None]
    found = [mapping(u) for u in users]
    if not users or any(t is None or t == "" for t in found):
        shown = "no authenticated user" if not users else "its user maps to no tenant"
        raise PermissionDeniedError(
            f"HAIVE_SERVER_TENANT_FROM is set and this call has {shown}: configure the "
            'server\'s custom auth (langgraph.json "auth") so that every request is '
            "authenticated, and make the mapping return a tenant id for every user"
        )
    tenants = {validate_tenant_id(t) for t in found}
    if len(tenants) > 1:
        raise PermissionDeniedError(
            "the run's config and the request's authenticated user map to different "
            "tenants: refused"
        )
    return tenants.pop()
