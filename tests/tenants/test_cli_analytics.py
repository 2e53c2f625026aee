"""``haive-lg tenants analytics`` and ``haive-lg tenants retention``: tables, --json,
--chart (a PNG file), --dry-run, bad durations."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from haive_langgraph.cli import app
from haive_langgraph.cli._tenant_analytics import parse_moment

from ._data import USAGE, add_conversation, age, counts, migrate, put_item, register

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

runner = CliRunner()


def invoke(*args: str) -> Result:
    return runner.invoke(app, ["tenants", *args])


@pytest.fixture(scope="module")
def data(dsn: str) -> Iterator[str]:
    migrate(dsn)
    register(dsn, "acme", data_retention_days=30)
    add_conversation(dsn, "acme", "c0", usage=USAGE)
    add_conversation(dsn, "globex", "g0", usage=USAGE[:1])
    put_item(dsn, "acme", "old")
    age(dsn, "acme", 45, items=("old",))
    yield dsn


def test_analytics_table_json_and_chart(data: str, tmp_path: Path) -> None:
    table = invoke("analytics", "--dsn", data, "--since", "30d")
    assert table.exit_code == 0, table.output
    assert "acme" in table.output and "globex" in table.output and "gpt-b" in table.output

    chart = tmp_path / "usage.png"
    result = invoke("analytics", "--dsn", data, "--since", "7d", "--json", "--chart", str(chart))
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    got = {t["tenant_id"]: t for t in report["tenants"]}
    assert got["acme"]["total_tokens"] == 430 and got["acme"]["cost"] == "0.03"
    assert got["globex"]["by_model"]["gpt-a"]["total_tokens"] == 150
    assert report["chart"] == str(chart)
    assert chart.read_bytes()[:8] == PNG_SIGNATURE and chart.stat().st_size > 1000


def test_retention_dry_run_then_run(data: str) -> None:
    dry = invoke("retention", "--dsn", data, "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    (tenant,) = json.loads(dry.output)["tenants"]
    assert tenant["tenant_id"] == "acme" and tenant["store"]["items"] == 1
    assert counts(data, "acme")["items"] == {"old"}
    shown = invoke("retention", "--dsn", data)
    assert shown.exit_code == 0, shown.output
    assert "acme" in shown.output and "1 items" in shown.output
    assert counts(data, "acme")["items"] == set()


def test_bad_durations_are_usage_errors(data: str) -> None:
    result = invoke("analytics", "--dsn", data, "--since", "thirty days")
    assert result.exit_code == 2 and "neither a duration" in result.output
    reversed_range = invoke(
        "analytics", "--dsn", data, "--since", "2026-02-01", "--until", "2026-01-01"
    )
    assert reversed_range.exit_code == 1 and "range is empty" in reversed_range.output
    now = dt.datetime(2026, 1, 31, tzinfo=dt.UTC)
    assert parse_moment("2w", "--since", now) == now - dt.timedelta(weeks=2)
    assert parse_moment("2026-01-01", "--since", now) == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def test_a_chart_without_matplotlib_names_the_extra(
    data: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for module in ("matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    chart = tmp_path / "usage.png"
    result = invoke("analytics", "--dsn", data, "--chart", str(chart))
    assert result.exit_code == 1
    assert "needs matplotlib" in result.output and "haive-langgraph[notebooks]" in result.output
    assert not chart.exists()


def test_a_schema_without_our_tables_is_named(data: str) -> None:
    for command in ("analytics", "retention"):
        result = invoke(command, "--dsn", data, "--schema", "nowhere")
        assert result.exit_code == 1, result.output
        assert "nowhere" in result.output and "haive-lg migrate" in result.output
