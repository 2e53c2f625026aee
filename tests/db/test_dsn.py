"""DSNs: SQLAlchemy URLs accepted everywhere, bad ones named by where they came from
(never with their password), and no DSN at all meaning the embedded server for every
public class and factory."""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
import pytest
from psycopg import conninfo
from typer.testing import CliRunner

from haive_langgraph.checkpointers import AsyncPostgresCheckpointer, PostgresCheckpointer
from haive_langgraph.cli import app
from haive_langgraph.db import PersistenceConfig, _embedded, connect, embedded_dsn, resolve_dsn
from haive_langgraph.errors import ConfigurationError
from haive_langgraph.memory import ConversationStore, history_factory
from haive_langgraph.stores import AsyncPostgresStore, PostgresStore
from haive_langgraph.supabase import supabase_dsn
from tests.db.round_trips import KINDS, Caller

SECRET = "s3cret"
VARIABLES = ("HAIVE_DATABASE_URL", "DATABASE_URL")


def as_url(dsn: str, scheme: str) -> str:
    """The test database's DSN (key=value) as a ``scheme://`` URL."""
    params = {k: str(v) for k, v in conninfo.conninfo_to_dict(dsn).items()}
    user = quote(params.pop("user", ""), safe="")
    password = params.pop("password", None)
    auth = f"{user}:{quote(password, safe='')}@" if password else (f"{user}@" if user else "")
    dbname = params.pop("dbname", "")
    host = params.pop("host", "")
    port = params.pop("port", "")
    netloc = "" if host.startswith("/") else host + (f":{port}" if port else "")
    if host.startswith("/"):
        params["host"] = host
        if port:
            params["port"] = port
    query = f"?{urlencode(params, quote_via=quote)}" if params else ""
    return f"{scheme}://{auth}{netloc}/{dbname}{query}"


@pytest.fixture(autouse=True)
def no_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


# -- SQLAlchemy URLs ------------------------------------------------------------------


@pytest.mark.parametrize(
    "scheme",
    [
        "postgresql+psycopg",
        "postgresql+asyncpg",
        "postgresql+psycopg2",
        "postgres+psycopg2",
        "postgres",
        "postgresql",
    ],
)
def test_sqlalchemy_urls_are_accepted_as_arguments(dsn: str, scheme: str) -> None:
    url = as_url(dsn, scheme)
    with connect(url) as conn:
        assert conn.info.dbname == conninfo.conninfo_to_dict(dsn)["dbname"]
    saver = PostgresCheckpointer(url)  # a constructor's conn
    try:
        saver.setup()
    finally:
        saver.close()


@pytest.mark.parametrize("variable", VARIABLES)
async def test_sqlalchemy_urls_are_accepted_from_the_environment(
    dsn: str, variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, as_url(dsn, "postgresql+asyncpg"))
    with ConversationStore.from_conn_string() as store:
        store.setup()
    async with AsyncPostgresStore.from_conn_string() as astore:
        await astore.setup()
    with psycopg.connect(dsn) as conn:
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'haive'"
            )
        }
    assert {"conversations", "store_items"} <= tables


def test_replica_urls_split_and_accept_sqlalchemy_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "HAIVE_REPLICA_URLS", "postgresql+psycopg://r1,r2/db, postgres+asyncpg://r3/db"
    )
    assert PersistenceConfig().replica_urls == (
        "postgresql+psycopg://r1,r2/db",
        "postgres+asyncpg://r3/db",
    )


# -- bad DSNs: named by where they came from, never shown --------------------------------

BAD = {
    "unencoded space": f"postgresql://bob:{SECRET} x@db.example/app",
    "unknown parameter": f"postgresql+asyncpg://bob:{SECRET}@db.example/app?bogus=1",
    "foreign scheme": f"mysql://bob:{SECRET}@db.example/app",
    "not key=value": f"host=db.example password={SECRET} junk",
}


def _from_conn_string(bad: str) -> None:
    with PostgresCheckpointer.from_conn_string(bad):
        pass  # pragma: no cover - refused before


