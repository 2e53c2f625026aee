"""The shape of the ``haive_langgraph.cli`` package: modules that import each other one
way (none imports the package that assembles them), small files, option groups
expanded into Typer options, and ``python -m haive_langgraph.cli`` working."""

from __future__ import annotations

import ast
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import pytest
import typer
from typer.testing import CliRunner

from haive_langgraph.cli import _common
from haive_langgraph.errors import NotFoundError

CLI = Path(_common.__file__).parent
MODULES = sorted(
    f"haive_langgraph.cli.{p.stem}" for p in CLI.glob("*.py") if p.stem not in ("__main__",)
)
runner = CliRunner()


def _imported(path: Path) -> set[str]:
    """Modules ``path`` imports at run time (not under ``if TYPE_CHECKING:``)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and getattr(child.test, "id", "") == "TYPE_CHECKING":
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module:
                found.add(child.module)
                found.update(f"{child.module}.{a.name}" for a in child.names)
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def test_no_command_module_imports_the_package_that_assembles_them() -> None:
    for path in CLI.glob("_*.py"):
        if path.name.startswith("__"):
            continue
        imported = _imported(path)
        assert "haive_langgraph.cli" not in imported, path.name
        siblings = {m for m in imported if m.startswith("haive_langgraph.cli.")}
        # From the package only its own modules (``haive_langgraph.cli.x.name`` is a name in x).
        assert all(m.split(".")[2].startswith("_") for m in siblings), (path.name, siblings)


def test_the_modules_import_alone_in_any_order() -> None:
    """Each module, first in a fresh interpreter, then all of them in a random order."""
    order = random.sample(MODULES, len(MODULES))
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    for first in MODULES:
        done = subprocess.run(
            [sys.executable, "-c", code, first, *order], capture_output=True, text=True
        )
        assert done.returncode == 0, (first, done.stderr[-2000:])


def test_files_stay_small() -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in CLI.glob("*.py")}
    assert max(sizes.values()) <= 500, sizes


def test_python_m_runs_the_command_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "haive_langgraph.cli", "--help"],
        capture_output=True,
        text=True,
        env={"COLUMNS": "120", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    for name in ("demo", "migrate", "history", "prune", "keys", "import", "backup", "cache"):
        assert f" {name} " in done.stdout


@dataclass(frozen=True, slots=True)
class _Where:
    place: Annotated[str, typer.Option("--place", help="Where.")] = "here"
    loud: Annotated[bool, typer.Option("--loud", help="Shout.")] = False


def _app() -> tuple[typer.Typer, list[Any]]:
    seen: list[Any] = []
    app = typer.Typer()

    @app.command("one")
    @_common.command
    def one(
        name: Annotated[str, typer.Argument()],
        *,
        where: _Where,
        times: Annotated[int, typer.Option("--times")] = 1,
    ) -> None:
        seen.append((name, where, times))

    @app.command("two")
    @_common.command
    def two() -> None:
        raise NotFoundError("nothing named so")

    return app, seen


def test_an_option_group_stands_for_its_options_in_place() -> None:
    app, seen = _app()
    out = runner.invoke(app, ["one", "--help"], env={"COLUMNS": "120"})
    assert out.exit_code == 0
    text = out.stdout
    assert text.index("--place") < text.index("--loud") < text.index("--times")
    out = runner.invoke(app, ["one", "x", "--loud", "--times", "3"])
    assert out.exit_code == 0, out.output
    assert seen == [("x", _Where("here", True), 3)]


def test_our_errors_exit_1_with_one_line() -> None:
    app, _ = _app()
    out = runner.invoke(app, ["two"])
    assert out.exit_code == 1
    assert "error: nothing named so" in out.stderr


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon", "is not MODULE:ATTR"),
        ("haive_nosuchmodule:Model", "cannot be loaded"),
        ("haive_langgraph.errors:NoSuchName", "cannot be loaded"),
        ("haive_langgraph.errors:NotFoundError", "is not a LangChain Embeddings"),
        ("langchain_core.embeddings:DeterministicFakeEmbedding", "cannot be made"),
    ],
)
def test_embeddings_named_on_the_command_line_must_be_a_model(
    spec: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from haive_langgraph.cli._import import load_embeddings

    with pytest.raises(typer.Exit) as exit_info:
        load_embeddings(spec)
    assert exit_info.value.exit_code == 2
    assert message in " ".join(capsys.readouterr().err.split())


def test_embeddings_from_a_class_or_an_instance() -> None:
    from langchain_core.embeddings import DeterministicFakeEmbedding, FakeEmbeddings

    from haive_langgraph.cli._import import load_embeddings

    made = load_embeddings("tests.test_cli_package:_Model")
    assert isinstance(made, DeterministicFakeEmbedding) and made.size == 4
    assert load_embeddings("tests.test_cli_package:_MODEL") is _MODEL
    assert isinstance(_MODEL, FakeEmbeddings)


class _Model:
    """A class made with no arguments: what ``--embeddings`` accepts besides an instance."""

    def __new__(cls) -> Any:
        from langchain_core.embeddings import DeterministicFakeEmbedding

        return DeterministicFakeEmbedding(size=4)


def _fake() -> Any:
    from langchain_core.embeddings import FakeEmbeddings

    return FakeEmbeddings(size=4)


_MODEL = _fake()


def test_the_demo_runs_forks_and_prints_the_storage_used(dsn: str) -> None:
    from haive_langgraph.cli import app

    args = ["demo", "--dsn", dsn, "--schema", "cli_demo"]
    out = runner.invoke(app, [*args, "--turns", "3"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, (out.stdout, out.stderr)
    for seen in ("Ran 3 turns", "6 messages", "Forked from checkpoint", "Storage used", "total"):
        assert seen in out.stdout
    out = runner.invoke(app, [*args, "--turns", "2"])
    assert out.exit_code == 2 and "--turns must be at least 3" in out.stderr
