"""The component loggers at DEBUG, ``echo_sql``, and life without OpenTelemetry."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from haive_langgraph.checkpointers import PostgresCheckpointer
from haive_langgraph.db import PersistenceConfig
from haive_langgraph.db._call import Call
from haive_langgraph.db._call_plan import call_plan
from haive_langgraph.db._driver import Op, Step

from ._savers import SECRET, close_saver, open_saver, put_and_get

LOGGER = "haive_langgraph.checkpointers"


async def test_debug_records_name_and_duration(
    saver: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        await put_and_get(saver, "debug")
    records = [r for r in caplog.records if r.name == LOGGER]
    statements = [r for r in records if hasattr(r, "haive_statement")]
    calls = [r for r in records if hasattr(r, "haive_outcome")]
    assert [r.haive_statement for r in statements] == [
        "checkpointers.put#1",
        "checkpointers.get_tuple#1",
    ]
    assert [(r.haive_operation, r.haive_outcome) for r in calls] == [
        ("put", "ok"),
        ("get_tuple", "ok"),
    ]
    for r in records:
        assert r.levelno == logging.DEBUG
        assert r.haive_duration_ms > 0
        assert SECRET not in r.getMessage()
        assert "INSERT" not in r.getMessage()  # no SQL text without echo_sql
    assert calls[0].getMessage().startswith("checkpointers.put: ")


async def test_nothing_logged_below_debug(saver: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER):
        await put_and_get(saver, "quiet")
    assert [r for r in caplog.records if r.name.startswith("haive_langgraph.")] == []


async def test_echo_sql(saver_kind: str, dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    saver = await open_saver(saver_kind, dsn, config=PersistenceConfig(echo_sql=True))
    try:
        # echo_sql logs whatever the logger's level (WARNING here).
        caplog.clear()  # setup's statements are echoed too
        caplog.handler.setLevel(logging.DEBUG)
        logging.getLogger(LOGGER).setLevel(logging.WARNING)
        await put_and_get(saver, "echo")
    finally:
        logging.getLogger(LOGGER).setLevel(logging.NOTSET)
        await close_saver(saver)
    records = [r for r in caplog.records if r.name == LOGGER]
    statements = [r for r in records if hasattr(r, "haive_statement")]
    assert [r.haive_statement for r in statements] == [
        "checkpointers.put#1",
        "checkpointers.get_tuple#1",
    ]
    assert all(r.levelno == logging.INFO for r in records)
    put_text = statements[0].getMessage()
    assert "INSERT INTO" in put_text and '"haive"' in put_text
    assert "SELECT" in statements[1].getMessage()
    for r in records:
        assert SECRET not in r.getMessage()  # parameter values never appear


def test_echo_sql_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAIVE_ECHO_SQL", "1")
    assert PersistenceConfig().echo_sql is True
    monkeypatch.setenv("HAIVE_ECHO_SQL", "off")
    assert PersistenceConfig().echo_sql is False


def test_without_opentelemetry(dsn: str) -> None:
    """With ``opentelemetry`` not importable, calls run, log and count as usual."""
    script = textwrap.dedent(
        f"""
        import importlib.abc, logging, sys

        class NoOtel(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "opentelemetry" or name.startswith("opentelemetry."):
                    raise ModuleNotFoundError(f"No module named {{name!r}}")
                return None

        sys.meta_path.insert(0, NoOtel())
        logging.basicConfig(level=logging.WARNING, format="%(name)s %(message)s")
        from haive_langgraph.checkpointers import PostgresCheckpointer
        from haive_langgraph.db import stats

        saver = PostgresCheckpointer({dsn!r})
        saver.setup()
        assert saver.get_tuple({{"configurable": {{"thread_id": "none"}}}}) is None
        logging.getLogger("haive_langgraph.checkpointers").setLevel(logging.DEBUG)
        assert saver.get_tuple({{"configurable": {{"thread_id": "none"}}}}) is None
        print("calls", stats(saver).calls)
        saver.close()
        assert not any(m.startswith("opentelemetry") for m in sys.modules)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "calls 3" in done.stdout
    assert "checkpointers.get_tuple: " in done.stderr  # the DEBUG record of the second read


def test_package_does_not_import_opentelemetry() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, haive_langgraph.checkpointers, haive_langgraph.stores, "
            "haive_langgraph.db;"
            "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_plain_plan_without_a_provider(dsn: str) -> None:
    """With no provider set and no logger at DEBUG, a call runs the plain plan."""
    saver = PostgresCheckpointer(dsn)
    try:
        plan: Any = saver._source._plan(Call(one_op), "primary")
        assert plan.gi_code is call_plan.__code__
        plan.close()
    finally:
        saver.close()


def one_op() -> Op[Any]:
    yield Step("SELECT 1")