def _env(name: str) -> Callable[[str, pytest.MonkeyPatch], None]:
    def use(bad: str, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(name, bad)
        PostgresStore()

    return use


SOURCES: dict[str, tuple[str, Callable[[str, pytest.MonkeyPatch], Any]]] = {
    "from_conn_string": ("the argument dsn", lambda bad, mp: _from_conn_string(bad)),
    "resolve_dsn": ("the argument dsn", lambda bad, mp: resolve_dsn(bad)),
    "connect": ("the argument dsn", lambda bad, mp: connect(bad)),
    "constructor": ("the argument conn", lambda bad, mp: ConversationStore(bad)),
    "history_factory": ("the argument conn", lambda bad, mp: history_factory(bad)),
    "HAIVE_DATABASE_URL": ("the variable HAIVE_DATABASE_URL", _env("HAIVE_DATABASE_URL")),
    "DATABASE_URL": ("the variable DATABASE_URL", _env("DATABASE_URL")),
    "SUPABASE_DB_URL": (
        "the variable SUPABASE_DB_URL",
        lambda bad, mp: supabase_dsn({"SUPABASE_DB_URL": bad}),
    ),
    "replica": ("replica 1", lambda bad, mp: PostgresCheckpointer(None, replicas=[bad])),
}


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("bad", BAD.values(), ids=BAD.keys())
def test_bad_dsn_names_its_source_and_hides_the_password(
    source: str, bad: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    where, use = SOURCES[source]
    with pytest.raises(ConfigurationError) as info:
        use(bad, monkeypatch)
    assert str(info.value).startswith(where)
    shown = "".join(traceback.format_exception(info.value))
    assert SECRET not in shown and SECRET not in repr(info.value)


async def test_bad_dsn_of_an_async_class_is_refused_at_construction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ConfigurationError, match=r"^the argument conn") as info:
        AsyncPostgresCheckpointer(BAD["unknown parameter"])
    assert SECRET not in "".join(traceback.format_exception(info.value))
    monkeypatch.setenv("DATABASE_URL", BAD["unencoded space"])
    with pytest.raises(ConfigurationError, match=r"^the variable DATABASE_URL") as info:
        AsyncPostgresStore()
    assert SECRET not in "".join(traceback.format_exception(info.value))


def test_config_errors_never_quote_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAIVE_REPLICA_URLS", f'["postgresql://bob:{SECRET}@r1/db"')
    with pytest.raises(ValueError, match="HAIVE_REPLICA_URLS") as info:
        PersistenceConfig()
    assert SECRET not in str(info.value)


def test_cli_dsn_is_checked_and_never_printed(dsn: str) -> None:
    runner = CliRunner()
    bad = runner.invoke(app, ["migrate", "--dsn", BAD["unencoded space"]])
    assert bad.exit_code == 2 and "--dsn" in bad.output and SECRET not in bad.output
    env = runner.invoke(app, ["migrate"], env={"HAIVE_DATABASE_URL": BAD["unknown parameter"]})
    assert env.exit_code == 1 and "HAIVE_DATABASE_URL" in env.output
    assert SECRET not in env.output
    ok = runner.invoke(app, ["migrate", "--dsn", as_url(dsn, "postgresql+psycopg")])
    assert ok.exit_code == 0, ok.output


# -- no DSN: the embedded server --------------------------------------------------------


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The embedded default server, started once for this module in a temporary
    directory (no DSN and no database variable anywhere)."""
    with pytest.MonkeyPatch.context() as mp:
        for name in VARIABLES:
            mp.delenv(name, raising=False)
        mp.setenv(_embedded.DATA_DIR_ENV, str(tmp_path_factory.mktemp("embedded") / "pg"))
        mp.setattr(_embedded, "_server", None)
        url = embedded_dsn()
        server = _embedded._server
        try:
            yield url
        finally:
            server.cleanup()


@pytest.mark.parametrize("side", ["sync", "async"])
@pytest.mark.parametrize("kind", KINDS)
async def test_every_class_defaults_to_the_embedded_server(
    embedded: str, kind: str, side: str
) -> None:
    spec = KINDS[kind]
    cls = spec.cls(side == "async")
    if side == "async":
        async with cls.from_conn_string(None, *spec.args(), **spec.kwargs) as obj:
            await spec.trip(Caller(True), obj)
    else:
        with cls.from_conn_string(None, *spec.args(), **spec.kwargs) as obj:
            await spec.trip(Caller(False), obj)


def test_no_argument_at_all_is_the_embedded_server(embedded: str) -> None:
    with history_factory() as histories, ConversationStore() as store:
        histories.setup()
        store.setup()
    with psycopg.connect(embedded) as conn:
        row = conn.execute("SELECT to_regclass('haive.conversations') IS NOT NULL").fetchone()
    assert row == (True,)
